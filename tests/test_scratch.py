"""A run's scratch and the helpers pwbench builds: outside the run directory, swept when their
owner is gone, and somewhere writable when the cache is not."""

import json
import os
import platform
import subprocess
import sys

import pytest

from pwbench import env, native, scratch
from pwbench.targets import peaks

pytestmark = pytest.mark.unit


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PWBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_scratch_of_a_killed_run_is_swept_by_the_next(cache):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = cache / "scratch" / "0123456789abcdef"
    stale.mkdir(parents=True)
    (stale / scratch.OWNER).write_text(json.dumps({"host": platform.node(), "pid": int(dead)}))
    elsewhere = cache / "scratch" / "fedcba9876543210"  # a shared cache: another host's run
    elsewhere.mkdir()
    (elsewhere / scratch.OWNER).write_text(json.dumps({"host": "other-host", "pid": int(dead)}))
    mine = scratch.new()
    scratch.claim(mine)
    assert not stale.exists() and elsewhere.exists() and mine.is_dir()
    assert mine.parent == cache / "scratch" and len(mine.name) == 16
    assert scratch.sweep(cache / "scratch") == []  # this process is alive: its scratch stays
    scratch.remove(mine)
    assert not mine.exists()


def test_a_read_only_cache_falls_back_and_says_peaks_are_not_cached(tmp_path, monkeypatch):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache directory should be")
    monkeypatch.setenv("PWBENCH_CACHE_DIR", str(blocked))
    assert env.cache_problem() is not None and "not writable" in peaks.cache_note()
    fallback = env.writable_dir("native")
    assert not str(fallback).startswith(str(blocked)) and os.access(fallback, os.W_OK)
    assert scratch.new().parent == env.writable_dir("scratch")
    if native.compiler():  # the FMA peak's and the instruction clock's C helpers still build
        built = native.library("probe", "int pwbench_probe(void) { return 7; }")
        assert built.parent == fallback and built.is_file()


def test_a_writable_cache_is_used_and_peaks_are_cached(cache):
    assert env.cache_problem() is None and peaks.cache_note() == "once: cached"
    assert env.writable_dir("native") == cache / "native"
