"""Run directories as the report sees them: validated records, the peaks in effect, a label."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pwbench.targets import peaks as peaks_mod
from pwbench.analysis import roofline
from pwbench.store import results
from pwbench.errors import UserError

@dataclass
class Run:
    dir: Path
    meta: dict
    records: pd.DataFrame  # the run's rows, roofline columns recomputed for `peaks`
    peaks: peaks_mod.Peaks | None
    label: str  # "host target Nt", unique within one report
    warnings: list  # e.g. the run was cut short

    @property
    def suite(self) -> str:
        return str(self.records["suite"].iloc[0])

    @property
    def slug(self) -> str:
        return slug(self.label)

    @property
    def backends(self) -> list[str]:
        """What the run compares, in the order its backends were asked for (rows of skipped
        workloads come first on disk): each backend, named with its variant when it has one
        (`tvm-tuned structured`, `tvm-tuned structured-blocked`): the `kernel` column."""
        pairs = self.records[["kernel", "backend"]].drop_duplicates("kernel")
        asked = list(self.meta.get("backends") or [])
        rank = {b: i for i, b in enumerate(asked)}
        order = sorted(range(len(pairs)), key=lambda i: rank.get(pairs["backend"].iloc[i], len(asked)))
        return [pairs["kernel"].iloc[i] for i in order]

    @property
    def layouts(self) -> list[str]:
        return list(dict.fromkeys(self.records["layout"])) if "layout" in self.records else []


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def load(directories, peaks_file=None) -> list[Run]:
    """Every run directory, validated; a user peaks file replaces the peaks each run recorded."""
    given = peaks_mod.load_file(peaks_file) if peaks_file else None
    runs = [_load_one(Path(d), given) for d in directories]
    _make_labels_unique(runs)
    return runs


def _load_one(directory: Path, given) -> Run:
    run = results.load_run(directory)
    if run.records["suite"].nunique() != 1:
        raise UserError(f"{directory}: records from several suites in one run")
    peaks = given or _recorded_peaks(directory, run.meta)
    records = roofline.add_columns(run.records, peaks)
    variant = records["variant"].fillna("") if "variant" in records else ""
    records["kernel"] = records["backend"] + (" " + variant).str.rstrip() if "variant" in records \
        else records["backend"]
    return Run(directory, run.meta, records, peaks, _label(run.meta, records), run.warnings)


def _recorded_peaks(directory: Path, meta: dict):
    if not meta.get("peaks"):
        return None
    return peaks_mod.Peaks.from_dict(meta["peaks"], f"{directory / results.META} (peaks)")


def _label(meta: dict, records: pd.DataFrame) -> str:
    host = meta.get("hostname") or meta.get("cpu_model") or "unknown"
    target = meta.get("target") or records["target"].iloc[0]
    threads = meta.get("threads") or records["threads"].iloc[0]
    return f"{host} {target} {threads}t"


def _make_labels_unique(runs: list[Run]) -> None:
    paths = [r.dir.resolve() for r in runs]
    if len(set(paths)) < len(paths):
        raise UserError("the same run directory was given twice")
    for suffix in (lambda r: r.dir.name, lambda r: str(r.dir)):
        counts = Counter(r.label for r in runs)
        for run in runs:
            if counts[run.label] > 1:
                run.label = f"{run.label} ({suffix(run)})"
