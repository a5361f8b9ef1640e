"""The testbed's model hash covers the model card's fields that change the model (issue 22, R2): LoRA rank,
alpha and targets, and the architecture; not its training history or evaluation."""

import json
from pathlib import Path

import pytest

from quota.testbed import model as testbed

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def weights_copy(tmp_path):
    """A copy of the shipped weights folder: the tensor files linked, the card copied (to be edited)."""
    for path in testbed.WEIGHTS_DIR.iterdir():
        if path.name == testbed.CARD_FILE:
            (tmp_path / path.name).write_text(path.read_text())
        elif path.suffix == ".safetensors":
            (tmp_path / path.name).symlink_to(path)
    return tmp_path


def _edit_card(folder: Path, edit) -> None:
    card = json.loads((folder / testbed.CARD_FILE).read_text())
    edit(card)
    (folder / testbed.CARD_FILE).write_text(json.dumps(card))


def test_a_copy_has_the_same_hash(weights_copy):
    assert testbed.model_hash(weights_copy) == testbed.model_hash()


@pytest.mark.parametrize("edit", [
    lambda c: c["lora"].__setitem__("alpha", 4 * c["lora"]["alpha"]),
    lambda c: c["lora"].__setitem__("rank", 8),
    lambda c: c["lora"]["targets"].pop(),
    lambda c: c["architecture"]["vision_tower"].__setitem__("num_hidden_layers", 4),
    lambda c: c.pop("lora"),
], ids=["alpha_x4", "rank", "targets", "architecture", "no_lora"])
def test_card_fields_that_change_the_model_change_the_hash(weights_copy, edit):
    _edit_card(weights_copy, edit)
    assert testbed.model_hash(weights_copy) != testbed.model_hash()


@pytest.mark.parametrize("edit", [
    lambda c: c.pop("evaluation", None),
    lambda c: c["training"].__setitem__("steps", "more"),
    lambda c: c.__setitem__("model_id", "renamed"),
    lambda c: c.__setitem__("notes", "measured again"),
], ids=["evaluation", "training", "model_id", "notes"])
def test_history_and_results_in_the_card_do_not_change_the_hash(weights_copy, edit):
    _edit_card(weights_copy, edit)
    assert testbed.model_hash(weights_copy) == testbed.model_hash()


def test_the_shipped_cpu_profile_names_the_shipped_weights():
    """profiles/testbed_cpu.json was measured on exactly the shipped weights."""
    profile = json.loads((REPO / "profiles" / "testbed_cpu.json").read_text())
    assert profile["model_hash"] == testbed.model_hash()


def test_the_language_layer_constant_is_smollm2s(smollm2):
    """``N_LANGUAGE_LAYERS`` (the suite digests baseline plans of that length) is the language model's depth."""
    from quota.testbed.model import N_LANGUAGE_LAYERS

    model, _ = smollm2
    assert len(model.model.layers) == N_LANGUAGE_LAYERS
