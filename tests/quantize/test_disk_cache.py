"""The quantized-model cache: a hit gives the very model a fresh quantization gives, without calibrating;
a damaged entry is recomputed; concurrent processes compute once."""

import pytest
import torch

from quota.quantize.disk_cache import CacheEntryError, cache_dir, load_quantized, quantize_cached
from quota.quant.config import QuantConfig
from quota.quantize.linear import QuantLinear
from quota.quantize.model import quantize_model
from tests.tiny_models import tiny_llama

CALIB = [torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(i)) for i in range(2)]
IDS = torch.randint(0, 128, (2, 17), generator=torch.Generator().manual_seed(9))
CONFIG = QuantConfig(kv_group_size=16)  # GPTQ, clipping searches, rotation: everything slow or seeded
IDENTITY = {"model": "tiny_llama seed 0", "calibration": 2}


class Calibration:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return CALIB


@torch.no_grad()
def test_hit_equals_fresh_quantization_without_calibrating(tmp_path):
    model = tiny_llama()
    fresh = quantize_model(model, CONFIG, CALIB)
    calib = Calibration()
    first = quantize_cached(model, CONFIG, calib, IDENTITY, folder=tmp_path)
    second = quantize_cached(tiny_llama(), CONFIG, calib, IDENTITY, folder=tmp_path)
    assert calib.calls == 1 and len(list(tmp_path.glob("*.safetensors"))) == 1
    assert torch.equal(first(IDS).logits, fresh(IDS).logits)
    assert torch.equal(second(IDS).logits, fresh(IDS).logits)  # bit-identical: weights, scales, clip ratios
    clips = {n: m.a_clip_ratio for n, m in second.named_modules() if isinstance(m, QuantLinear)}
    assert clips == {n: m.a_clip_ratio for n, m in fresh.named_modules() if isinstance(m, QuantLinear)}
    assert any(r != CONFIG.a_clip_ratio for r in clips.values())  # the searched ratios, not the default
    assert second.quota_report.act_clip == fresh.quota_report.act_clip and second.quota_report.rotated


def test_another_identity_or_config_is_another_entry(tmp_path):
    calib = Calibration()
    quantize_cached(tiny_llama(), CONFIG, calib, IDENTITY, folder=tmp_path)
    quantize_cached(tiny_llama(), CONFIG, calib, {**IDENTITY, "calibration": 3}, folder=tmp_path)
    quantize_cached(tiny_llama(), CONFIG.replace(w_bits=8), calib, IDENTITY, folder=tmp_path)
    assert calib.calls == 3 and len(list(tmp_path.glob("*.safetensors"))) == 3


