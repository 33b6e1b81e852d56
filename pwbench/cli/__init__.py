"""The `pwbench` command line. Each command is one module of this package with `add(subparsers)`
and `main(args) -> exit status`; this module only wires them. Bad input is one line on stderr
and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys

from pwbench.errors import UserError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
COMMANDS = ("run", "build", "tune", "list", "env", "peaks", "report", "compare", "history", "export",
            "suite", "fleet")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the whole usage first
        raise UserError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pwbench", description="Benchmark and autotune pointwise, depthwise and "
                                                "full convolutions across hardware and stacks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        command = _module(name)
        command.add(sub).set_defaults(main=command.main)
    return parser


def _module(name: str):
    return importlib.import_module(f"pwbench.cli.{name}")


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.main(args)
    except UserError as exc:
        print(f"pwbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
