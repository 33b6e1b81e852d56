"""A runtime-only TVM (and pwbench) for a GPU machine that only runs kernel bundles.

    python scripts/make_tvm_runtime.py --out rt312                  # cp312 wheels (pip download)
    python scripts/make_tvm_runtime.py --out rt311 --python-version 3.11 --from-installed
    python scripts/make_tvm_runtime.py --out rt312 --with-numpy --no-tar

Writes OUT/site/ (tvm without its compiler, tvm_ffi, typing_extensions, pwbench; numpy with
--with-numpy) and OUT.tar.xz next to it, for CPython --python-version (default 3.12, the GPU
machine's): tvm_ffi is a compiled extension of one CPython version, so the wheels of that version
are downloaded (into the pwbench cache, never beside OUT: they would travel with it), and
--from-installed is refused unless this interpreter is that version. The site is checked before
the script ends: tvm_ffi's extension for that version, TVM's runtime libraries, no compiler. On
the GPU machine (Python of the wheels' version, an NVIDIA driver for CUDA 13, torch with CUDA,
pandas, pyarrow, rich, nvidia-ml-py):

    tar xf rt312.tar.xz
    PYTHONPATH=$PWD/rt312/site python3 -m pwbench run --target cuda --kernels BUNDLE

Dropped, since that machine never compiles: tvm/lib/libtvm_compiler.so (253 MB: LLVM and every
pass), tvm/3rdparty (CUTLASS headers), tvm/src, tvm/include, tvm/web, CMake files, tvm_ffi's
3rdparty and headers. Kept: tvm_ffi/lib/libtvm_ffi_testing.so (tvm_ffi's core module links it).
Added: libcudart.so.13 beside tvm/lib/libtvm_runtime_cuda.so (its RUNPATH is $ORIGIN; the wheel
does not ship it). pwbench's tvm_bridge.runtime loads libtvm_runtime_cuda.so itself, since a
runtime-only `import tvm` skips it. About 21 MiB (4 MiB as tar.xz), 75 MiB with numpy.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

TVM, TVM_FFI = "apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1"  # pyproject's pins
TYPING = "typing-extensions==4.16.0"  # tvm_ffi.registry imports it
NUMPY = "numpy==2.4.6"  # `import tvm` needs numpy (ml_dtypes is optional)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64")
DROP = ("tvm/lib/libtvm_compiler.so", "tvm/3rdparty", "tvm/src", "tvm/include", "tvm/web",
        "tvm/cmake", "tvm/lib64", "tvm_ffi/3rdparty", "tvm_ffi/include", "tvm_ffi/cmake")
CUDART = ("/usr/local/cuda/lib64/libcudart.so.13", "/usr/local/cuda/lib/libcudart.so.13")
ROOT = Path(__file__).resolve().parents[1]


def wheel_cache(python: str) -> Path:
    """Where downloaded wheels are kept: the pwbench cache, outside any output folder."""
    base = os.environ.get("PWBENCH_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pwbench"
    return Path(base) / "wheels" / f"cp{python.replace('.', '')}"


def download(dest: Path, python: str, numpy: bool) -> list[Path]:
    """The wheels for `python` (e.g. 3.12) through pip, trying manylinux tags newest first."""
    wanted = [TVM, TVM_FFI, TYPING] + ([NUMPY] if numpy else [])
    for platform in PLATFORMS:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary=:all:",
                               "--no-deps", "--python-version", python, "--platform", platform,
                               "-d", str(dest), *wanted], capture_output=True, text=True)
        if done.returncode == 0:
            break
    else:
        raise SystemExit(f"pip download found no wheels for Python {python}: {done.stderr[-300:]}")
    tag = "cp" + python.replace(".", "")
    names = [f"apache_tvm-{TVM.split('==')[1]}-", f"apache_tvm_ffi-{TVM_FFI.split('==')[1]}-{tag}-",
             f"typing_extensions-{TYPING.split('==')[1]}-"]
    names += [f"numpy-{NUMPY.split('==')[1]}-{tag}-"] if numpy else []
    wheels = [w for n in names for w in sorted(dest.glob(f"{n}*.whl"))[:1]]
    if len(wheels) != len(names):
        raise SystemExit(f"expected {len(names)} wheels in {dest}, found {[w.name for w in wheels]}")
    return wheels


def dropped(name: str) -> bool:
    return any(name == d or name.startswith(d + "/") for d in DROP) or "__pycache__" in name


def extract(wheels: list[Path], site: Path) -> None:
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                if dropped(info.filename):
                    continue
                archive.extract(info, site)
                mode = info.external_attr >> 16
                if mode:
                    os.chmod(site / info.filename, mode & 0o777)


def copy_installed(site: Path, packages=("tvm", "tvm_ffi", "typing_extensions")) -> None:
    for name in packages:
        origin = Path(importlib.util.find_spec(name).origin)
        if origin.name != "__init__.py":  # a single-file module
            shutil.copy2(origin, site / origin.name)
            continue
        shutil.copytree(origin.parent, site / name, symlinks=True, ignore=lambda d, names: [
            n for n in names if dropped(os.path.relpath(os.path.join(d, n), origin.parent.parent))])


def size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def problems(site: Path, python: str) -> list[str]:
    """What a runtime site for CPython `python` lacks or must not hold (empty when it is whole)."""
    tag = f"cpython-{python.replace('.', '')}-"
    found = []
    extension = list((site / "tvm_ffi").glob(f"core.{tag}*.so"))
    others = [p.name for p in (site / "tvm_ffi").glob("core.cpython-*.so") if tag not in p.name]
    if not extension:
        found.append(f"tvm_ffi's extension for CPython {python} (tvm_ffi/core.{tag}*.so)")
    if others:
        found.append(f"tvm_ffi's extension for another Python: {', '.join(others)}")
    for name in ("tvm/lib/libtvm_runtime.so", "tvm/lib/libtvm_runtime_cuda.so",
                 "tvm_ffi/lib/libtvm_ffi.so", "tvm_ffi/lib/libtvm_ffi_testing.so",
                 "tvm/__init__.py", "tvm_ffi/__init__.py",
                 "pwbench/tvm_bridge/runtime.py", "typing_extensions.py"):
        if not (site / name).exists():
            found.append(f"{name} is missing")
    if (site / "tvm" / "lib" / "libtvm_compiler.so").exists():
        found.append("tvm/lib/libtvm_compiler.so is there (a runtime never compiles)")
    return found


def build(out: Path, python: str, wheels: Path | None = None, from_installed: bool = False,
          numpy: bool = False, cudart: str | None = None) -> Path:
    """OUT/site for CPython `python`; raises SystemExit with one line when it cannot be made."""
    here = "%d.%d" % sys.version_info[:2]
    if from_installed and here != python:
        raise SystemExit(f"--from-installed copies this interpreter's tvm_ffi, built for Python "
                         f"{here}, not {python}: run it with Python {python}, or drop "
                         "--from-installed to use the wheels of that version")
    out = out.resolve()
    wheels = (wheels or wheel_cache(python)).resolve()
    if wheels == out or out in wheels.parents:
        raise SystemExit(f"--wheels {wheels} is inside --out {out}: the downloads would travel "
                         "with the runtime; keep them elsewhere")
    shutil.rmtree(out, ignore_errors=True)
    site = out / "site"
    site.mkdir(parents=True)
    if from_installed:
        copy_installed(site)
    else:
        extract(download(wheels, python, numpy), site)
    shutil.copytree(ROOT / "pwbench", site / "pwbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "suites", site / "suites")  # pwbench finds its suites beside the package
    cudart = cudart or next((c for c in CUDART if os.path.exists(c)), None)
    if cudart:
        shutil.copy2(os.path.realpath(cudart), site / "tvm" / "lib" / "libcudart.so.13")
    else:
        print("note: no libcudart.so.13 here (--cudart PATH): the GPU machine must have one")
    wrong = problems(site, python)
    if wrong:
        raise SystemExit(f"the runtime in {out} is not whole: {'; '.join(wrong)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--python-version", default="3.12", help="of the GPU machine (default 3.12)")
    parser.add_argument("--wheels", type=Path,
                        help="where the wheels are or go (default: the pwbench cache, wheels/cpXY)")
    parser.add_argument("--from-installed", action="store_true",
                        help="copy this interpreter's tvm and tvm_ffi (only for its own version)")
    parser.add_argument("--with-numpy", action="store_true", help="for a machine without numpy")
    parser.add_argument("--cudart", help="libcudart.so.13 to add (default: the CUDA toolkit's)")
    parser.add_argument("--no-tar", action="store_true")
    args = parser.parse_args()
    try:
        out = build(args.out, args.python_version, args.wheels, args.from_installed,
                    args.with_numpy, args.cudart)
    except SystemExit as exc:
        print(f"make_tvm_runtime: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{out}: {size_mib(out):.1f} MiB")
    if not args.no_tar:
        tar = out.with_name(out.name + ".tar.xz")
        with tarfile.open(tar, "w:xz", preset=6) as archive:
            archive.add(out, arcname=out.name)
        print(f"{tar}: {tar.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
