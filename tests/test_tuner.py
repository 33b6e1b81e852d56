"""The one tuner (pwbench/tvm_bridge/tuner.py, tuning.py): MetaSchedule's loggers survive foreign
handlers for a second tuning in one process; a tuning stops after the batch its callback refuses,
that batch kept; and Ctrl-C at a terminal (SIGINT to the whole process group, tuner workers
included) during `pwbench tune` and `pwbench run --backend tvm-tuned` stops after the current
batch: exit 130, the run marked interrupted, the database intact, no traceback."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import time

import pytest

from conftest import PWBENCH
from pwbench.workloads.spec import ConvSpec

HAVE_TVM = importlib.util.find_spec("tvm") is not None
pytestmark = [pytest.mark.tvm, pytest.mark.skipif(not HAVE_TVM, reason="apache-tvm is not installed")]
TARGET = {"kind": "llvm", "mcpu": "haswell", "num-cores": 1}  # every x86-64 CI machine runs it


def _foreign_handlers():
    """What pytest's log capture (nameless) or an application (named) may hang on the logger."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    named = logging.NullHandler()
    named.set_name("someone.else")
    logger.addHandler(logging.NullHandler())
    logger.addHandler(named)


def _layer_job(spec):
    from pwbench.tvm_bridge import layers, spaces

    return layers.job(spec, spaces.plan(spec, TARGET, "structured"))


@pytest.mark.cpu
def test_two_tunings_in_one_process_with_foreign_handlers_and_a_stop_after_the_first_batch(tmp_path):
    from pwbench.tvm_bridge import metaschedule, toolchains, tuner

    chain = toolchains.Toolchain(TARGET, 1)
    session = tuner.Tuner(chain, tmp_path / "db", 1)
    seen = []

    def refuse(task, seconds, spent):  # the budget is spent after the first batch
        seen.append((task.key, seconds))
        return False

    try:
        for spec in (ConvSpec(1, 8, 8, 6, 6), ConvSpec(1, 8, 16, 7, 7, 3, 1, 1)):
            _foreign_handlers()
            assert session.tune(_layer_job(spec).tasks, 64, refuse)
    finally:
        session.close()
    assert [key for key, _ in seen] == [f"{s.id}@structured" for s in
                                        (ConvSpec(1, 8, 8, 6, 6), ConvSpec(1, 8, 16, 7, 7, 3, 1, 1))]
    assert all(s is not None and s > 0 for _, seconds in seen for s in seconds)
    records = (tmp_path / "db" / "database_tuning_record.json").read_text().splitlines()
    assert len(records) == sum(len(seconds) for _, seconds in seen)  # the refused batch is kept
    metaschedule.quiet_logs()
    handlers = logging.getLogger("tvm.s_tir.meta_schedule").handlers
    assert all((h.get_name() or "").startswith("tvm.s_tir.meta_schedule") for h in handlers)


SUITE = """[[sweep]]
name = "l{size}"
in_channels = 16
out_channels = 32
kernel_size = 3
padding = 1
size = [9, 10, 11, 12, 13, 14]
"""


def _interrupted(tmp_path, *args):
    """Start pwbench as a terminal would (its own process group, SIGINT at its default), wait
    until the tuner has saved a batch, then press Ctrl-C: SIGINT to the whole group."""
    (tmp_path / "suite.toml").write_text(SUITE)
    env = dict(os.environ, PWBENCH_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen([PWBENCH, *args, "--suite", tmp_path / "suite.toml", "--threads", "1",
                             "--trials", "64", "--tuning-dir", tmp_path / "db"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not _trials(tmp_path):
        time.sleep(0.2)
    assert _trials(tmp_path), "no batch was saved in time"
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    (db,) = (tmp_path / "db").iterdir()
    layers = json.loads((db / "layers.json").read_text())  # readable: saved whole
    for line in (db / "database_tuning_record.json").read_text().splitlines():
        json.loads(line)
    return proc.returncode, stdout, stderr, layers


def _trials(tmp_path) -> int:
    for path in (tmp_path / "db").glob("*/layers.json"):
        try:
            return sum(v["trials"] for v in json.loads(path.read_text()).values())
        except (OSError, ValueError):
            return 0
    return 0


@pytest.mark.cli
def test_ctrl_c_during_pwbench_tune_stops_after_the_batch_and_keeps_the_database(tmp_path):
    code, stdout, stderr, layers = _interrupted(tmp_path, "tune")
    assert code == 130, stdout[-2000:] + stderr[-2000:]
    assert "interrupted" in stdout and "Traceback" not in stderr + stdout
    assert 0 < sum(v["trials"] for v in layers.values()) < 6 * 64


@pytest.mark.cli
def test_ctrl_c_during_a_tuned_run_marks_it_interrupted(tmp_path):
    code, stdout, stderr, layers = _interrupted(
        tmp_path, "run", "--backend", "tvm-tuned", "--output", tmp_path / "run")
    assert code == 130, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr + stdout and "preparing the suite failed" not in stdout
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["rows"] == 0  # nothing built or measured
    assert 0 < sum(v["trials"] for v in layers.values()) < 6 * 64


@pytest.mark.cpu
def test_a_warm_start_measures_the_shipped_schedule_first(tmp_path, monkeypatch):
    """With a shipped schedule for the layer and one trial, that schedule is the one measured,
    built, verified and marked; it is not the point the search would have started from."""
    from pwbench import targets
    from pwbench.backends import tvm_tuned_backend
    from pwbench.backends.base import Options
    from pwbench.backends.tuning_options import TuningOptions
    from pwbench.measure import verify
    from pwbench.tvm_bridge import spaces, warm

    spec = ConvSpec(1, 12, 20, 7, 7, 3, 1, 1)
    (task,) = spaces.tasks(spec, TARGET)
    structure, reg_n = task.structures[-1], task.reg_choices[-1]
    shipped = f"ic_bn={task.ic_bn};oc_bn={task.oc_bn};reg_n={reg_n};{structure.text}"
    assert (structure, reg_n) != (task.structures[0], task.reg_choices[0])  # not the usual start
    monkeypatch.setattr(warm, "knobs", lambda target: {spec.id: shipped})
    options = TuningOptions(trials=1, tuning_dir=tmp_path / "db", blocked=False)
    backend = tvm_tuned_backend.Backend(
        targets.resolve(json.dumps({k: v for k, v in TARGET.items() if k != "num-cores"})),
        Options(threads=1, work_dir=tmp_path, extra={TuningOptions.group: options}))
    backend.prepare([spec])
    built = backend.build(spec)
    assert built.columns["knobs"] == shipped and built.columns["tuning_trials"] == 1
    assert built.columns["warm_start"] == "the shipped schedule is the best here"
    assert verify.check(built.make(), spec).verdict == "passed"
