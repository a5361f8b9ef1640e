"""Dynamic resolution: a schedule written over a reference N runs as fractions of each image's own N.

The rule (:func:`quota.schedule.resolve_schedule`) is checked exhaustively on small sizes; the runner is checked on
a tiny LLaVA-NeXT (anyres) checkpoint with images of two sizes, which give different N."""

from __future__ import annotations

import itertools

import pytest
import torch

from quota.data.prompts import encode_batch
from quota.data.records import Record
from quota.models.checkpoint import load_checkpoint
from quota.runtime.generate import PrunedRunner
from quota.runtime.positions import NotSupportedError
from quota.runtime.vision import expected_visual_tokens
from quota.schedule import ScheduleError, resolve_schedule
from tests.checkpoints import write_checkpoint
from tests.data.datasets import write_png


def test_resolution_is_identity_at_the_reference_and_maps_the_ends():
    assert resolve_schedule((16, 8, 8, 0), 16, 16) == (16, 8, 8, 0)
    assert resolve_schedule((16, 8, 0), 16, 40) == (40, 20, 0)
    assert resolve_schedule((16, 8, 0), 16, 4) == (4, 2, 0)


def test_resolution_rounds_half_up_in_integers():
    assert resolve_schedule((3,), 8, 4) == (2,)  # 1.5 -> 2
    assert resolve_schedule((1,), 8, 4) == (1,)  # 0.5 -> 1
    assert resolve_schedule((5,), 7, 3) == (2,)  # 2.14 -> 2


def test_resolution_is_monotone_and_non_increasing_exhaustively():
    for ref in range(1, 13):
        for n in range(1, 25):
            previous = None
            for k in range(ref + 1):
                (r,) = resolve_schedule((k,), ref, n)
                assert 0 <= r <= n
                if previous is not None:
                    assert r >= previous  # monotone in k
                previous = r
                if n > 1:
                    assert resolve_schedule((k,), ref, n - 1)[0] <= r  # a larger image never keeps fewer
            for schedule in itertools.combinations_with_replacement(range(ref, -1, -1), 3):
                resolved = resolve_schedule(schedule, ref, n)
                assert list(resolved) == sorted(resolved, reverse=True)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_resolution_refuses_a_bad_size(bad):
    with pytest.raises(ScheduleError, match="positive number of visual tokens"):
        resolve_schedule((4, 2), 4, bad)


def test_resolution_refuses_counts_above_the_reference():
    with pytest.raises(ScheduleError, match="keeps more visual tokens"):
        resolve_schedule((9, 2), 8, 16)


@pytest.fixture(scope="module")
def anyres(tmp_path_factory):
    """A tiny LLaVA-NeXT checkpoint and one image of each of two sizes (different N under anyres)."""
    root = tmp_path_factory.mktemp("anyres")
    loaded = load_checkpoint(write_checkpoint("llava_next", root / "ck"))
    records = []
    for i, size in enumerate([(32, 32), (32, 64)]):
        write_png(root / f"{i}.png", size, seed=i)
        records.append(Record(root / f"{i}.png", "What colour is the star?", "red", line=i + 1))
    return loaded, records


def _prefill(runner, loaded, record):
    batch = encode_batch(loaded.processor, [record], with_answers=False)
    inputs = dict(batch.inputs)
    runner.prefill(inputs.pop("input_ids"), inputs.pop("attention_mask"), inputs.pop("pixel_values"), **inputs)
    return batch.n_visual[0], [int(k.shape[1]) for k in runner.kept_indices]


def test_anyres_images_of_two_sizes_keep_their_fraction(anyres):
    loaded, records = anyres
    sizes = [loaded.visual_tokens((32, 32)), loaded.visual_tokens((32, 64))]
    assert sizes[0] != sizes[1]
    assert expected_visual_tokens(loaded.model) is None  # the model's N is not a constant
    reference = max(sizes)
    schedule = (reference, reference // 2, reference // 4)[: len(loaded.spec.layers_of(loaded.model))]
    runner = PrunedRunner(loaded.model, schedule, {"attn_last": 1.0}, impl="reference", reference_tokens=reference)
    for record, n in zip(records, sizes):
        got_n, kept = _prefill(runner, loaded, record)
        assert got_n == n
        assert kept == list(resolve_schedule(schedule, reference, n))
        assert kept == list(runner.schedule_for(n))
    # deterministic: the same image keeps the same tokens
    _prefill(runner, loaded, records[0])
    first = [k.clone() for k in runner.kept_indices]
    _prefill(runner, loaded, records[0])
    assert all(torch.equal(a, b) for a, b in zip(first, runner.kept_indices))


def test_without_a_reference_a_schedule_larger_than_the_image_is_refused(anyres):
    loaded, records = anyres
    big = max(loaded.visual_tokens((32, 32)), loaded.visual_tokens((32, 64)))
    runner = PrunedRunner(loaded.model, (big, big // 2), {"attn_last": 1.0}, impl="reference")
    with pytest.raises(ScheduleError, match="more visual tokens than the image has"):
        _prefill(runner, loaded, records[0])


def test_vision_attention_is_refused_where_patches_are_not_tokens(anyres):
    loaded, _ = anyres
    with pytest.raises(NotSupportedError, match="vision_attn"):
        PrunedRunner(loaded.model, (8, 4), {"vision_attn": 1.0}, reference_tokens=8)
