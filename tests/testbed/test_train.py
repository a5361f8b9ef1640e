"""The testbed training script's data and losses (``quota.testbed.train``): conversations, streams,
grounding against the LM's word embeddings, answer accuracy; its checkpoint (atomic, no pickle) and export
(a failed export leaves the previous weights)."""

import pytest
import torch

import quota.testbed.train as train_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tt():
    return train_module


def test_conversation_starts_with_the_evaluation_prompt_and_labels_only_answers(tt, smollm2):
    from quota.testbed.model import answer_ids, prompt_ids

    _, tok = smollm2
    pairs = [("Is there a red star?", "yes"), ("How many rings are there?", "3")]
    ids, labels = tt.encode_conversation(tok, pairs)
    first = prompt_ids(tok, pairs[0][0])
    assert ids[: len(first)] == first and all(lab == -100 for lab in labels[: len(first)])
    scored = [t for t, lab in zip(ids, labels) if lab != -100]
    assert scored == answer_ids(tok, "yes") + answer_ids(tok, "3")
    assert all(lab in (-100, t) for t, lab in zip(ids, labels))


def test_stream_scenes_carry_distinct_questions_of_every_task_and_five_label_maps(tt):
    from quota.testbed.splits import split_of
    from quota.testbed.tasks import TASKS

    stream = iter(tt.TrainStream(seed=3, per_task=2))
    for _ in range(3):
        pairs, image, labels = next(stream)
        questions = [q for q, _ in pairs]
        assert len(set(questions)) == len(questions) >= len(TASKS)
        assert image.shape == (192, 192, 3) and labels.shape == (5, 576)
        assert [int(labels[i].max()) <= n - 1 for i, n in enumerate(tt.N_CLASSES)] == [True] * 5
    assert split_of(tt.scene_seed("train", 3000, 0, 0)) == "train"


def test_grounding_puts_an_image_token_equal_to_a_word_embedding_in_that_class(tt, smollm2):
    from quota.testbed.scenes import COLOUR_IDS, SHAPE_IDS

    lm, tok = smollm2
    embed = lm.model.embed_tokens.weight
    head = tt.GroundingHead(embed, tok)
    star = embed[tok(" star", add_special_tokens=False)["input_ids"][-1]]
    red = embed[tok(" red", add_special_tokens=False)["input_ids"][-1]]
    logits = head(torch.stack([star, red])[None])  # [1, 2, C_f] per family
    assert int(logits[0][0, 0].argmax()) == SHAPE_IDS["star"]
    assert int(logits[1][0, 1].argmax()) == COLOUR_IDS["red"]


def test_answer_accuracy_ignores_end_of_turn_tokens(tt):
    logits = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])  # argmax 1, 0, 2
    targets = torch.tensor([1, 2, 0])  # the second is the end token (2): not counted
    assert tt.answer_accuracy(logits, targets, end_id=2) == pytest.approx(0.5)


@pytest.fixture
def session_smollm2(smollm2, monkeypatch):
    """build_testbed (and so testbed.load) takes the session's SmolLM2 instead of converting the GGUF file again;
    build_testbed copies its weights and leaves it unchanged."""
    import quota.testbed.model as testbed_model

    monkeypatch.setattr(testbed_model, "load_smollm2", lambda dtype=torch.float32, device="cpu": smollm2)


