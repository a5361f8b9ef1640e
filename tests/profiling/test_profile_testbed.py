"""Profiling end to end on the CPU: the testbed architecture cut to two decoder layers, two questions."""

import numpy as np
import torch

from quota.profiling.measure import ProfileSettings, profile_model
from quota.profiling.profile import Profile
from quota.quant.config import QuantConfig
from quota.quantize.model import quantize_model
from quota.testbed.batches import make_batches


def test_profile_curves_are_consistent(small_testbed, tmp_path):
    from quota.testbed.splits import calibration_split

    model, tok = small_testbed
    questions = calibration_split()[:2]
    quant = QuantConfig(weight_method="rtn", a_clip_search=False)
    qmodel = quantize_model(model, quant, None)
    settings = ProfileSettings(grid_steps=2, batch_size=2, latency=False,
                               score_candidates=[{"attn_last": 0.9, "magnitude": 0.1}, {"magnitude": 1.0}])
    out = tmp_path / "p.json"
    batches = make_batches(tok, questions, 2, "cpu", torch.float32)
    prof = profile_model(qmodel, batches, quant, model_id="t", model_hash="0" * 64, data_version="v",
                         settings=settings, output=out)
    again = Profile.load(out)
    assert again.grid == (0, 288, 576) and again.n_layers == 2
    kl = prof.damage["kl"]
    assert kl.shape == (2, 3) and np.all(kl[:, -1] == 0)
    from_layer = np.asarray(prof.extra["kl_prune_from_layer"])
    assert np.all(from_layer >= -1e-6) and from_layer[0, 0] > 0  # dropping every visual token changes answers
    assert np.allclose(kl.sum(axis=0), from_layer[0])  # contributions telescope to the prune-from-0 damage
    assert len(prof.score_search["candidates"]) == 2 and prof.score_weights in (
        {"attn_last": 0.9, "magnitude": 0.1}, {"magnitude": 1.0})
    assert {"tokens", "flops", "kv"} <= set(prof.costs)
    assert not list(tmp_path.glob("*.partial.json"))  # partial files are removed once the profile is written
    # the all-token reference was checked: a second pass repeated the first (deterministic on the CPU)
    assert prof.extra["reference_check"] == {"passes": 2, "first_pass_max_abs_diff": 0.0}
    assert again.extra["reference_check"]["passes"] == 2
