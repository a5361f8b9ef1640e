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
