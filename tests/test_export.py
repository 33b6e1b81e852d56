"""pwbench export --format pytest-benchmark: read back by pytest-benchmark itself."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runs_helper import pwbench, write_run

pytestmark = pytest.mark.unit

stats_mod = pytest.importorskip("pytest_benchmark.stats")
PB_COMPARE = shutil.which("pytest-benchmark", path=str(Path(sys.executable).parent))


@pytest.fixture
def exported(tmp_path):
    run = write_run(tmp_path / "run", {}, seed=1, checks={"pw": "failed"})
    proc = pwbench("export", run, "--format", "pytest-benchmark")
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path == run / "pytest-benchmark.json"
    return json.loads(path.read_text())


def test_one_benchmark_per_timed_kernel(exported):
    names = [b["name"] for b in exported["benchmarks"]]
    assert names == ["dw[torch-cpu]", "conv3[torch-cpu]"]  # pw failed; conv3.b shares conv3's kernel
    conv3 = exported["benchmarks"][1]
    assert conv3["extra_info"]["layers"] == ["conv3", "conv3.b"]
    assert exported["commit_info"]["id"] == "abc123" and exported["machine_info"]["node"] == "ci"


@pytest.mark.parametrize("rounds", [1, 7, 8, 9, 10, 30])
def test_statistics_match_pytest_benchmark(tmp_path, rounds):
    from pwbench.store import export

    data = [1e-3 * (1 + 0.01 * ((i * 7919) % 13)) for i in range(rounds)]
    ours = export.stats(data, 4)
    theirs = stats_mod.Stats()
    for value in data:
        theirs.update(value)
    expected = theirs.as_dict()
    for name, value in expected.items():
        assert ours[name] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-12)), name
    assert ours["data"] == data and ours["iterations"] == 4


@pytest.mark.skipif(PB_COMPARE is None, reason="pytest-benchmark's console script is not installed")
def test_pytest_benchmark_compare_reads_the_export(tmp_path):
    files = []
    for i, factor in ((1, 1.0), (2, 1.2)):
        run = write_run(tmp_path / f"run{i}", {"dw": factor}, seed=i)
        files.append(tmp_path / f"000{i}_pwbench.json")
        assert pwbench("export", run, "--output", files[-1]).returncode == 0
    proc = subprocess.run([PB_COMPARE, "compare", *files, "--columns", "median,rounds"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Failed to load" not in proc.stdout + proc.stderr
    lines = [ln.split() for ln in proc.stdout.splitlines() if "[torch-cpu] (" in ln]
    assert sorted((ln[0], ln[1][-13:-1]) for ln in lines) == sorted(
        (f"{k}[torch-cpu]", f"{i}_pwbench") for k in ("pw", "dw", "conv3") for i in ("0001", "0002"))
    assert {ln[-1] for ln in lines} == {"30"}  # every kernel's rounds, from both files
    dw = {ln[1]: float(ln[2].replace(",", "")) for ln in lines if ln[0] == "dw[torch-cpu]"}
    assert max(dw.values()) / min(dw.values()) == pytest.approx(1.2, rel=0.05)


def test_nothing_timed_or_not_a_run_is_bad_input(tmp_path):
    run = write_run(tmp_path / "run", {}, seed=1, checks={k: "failed" for k in ("pw", "dw", "conv3")})
    proc = pwbench("export", run)
    assert proc.returncode == 2 and "no kernel was timed" in proc.stderr
    proc = pwbench("export", tmp_path / "nothing", "--format", "pytest-benchmark")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = pwbench("export", run, "--format", "asv")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
