"""Measured peaks (positive, under a physical bound), the roofline arithmetic with fixed peaks,
the peaks override file and the per-fingerprint cache."""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pwbench import env, targets
from pwbench.targets import peak_kernels, peaks
from pwbench.targets.host import HostCPU
from pwbench.analysis import roofline
from pwbench.errors import UserError

pytestmark = pytest.mark.cpu

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "runs" / "pairs_1t"
PWBENCH = shutil.which("pwbench", path=str(Path(sys.executable).parent)) or shutil.which("pwbench")
CPU = targets.resolve("cpu")
MAX_GHZ = 6.0  # no shipping CPU core sustains more (the fastest boost clocks are ~6.2 GHz, on 1-2
#               cores only, and FMA-heavy code runs below the boost clock)


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("PWBENCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One real measurement on one thread, with a short repeat budget (about 2 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PWBENCH_CACHE_DIR", raising=False)
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        mp.setattr(peak_kernels, "REPEAT_BUDGET_S", 0.1)
        return CPU.measure_peaks(1)


# ---- measured peaks --------------------------------------------------------------------------

def test_measured_peaks_are_positive_and_the_best_candidate(measured):
    assert measured.flops_per_s > 0 and measured.bytes_per_s > 0
    assert measured.source == "measured" and measured.threads == 1 and measured.target == "cpu"
    assert measured.flops_candidates[measured.flops_method] == measured.flops_per_s
    assert measured.bytes_candidates[measured.bytes_method] == measured.bytes_per_s
    assert measured.flops_per_s == max(measured.flops_candidates.values())
    assert measured.bytes_per_s == max(measured.bytes_candidates.values())
    for value in [*measured.flops_candidates.values(), *measured.bytes_candidates.values()]:
        assert math.isfinite(value) and value > 0
    assert any(m.startswith("GEMM") for m in measured.flops_candidates)
    assert any(m.startswith("STREAM triad") for m in measured.bytes_candidates)
    if shutil.which("cc") or shutil.which("gcc"):  # the FMA kernel runs wherever it can be built
        assert any(m.startswith("FMA kernel") for m in measured.flops_candidates), measured.notes


def _cpuinfo_flags() -> set:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return set(value.split())
    return set()


def fp32_fma_per_cycle(flags: set) -> int | None:
    """fp32 FMAs one core can issue per cycle, at most, from its widest vector extension.

    No x86 core has more than two FMA pipes of its widest width (Skylake-SP to Sapphire Rapids:
    2 x 512 bit; Zen 2-4: 2 x 256 bit, Zen 5: 2 x 512 bit). ARM cores with NEON have at most four
    128-bit FMA pipes (Apple M1-M4, Neoverse V2). SVE is counted as 2 x 2048 bit, the largest
    vector the architecture allows, so the bound cannot be too tight there."""
    if flags & {"sve", "sve2"}:
        return 2 * 64
    if "avx512f" in flags:
        return 2 * 16
    if flags & {"avx", "avx2", "fma"}:
        return 2 * 8
    if flags & {"asimd", "neon"}:
        return 4 * 4
    if "sse2" in flags or "sse4_2" in flags:
        return 2 * 4
    return None


def test_measured_flops_are_under_the_physical_bound_of_the_cores_used(measured):
    """Measured on 1 thread: at most one core's FMA throughput x 2 FLOP x a 6 GHz clock. A higher
    figure means the kernel was optimised away or its FLOPs are miscounted."""
    per_cycle = fp32_fma_per_cycle(_cpuinfo_flags()) if Path("/proc/cpuinfo").exists() else None
    if per_cycle is None:
        pytest.skip("no /proc/cpuinfo flags of a known vector extension")
    bound = 1 * per_cycle * 2 * MAX_GHZ * 1e9
    for method, flops in measured.flops_candidates.items():
        assert flops <= bound, f"{method}: {flops / 1e9:.0f} GFLOP/s > {bound / 1e9:.0f} GFLOP/s"
    assert measured.physical_bound_flops_per_s >= measured.flops_per_s


@pytest.mark.parametrize("flags, cores, real_peak", [
    (["asimd"], 1, 4 * 4 * 2 * 3.2e9),  # Apple M1 P-core: 4 x 128-bit FMA at 3.2 GHz
    (["avx", "avx2", "fma"], 1, 2 * 8 * 2 * 5.7e9),  # Zen 4 desktop at 5.7 GHz boost
    (["avx", "avx2", "fma", "avx512f"], 2, 2 * 2 * 16 * 2 * 3.8e9),  # Ice Lake-SP, 2 cores
    (["sve", "asimd"], 1, 2 * 16 * 2 * 2.2e9),  # A64FX: 2 x 512-bit FMA at 2.2 GHz
])
def test_the_recorded_physical_bound_is_above_real_chips(flags, cores, real_peak):
    assert peaks.physical_flops_bound(flags, cores) >= real_peak


