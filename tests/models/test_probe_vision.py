"""The linear-probe diagnostic of the testbed's image tokens (``examples/probe_vision.py``)."""

import pytest
import torch

from tests.example_scripts import load_example


@pytest.fixture(scope="module")
def pv():
    return load_example("probe_vision")


def test_probe_recovers_a_linear_labelling_and_not_a_random_one(pv):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 12, generator=gen)  # [n, d]
    w = torch.randn(12, 4, generator=gen)
    y = (x @ w).argmax(-1)  # a labelling that a linear map separates
    train, test = slice(0, 400), slice(400, 600)
    probe = pv.fit_probe(x[train], y[train], 4, steps=100)
    assert (probe(x[test]).argmax(-1) == y[test]).float().mean() > 0.9
    shuffled = y[torch.randperm(600, generator=gen)]  # no relation to x: held-out accuracy near chance
    probe = pv.fit_probe(x[train], shuffled[train], 4, steps=100)
    assert (probe(x[test]).argmax(-1) == shuffled[test]).float().mean() < 0.45


def test_scenes_come_from_the_asked_split_with_one_label_map_per_family(pv):
    from quota.testbed.splits import scene_seed, split_of

    images, labels = pv.scenes("test", 2)
    assert images.shape == (2, 192, 192, 3) and labels.shape == (2, len(pv.FAMILIES), 576)
    assert split_of(scene_seed("test", 7, 0, 0)) == "test"
    assert (labels[:, pv.FAMILIES.index("colour")] > 0).any()  # objects are present and labelled
    assert ((labels[:, 0] > 0) == (labels[:, 1] > 0)).all()  # a patch with a shape has a colour, and back


@pytest.mark.slow
def test_features_follow_the_projector_step_by_step(pv, small_testbed):
    model, _ = small_testbed
    images, _ = pv.scenes("test", 2)
    feats = pv.features(model, images)
    assert list(feats) == list(pv.STAGES)
    assert feats["vision tower"].shape == (2 * 576, 384) and feats["projector"].shape == (2 * 576, 576)
    with torch.no_grad():
        pixels = pv.testbed.pixel_values(images)
        tower = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        tokens = model.model.multi_modal_projector(tower)  # what the language model reads
    assert torch.allclose(feats["projector"], tokens.reshape(-1, 576), atol=1e-5)
    assert torch.allclose(feats["vision tower"], tower.reshape(-1, 384))
