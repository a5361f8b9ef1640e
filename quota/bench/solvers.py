"""Solver benchmark: every solver on synthetic problems of 30 and 80 layers x 17-129 keep counts.

    python -m quota.bench.solvers --out docs/solvers.md

Times ``auto``, ``dp``, ``cpsat``, ``mip``, ``relax`` and ``greedy`` (``quota.solvers.solve_problem`` with
``accept_gap=inf``, so unproven schedules are kept and reported) on ``synthetic_problem`` instances
(smooth, staircase and noisy damage curves, a token budget of 0.3), and writes markdown tables:
time, objective, gap against the best proven optimum of the instance, the solver's own status and
bound. With ``--out FILE`` the tables replace the part of FILE between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` (or the whole file when it has no such markers), else they go to stdout.

Imports only ``quota.solvers`` and the standard library.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from quota.solvers import SHAPES, SolverError, solve_problem, synthetic_problem

SOLVER_ORDER = ("auto", "dp", "cpsat", "mip", "relax", "greedy")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Run:
    """One solver on one instance: the outcome or the error it raised."""

    layers: int
    keeps: int
    shape: str
    budget_kind: str
    solver: str
    seconds: float
    time_limit: float
    objective: float | None = None
    lower_bound: float | None = None
    status: str = ""
    ran: str = ""
    error: str = ""
    optimum: float | None = None

    @property
    def excess(self) -> float | None:
        """``objective - optimum`` in damage units; None without both."""
        if self.objective is None or self.optimum is None:
            return None
        return self.objective - self.optimum

    @property
    def gap_to_optimum(self) -> float | None:
        """``(objective - optimum) / max(|optimum|, 1e-9)``; None without both."""
        excess = self.excess
        return None if excess is None else excess / max(abs(self.optimum), 1e-9)


def machine() -> str:
    """One line naming this machine: cores, CPU model, memory, Python and library versions."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    versions = []
    for package in ("numpy", "ortools", "cvxpy"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} missing")
    return (
        f"{os.cpu_count()} cores (nproc), CPU model {model!r}{memory}, no GPU used; "
        f"Python {platform.python_version()}, {', '.join(versions)}"
    )


def run_one(problem, name: str, time_limit: float, meta: dict) -> Run:
    """Solve once and record what happened."""
    start = time.perf_counter()
    try:
        solution = solve_problem(problem, name, time_limit, accept_gap=math.inf)
    except SolverError as error:
        return Run(
            **meta,
            solver=name,
            seconds=time.perf_counter() - start,
            time_limit=time_limit,
            error=type(error).__name__,
            lower_bound=getattr(error, "lower_bound", None),
        )
    return Run(
        **meta,
        solver=name,
        seconds=time.perf_counter() - start,
        time_limit=time_limit,
        objective=solution.objective,
        lower_bound=solution.lower_bound,
        status=solution.status,
        ran=solution.solver,
    )


def warm_up(solvers: list[str]) -> None:
    """Solve a tiny problem with each solver once, so library imports are not timed."""
    problem = synthetic_problem(3, 5)
    for name in solvers:
        solve_problem(problem, name, 10.0, accept_gap=math.inf)


def benchmark(
    layers: list[int],
    keeps: list[int],
    shapes: list[str],
    solvers: list[str],
    time_limit: float,
    big_time_limit: float,
    budget: float,
    budget_kind: str,
    log=sys.stderr,
) -> list[Run]:
    """Every solver on every instance; ``big_time_limit`` applies to cpsat and mip at 80+ layers."""
    warm_up(solvers)
    runs: list[Run] = []
    for n_layers in layers:
        for n_keeps in keeps:
            for shape in shapes:
                problem = synthetic_problem(n_layers, n_keeps, shape, budget=budget, budget_kind=budget_kind)
                meta = dict(layers=n_layers, keeps=n_keeps, shape=shape, budget_kind=budget_kind)
                batch = []
                for name in solvers:
                    limit = big_time_limit if name in ("cpsat", "mip") and n_layers >= 80 else time_limit
                    run = run_one(problem, name, limit, meta)
                    batch.append(run)
                    print(
                        f"{n_layers:3d} x {n_keeps:3d} {shape:9s} {name:6s} {run.seconds:7.2f} s "
                        f"{run.status or run.error} {run.objective}",
                        file=log,
                        flush=True,
                    )
                proven = [r.objective for r in batch if r.status == "optimal"]
                optimum = min(proven) if proven else None
                for run in batch:
                    run.optimum = optimum
                runs.extend(batch)
    return runs