# ---- roofline arithmetic with fixed peaks ----------------------------------------------------

FIXED = peaks.Peaks(flops_per_s=100e9, bytes_per_s=20e9, flops_method="given",
                    bytes_method="given")  # ridge at 5 FLOP/byte


def test_ridge_is_where_the_two_roofs_meet():
    assert FIXED.ridge == pytest.approx(5.0)
    assert roofline.attainable_flops_per_s(FIXED.ridge, 100e9, 20e9) == pytest.approx(100e9)
    attainable = roofline.attainable_flops_per_s([0.5, 5.0, 50.0], 100e9, 20e9)
    assert list(attainable) == pytest.approx([10e9, 100e9, 100e9])


@pytest.mark.parametrize("flops, nbytes, expected_s, bound", [
    (2e6, 1e6, 1e6 / 20e9, "memory"),  # 2 FLOP/B: bytes / bandwidth
    (1e9, 1e6, 1e9 / 100e9, "compute"),  # 1000 FLOP/B: flops / peak
    (5e6, 1e6, 5e6 / 100e9, "compute"),  # at the ridge both bounds agree
])
def test_roofline_time_is_the_larger_of_the_two_bounds(flops, nbytes, expected_s, bound):
    assert roofline.bound_s(flops, nbytes, 100e9, 20e9) == pytest.approx(expected_s)
    row = roofline.row_columns(flops, nbytes, "float32", 4 * expected_s, FIXED)
    assert row["roofline_s"] == pytest.approx(expected_s)
    assert row["pct_of_roof"] == pytest.approx(25.0)
    assert row["bound"] == bound


def test_no_roofline_without_peaks_or_for_another_dtype():
    for columns in (roofline.row_columns(1e6, 1e6, "float32", 1e-3, None),
                    roofline.row_columns(1e6, 1e6, "float16", 1e-3, FIXED)):
        assert math.isnan(columns["roofline_s"]) and math.isnan(columns["pct_of_roof"])
        assert columns["bound"] == ""
    untimed = roofline.row_columns(1e6, 1e6, "float32", math.nan, FIXED)
    assert untimed["roofline_s"] == pytest.approx(5e-5) and math.isnan(untimed["pct_of_roof"])


def test_each_recorded_roofline_bound_is_consistent_with_its_flops_and_bytes():
    meta = json.loads((FIXTURE_RUN / "meta.json").read_text())
    recorded = peaks.Peaks.from_dict(meta["peaks"], "fixture")
    rows = pd.read_json(FIXTURE_RUN / "records.jsonl", lines=True)
    assert len(rows) == 8
    for r in rows.itertuples():
        assert r.intensity == pytest.approx(r.flops / r.bytes)
        expected = max(r.flops / recorded.flops_per_s, r.bytes / recorded.bytes_per_s)
        assert r.roofline_s == pytest.approx(expected, rel=1e-9)
        assert r.pct_of_roof == pytest.approx(100 * expected / r.median_s, rel=1e-9)
        assert r.bound == ("memory" if r.intensity < recorded.ridge else "compute")
        assert r.roofline_s <= r.median_s  # no kernel beats its roof
    recomputed = roofline.add_columns(rows.drop(columns=list(roofline.COLUMNS)), recorded)
    assert list(recomputed["roofline_s"]) == pytest.approx(list(rows["roofline_s"]))


# ---- the override file -----------------------------------------------------------------------

@pytest.mark.parametrize("name, text", [
    ("peaks.toml", "flops_per_s = 2.0e12\nbytes_per_s = 1.0e11\n"),
    ("peaks.toml", "[peaks]\nflops_per_s = 2.0e12\nbytes_per_s = 1.0e11\nflops_method = \"datasheet\"\n"),
    ("peaks.json", '{"flops_per_s": 2e12, "bytes_per_s": 1e11}'),
])
def test_peaks_file_replaces_the_measurement(tmp_path, monkeypatch, name, text):
    path = tmp_path / name
    path.write_text(text)
    monkeypatch.setattr(HostCPU, "measure_peaks", lambda *a: pytest.fail("measured despite a peaks file"))
    given = peaks.for_run(CPU, 1, override=path)
    assert (given.flops_per_s, given.bytes_per_s) == (2e12, 1e11)
    assert given.ridge == pytest.approx(20.0)
    assert given.source == f"file {path}"
    assert given.flops_method in ("given", "datasheet")


