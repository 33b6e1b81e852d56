"""`pwbench compare BASE... NEW`: a regression verdict per kernel; exit 1 when NEW is slower or
broken, or lacks kernels BASE measured (unless --accept-missing)."""

from __future__ import annotations

import sys

from pwbench.cli.options import add_db, given_path, positive_int
from pwbench.errors import UserError


def add(sub):
    cmp = sub.add_parser("compare", help="regression verdict per kernel: exit 1 when NEW is slower "
                                         "or broken")
    cmp.add_argument("runs", nargs="+", type=given_path, metavar="RUN_DIR",
                     help="BASE NEW; BASE... NEW for a baseline of several runs of the same code "
                          "(or BASE a folder of such runs), whose spread enters the verdict; only "
                          "NEW with --against-history")
    cmp.add_argument("--threshold", default="5%", help="smallest change that counts (default 5%%)")
    cmp.add_argument("--count-threshold", default="2%",
                     help="rows of --clock instructions: smallest change of instructions per call "
                          "that counts, a plain threshold (default 2%%, 4x the noise floor)")
    cmp.add_argument("--format", choices=("table", "md", "json"), default="table",
                     help="table (terminal), md (a CI comment) or json")
    cmp.add_argument("--all", action="store_true", help="list every kernel, not only the changed ones")
    cmp.add_argument("--accept-missing", action="store_true",
                     help="pass even when NEW lacks kernels BASE measured (a run cut short, another "
                          "filter): compare only what both have")
    cmp.add_argument("--against-history", action="store_true",
                     help="compare NEW with the recent recorded runs of its environment fingerprint")
    cmp.add_argument("--history-runs", type=positive_int, default=5, metavar="N",
                     help="with --against-history: how many recent runs to pool (default 5)")
    add_db(cmp)
    return cmp


def main(args) -> int:
    from pwbench.analysis import compare, compare_output

    threshold = compare.parse_threshold(args.threshold)
    count_threshold = compare.parse_threshold(args.count_threshold, "--count-threshold")
    if args.against_history:
        from pwbench.store import history

        if len(args.runs) != 1:
            raise UserError(f"compare --against-history takes one NEW run directory, got {len(args.runs)}")
        db = args.db or history.default_path()
        result = compare.compare_with_history(history.connect(db, create=False), args.runs[0],
                                              threshold, args.history_runs, str(db),
                                              count_threshold)
    elif len(args.runs) < 2:
        raise UserError(f"compare takes BASE and NEW run directories, got {len(args.runs)}")
    else:
        result = compare.compare_runs(args.runs[:-1], args.runs[-1], threshold, count_threshold)
    if args.format == "table":
        print_table(result, args.all, args.accept_missing)
    else:
        print(compare_output.to_markdown(result, args.accept_missing) if args.format == "md"
              else compare_output.to_json(result), end="")
        for warning in result.warnings:
            print(f"pwbench: warning: {warning}", file=sys.stderr)
    missing = result.missing and not args.accept_missing
    if missing:
        print(f"pwbench: {compare_output.missing_line(result)}", file=sys.stderr)
    return 1 if result.regressions or missing else 0


STYLE = {"slower": "bold red", "failed": "bold red", "faster": "green", "fixed": "green",
         "uncertain": "yellow", "missing": "yellow", "new": "cyan", "not timed": "dim"}


def print_table(result, show_all: bool = False, accept_missing: bool = False) -> None:
    from rich.markup import escape
    from rich.table import Table

    from pwbench.analysis.compare_output import COLUMNS, cells, changed, summary_line
    from pwbench.cli.console import console

    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    rows = result.rows if show_all else changed(result)
    if rows:
        table = Table(title=escape(f"pwbench compare {result.base} -> {result.new}"),
                      title_justify="left")
        for col in COLUMNS:
            table.add_column(col, justify="right" if col in ("base", "new", "change") else "left",
                             overflow="fold")
        for r in rows:
            row = [escape(c) for c in cells(r)]
            style = STYLE.get(r.verdict)
            table.add_row(f"[{style}]{row[0]}[/]" if style else row[0], *row[1:])
        console.print(table)
    console.print(escape(summary_line(result, accept_missing)))
