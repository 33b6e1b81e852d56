"""`pwbench report` over the committed fixture runs (tests/fixtures/runs, made with
tests/fixtures/pairs_tiny.toml): every file written and linked, every layer in the tables,
multi-run ranking, mismatched and malformed runs, price and power."""

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest

from pwbench import report
from pwbench.errors import UserError
from pwbench.report import selection

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures"
RUNS = FIXTURES / "runs"
PWBENCH = shutil.which("pwbench", path=str(Path(sys.executable).parent)) or shutil.which("pwbench")


def pwbench(*args, timeout=120):
    assert PWBENCH, "the pwbench console script is not installed"
    return subprocess.run([PWBENCH, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def records(name: str) -> pd.DataFrame:
    return pd.read_json(RUNS / name / "records.jsonl", lines=True)


def weighted_total_s(rows: pd.DataFrame) -> float:
    return float((rows["median_s"] * rows["count"]).sum())


def copy_run(name: str, where: Path) -> Path:
    return Path(shutil.copytree(RUNS / name, where / name))


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    """A report on the 1-thread fixture run, with tuning curves beside its records."""
    tmp = tmp_path_factory.mktemp("one")
    run = copy_run("pairs_1t", tmp)
    shutil.copy(FIXTURES / "tuning_curves.csv", run / "tuning_curves.csv")
    built = report.build([run], tmp / "out")
    return built, tmp / "out"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The slower run given first, so the ranking cannot come from the argument order."""
    tmp = tmp_path_factory.mktemp("two")
    runs = [copy_run("pairs_2t", tmp), copy_run("pairs_1t", tmp)]
    return report.build(runs, tmp / "out"), tmp / "out"


# ---- one run ---------------------------------------------------------------------------------

def test_a_report_writes_every_table_and_figure(one_run):
    built, out = one_run
    assert built.index == out / "index.html"
    tables = [f"{name}.{ext}" for name in ("runs", "latency_vm-cpu-1t", "theory_vm-cpu-1t")
              for ext in ("md", "html", "csv")]
    figures = [f"{name}.{ext}" for name in ("roofline_vm-cpu-1t", "theory_vm-cpu-1t",
                                            "tuning_vm-cpu-1t_sep.full", "tuning_vm-cpu-1t_bneck.full")
               for ext in ("png", "svg")]
    for path in [out / "index.html", *(out / "tables" / t for t in tables),
                 *(out / "figures" / f for f in figures)]:
        assert path.is_file() and path.stat().st_size > 0, path
    for png in (out / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for svg in (out / "figures").glob("*.svg"):
        assert "<svg" in svg.read_text()[:2000], svg
    assert set(built.files) == {p for p in out.rglob("*") if p.is_file()}


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src"):
                self.refs.append(value)
            elif name == "id":
                self.ids.add(value)


def _links(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text())
    return parser


@pytest.mark.parametrize("which", ["one_run", "two_runs"])
def test_the_html_references_only_files_that_exist(which, request):
    built, out = request.getfixturevalue(which)
    pages = [out / "index.html", *sorted((out / "tables").glob("*.html"))]
    for page in pages:
        links = _links(page)
        for ref in links.refs:
            parsed = urlparse(ref)
            assert not parsed.scheme and not parsed.netloc and not ref.startswith("/"), (
                f"{page.name}: {ref} is not a relative link (the report must read offline)")
            if ref.startswith("#"):
                assert ref[1:] in links.ids, f"{page.name}: no anchor {ref}"
            else:
                assert (page.parent / unquote(parsed.path)).is_file(), f"{page.name}: {ref}"
    index = _links(out / "index.html")
    linked = {(out / unquote(r)).resolve() for r in index.refs if not r.startswith("#")}
    for path in built.files:  # index.html links or embeds every table and figure file
        assert path == built.index or path.resolve() in linked, f"index.html omits {path.name}"


def test_latency_tables_hold_every_layer_and_the_weighted_total(one_run):
    _, out = one_run
    rec = records("pairs_1t")
    layers = list(rec["layer"])
    csv = pd.read_csv(out / "tables" / "latency_vm-cpu-1t.csv")
    assert list(csv["layer"]) == [*layers, "network total"]
    by_layer = csv.set_index("layer")
    assert list(by_layer.loc[layers, "torch median_s"]) == pytest.approx(list(rec["median_s"]))
    assert list(by_layer.loc[layers, "torch pct_of_roof"]) == pytest.approx(list(rec["pct_of_roof"]))
    assert list(by_layer.loc[layers, "count"]) == list(rec["count"])
    assert by_layer.loc["network total", "torch median_s"] == pytest.approx(weighted_total_s(rec))
    assert by_layer.loc["network total", "count"] == rec["count"].sum()

    markdown = (out / "tables" / "latency_vm-cpu-1t.md").read_text()
    cells = [line.split("|")[1].strip() for line in markdown.splitlines()[4:]]  # title, blank, head, rule
    assert cells == [*layers, "network total"]
    assert "torch median" in markdown.splitlines()[2] and "% of roof" in markdown.splitlines()[2]
    html = (out / "tables" / "latency_vm-cpu-1t.html").read_text()
    index = (out / "index.html").read_text()
    for layer in layers:
        assert f'<td class="txt">{layer}</td>' in html and f'<td class="txt">{layer}</td>' in index


def test_theory_table_puts_predicted_next_to_measured_ratios(one_run):
    _, out = one_run
    rec = records("pairs_1t").set_index("layer")
    theory = pd.read_csv(out / "tables" / "theory_vm-cpu-1t.csv").set_index("pair")
    assert set(theory.index) == {"sep", "bneck"}
    sep = theory.loc["sep"]
    flop_ratio = (rec.loc["sep.dw", "flops"] + rec.loc["sep.pw", "flops"]) / rec.loc["sep.full", "flops"]
    assert sep["flop_ratio"] == pytest.approx(flop_ratio)
    assert sep["seed_formula"] == pytest.approx(1 / 64 + 1 / 9)  # 1/C_out + 1/k^2, padded taps counted
    assert sep["flop_ratio"] == pytest.approx(sep["seed_formula"])
    time_ratio = (rec.loc["sep.dw", "median_s"] + rec.loc["sep.pw", "median_s"]) / rec.loc["sep.full", "median_s"]
    assert sep["time_ratio"] == pytest.approx(time_ratio)
    assert sep["block"] == "depthwise-separable" and theory.loc["bneck", "block"] == "bottleneck"
    assert theory.loc["bneck", "params_fewer"] == pytest.approx(8.5, abs=0.05)  # the seeds' 8.5x


def test_a_peaks_file_replaces_the_recorded_peaks(tmp_path):
    meta = json.loads((RUNS / "pairs_1t" / "meta.json").read_text())["peaks"]
    faster = tmp_path / "peaks.toml"  # twice both roofs: every roofline bound halves
    faster.write_text(f"flops_per_s = {2 * meta['flops_per_s']}\nbytes_per_s = {2 * meta['bytes_per_s']}\n")
    report.build([RUNS / "pairs_1t"], tmp_path / "out", peaks_file=faster)
    csv = pd.read_csv(tmp_path / "out" / "tables" / "latency_vm-cpu-1t.csv")
    rec = records("pairs_1t")
    assert list(csv["torch pct_of_roof"][:-1]) == pytest.approx(list(rec["pct_of_roof"] / 2))
    assert f"file {faster}" in (tmp_path / "out" / "index.html").read_text()


# ---- several runs ----------------------------------------------------------------------------

def test_multi_run_report_ranks_the_faster_machine_first(two_runs):
    _, out = two_runs
    totals = {"vm cpu 1t": weighted_total_s(records("pairs_1t")),
              "vm cpu 2t": weighted_total_s(records("pairs_2t"))}
    ranked = pd.read_csv(out / "tables" / "selection_pairs_tiny.csv")
    assert list(ranked["machine"]) == sorted(totals, key=totals.get)
    assert list(ranked["rank"]) == [1, 2]
    assert list(ranked["latency_s"]) == pytest.approx(sorted(totals.values()))
    assert list(ranked["throughput_per_s"]) == pytest.approx([1 / t for t in sorted(totals.values())])

    winners = pd.read_csv(out / "tables" / "winners_pairs_tiny.csv").set_index("kind")
    for kind in ("pointwise", "depthwise", "full", "grouped"):
        per_machine = {}
        for label, name in (("vm cpu 1t", "pairs_1t"), ("vm cpu 2t", "pairs_2t")):
            rows = records(name)
            per_machine[label] = weighted_total_s(rows[rows["kind"] == kind])
        assert winners.loc[kind, "winner"] == f"{min(per_machine, key=per_machine.get)} · torch"
    assert (out / "figures" / "selection_pairs_tiny.png").is_file()
    assert not list((out / "figures").glob("pareto_*")), "no Pareto plot without prices or watts"


def test_runs_of_different_batch_sizes_are_refused(tmp_path):
    proc = pwbench("report", RUNS / "pairs_1t", RUNS / "pairs_b2", "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.startswith("pwbench: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "batch [1] vs [2]" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_runs_of_different_suites_are_reported_apart(tmp_path):
    other = copy_run("pairs_b2", tmp_path)
    for name in ("meta.json", "records.jsonl"):
        path = other / name
        path.write_text(path.read_text().replace('"suite": "pairs_tiny"', '"suite": "other_suite"'))
    built = report.build([RUNS / "pairs_1t", RUNS / "pairs_2t", other], tmp_path / "out")
    index = built.index.read_text()
    assert "Hardware selection: pairs_tiny" in index and "Hardware selection: other_suite" not in index
    assert "other_suite on vm cpu 2t (pairs_b2)" in index  # its own section, label made unique
    ranked = pd.read_csv(tmp_path / "out" / "tables" / "selection_pairs_tiny.csv")
    assert set(ranked["machine"]) == {"vm cpu 1t", "vm cpu 2t (pairs_2t)"}


# ---- malformed input -------------------------------------------------------------------------

def _missing_meta(d):
    d.mkdir()
    shutil.copy(RUNS / "pairs_1t" / "records.jsonl", d)


def _with_meta(d, records_text=None, name="records.jsonl"):
    d.mkdir()
    shutil.copy(RUNS / "pairs_1t" / "meta.json", d)
    if records_text is not None:
        (d / name).write_text(records_text)


def _not_numeric(d):
    rows = records("pairs_1t").assign(flops="lots")
    _with_meta(d, rows.to_json(orient="records", lines=True))


MALFORMED = {
    "missing meta.json": (_missing_meta, "no meta.json"),
    "garbage records": (lambda d: _with_meta(d, "garbage\n{\"suite\":\nmore\n"), "records.jsonl:1: malformed"),
    "empty directory": (lambda d: d.mkdir(), "no meta.json"),
    "not a directory": (lambda d: d.write_text("hello\n"), "is not a directory"),
    "missing directory": (lambda d: None, "does not exist"),
    "meta not JSON": (lambda d: (d.mkdir(), (d / "meta.json").write_text("{")), "not valid JSON"),
    "meta not an object": (lambda d: (d.mkdir(), (d / "meta.json").write_text("[]")), "JSON object"),
    "no records": (lambda d: _with_meta(d), "holds no records"),
    "records lack columns": (lambda d: _with_meta(d, '{"a": 1}\n{"a": 2}\n'),
                             "records.jsonl:1: not a pwbench record (no backend"),
    "broken parquet": (lambda d: _with_meta(d, "junk", "records.parquet"), "records.parquet: unreadable"),
    "flops not a number": (_not_numeric, "flops is not a number"),
}


@pytest.mark.cli
@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_run_directory_is_one_clear_line_and_exit_2(case, tmp_path):
    make, says = MALFORMED[case]
    bad = tmp_path / "bad_run"
    make(bad)
    proc = pwbench("report", bad, "--out", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pwbench: error:"), proc.stderr
    assert "bad_run" in lines[0] and says in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.cli
@pytest.mark.parametrize("args, says", [
    (["--peaks", "{tmp}/missing.toml"], "peaks file"),
    (["--price", "nosuchhost=1.0"], "matches no run"),
    (["--watts", "vm cpu 1t=lots"], "expected a positive number"),
    ([str(RUNS / "pairs_1t")], "given twice"),
])
def test_bad_report_options_are_one_clear_line_and_exit_2(args, says, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = pwbench("report", RUNS / "pairs_1t", *args, "--out", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pwbench: error:") and says in lines[0]


# ---- price and power -------------------------------------------------------------------------

@pytest.mark.cli
def test_price_and_watts_give_per_dollar_and_per_watt_columns_and_a_pareto_plot(tmp_path):
    machines = tmp_path / "machines.toml"
    machines.write_text('[[machine]]\nmatch = "vm cpu 1t"\nprice_per_hour = 0.10\n\n'
                        '[[machine]]\nmatch = "pairs_2t"\nprice_per_hour = 0.20\nwatts = 90\n')
    out = tmp_path / "out"
    proc = pwbench("report", RUNS / "pairs_1t", RUNS / "pairs_2t", "--out", out,
                   "--machines", machines, "--watts", "vm cpu 1t=60")
    assert proc.returncode == 0, proc.stderr
    assert f"report: {out / 'index.html'}" in proc.stdout
    ranked = pd.read_csv(out / "tables" / "selection_pairs_tiny.csv").set_index("machine")
    assert list(ranked["price_per_hour"]) == [0.10, 0.20] and list(ranked["watts"]) == [60, 90]
    expected_per_dollar = ranked["throughput_per_s"] * 3600 / ranked["price_per_hour"]
    assert list(ranked["per_dollar"]) == pytest.approx(list(expected_per_dollar))
    assert list(ranked["per_watt"]) == pytest.approx(list(ranked["throughput_per_s"] / ranked["watts"]))
    header = (out / "tables" / "selection_pairs_tiny.md").read_text().splitlines()[2]
    for column in ("USD/hour", "inferences per USD", "watts", "inferences/s per W"):
        assert f"| {column} |" in header
    for ext in ("png", "svg"):
        assert (out / "figures" / f"pareto_pairs_tiny.{ext}").is_file()
    assert 'src="figures/pareto_pairs_tiny.png"' in (out / "index.html").read_text()


def test_pareto_front_keeps_only_the_undominated():
    frame = pd.DataFrame({"throughput_per_s": [100.0, 300.0, 90.0, 300.0],
                          "price_per_hour": [1.0, 2.0, 1.5, 3.0]})
    # cheap and slow, dear and fast: both on the front; slower and dearer than the first: not;
    # as fast as the second but dearer: not
    assert list(selection.pareto_front(frame, "price_per_hour")) == [True, True, False, False]


def test_report_build_refuses_an_unknown_cost_match(tmp_path):
    with pytest.raises(UserError, match="matches no run"):
        report.build([RUNS / "pairs_1t"], tmp_path / "out",
                     costs=report.costs.parse(prices=["elsewhere=1"]))


@pytest.mark.parametrize("seconds, text", [
    (3.9999e-3, "4.00 ms"), (118e-6, "118 µs"), (60.3e-6, "60.3 µs"), (1.5, "1.50 s"),
    (5e-10, "0.500 ns"), (float("nan"), "–"),
])
def test_table_times_keep_three_significant_digits(seconds, text):
    from pwbench.units import format_seconds

    assert format_seconds(seconds) == text


def test_a_run_from_a_kernel_bundle_shows_its_resources_and_throttled_kernels(tmp_path):
    from runs_helper import META, row
    from pwbench.store import results

    gpu = {"dlight_rule": "Matmul", "cuda_arch": "sm_90", "grid": "98x1x1", "block": "8x16x1",
           "registers": 64, "shared_bytes": 6912, "spill_bytes": 0, "local_bytes": 0,
           "blocks_per_sm": 8, "occupancy": 0.5, "build_s": 1.2, "kernel_bundle": "kernels/b"}
    writer = results.RunWriter(tmp_path / "run", META | {"target": "cuda",
                                                         "kernel_bundle": "kernels/b"})
    writer.add(row("pw", [1e-5] * 5) | {"process": 0, "throttled": False})
    writer.add(row("pw", [1e-5] * 5) | {"backend": "tvm", "process": 0, "throttled": True} | gpu)
    writer.finish()
    built = report.build([tmp_path / "run"], tmp_path / "out")
    table = pd.read_csv(next((tmp_path / "out" / "tables").glob("resources_*.csv")))
    assert list(table["backend"]) == ["tvm"] and table.loc[0, "registers"] == 64
    page = built.index.read_text()
    assert "Kernel resources" in page and "from kernel bundle kernels/b" in page
    assert "1 kernel(s) were timed while the GPU&#x27;s clocks dropped" in page and "pw [tvm]" in page


def test_a_variant_timed_in_one_layout_only_ranks_in_that_layout_alone(tmp_path):
    """A blocked variant exists for NCHW layers only: the selection ranks it as an NCHW network
    and has no NHWC entry for it (the report once failed on the empty NHWC network)."""
    from runs_helper import META, row
    from pwbench.report import runs
    from pwbench.store import results

    writer = results.RunWriter(tmp_path / "run", META)
    for layout in ("NCHW", "NHWC"):
        spec_id = f"n1_c16-16_14x14_k3_s1_p1_float32_{layout.lower()}"
        writer.add(row("conv3", [1e-3] * 5, spec_id=spec_id) | {"layout": layout})
        writer.add(row("conv3", [8e-4] * 5, spec_id=spec_id)
                   | {"layout": layout, "backend": "tvm-tuned", "variant": "structured"})
    writer.add(row("conv3", [7e-4] * 5, spec_id="n1_c16-16_14x14_k3_s1_p1_float32_nchw")
               | {"layout": "NCHW", "backend": "tvm-tuned", "variant": "structured-blocked"})
    writer.finish()
    (run,) = runs.load([tmp_path / "run"])
    frame = selection.entries([run], report.costs.Costs({}))
    assert list(frame["backend"]) == ["tvm-tuned structured-blocked NCHW",
                                      "tvm-tuned structured NCHW", "tvm-tuned structured NHWC",
                                      "torch NCHW", "torch NHWC"]
    assert report.build([tmp_path / "run"], tmp_path / "out").index.exists()