@pytest.mark.parametrize("name, text, says", [
    ("bad.toml", "flops_per_s = = 1\n", "malformed"),
    ("bad.json", "{not json", "malformed"),
    ("bad.json", "[1, 2]", "flops_per_s"),
    ("bad.toml", "flops_per_s = 1e12\n", "bytes_per_s"),
    ("bad.toml", "flops_per_s = -1.0\nbytes_per_s = 1e10\n", "flops_per_s must be a positive"),
    ("bad.toml", "flops_per_s = \"1 TFLOP/s\"\nbytes_per_s = 1e10\n", "flops_per_s"),
    ("bad.toml", "flops_per_s = 1e12\nbytes_per_s = 1e10\ngflops = 1000\n", "unknown peak field"),
    ("bad.toml", "peaks = 3\n", "must be a table"),
])
def test_a_malformed_peaks_file_is_a_user_error_naming_it(tmp_path, name, text, says):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError, match=says) as info:
        peaks.load_file(path)
    assert str(path) in str(info.value)


def test_a_missing_peaks_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="peaks file .*nope.toml does not exist"):
        peaks.load_file(tmp_path / "nope.toml")


@pytest.mark.cli
def test_run_with_a_malformed_peaks_file_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("flops_per_s = 1e12\n")
    proc = subprocess.run([PWBENCH, "run", "--peaks", str(path), "--output", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("pwbench: error:") and str(path) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


# ---- the cache -------------------------------------------------------------------------------

@pytest.fixture
def fake_measure(monkeypatch):
    """The target's measure_peaks without the seconds of measuring: each call returns distinct
    figures."""
    calls = []

    def measure(target, threads):
        calls.append(threads)
        return peaks.Peaks(flops_per_s=1e11 * len(calls), bytes_per_s=1e10, flops_method="fake",
                           bytes_method="fake", target=target.name, threads=threads,
                           fingerprint=peaks.fingerprint(target, threads))

    monkeypatch.setattr(HostCPU, "measure_peaks", measure)
    return calls


def test_peaks_are_measured_once_per_fingerprint(cache_home, fake_measure):
    announced = []
    first = peaks.for_run(CPU, 1, on_measure=lambda: announced.append(1))
    assert first.source == "measured" and fake_measure == [1] and announced == [1]
    assert [p.parent.name for p in cache_home.rglob("*.json")] == ["peaks"]

    again = peaks.for_run(CPU, 1, on_measure=lambda: announced.append(1))
    assert again.source == "cache" and fake_measure == [1] and announced == [1]
    assert dataclasses.replace(again, source="measured") == first

    other_threads = peaks.for_run(CPU, 2)
    assert other_threads.source == "measured" and fake_measure == [1, 2]
    assert other_threads.fingerprint != first.fingerprint
    assert peaks.for_run(CPU, 2).source == "cache" and fake_measure == [1, 2]


def test_new_library_versions_or_refresh_measure_again(cache_home, fake_measure, monkeypatch):
    peaks.for_run(CPU, 1)
    assert peaks.for_run(CPU, 1, refresh=True).source == "measured" and len(fake_measure) == 2
    real = peaks.importlib.metadata.version
    monkeypatch.setattr(peaks.importlib.metadata, "version",
                        lambda name: "99.0" if name == "torch" else real(name))
    assert peaks.for_run(CPU, 1).source == "measured" and len(fake_measure) == 3


def test_a_corrupt_cache_entry_is_measured_again(cache_home, fake_measure):
    peaks.for_run(CPU, 1)
    (entry,) = cache_home.rglob("*.json")
    entry.write_text("{ truncated")
    assert peaks.for_run(CPU, 1).source == "measured" and len(fake_measure) == 2
    assert json.loads(entry.read_text())["flops_per_s"] == 2e11  # rewritten


def test_cache_directory_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PWBENCH_CACHE_DIR", raising=False)
    assert env.cache_dir() == tmp_path / "xdg" / "pwbench"
    monkeypatch.setenv("PWBENCH_CACHE_DIR", str(tmp_path / "own"))
    assert env.cache_dir() == tmp_path / "own"
    assert os.fspath(peaks._cache_path(CPU, 1)).startswith(str(tmp_path / "own" / "peaks"))