def test_export_writes_the_whole_history_of_pieces_and_loads_back(tt, tmp_path, session_smollm2, monkeypatch):
    import argparse
    import json

    from quota.testbed import model as testbed
    from quota.testbed.model import CARD_FILE, WEIGHTS_DIR, build_testbed

    model, _ = build_testbed(torch.float32)
    lm = model.model.language_model
    paths = [f"layers.{i}.{t}" for i in range(len(lm.layers)) for t in tt.LORA_TARGETS]
    lora = tt.add_lora(lm, paths, 4, 8.0)
    torch.manual_seed(0)
    for prm in lora:
        prm.data.normal_(0.0, 0.02)  # B is zero at start: give the delta a value that must survive the export
    args = argparse.Namespace(export=str(tmp_path), init=str(WEIGHTS_DIR), lora_rank=4, batch=8, lr=1e-4,
                              aux_weight=1.0, ground_weight=1.0, token_aux_weight=0.0, lora_lr_mult=1.0, per_task=3,
                              steps=50)
    shipped = json.loads((WEIGHTS_DIR / CARD_FILE).read_text())
    first = tt.start_history(args) + [tt.this_piece(args, 0, 20, 12.4)]
    tt.export(model, lm, args, first, 20, [])
    second = first + [tt.this_piece(args, 20, 50, 30.0)]  # a resumed run, as its checkpoint carries the history
    tt.export(model, lm, args, second, 50, [])
    card = json.loads((tmp_path / CARD_FILE).read_text())
    pieces = card["training"]["pieces"]
    old = shipped["training"]["pieces"]
    assert pieces[: len(old)] == old and [p["steps"] for p in pieces[len(old):]] == ["0-20", "20-50"]
    assert pieces[-2]["start"].startswith("initialised from") and pieces[-1]["start"] == "resumed from its checkpoint"
    assert card["training"]["total_gpu_seconds"] == sum(int(p["seconds"]) * tt.gpus_of(p) for p in pieces)
    assert "evaluation" not in card  # the shipped accuracy belongs to other weights
    loaded = testbed.load("cpu", torch.float32, tmp_path).model
    trained = lm.layers[3].self_attn.q_proj  # parametrized: weight = base + scale * B @ A
    merged = loaded.model.language_model.layers[3].self_attn.q_proj.weight
    with torch.no_grad():
        assert torch.allclose(merged, trained.weight, atol=1e-3)
        assert not torch.allclose(merged, trained.parametrizations.weight.original, atol=1e-4)

    # an export that dies part way (here: writing its second file) leaves the previous export as it was
    exported = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    import safetensors.torch

    real, calls = safetensors.torch.save_file, []

    def dies(tensors, filename, metadata=None):
        calls.append(filename)
        real(tensors, filename, metadata)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(safetensors.torch, "save_file", dies)
    with torch.no_grad():
        lm.layers[3].self_attn.q_proj.parametrizations.weight[0].lora_B.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        tt.export(model, lm, args, second + [tt.this_piece(args, 50, 60, 5.0)], 60, [])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == exported  # same files, same bytes, no temporary


def test_export_removes_shards_of_an_older_layout_only_after_writing_the_new_ones(tt, tmp_path, monkeypatch):
    import argparse

    import torch.nn as nn

    from quota.testbed.model import VISION_FILE

    class Tiny(nn.Module):  # a state dict with the exported prefixes; no language model adapters
        def __init__(self):
            super().__init__()
            self.model = nn.Module()
            self.model.vision_tower = nn.Linear(4, 4)
            self.model.multi_modal_projector = nn.Linear(4, 4)

    old = tmp_path / VISION_FILE.format(1, 3)
    old.write_bytes(b"old layout")
    seen = []
    monkeypatch.setattr(tt, "lora_factors", lambda lm, prefix: {"x.lora_A": torch.zeros(2, 2)})
    real_unlink = tt.Path.unlink

    def recording_unlink(self, *args, **kwargs):  # what the folder holds when a file is removed
        seen.append((self.name, sorted(p.name for p in tmp_path.iterdir())))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(tt.Path, "unlink", recording_unlink)
    args = argparse.Namespace(export=str(tmp_path), init=None, lora_rank=4, batch=8, lr=1e-4, aux_weight=1.0,
                              ground_weight=1.0, token_aux_weight=0.0, lora_lr_mult=1.0, per_task=3, steps=50)
    tt.export(Tiny(), None, args, [tt.this_piece(args, 0, 5, 1.0)], 5, [])
    assert not old.exists()
    [(_, present)] = [entry for entry in seen if entry[0] == old.name]
    assert VISION_FILE.format(1, 1) in present and "testbed_card.json" in present and "testbed_lora.safetensors" in present


