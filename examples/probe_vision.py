"""Linear probes of the testbed's image tokens: is a patch's shape, colour, character, size or texture readable
from what the vision tower (and the projector after it) hands to the language model?

A per-family logistic regression is fitted on the per-patch features of training-stream scenes and scored on
scenes of the test split's seed namespace (never seen in training). Accuracy is reported over the patches that
carry a label (class 0, "nothing there", is left out of the score but kept in the fit) and, as a reference, the
share of labelled patches held by each family's most frequent class. Where a family probes well but its task
scores low, the loss is in the language model; where it probes badly, in the vision tower.

    python examples/probe_vision.py --train 192 --test 64          # about 3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from quota.testbed.scenes import make_scene
from quota.testbed.splits import scene_seed
from quota.testbed import model as testbed

FAMILIES = ("shape", "colour", "char", "size", "texture")


def scenes(split: str, count: int, stream: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes of ``split``'s seed namespace: uint8 images ``[B, 192, 192, 3]``, labels ``[B, 5, 576]``."""
    images, labels = [], []
    for index in range(count):
        s = make_scene(scene_seed(split, stream, index, 0))
        images.append(s.image)
        labels.append(np.stack([getattr(s, f"patch_{f}").reshape(-1) for f in FAMILIES]))
    return np.stack(images), np.stack(labels)


STAGES = ("vision tower", "projector input norm", "projector hidden", "projector before out norm", "projector")


@torch.no_grad()
def features(model, images: np.ndarray, batch: int = 16) -> dict[str, torch.Tensor]:
    """Per-patch features ``[B * 576, d]`` at each of :data:`STAGES`: the vision tower's last layer, then inside
    the projector (``NormalizedProjector``: LayerNorm, linear-GELU, linear, RMSNorm) after each step."""
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    out = {stage: [] for stage in STAGES}
    for i in range(0, len(images), batch):
        x = testbed.pixel_values(images[i : i + batch])  # [b, 3, 192, 192]
        feats = tower(x, output_hidden_states=True).hidden_states[-1][:, 1:]  # [b, 576, 384]
        normed = projector.norm(feats)  # [b, 576, 384]
        hidden = projector.mlp.act(projector.mlp.linear_1(normed))  # [b, 576, 576]
        pre = projector.mlp.linear_2(hidden)  # [b, 576, 576]
        tokens = projector.out_norm(pre)  # [b, 576, 576], what the language model reads
        for stage, value in zip(STAGES, (feats, normed, hidden, pre, tokens)):
            out[stage].append(value.reshape(-1, value.shape[-1]))
    return {k: torch.cat(v).float() for k, v in out.items()}


def fit_probe(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 300) -> torch.nn.Linear:
    """Multinomial logistic regression (L-BFGS, small L2) on standardized features ``x`` ``[n, d]``."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(x), y) + 1e-4 * probe.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=192, help="training-stream scenes to fit on")
    p.add_argument("--test", type=int, default=64, help="test-namespace scenes to score on")
    p.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES, help="label families to probe")
    p.add_argument("--stages", nargs="*", default=["vision tower", "projector"], choices=STAGES,
                   help="where to probe (default: the vision tower's output and the projector's)")
    p.add_argument("--json", default=None, help="write the accuracies here")
    args = p.parse_args()
    start = time.time()
    model = testbed.load("cpu", torch.float32).model
    train_img, train_lab = scenes("train", args.train)
    test_img, test_lab = scenes("test", args.test)
    train_feats, test_feats = features(model, train_img), features(model, test_img)
    results = {}
    for where in args.stages:
        mean, std = train_feats[where].mean(0), train_feats[where].std(0) + 1e-6
        xtr, xte = (train_feats[where] - mean) / std, (test_feats[where] - mean) / std
        for i, family in enumerate(FAMILIES):
            if family not in args.families:
                continue
            ytr = torch.as_tensor(train_lab[:, i].reshape(-1))
            yte = torch.as_tensor(test_lab[:, i].reshape(-1))
            classes = int(max(ytr.max(), yte.max())) + 1
            probe = fit_probe(xtr, ytr, classes)
            with torch.no_grad():
                pred = probe(xte).argmax(-1)
            labelled = yte > 0
            acc = float((pred[labelled] == yte[labelled]).float().mean())
            majority = float(torch.bincount(yte[labelled], minlength=classes).max() / labelled.sum())
            results.setdefault(where, {})[family] = {
                "accuracy": round(acc, 4), "majority": round(majority, 4), "labelled_patches": int(labelled.sum()),
            }
            print(f"{where:26s} {family:8s} accuracy {100 * acc:5.1f}%  (majority class {100 * majority:5.1f}%, "
                  f"{int(labelled.sum())} labelled test patches)", flush=True)
    meta = {"train_scenes": args.train, "test_scenes": args.test, "stages": args.stages,
            "model_hash": testbed.model_hash(), "seconds": round(time.time() - start, 1), "device": "cpu",
            "torch": torch.__version__}
    if args.json:
        from quota.atomic import write_json_atomic

        write_json_atomic(args.json, {"meta": meta, "probes": results})
    print(f"{meta['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
