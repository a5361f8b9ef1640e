"""Small JSONL data sets written for the tests: random PNG images (PIL) and their records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# (question, answer, choices, task, image (height, width))
ROWS = (
    ("What colour is the star?", "red", None, "attribute", (32, 32)),
    ("How many blue objects are there?", "3", None, "counting", (40, 64)),
    ("Is there a circle?", "yes", ["yes", "no"], "existence", (64, 40)),
    ("Which word is written left of the green square in the top left corner?", "LAMP",
     ["TREE", "LAMP", "BOAT"], "reading", (48, 48)),
    ("Is the yellow triangle above the ring?", "no", None, "spatial", (32, 48)),
)


def write_png(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> np.ndarray:
    """A random image of ``size`` = (height, width) saved as PNG; returns its RGB pixels ``uint8 [H, W, 3]``."""
    from PIL import Image

    rgb = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return np.asarray(img.convert("RGB"))


def write_dataset(folder: Path, rows=ROWS, name: str = "data.jsonl") -> Path:
    """``folder/name`` with one record per row and its image under ``folder/images/``."""
    lines = []
    for i, (question, answer, choices, task, size) in enumerate(rows):
        write_png(folder / "images" / f"{i}.png", size, seed=i)
        record = {"image": f"images/{i}.png", "question": question, "answer": answer, "task": task, "id": f"r{i}"}
        if choices is not None:
            record["choices"] = choices
        lines.append(json.dumps(record))
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path
