"""pwbench compare: the statistics on synthetic samples (fixed seed), verdicts and exit codes on
synthetic run directories, and a real A/A and A/B on this machine."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from pwbench.analysis import compare, stats
from runs_helper import META, TINY, pwbench, real_run, write_run

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parent.parent
_spec = importlib.util.spec_from_file_location("compare_study", ROOT / "scripts" / "compare_study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


def rates(factor, samples=30, trials=200):
    counts = study.verdicts(factor, samples, trials, 0.05, 0.05, np.random.default_rng(study.SEED))
    return {v: n / trials for v, n in counts.items()}


def test_aa_pairs_rarely_cry_wolf():
    assert rates(1.0).get("slower", 0) <= 0.01


def test_a_10_percent_loss_is_caught():
    assert rates(1.10)["slower"] >= 0.95


@pytest.mark.parametrize("samples", [30, 300])
def test_a_2_percent_loss_is_never_a_regression(samples):
    assert "slower" not in rates(1.02, samples)


def test_interval_holds_the_ratio_and_p_value_tracks_it():
    rng = np.random.default_rng(1)
    base = np.exp(rng.normal(0, 0.05, 50))
    s = stats.shift(base, 1.2 * np.exp(rng.normal(0, 0.05, 50)))
    assert s.low < 1.2 < s.high and s.low < s.ratio < s.high and s.p_value < 1e-6
    same = stats.shift(base, base)
    assert same.ratio == 1 and same.low < 1 < same.high and same.p_value > 0.5


def test_the_estimate_lies_inside_its_interval_on_bimodal_samples():
    rng = np.random.default_rng(2)  # bimodal times, as on a busy machine: 19/30 fast base samples,
    base = np.where(np.arange(30) < 19, 1.0, 1.3) * np.exp(rng.normal(0, 0.03, 30))
    new = np.where(np.arange(30) < 12, 0.9, 1.2) * np.exp(rng.normal(0, 0.03, 30))  # 12/30 new
    s = stats.shift(base, new)
    assert s.low <= s.ratio <= s.high  # a ratio of medians (about 1.14) would sit far outside


@pytest.mark.parametrize("low, high, verdict", [
    (1.06, 1.20, "slower"), (0.80, 0.94, "faster"), (0.97, 1.04, "same"), (1.02, 1.10, "uncertain"),
    (0.90, 1.10, "uncertain")])
def test_verdict_needs_the_interval_beyond_the_threshold(low, high, verdict):
    assert stats.timing_verdict(stats.Shift(1.0, low, high, 0.0), 0.05) == verdict


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("10", 0.10), (" 2.5 % ", 0.025)])
def test_threshold_is_a_percentage(text, value):
    assert compare.parse_threshold(text) == pytest.approx(value)


# ---- the command on synthetic run directories ----------------------------------------------------

@pytest.fixture
def base(tmp_path):
    return write_run(tmp_path / "base", {}, seed=1)


def test_aa_runs_are_clean_and_recurring_shapes_count_once(base, tmp_path):
    proc = pwbench("compare", base, write_run(tmp_path / "new", {}, seed=2), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["regressions"] == 0 and result["warnings"] == []
    assert len(result["rows"]) == 3  # conv3 and conv3.b are one kernel
    assert {r["layer"] for r in result["rows"]} == {"pw", "dw", "conv3, conv3.b"}
    assert all(r["verdict"] == "same" for r in result["rows"])


def test_slower_kernel_is_a_regression_named_in_every_format(base, tmp_path):
    new = write_run(tmp_path / "new", {"dw": 1.3, "pw": 0.7}, seed=2)
    table = pwbench("compare", base, new)
    assert table.returncode == 1
    assert "slower" in table.stdout and "dw" in table.stdout and "faster" in table.stdout
    assert "1 regression(s)" in table.stdout
    md = pwbench("compare", base, new, "--format", "md")
    line = next(ln for ln in md.stdout.splitlines() if ln.startswith("| slower"))
    assert md.returncode == 1 and "| dw |" in line and "+30" in line
    rows = {r["layer"]: r for r in json.loads(pwbench("compare", base, new, "--format", "json").stdout)["rows"]}
    assert rows["dw"]["regression"] and rows["dw"]["ratio"] == pytest.approx(1.3, rel=0.05)
    assert rows["pw"]["verdict"] == "faster" and not rows["pw"]["regression"]


def test_a_loss_inside_the_threshold_passes(base, tmp_path):
    proc = pwbench("compare", base, write_run(tmp_path / "new", {"dw": 1.3}, seed=2), "--threshold", "50%")
    assert proc.returncode == 0, proc.stdout


def test_a_failed_check_is_a_regression_even_when_faster(base, tmp_path):
    new = write_run(tmp_path / "new", {"pw": 0.5}, seed=2, checks={"pw": "failed"})
    proc = pwbench("compare", base, new, "--format", "json")
    rows = {r["layer"]: r for r in json.loads(proc.stdout)["rows"]}
    assert proc.returncode == 1
    assert rows["pw"]["verdict"] == "failed" and "passed -> failed" in rows["pw"]["note"]
    back = json.loads(pwbench("compare", new, base, "--format", "json").stdout)
    assert {r["layer"]: r["verdict"] for r in back["rows"]}["pw"] == "fixed"


def test_environment_differences_are_named(base, tmp_path):
    other = META | {"threads": 2, "cpu_model": "Other CPU", "versions": {"torch": "2.14.0"}}
    new = write_run(tmp_path / "new", {}, seed=2, meta=other)
    proc = pwbench("compare", base, new)
    assert proc.returncode == 0
    for said in ("environments differ", "threads 1 -> 2", "cpu_model Test CPU -> Other CPU",
                 "torch 2.13.0+cpu -> 2.14.0"):
        assert said in proc.stdout, proc.stdout


def test_missing_kernels_fail_the_gate_unless_accepted(base, tmp_path):
    new = tmp_path / "new"
    write_run(new, {}, seed=2)
    lines = (new / "records.jsonl").read_text().splitlines()
    (new / "records.parquet").unlink()
    (new / "records.jsonl").write_text("\n".join(ln for ln in lines if '"dw"' not in ln) + "\n")
    proc = pwbench("compare", base, new)
    assert proc.returncode == 1 and "missing" in proc.stdout and "only in BASE" in proc.stdout
    assert "no regression, 1 kernel(s) of BASE not measured by NEW" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == (
        "pwbench: 1 of 3 kernels of BASE were not measured by NEW: a gate does not pass on "
        "missing data (--accept-missing to compare what is there)")
    accepted = pwbench("compare", base, new, "--accept-missing", "--format", "json")
    assert accepted.returncode == 0 and json.loads(accepted.stdout)["missing"] == 1


def _bad_records(path):
    path.mkdir()
    (path / "meta.json").write_text(json.dumps(META))
    (path / "records.jsonl").write_text('{"layer": "x"}\nnot json\n{"layer": "y"}\n')


def _other_suite(path):
    write_run(path, {}, seed=3)
    (path / "records.parquet").unlink()
    text = (path / "records.jsonl").read_text()
    (path / "records.jsonl").write_text(text.replace("n1_c", "n8_c"))


@pytest.mark.parametrize("make, args, message", [
    (None, [], "does not exist"),
    (lambda p: p.mkdir(), [], "not a pwbench run directory"),
    (_bad_records, [], "records.jsonl:1: not a pwbench record"),
    (_other_suite, [], "no kernel (spec id, backend, target) in common"),
    (lambda p: write_run(p, {}, seed=3), ["--threshold", "lots"], "--threshold expects a percentage"),
    (lambda p: write_run(p, {}, seed=3), ["--threshold=-5%"], "--threshold expects a percentage"),
    (lambda p: write_run(p, {}, seed=3), ["extra"], "extra does not exist"),
], ids=["missing", "not a run", "malformed", "mismatched", "threshold", "negative", "three runs"])
def test_bad_input_is_one_line_and_exit_2(base, tmp_path, make, args, message):
    new = tmp_path / "new"
    if make:
        make(new)
    proc = pwbench("compare", base, new, *args)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


# ---- real runs on this machine -------------------------------------------------------------------

@pytest.fixture(scope="module")
def real(tmp_path_factory):
    d = tmp_path_factory.mktemp("real")
    (d / "tiny.toml").write_text(TINY)
    return d


def test_real_aa_is_clean(real):
    """Two runs of the same code. On a shared machine a neighbour's burst can slow one run's kernel
    by more than any threshold, so, as the README's CI job does, a regression is re-measured once
    before it counts. 20 %: separate processes on this 2-core VM differ by ~5 % when quiet."""
    a, b = real_run(real / "a", real / "tiny.toml"), real_run(real / "b", real / "tiny.toml")
    proc = pwbench("compare", a, b, "--threshold", "20%")
    if proc.returncode == 1:
        proc = pwbench("compare", a, real_run(real / "b2", real / "tiny.toml"), "--threshold", "20%")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no regression" in proc.stdout


def test_real_planted_slowdown_is_caught_and_named(real):
    clean = real / "a" if (real / "a").exists() else real_run(real / "a", real / "tiny.toml")
    slow = real_run(real / "slow", real / "tiny.toml", True)
    proc = pwbench("compare", clean, slow, "--threshold", "20%", "--format", "json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {r["layer"]: r for r in json.loads(proc.stdout)["rows"]}
    assert rows["dw"]["verdict"] == "slower" and rows["dw"]["ratio"] > 1.5
    warnings = json.loads(proc.stdout)["warnings"]
    assert not any("environments differ" in w for w in warnings)  # the slow backend's is the same


# ---- between-process spread ----------------------------------------------------------------------

def _verdicts(tmp_path, seeds, pooled_only: bool):
    """Verdicts of A/A pairs whose processes differ by a random offset (5 %, as seen between
    processes on a shared VM) over tight within-process noise (1 %), with no real change."""
    from pwbench.store import results

    found = []
    for seed in seeds:
        runs = [write_run(tmp_path / f"{side}{seed}", {}, seed=2 * seed + i, n=30, noise=0.01,
                          processes=3, process_sd=0.05) for i, side in enumerate("ab")]
        frames = [results.load_run(r).records for r in runs]
        if pooled_only:  # as if every sample came from one process
            frames = [f.drop(columns=["samples_process"]) for f in frames]
        found += [r.verdict for r in compare.compare_records(*frames, 0.05).rows]
    return found


def test_between_process_spread_widens_the_interval_instead_of_crying_wolf(tmp_path):
    seeds = range(12)
    assert "slower" not in _verdicts(tmp_path / "procs", seeds, pooled_only=False)
    # the same samples, seen as one process per side: the tight interval calls changes that are not
    assert "slower" in _verdicts(tmp_path / "pooled", seeds, pooled_only=True)


def test_one_process_per_side_says_its_interval_lacks_the_between_process_spread(base, tmp_path):
    result = json.loads(pwbench("compare", base, write_run(tmp_path / "new", {}, seed=2),
                                "--format", "json").stdout)
    assert all("between-process spread not in the interval" in r["note"] for r in result["rows"])


def test_a_run_cut_short_is_said(base, tmp_path):
    new = write_run(tmp_path / "new", {}, seed=2)
    meta = json.loads((new / "meta.json").read_text()) | {"status": "running"}
    (new / "meta.json").write_text(json.dumps(meta))
    proc = pwbench("compare", base, new)
    assert proc.returncode == 0 and "was cut short" in proc.stdout, proc.stdout


def _variant_run(directory, variants: dict[str, str], factor: float = 1.0):
    """A tvm-tuned run of the pw layer: one row per variant (name -> kernel layout)."""
    import numpy as np

    from pwbench.store import results
    from runs_helper import row

    writer = results.RunWriter(directory, dict(META))
    rng = np.random.default_rng(7)
    for variant in variants:
        samples = 1e-3 * factor * np.exp(rng.normal(0, 0.02, 30))
        writer.add(row("pw", samples) | {"backend": "tvm-tuned", "variant": variant,
                                         "tvm_layout": variants[variant], "process": 0})
    writer.finish()
    return directory


def test_blocked_rows_never_pair_with_nchw_rows_without_saying_so(tmp_path):
    """BASE timed the NCHW kernel only; NEW timed it and a blocked one 3x faster. The blocked row
    must not pair with BASE's NCHW row (a 3x 'speedup' that is a layout change), and says why."""
    base = _variant_run(tmp_path / "base", {"structured": "NCHW"})
    new = _variant_run(tmp_path / "new", {"structured": "NCHW", "structured-blocked": "NCHWc"})
    rows = {r.variant: r for r in compare.compare_runs(base, new, 0.05).rows}
    assert rows["structured"].verdict == "same"  # NCHW with NCHW
    blocked = rows["structured-blocked"]
    assert blocked.verdict == "new" and np.isnan(blocked.ratio)
    assert "not paired with BASE's variant structured" in blocked.note
    assert rows["structured-blocked"].verdict == "new"
    proc = pwbench("compare", base, new)
    assert proc.returncode == 0 and "not paired with BASE's variant structured" in proc.stdout
    # a run that only timed the blocked kernel has nothing to compare with, and says why
    only = _variant_run(tmp_path / "only_blocked", {"structured-blocked": "NCHWc"}, factor=0.3)
    proc = pwbench("compare", base, only)
    assert proc.returncode == 2 and "other variants" in proc.stderr
    assert "never paired with NCHW" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
