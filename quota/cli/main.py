"""``quota`` command line: one sub-command per module in ``quota.cli``; each module is thin (parse,
call the Python API, print with rich or ``--json``) and imports heavy libraries only when it runs."""

from __future__ import annotations

import argparse
import importlib
import sys

from quota.solvers.errors import InfeasibleError, SolverError  # numpy at most: --help loads no torch

# sub-command name -> module in quota.cli exposing ``register(subparsers)``
COMMANDS = {
    "bench": "quota.cli.bench",
    "eval": "quota.cli.eval",
    "solve": "quota.cli.solve",
    "inspect": "quota.cli.inspect",
    "profile": "quota.cli.profile",
    "apply": "quota.cli.apply",
    "data": "quota.cli.data",
    "quantize": "quota.cli.quantize",
}


class CommandError(Exception):
    """An error the user can fix: printed as one line, exit status 2."""


EXIT_INPUT = 2  # bad input: an option, a file, a profile or a recipe that is wrong (the message says which)
EXIT_SOLVER = 3  # the input was fine but no acceptable schedule came out (infeasible, time limit, gap)


def build_parser() -> argparse.ArgumentParser:
    from quota import __version__

    parser = argparse.ArgumentParser(
        prog="quota",
        description="Joint W4A4/KV4 quantization and solver-scheduled visual-token pruning for VLMs.",
    )
    parser.add_argument("--version", action="version", version=f"quota {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SolverError as err:
        outcome = isinstance(err, InfeasibleError) or not isinstance(err, ValueError)
        code = EXIT_SOLVER if outcome else EXIT_INPUT
        print(f"quota {args.command}: error: {err}", file=sys.stderr)
        return code
    except (CommandError, ValueError, FileNotFoundError, ImportError) as err:
        print(f"quota {args.command}: error: {err}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