def _tiny_training(seed: int = 0):
    """A model with a trained part (``vision_tower``) and a frozen one, two heads and AdamW, after two steps."""
    import torch.nn as nn

    torch.manual_seed(seed)
    model = nn.Module()
    model.vision_tower, model.frozen = nn.Linear(3, 4), nn.Linear(3, 3)
    heads = {"aux": nn.Linear(4, 2), "ground": nn.Linear(4, 3)}
    params = list(model.vision_tower.parameters()) + [p for h in heads.values() for p in h.parameters()]
    opt = torch.optim.AdamW([{"params": params[:2], "lr": 1e-2}, {"params": params[2:], "lr": 2e-2,
                                                                  "weight_decay": 0.0}], betas=(0.9, 0.98))
    return model, heads, opt


def _step(model, heads, opt, seed: int) -> None:
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed))
    h = model.vision_tower(x)
    loss = heads["aux"](h).pow(2).mean() + heads["ground"](h).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_checkpoint_round_trip_without_pickle_resumes_the_very_same_training(tt, tmp_path):
    import inspect

    from safetensors import safe_open

    model, heads, opt = _tiny_training()
    for seed in (1, 2):
        _step(model, heads, opt, seed)
    log, pieces = [{"step": 2, "lm_loss": 0.5}], [{"steps": "0-2", "seconds": 1}]
    path = tt.save_checkpoint(tmp_path / tt.CHECKPOINT_FILE, model, heads, opt, 2, log, pieces)
    with safe_open(str(path), framework="pt") as f:  # a plain safetensors file: tensors and a JSON header
        keys = set(f.keys())
    assert "model.vision_tower.weight" in keys and "aux.weight" in keys and "opt.0.exp_avg" in keys
    assert not any(k.startswith("model.frozen") for k in keys)

    model2, heads2, opt2 = _tiny_training(seed=7)  # other starting values: all must come from the file
    step, log2, pieces2 = tt.restore_checkpoint(path, model2, heads2, opt2)
    assert (step, log2, pieces2) == (2, log, pieces)
    assert opt2.param_groups[0]["betas"] == (0.9, 0.98) and opt2.param_groups[1]["weight_decay"] == 0.0
    _step(model, heads, opt, 3)
    _step(model2, heads2, opt2, 3)
    for a, b in zip(list(model.vision_tower.parameters()) + [p for h in heads.values() for p in h.parameters()],
                    list(model2.vision_tower.parameters()) + [p for h in heads2.values() for p in h.parameters()]):
        assert torch.equal(a, b)  # the resumed optimizer continues exactly
    assert "torch.load" not in inspect.getsource(tt)


def test_a_failed_checkpoint_write_keeps_the_previous_one(tt, tmp_path, monkeypatch):
    import safetensors.torch

    model, heads, opt = _tiny_training()
    _step(model, heads, opt, 1)
    path = tt.save_checkpoint(tmp_path / tt.CHECKPOINT_FILE, model, heads, opt, 1, [], [])
    before = path.read_bytes()
    real = safetensors.torch.save_file

    def dies(tensors, filename, metadata=None):
        real(tensors, filename, metadata)
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(safetensors.torch, "save_file", dies)
    _step(model, heads, opt, 2)
    with pytest.raises(KeyboardInterrupt):
        tt.save_checkpoint(path, model, heads, opt, 2, [], [])
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert tt.load_checkpoint(path)[1]["step"] == 1
    real(({"a": torch.zeros(2)}), str(tmp_path / "other.safetensors"))  # safetensors, but no training state
    with pytest.raises(ValueError, match="not a quota training checkpoint"):
        tt.load_checkpoint(tmp_path / "other.safetensors")


