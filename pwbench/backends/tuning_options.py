"""The options of the tuned TVM backends (`tvm-tuned`, `tvm-relax-tuned`) and their command-line
group, declared here, apart from the backends themselves, so that `pwbench run --help` shows them
on a machine without TVM. Every default of a tuning lives here."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from pwbench.argtypes import given_path, names, positive_float, positive_int

SPACES = ("structured", "default")
TUNING_MODES = ("suite", "layer")


@dataclass(frozen=True)
class TuningOptions:
    group = "tuning"  # the key of these options in Options.extra and the help group's title
    trials: int = 64  # MetaSchedule trials per layer (per task for a Relax block)
    tune_minutes: float | None = None  # the tuning budget for the whole run
    tuning_dir: Path | None = None  # tuning database root, or one database
    spaces: tuple[str, ...] = ("structured",)  # tvm-tuned: design spaces, one variant each
    tuning_mode: str = "suite"  # tvm-tuned: one task set for the run, or one layer at a time
    blocked: bool = True  # tvm-tuned: also the blocked end-to-end variant of structured kernels

    def check(self) -> str | None:
        """Why these options cannot be used (one line), or None."""
        bad = [s for s in self.spaces if s not in SPACES]
        if bad or not self.spaces:
            return f"--space must be {', '.join(SPACES)} or both, got {','.join(self.spaces)!r}"
        if self.tuning_mode not in TUNING_MODES:
            return (f"--tuning must be one of {', '.join(TUNING_MODES)}, got "
                    f"{self.tuning_mode!r}")
        return None

    @staticmethod
    def add_arguments(parser, blocked: bool = True) -> None:
        group = parser.add_argument_group("tuning (tvm-tuned, tvm-relax-tuned)")
        group.add_argument("--trials", type=positive_int, default=None,
                           help=f"MetaSchedule trials per layer (default {TuningOptions.trials})")
        group.add_argument("--tune-minutes", type=positive_float, metavar="M",
                           help="stop tuning after M minutes for the whole suite")
        group.add_argument("--tuning-dir", type=given_path, metavar="DIR",
                           help="tuning database root, or one database (default: <cache dir>/tuning)")
        group.add_argument("--space", type=names, default=TuningOptions.spaces, metavar="S[,S]",
                           help="design space(s): structured (default), default (MetaSchedule's "
                                "own), or both (one row each)")
        group.add_argument("--tuning", default=TuningOptions.tuning_mode, metavar="suite|layer",
                           dest="tuning_mode", help="tune the run's layers as one task set "
                                                    "(suite, default) or one layer at a time (layer)")
        if blocked:
            group.add_argument("--blocked", action=argparse.BooleanOptionalAction,
                               default=TuningOptions.blocked,
                               help="also time the blocked end-to-end variant (default: yes)")

    @classmethod
    def from_args(cls, args, **given) -> TuningOptions:
        """The options of parsed arguments; `given` replaces any (e.g. the first look's trials)."""
        values = {"trials": args.trials or cls.trials, "tune_minutes": args.tune_minutes,
                  "tuning_dir": args.tuning_dir, "spaces": args.space,
                  "tuning_mode": args.tuning_mode,
                  "blocked": getattr(args, "blocked", cls.blocked)}
        return cls(**(values | {k: v for k, v in given.items() if v is not None}))