@torch.no_grad()
def test_damaged_entry_is_recomputed_and_replaced(tmp_path):
    calib = Calibration()
    quantize_cached(tiny_llama(), CONFIG, calib, IDENTITY, folder=tmp_path)
    entry = next(tmp_path.glob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    again = quantize_cached(tiny_llama(), CONFIG, calib, IDENTITY, folder=tmp_path)
    assert calib.calls == 2
    assert torch.equal(again(IDS).logits, quantize_model(tiny_llama(), CONFIG, CALIB)(IDS).logits)
    third = quantize_cached(tiny_llama(), CONFIG, calib, IDENTITY, folder=tmp_path)
    assert calib.calls == 2 and torch.equal(third(IDS).logits, again(IDS).logits)


def test_entry_for_another_key_is_refused_before_touching_the_model(tmp_path):
    quantize_cached(tiny_llama(), CONFIG, Calibration(), IDENTITY, folder=tmp_path)
    entry = next(tmp_path.glob("*.safetensors"))
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CacheEntryError, match="not '0000"):
        load_quantized(model, CONFIG, entry, "0000000000000000", inplace=True)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("QUOTA_QUANT_CACHE", "off")
    assert cache_dir() is None
    calib = Calibration()
    for _ in range(2):
        quantize_cached(tiny_llama(), CONFIG, calib, IDENTITY)
    assert calib.calls == 2
    monkeypatch.setenv("QUOTA_QUANT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    # a config that needs no calibration has nothing slow to store
    quantize_cached(tiny_llama(), CONFIG.replace(weight_method="rtn", a_clip_search=False), calib, IDENTITY)
    assert not (tmp_path / "c").exists()


def test_concurrent_callers_compute_once(tmp_path):
    import threading

    calib = Calibration()
    results = []

    def work():
        results.append(quantize_cached(tiny_llama(), CONFIG, calib, IDENTITY, folder=tmp_path))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calib.calls == 1 and len(results) == 3
    with torch.no_grad():
        assert all(torch.equal(r(IDS).logits, results[0](IDS).logits) for r in results)


def test_unwritable_cache_folder_falls_back_to_quantizing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    calib = Calibration()
    out = quantize_cached(tiny_llama(), CONFIG, calib, IDENTITY, folder=blocker / "cache")
    assert calib.calls == 1 and isinstance(out.model.layers[0].mlp.down_proj, QuantLinear)


# ---------------------------------------------------------------- issue 22, R2: stale, damaged, misfitting entries


@pytest.fixture(scope="module")
def made_entry(tmp_path_factory):
    """``(file name, bytes)`` of one cache entry of tiny_llama under CONFIG, and the reference logits of a fresh
    quantization (computed once for the tests below, which copy the entry)."""
    folder = tmp_path_factory.mktemp("entry")
    quantize_cached(tiny_llama(), CONFIG, Calibration(), IDENTITY, folder=folder)
    entry = next(folder.glob("*.safetensors"))
    with torch.no_grad():
        logits = quantize_model(tiny_llama(), CONFIG, CALIB)(IDS).logits
    return entry.name, entry.read_bytes(), logits


@pytest.fixture
def entry(made_entry, tmp_path):
    name, data, _ = made_entry
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _settings():
    import quota.quantize.disk_cache as disk_cache

    return disk_cache.cache_settings(CONFIG, torch.device("cpu"), torch.float32, IDENTITY)


def _rewrite_header(entry, **changes):
    """Rewrite an entry with some header fields changed and the same tensors (its checksum stays valid)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(entry), framework="pt") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header.update(changes)
    save_file(tensors, str(entry), metadata=header)


def _flip(entry, start: int, size: int = 4096) -> None:
    data = bytearray(entry.read_bytes())
    for i in range(start, min(start + size, len(data))):
        data[i] ^= 0xFF
    entry.write_bytes(bytes(data))


def _header_length(entry) -> int:
    import struct

    return struct.unpack("<Q", entry.read_bytes()[:8])[0]


def test_the_key_covers_the_versions_of_torch_transformers_triton_and_quota(monkeypatch):
    import quota.quantize.disk_cache as disk_cache

    assert set(_settings()["versions"]) == {"torch", "transformers", "triton", "quota"}
    key = disk_cache.cache_key(CONFIG, torch.device("cpu"), torch.float32, IDENTITY)
    real = disk_cache.runtime_record
    for library in ("transformers", "quota", "torch", "triton"):
        def bumped(device=None, library=library):
            record = real(device)
            return {**record, "versions": {**record["versions"], library: "99.0"}}

        monkeypatch.setattr(disk_cache, "runtime_record", bumped)
        assert disk_cache.cache_key(CONFIG, torch.device("cpu"), torch.float32, IDENTITY) != key, library
    monkeypatch.setattr(disk_cache, "runtime_record", real)
    assert disk_cache.cache_key(CONFIG, torch.device("cpu"), torch.float32, IDENTITY) == key


def test_entries_record_their_settings_and_a_checksum_of_their_tensors(entry):
    import json

    from safetensors import safe_open

    import quota.quantize.disk_cache as disk_cache

    with safe_open(str(entry), framework="pt") as f:
        header = f.metadata()
    assert json.loads(header["quota_settings"]) == _settings()
    assert header["quota_data_sha256"] == disk_cache.data_checksum(entry)
    assert disk_cache.read_entry_header(entry, entry.stem, _settings())["quota_cache_key"] == entry.stem


@pytest.mark.parametrize("where", ["start", "middle", "end", "header", "length"])
def test_flipping_4_kib_anywhere_in_an_entry_makes_it_unusable(entry, where):
    import quota.quantize.disk_cache as disk_cache

    n, size = _header_length(entry), entry.stat().st_size
    start = {"start": 8 + n, "middle": (8 + n + size) // 2, "end": size - 4096, "header": 8 + n // 3, "length": 0}[where]
    _flip(entry, start)
    with pytest.raises(CacheEntryError):
        disk_cache.read_entry_header(entry, entry.stem, _settings())


@torch.no_grad()
def test_a_flipped_entry_is_recomputed_not_loaded(entry, made_entry, capsys):
    _flip(entry, (8 + _header_length(entry) + entry.stat().st_size) // 2)  # inside the tensor data
    calib = Calibration()
    again = quantize_cached(tiny_llama(), CONFIG, calib, IDENTITY, folder=entry.parent)
    assert calib.calls == 1 and "is not the recorded" in capsys.readouterr().err
    assert torch.equal(again(IDS).logits, made_entry[2])
    assert quantize_cached(tiny_llama(), CONFIG, calib, IDENTITY, folder=entry.parent) is not None
    assert calib.calls == 1  # the recomputed entry replaced the damaged one


@torch.no_grad()
@pytest.mark.parametrize("field,value,match", [
    ("report", '{"config": {}, "bogus": 1}', "report fields"),
    ("report", '{"config": {}, "rotated": "yes"}', "wrong type"),
    ("report", "not json", "unreadable report"),
    ("act_clip", '{"model.layers.0.mlp.nowhere": 0.9}', "not a quantized linear here"),
    ("act_clip", '{"model.layers.0.mlp.down_proj": -1}', "not a positive number"),
    ("quota_settings", '{"format": 1}', "quantized with"),
])
def test_a_well_formed_header_that_does_not_fit_is_refused_before_touching_the_model(entry, field, value, match):
    _rewrite_header(entry, **{field: value})
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules_before = [type(m) for m in model.modules()]
    with pytest.raises(CacheEntryError, match=match):
        load_quantized(model, CONFIG, entry, entry.stem, inplace=True, settings=_settings())
    assert [type(m) for m in model.modules()] == modules_before  # not half-quantized
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@torch.no_grad()
def test_a_misfitting_entry_is_recomputed_in_place_from_the_untouched_model(entry, made_entry):
    _rewrite_header(entry, act_clip='{"model.layers.0.mlp.nowhere": 0.9}')
    model = tiny_llama()
    calib = Calibration()
    again = quantize_cached(model, CONFIG, calib, IDENTITY, folder=entry.parent, inplace=True)
    assert calib.calls == 1 and again is model
    assert torch.equal(again(IDS).logits, made_entry[2])


@torch.no_grad()
def test_tensors_that_do_not_fit_are_refused_before_touching_the_model(entry):
    other = tiny_llama(layers=3)  # one layer more than the entry's model
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CacheEntryError, match="does not fit the model"):
        load_quantized(other, CONFIG, entry, entry.stem, inplace=True)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())


@torch.no_grad()
def test_an_inplace_hit_turns_the_callers_model_into_the_quantized_one(entry, made_entry):
    model = tiny_llama()
    out = load_quantized(model, CONFIG, entry, entry.stem, inplace=True, settings=_settings())
    assert out is model and isinstance(model.model.layers[0].mlp.down_proj, QuantLinear)
    assert torch.equal(model(IDS).logits, made_entry[2])


def test_stale_temporary_entries_of_killed_writers_are_swept(entry):
    import os
    import time

    stale = entry.parent / ".0123456789abcdef.safetensors.k3j_x9q2.tmp"  # a writer killed before its rename
    stale.write_bytes(b"\0" * 1024)
    hour_ago = time.time() - 3700
    os.utime(stale, (hour_ago, hour_ago))
    fresh = entry.parent / ".fedcba9876543210.safetensors.a8b7c6d5.tmp"  # another process, still writing
    fresh.write_bytes(b"\0")
    quantize_cached(tiny_llama(), CONFIG, Calibration(), IDENTITY, folder=entry.parent)  # a hit
    assert not stale.exists() and fresh.exists()
