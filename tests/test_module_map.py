"""The README's module map matches the tree: every package and module of ``quota`` is named under its entry,
and every file the map names exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUOTA = REPO / "quota"
DETAILED = ("models", "quant", "kernels", "quantize", "runtime", "profiling", "testbed", "eval", "bench")


def module_map() -> dict[str, str]:
    """``{entry: its text}`` of the README's ``quota/`` tree block (entries are the names at the left margin)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```\nquota/\n(.*?)```", text, re.S)
    assert block, "README.md has no module map (a ``` block starting with quota/)"
    entries: dict[str, str] = {}
    current = None
    for line in block.group(1).splitlines():
        match = re.match(r"  (\S[^ ]*(?:, \S+)*)\s{2,}(.*)", line)
        if match:
            current = match.group(1)
            entries[current] = match.group(2)
        elif current is not None:
            entries[current] += " " + line.strip()
    return entries


def test_every_package_and_top_level_module_has_an_entry():
    entries = module_map()
    names = {n.strip() for key in entries for n in key.split(",")}
    packages = {p.name + "/" for p in QUOTA.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.name for p in QUOTA.glob("*.py") if not p.name.startswith("_")}
    assert packages <= names, f"packages missing from the module map: {sorted(packages - names)}"
    assert modules <= names, f"modules missing from the module map: {sorted(modules - names)}"
    assert names <= packages | modules, f"the module map names what does not exist: {sorted(names - packages - modules)}"


def test_every_module_of_the_detailed_packages_is_named():
    entries = module_map()
    for package in DETAILED:
        text = entries[package + "/"]
        folder = QUOTA / package
        for path in folder.glob("*.py"):
            if path.name.startswith("_"):
                continue
            assert re.search(rf"\b{path.stem}(\.py)?\b", text), f"{package}/{path.name} is not in the module map"
        for sub in folder.iterdir():
            if (sub / "__init__.py").is_file():
                assert f"{sub.name}/" in text, f"{package}/{sub.name}/ is not in the module map"
        for named in re.findall(r"\b(\w+)\.py\b", text):
            assert (folder / f"{named}.py").is_file(), f"the module map names {package}/{named}.py, which does not exist"
