"""`pwbench list suites|backends|targets`: what is there, and why something is unavailable."""

from __future__ import annotations


def add(sub):
    lst = sub.add_parser("list", help="list suites, backends or targets")
    lst.add_argument("what", choices=("suites", "backends", "targets"))
    return lst


def main(args) -> int:
    from rich.table import Table

    from pwbench.cli.console import console

    table = Table(title=args.what, title_justify="left")
    for col in COLUMNS[args.what]:
        table.add_column(col)
    for row in ROWS[args.what]():
        table.add_row(*row)
    console.print(table)
    return 0


def _suites():
    from rich.markup import escape

    from pwbench.workloads import suites

    for name in suites.builtin_suites():
        s = suites.load(name)
        yield escape(name), str(len(s.layers)), f"{s.gflops:.2f}", escape(s.description)


def _backends():
    from pwbench import backends

    for name, info in backends.REGISTRY.items():
        reason = backends.unavailable_reason(name)
        status = "[green]ready[/]" if reason is None else f"[red]unavailable:[/] {reason}"
        yield name, info.stack, status, info.description


def _targets():
    from pwbench import targets

    for name, make in targets.TARGETS.items():
        target = make()
        build, run = target.build_problem(), target.run_problem()
        status = ("[green]available[/]" if not build and not run else
                  f"[yellow]build only[/]: {run}" if not build else
                  f"[yellow]run only[/] (kernels built elsewhere): {build}" if not run else
                  f"[red]unavailable[/]: {build}")
        yield name, status, target.description


COLUMNS = {"suites": ("suite", "layers", "GFLOPs (weighted)", "description"),
           "backends": ("backend", "stack", "status", "description"),
           "targets": ("target", "status here", "description")}
ROWS = {"suites": _suites, "backends": _backends, "targets": _targets}