def _cell(run: Run) -> str:
    """``1.92 s opt`` / ``60.0 s +34% (limit)`` / ``60.0 s no schedule``."""
    digits = 3 if run.seconds < 0.1 else 2 if run.seconds < 10 else 1
    head = f"{run.seconds:.{digits}f} s"
    if run.error:
        short = {
            "NoScheduleError": "no schedule",
            "RelaxationLimitError": "LP stopped",
            "UnsupportedFeatureError": "unsupported",
        }
        return f"{head} {short.get(run.error, run.error)}"
    excess = run.excess
    if run.status == "optimal":
        return f"{head} opt"
    tag = {"time_limit": " (limit)", "feasible": ""}.get(run.status, f" ({run.status})")
    if excess is None:  # no proven optimum on this instance: the solver's own gap
        own = "no bound" if run.lower_bound is None else f"gap {run.objective - run.lower_bound:.3g}"
        return f"{head} {own}{tag}"
    if excess <= 1e-9 * max(1.0, abs(run.optimum)):
        return f"{head} =opt{tag}"
    return f"{head} +{excess:.3g}{tag}"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def tables(runs: list[Run], solvers: list[str]) -> str:
    """The summary matrix (instances x solvers) and the detailed table."""
    instances = list(dict.fromkeys((r.layers, r.keeps, r.shape, r.budget_kind) for r in runs))
    by_key = {(r.layers, r.keeps, r.shape, r.budget_kind, r.solver): r for r in runs}
    lines = [
        "| layers x keeps | shape | optimum | " + " | ".join(solvers) + " |",
        "|---|---|---:|" + "---|" * len(solvers),
    ]
    for key in instances:
        row = [by_key[key + (name,)] for name in solvers if key + (name,) in by_key]
        optimum = row[0].optimum if row else None
        if optimum is None:  # bracket it: best proven bound, best schedule found
            bounds = [r.lower_bound for r in row if r.lower_bound is not None]
            found = [r.objective for r in row if r.objective is not None]
            shown = f"in [{_num(max(bounds)) if bounds else '?'}, {_num(min(found)) if found else '?'}]"
        else:
            shown = _num(optimum)
        cells = [_cell(r) for r in row]
        lines.append(f"| {key[0]} x {key[1]} | {key[2]} | {shown} | " + " | ".join(cells) + " |")
    detail = [
        "| layers x keeps | shape | solver | ran | seconds | limit s | status | objective | own bound | "
        "above optimum | relative |",
        "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        gap = r.gap_to_optimum
        detail.append(
            f"| {r.layers} x {r.keeps} | {r.shape} | {r.solver} | {r.ran} | {r.seconds:.3f} | {r.time_limit:g} | "
            f"{r.status or r.error} | {_num(r.objective)} | {_num(r.lower_bound)} | {_num(r.excess)} | "
            f"{'' if gap is None else f'{100 * gap:.4g}%'} |"
        )
    return "\n".join(lines) + "\n\n<details><summary>Every run</summary>\n\n" + "\n".join(detail) + "\n\n</details>\n"


def report(sections: list[tuple[str, list[Run], list[str]]], command: str, total: float) -> str:
    """The generated markdown block (between the markers)."""
    today = datetime.date.today().isoformat()
    out = [
        START,
        f"Measured {today} on the CI-class machine: {machine()}.",
        f"Command: `{command}` ({total / 60:.1f} min in all).",
        "",
        "Cells: wall time of `solve_problem(...)`, then `opt` (proven optimal), `=opt` (the optimal value, not "
        "proven), `+x` (objective above the best proven optimum of the instance, in damage units; the "
        "detailed table also gives it relative to the optimum's magnitude), `gap x` (no proven optimum on "
        "the instance: objective minus the solver's own bound), `(limit)` (stopped by the time limit), "
        "`no schedule` (NoScheduleError), `LP stopped` (RelaxationLimitError).",
        "",
    ]
    for title, runs, solvers in sections:
        out += [f"#### {title}", "", tables(runs, solvers)]
    out.append(END)
    return "\n".join(out) + "\n"


def write(path: Path, block: str) -> None:
    """Replace the marked block of ``path`` (or write the whole file when it has no markers)."""
    if path.exists():
        text = path.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            tail = rest.split(END, 1)[1]
            path.write_text(head + block.rstrip("\n") + tail)
            return
    path.write_text("# Solver benchmark\n\n" + block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quota.bench.solvers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="markdown file to update (default: print the tables)")
    parser.add_argument("--layers", type=int, nargs="+", default=[30, 80], help="decoder layers per instance")
    parser.add_argument("--keeps", type=int, nargs="+", default=[17, 33, 65, 129], help="keep counts per layer")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES, help="damage curve shapes")
    parser.add_argument("--solvers", nargs="+", default=list(SOLVER_ORDER), choices=SOLVER_ORDER)
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per solve")
    parser.add_argument(
        "--big-time-limit", type=float, help="seconds per cpsat/mip solve at 80 or more layers (default: --time-limit)"
    )
    parser.add_argument("--budget", type=float, default=0.3, help="budget, a fraction of the all-tokens cost")
    parser.add_argument(
        "--latency",
        action="store_true",
        help="also run dp and auto on a float (latency) budget at 30 x 33 and 80 x 129",
    )
    args = parser.parse_args(argv)
    if args.big_time_limit is None:
        args.big_time_limit = args.time_limit
    start = time.perf_counter()
    sections = []
    runs = benchmark(
        args.layers, args.keeps, args.shapes, args.solvers, args.time_limit, args.big_time_limit, args.budget, "tokens"
    )
    sections.append((f"Token budget {args.budget:g}", runs, args.solvers))
    if args.latency:
        latency = []
        for n_layers, n_keeps in ((30, 33), (80, 129)):
            latency += benchmark(
                [n_layers],
                [n_keeps],
                args.shapes,
                ["dp", "auto", "cpsat"],
                args.time_limit,
                args.big_time_limit,
                args.budget,
                "latency",
            )
        title = f"Latency budget {args.budget:g} (float costs: the DP rounds its budget units)"
        sections.append((title, latency, ["dp", "auto", "cpsat"]))
    command = "python -m quota.bench.solvers " + " ".join(argv if argv is not None else sys.argv[1:])
    block = report(sections, command.strip(), time.perf_counter() - start)
    if args.out is None:
        print(block)
    else:
        write(args.out, block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
