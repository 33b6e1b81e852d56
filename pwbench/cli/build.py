"""`pwbench build`: compile every kernel of a suite for a target, here, into a kernel bundle that
`pwbench run --kernels DIR` runs elsewhere (store/bundle.py), with each kernel's resources."""

from __future__ import annotations

import re
import time
from pathlib import Path

from pwbench.cli.options import add_workload, given_path


def add(sub):
    build = sub.add_parser("build", help="compile a suite's kernels into a kernel bundle, no GPU needed")
    add_workload(build, targets="cuda, or a TVM target", threads="threads (CPU targets)")
    build.set_defaults(target="cuda")
    build.add_argument("--arch", help="GPU arch to build for, e.g. sm_80 or sm_90 "
                                      "(default: the visible GPU's, else sm_90)")
    build.add_argument("--backend", default="tvm",
                       help="tvm (DLight schedules, default) or tvm-tuned (schedules from "
                            "--tuning-dir); comma-separated for both")
    build.add_argument("--output", type=given_path, required=True, metavar="DIR", help="bundle directory")
    build.add_argument("--tuning-dir", type=given_path, metavar="DIR",
                       help="tvm-tuned: the tuning database (tuned on the GPU the bundle is for)")
    return build


def main(args) -> int:
    from pwbench import backends, targets
    from pwbench.backends.base import Options
    from pwbench.backends.tuning_options import TuningOptions
    from pwbench.errors import UserError
    from pwbench.store import bundle
    from pwbench.workloads import suites

    target = targets.resolve(args.target)
    if args.arch:
        target = target.with_arch(args.arch)
    problem = target.build_problem()
    if problem:
        raise UserError(f"target {target.name}: kernels cannot be built here: {problem}")
    suite = suites.load(args.suite, batch=args.batch, layout=args.layout, dtype=args.dtype)
    layers = suites.select(suite.layers, args.filter)
    if not layers:
        raise UserError(f"--filter {args.filter!r} selects none of the {len(suite.layers)} "
                        f"layers of suite {suite.name}")
    if (args.output / bundle.MANIFEST).exists():
        raise UserError(f"{args.output} already holds a kernel bundle; choose another --output")
    names = [b.strip() for b in args.backend.split(",") if b.strip()]
    for name in names:
        backends.backend_class(name, target)  # unknown or unavailable: one line
        if backends.REGISTRY[name].stack != "tvm":
            raise UserError(f"backend {name} is not built ahead of time (its library picks its "
                            "kernels where it runs); 'pwbench run --kernels DIR' runs it there")
    key = target.kernel_key()
    work = args.output / re.sub(r"[^A-Za-z0-9._]+", "-", "_".join(map(str, key.values())))
    tuning = TuningOptions(tuning_dir=args.tuning_dir)
    options = Options(threads=args.threads, work_dir=work, extra={TuningOptions.group: tuning})
    made = {name: backends.backend_class(name, target)(target, options) for name in names}
    kernels, texts, seconds = _build_all(layers, made, args.output)
    meta = _meta(target, suite, made, kernels)
    kit = bundle.write(args.output, meta, layers, kernels, texts)
    _report(kit, seconds)
    return 1 if any(k.error for k in kernels) else 0


def _build_all(layers, made, out: Path):
    """Every distinct shape with every backend; a kernel that fails is recorded and skipped."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pwbench.cli.console import console
    from pwbench.measure.workers import describe_error
    from pwbench.store.bundle import Kernel

    shapes = list({s.id: s for s in layers}.values())
    kernels, texts, seconds = [], {}, []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("building", total=len(shapes) * len(made))
        for spec in shapes:
            for name, backend in made.items():
                progress.update(task, description=f"building {spec.label[:40]} [{name}]")
                start = time.perf_counter()
                try:
                    built = backend.build(spec)
                except Exception as exc:  # one kernel that fails to build must not lose the rest
                    kernels.append(Kernel(spec.id, name, error=describe_error(exc)))
                    console.print(f"[red]{escape(f'{spec.label} [{name}]')}:[/] "
                                  f"{escape(kernels[-1].error)}", markup=True)
                else:
                    for one in built if isinstance(built, list) else [built]:
                        texts[len(kernels)] = one.details
                        kernels.append(_kernel(spec, name, one, out))
                seconds.append(time.perf_counter() - start)
                progress.advance(task)
    return kernels, texts, seconds


def _kernel(spec, name, built, out: Path):
    from pwbench.store.bundle import Kernel

    if built.artifact is None:
        raise RuntimeError(f"backend {name} exports no library to put in a bundle")
    library = Path(built.artifact.library)
    return Kernel(spec.id, name, built.variant, library.relative_to(out).as_posix(),
                  built.details.get("device", ""), built.clock, dict(built.columns),
                  list(built.details.get("kernels", [])), artifact=built.artifact.to_dict())


def _meta(target, suite, made, kernels) -> dict:
    import datetime
    import sys

    import pwbench
    from pwbench import env

    versions = {k: v for b in made.values() for k, v in b.versions().items()}
    tuned_for = sorted({k.columns["tuned_for_gpu"] for k in kernels if k.columns.get("tuned_for_gpu")})
    built_for = target.kernel_key() | {"cuda_toolkit": versions.get("cuda_toolkit")}
    if tuned_for:
        built_for["tuned_for_gpu"] = tuned_for[0]
    return {"built_for": built_for, "tvm": versions.get("tvm"), "tvm_ffi": _ffi_version(),
            "target": target.name,
            "tvm_target": versions.get("tvm_target"), "versions": versions,
            "suite": suite.name, "suite_description": suite.description,
            "pwbench": pwbench.__version__, "git_commit": env.git_commit(),
            "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["pwbench", *sys.argv[1:]])}


def _ffi_version() -> str | None:
    """tvm_ffi's version (the ABI the libraries call), from its package metadata."""
    import importlib.metadata

    try:
        return importlib.metadata.version("apache-tvm-ffi")
    except importlib.metadata.PackageNotFoundError:
        return None


