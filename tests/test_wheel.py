"""The wheel works anywhere: built from this tree, installed (not editable) into a fresh virtual
environment, run from another folder. The environment borrows this one's installed dependencies
through a .pth line (no download, no index); pwbench itself comes only from the wheel."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.cli

REPO = Path(__file__).resolve().parents[1]
BUILTIN = sorted(p.stem for p in (REPO / "suites").glob("*.toml"))


def _run(*args, cwd=None, timeout=300):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh environment with the wheel installed; returns its bin directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a clean copy: no build/ or egg-info of an earlier build leaks in
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("pwbench", "suites"):
        shutil.copytree(REPO / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", tmp / "dist", source)
    (wheel,) = (tmp / "dist").glob("pwbench-*.whl")
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    bin_dir = venv / "bin"
    site = Path(_run(bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                                               "['purelib'])").stdout.strip())
    # this environment's dependencies, appended after the new site-packages; its .pth files (the
    # editable pwbench's finder among them) are not processed from there
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "borrowed_dependencies.pth").write_text("\n".join(deps) + "\n")
    _run(sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "-q",
         "--no-deps", "--no-index", wheel)
    return bin_dir


def test_the_wheel_carries_the_builtin_suites(installed, tmp_path):
    where = _run(installed / "python", "-c", "import pwbench; print(pwbench.__file__)",
                 cwd=tmp_path).stdout.strip()
    assert where.startswith(str(installed.parent)), where  # the wheel's pwbench, not this tree's
    assert (Path(where).parent / "suites" / "default.toml").is_file()
    listed = _run(installed / "pwbench", "list", "suites", cwd=tmp_path).stdout
    for name in BUILTIN:
        assert name in listed, listed


def test_a_tiny_run_from_another_folder(installed, tmp_path):
    proc = _run(installed / "pwbench", "run", "--suite", "ci", "--filter", "kind == 'pointwise'",
                "--backend", "torch", "--processes", "1", "--threads", "1", "--warmup-ms", "1",
                "--sample-ms", "5", "--output", "out", cwd=tmp_path)
    assert "passed" in proc.stdout
    assert (tmp_path / "out" / "records.parquet").is_file()
