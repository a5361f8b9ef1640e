"""The solver benchmark runs end to end on a toy configuration and updates only its marked block."""

from __future__ import annotations

from pathlib import Path

from quota.bench import solvers as bench


def test_benchmark_writes_its_block_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "solvers.md"
    doc.write_text(f"# Title\n\nprose before\n\n{bench.START}\nold table\n{bench.END}\n\nprose after\n")
    argv = ["--layers", "4", "--keeps", "5", "9", "--shapes", "smooth", "noisy", "--time-limit", "5", "--out", str(doc)]
    assert bench.main(argv) == 0
    text = doc.read_text()
    assert text.startswith("# Title\n\nprose before\n") and text.rstrip().endswith("prose after")
    assert "old table" not in text and text.count(bench.START) == 1 and text.count(bench.END) == 1
    assert "CI-class machine" in text and "cores (nproc)" in text and "CPU model" in text
    assert "| 4 x 5 | smooth |" in text and "| 4 x 9 | noisy |" in text
    for name in bench.SOLVER_ORDER:
        assert f"| {name} |" in text  # one detail row per solver at least
    summary = [line for line in text.splitlines() if line.startswith("| 4 x 5 | smooth |")][0]
    assert summary.count(" opt") >= 4  # auto, dp, cpsat and mip prove the toy optimum