def _report(kit, seconds) -> None:
    from pwbench.cli import console
    from pwbench.store import bundle

    table = bundle.resource_table(kit)
    if table["registers"].notna().any():  # GPU kernels: what each one uses on an SM
        _resources(table, f"kernel resources ({kit.built_for.get('arch', '')}, "
                                         f"{kit.dir / bundle.RESOURCES})")
    built = [k for k in kit.kernels if not k.error]
    size = sum(f.stat().st_size for f in kit.dir.rglob("*") if f.is_file())
    per_kernel = sorted(seconds)
    console.console.print(
        f"bundle: {kit.dir} ({len(built)} of {len(kit.kernels)} kernels built, "
        f"{size / 2**20:.2f} MiB); build seconds per kernel: median "
        f"{per_kernel[len(per_kernel) // 2]:.2f} s, max {per_kernel[-1]:.2f} s, total "
        f"{sum(per_kernel):.1f} s", highlight=False)
    console.console.print(f"run it where the target is: pwbench run --target {kit.meta['target']} "
                          f"--kernels {kit.dir}", highlight=False)


def _resources(frame, title: str) -> None:
    """A GPU bundle's kernel resource table (store/bundle.py's resource_table): one row per
    device function; the device function's name only when some conv has several."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from pwbench.cli import console

    rows = [r for r in frame.to_dict("records") if not r.get("error")]
    several = any(r.get("kernel") not in (None, "main_kernel") for r in rows)
    layouts = len({r.get("layout") for r in rows}) > 1
    table = Table(title=title, title_justify="left")
    headers = ["layer", *(["layout"] if layouts else []), "backend", *(["kernel"] if several else []),
               "rule", "grid", "block", "regs", "smem B", "spill st/ld B", "local B", "blocks/SM",
               "occupancy", "limited by", "build s", "nvcc s"]
    text = ("layer", "layout", "backend", "kernel", "rule", "grid", "block", "limited by")
    for header in headers:
        table.add_column(header, no_wrap=True, justify="left" if header in text else "right")
    for r in rows:
        cells = [r["layer"], *([str(r.get("layout") or "-")] if layouts else []),
                 r["backend"] + (f" {r['variant']}" if r.get("variant") else ""),
                 *([str(r.get("kernel") or "-")] if several else []), *_resource_cells(r)]
        table.add_row(*map(escape, cells))
    # a log or CI has no width to fit: print the table whole rather than folded or cut
    (console.console if console.console.is_terminal else Console(width=1000)).print(table)
    for r in frame.to_dict("records"):
        if r.get("error"):
            console.console.print(f"[red]{escape(r['layer'])} [{escape(r['backend'])}]:[/] "
                                  f"{escape(r['error'])}")


def _resource_cells(r: dict) -> list[str]:
    from pwbench.cli.console import num, real

    smem = num(r.get("shared_bytes"))
    if num(r.get("dynamic_shared_bytes")) not in ("-", "0"):
        smem += f"+{num(r['dynamic_shared_bytes'])} dyn"
    local = sum(v for v in (r.get("stack_bytes"), r.get("local_bytes")) if real(v))
    tensor_cores = " (tensor cores)" if r.get("tensor_cores") in (True,) else ""  # NaN: no GPU kernel
    return [str(r.get("dlight_rule") or "-") + tensor_cores, str(r.get("grid") or "-"),
            str(r.get("block") or "-"), num(r.get("registers")), smem,
            f"{num(r.get('spill_store_bytes'))}/{num(r.get('spill_load_bytes'))}", f"{local:.0f}",
            num(r.get("blocks_per_sm")), num(r.get("occupancy"), "{:.2f}"),
            str(r.get("limited_by") or "-"), num(r.get("build_s"), "{:.2f}"),
            num(r.get("nvcc_s"), "{:.2f}")]
