"""The `pwbench` command line. Each command is one module of this package with `add(subparsers)`
and `main(args) -> exit status`; this module only wires them.

Exit status: 0 done; 1 a kernel failed its check or could not run, or `compare` found a
regression or missing kernels; 2 bad input (one line on stderr, never a traceback), an
unwritable output among it; 128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP;
cli/signals.py), 141 standard output closed by its reader (cli/streams.py); 70 a bug in pwbench
(its traceback, then one line)."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from pwbench.cli import signals, streams
from pwbench.errors import UserError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = signals.EXIT_INTERRUPTED
EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: not 1, which means a kernel failed its check
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
    with signals.stop_like_ctrl_c(), streams.guarded() as (out, _):
        return streams.exit_status(_command(argv), out)


def _command(argv) -> int:
    """Parse and run one command; what it raises becomes one line and an exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args.main(args)
    except UserError as exc:
        print(f"pwbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as stop:  # anywhere: reading CPU facts, printing a table
        print(f"pwbench: {signals.what(stop)}", file=sys.stderr)
        return signals.exit_status(stop)
    except Exception as exc:  # noqa: BLE001 - a bug: its traceback is what a report needs
        traceback.print_exc()
        print(f"pwbench: internal error ({type(exc).__name__}): a bug in pwbench, please report "
              "it with the traceback above", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
