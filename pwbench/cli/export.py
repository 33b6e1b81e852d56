"""`pwbench export RUN_DIR`: a run in another tool's format (pytest-benchmark JSON)."""

from __future__ import annotations


from pwbench.cli.options import given_path


def add(sub):
    exp = sub.add_parser("export", help="a run in another tool's format (pytest-benchmark JSON)")
    exp.add_argument("run", type=given_path, metavar="RUN_DIR")
    exp.add_argument("--format", choices=("pytest-benchmark",), default="pytest-benchmark")
    exp.add_argument("--output", type=given_path, metavar="FILE",
                     help="where to write (default: RUN_DIR/pytest-benchmark.json)")
    return exp


def main(args) -> int:
    from pwbench.cli.console import warn
    from pwbench.store import export

    path, warnings = export.export(args.run, args.format, args.output)
    for warning in warnings:
        warn(warning)
    print(path)
    return 0