def test_family_loss_sums_each_familys_cross_entropy_and_vanishes_on_confident_right_logits(tt):
    gen = torch.Generator().manual_seed(0)
    labels = torch.stack([torch.randint(0, c, (2, 576), generator=gen) for c in tt.N_CLASSES], dim=1)  # [2, 5, 576]
    parts = [torch.randn(2, 576, c, generator=gen) for c in tt.N_CLASSES]
    want = sum(torch.nn.functional.cross_entropy(p.reshape(-1, p.shape[-1]), labels[:, i].reshape(-1))
               for i, p in enumerate(parts))
    assert torch.allclose(tt.family_loss(parts, labels), want)
    right = [20.0 * torch.nn.functional.one_hot(labels[:, i], c).float() for i, c in enumerate(tt.N_CLASSES)]
    assert tt.family_loss(right, labels) < 1e-6
    wrong = [20.0 * torch.nn.functional.one_hot((labels[:, i] + 1) % c, c).float() for i, c in enumerate(tt.N_CLASSES)]
    assert tt.family_loss(wrong, labels) > 5 * 20.0 * 0.9  # about 20 nats per family


def test_each_rank_reads_its_own_streams_and_one_process_keeps_the_single_gpu_streams(tt):
    from quota.testbed.scenes import make_scene

    first = [next(iter(tt.TrainStream(seed=5, per_task=1, rank=r, world=2)))[1] for r in (0, 1)]
    assert not (first[0] == first[1]).all()
    alone = next(iter(tt.TrainStream(seed=5, per_task=1)))[1]  # stream 5 * 1000, worker 0
    assert (alone == make_scene(tt.scene_seed("train", 5000, 0, 0)).image).all()
    assert (first[0] == make_scene(tt.scene_seed("train", 10000, 0, 0)).image).all()  # (5 * 2 + 0) * 1000
    with pytest.raises(ValueError, match="rank 2"):
        tt.TrainStream(seed=0, per_task=1, rank=2, world=2)


def test_gpus_of_reads_the_rank_count_of_a_piece(tt):
    assert tt.gpus_of({"device": "4 x NVIDIA H100 80GB HBM3"}) == 4
    assert tt.gpus_of({"device": "NVIDIA H100 80GB HBM3"}) == 1
    assert tt.gpus_of({}) == 1


def _data_parallel_rank(rank: int, n_ranks: int, port: int, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(n_ranks),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(n_ranks))
    tt = train_module
    tt.init_from_env("gloo")
    shared = torch.nn.Parameter(torch.full((3, 5), float(rank)))  # differs per rank until broadcast
    tt.broadcast_parameters([shared])
    a, b, idle = (torch.nn.Parameter(torch.zeros(n)) for n in (4, 7, 2))
    a.grad = torch.arange(4.0) * (rank + 1)  # [4]
    b.grad = torch.full((7,), 10.0 * rank)  # [7]
    tt.average_gradients([a, idle, b])  # idle has no gradient on any rank
    torch.save({"shared": shared.data, "a": a.grad, "b": b.grad, "idle": idle.grad,
                "one_votes": tt.any_rank(rank == 1, "cpu"), "none_votes": tt.any_rank(False, "cpu")},
               f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_data_parallel_helpers_broadcast_average_and_agree_over_two_gloo_ranks(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_data_parallel_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for g in got:
        assert torch.equal(g["shared"], torch.zeros(3, 5))  # rank 0's values everywhere
        assert torch.equal(g["a"], torch.arange(4.0) * 1.5)  # mean of x1 and x2
        assert torch.equal(g["b"], torch.full((7,), 5.0))
        assert g["idle"] is None
        assert g["one_votes"] is True and g["none_votes"] is False


def test_helpers_leave_a_single_process_alone(tt):
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    tt.average_gradients([p])
    tt.broadcast_parameters([p])
    assert torch.equal(p.grad, torch.tensor([1.0, 2.0, 3.0])) and torch.equal(p.data, torch.ones(3))
    assert tt.any_rank(True, "cpu") is True and tt.any_rank(False, "cpu") is False
