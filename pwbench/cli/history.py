"""`pwbench history`: recorded runs, a layer's trend across runs and commits; `history add`."""

from __future__ import annotations

import argparse
import math
import sys

from pwbench.cli.options import add_db, given_path
from pwbench.errors import UserError


def add(sub):
    from pwbench.cli import Parser

    hist = sub.add_parser("history", help="recorded runs; a layer's trend across runs and commits")
    hist.add_argument("--layer", help="a layer name or spec id (substring or glob): show its trend")
    hist.add_argument("--backend", help="only this backend")
    hist.add_argument("--fingerprint", help="only runs with this environment fingerprint")
    hist.add_argument("--format", choices=("table", "json"), default="table")
    add_db(hist)
    hist_sub = hist.add_subparsers(dest="history_command", parser_class=Parser)
    hist_add = hist_sub.add_parser("add", help="record run directories in the history database")
    hist_add.add_argument("runs", nargs="+", type=given_path, metavar="RUN_DIR")
    add_db(hist_add, argparse.SUPPRESS)  # `history --db X add` and `history add --db X`
    return hist


def main(args) -> int:
    from pwbench.store import history

    if args.history_command == "add":
        conn = history.connect(args.db)
        for run in args.runs:
            run_id, added = history.add(conn, run, warn=_warn)
            print(f"{run}: {'recorded as' if added else 'already recorded as'} run {run_id}")
        return 0
    conn = history.connect(args.db, create=False)
    if args.layer:
        frame = history.trend(conn, args.layer, args.backend, args.fingerprint)
        if frame.empty:
            raise UserError(f"no recorded layer matches {args.layer!r}")
    else:
        frame = history.runs(conn)
        if args.fingerprint:
            frame = frame[frame["fingerprint"] == args.fingerprint]
    if args.format == "json":
        print(frame.to_json(orient="records", indent=2))
    else:
        print_table(frame, f"history: {args.layer}" if args.layer else "recorded runs")
    return 0


def _warn(text: str) -> None:
    print(f"pwbench: warning: {text}", file=sys.stderr)


def print_table(frame, title: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from pwbench.cli.console import console

    table = Table(title=title, title_justify="left")
    frame = frame.drop(columns=[c for c in ("spec_id", "run_dir") if c in frame.columns])
    for col in frame.columns:
        table.add_column(col, justify="right" if frame[col].dtype.kind in "if" else "left")
    for rec in frame.itertuples(index=False):
        table.add_row(*[escape(_cell(col, value)) for col, value in zip(frame.columns, rec)])
    console.print(table)


def _cell(column: str, value) -> str:
    from pwbench.units import format_seconds

    if column == "median_s":
        return format_seconds(value)
    if column == "instructions":
        return "-" if value is None or math.isnan(value) else f"{value:,.0f}"
    if column == "vs_first":
        return "-" if value is None or math.isnan(value) else f"{(value - 1) * 100:+.1f} %"
    if column == "git_commit":
        return str(value or "")[:12] + ("-dirty" if str(value).endswith("-dirty") else "")
    return "" if value is None else str(value)
