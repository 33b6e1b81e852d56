"""`pwbench report RUN_DIR...`: tables and figures of runs as one offline index.html."""

from __future__ import annotations


from pwbench.cli.options import given_path


def add(sub):
    rep = sub.add_parser("report", help="tables, roofline and comparison figures as one index.html")
    rep.add_argument("runs", nargs="+", type=given_path, metavar="RUN_DIR", help="one or more run directories")
    rep.add_argument("--out", type=given_path, help="output directory (default: RUN_DIR/report for one run, "
                                              "results/report_<time> for several)")
    rep.add_argument("--peaks", type=given_path, metavar="FILE", help="replace every run's peaks (TOML/JSON)")
    rep.add_argument("--baseline", help="the backend speedups are relative to (default: torch "
                                        "where a run measured it, else its first backend)")
    rep.add_argument("--machines", type=given_path, metavar="FILE",
                     help="TOML with price_per_hour and watts per machine ([[machine]] match = ...)")
    rep.add_argument("--price", action="append", default=[], metavar="MATCH=USD_PER_HOUR",
                     help="price of a machine (a run label, hostname or run directory name)")
    rep.add_argument("--watts", action="append", default=[], metavar="MATCH=WATTS",
                     help="power draw of a machine")
    return rep


def main(args) -> int:
    from pwbench import report
    from pwbench.cli.console import console, warn

    costs = report.costs.parse(args.machines, args.price, args.watts)
    built = report.build(args.runs, args.out, peaks_file=args.peaks, baseline=args.baseline,
                         costs=costs, show=console.print)
    for warning in built.warnings:
        warn(warning)
    print(f"report: {built.index}")
    return 0
