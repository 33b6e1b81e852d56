"""MetaSchedule (TVM 0.27, `tvm.s_tir.meta_schedule`) as pwbench uses it: imported with only the
tensor intrinsics a target needs, its loggers quiet and safe for a second tuning in one process,
and its JSON database opened with a one-line error for a damaged file."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import types

from pwbench.errors import UserError
from pwbench.tvm_bridge.tvm_targets import error_line

LOGGER = "tvm.s_tir.meta_schedule"


def intrinsics_only(arch: str) -> None:
    """Register only one architecture's tensor intrinsics ("x86", "arm_cpu", "cuda").
    `import tvm.s_tir.tensor_intrin` parses those of every backend (30-50 s), in the main process
    and in every builder worker, whose timeout then loses builds. A bare package module in
    sys.modules makes that import a no-op."""
    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        package = types.ModuleType(name)
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules[name] = package
    importlib.import_module(f"{name}.{arch}")


def meta_schedule(*archs: str):
    """tvm.s_tir.meta_schedule with the x86 intrinsics (its default rules look them up) and those
    of `archs` registered, nothing more."""
    for arch in ("x86", *archs):
        intrinsics_only(arch)
    from tvm.s_tir import meta_schedule

    return meta_schedule


def quiet_logs() -> None:
    """MetaSchedule logs every batch at INFO to stdout; pwbench shows its own progress.

    Before each tuning MetaSchedule rebuilds its loggers (logging.dictConfig) listing the handlers
    its logger already has *by name* among the handlers of its own config, which holds only its
    own: any other handler there, named or not, makes that fail ("Unable to configure logger
    'tvm.s_tir.meta_schedule'"), so a second tuning in one process fails wherever someone
    attached one (pytest does, to non-propagating loggers: its log capture). Every handler that is
    not MetaSchedule's own is taken off its loggers before every tuning: the one fix every tuner
    shares (naming such a handler instead does not help: the name is not in that config)."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith(LOGGER) and isinstance(logger, logging.Logger):
            for handler in list(logger.handlers):
                if not (handler.get_name() or "").startswith(LOGGER):
                    logger.removeHandler(handler)
    logging.getLogger(LOGGER).setLevel(logging.WARNING)
    os.environ.setdefault("TVM_LOG_DEBUG", "0")


def open_database(directory):
    """The JSON database in a directory; a damaged file is a UserError naming it."""
    ms = meta_schedule()
    try:
        return ms.database.JSONDatabase(work_dir=str(directory), module_equality="structural")
    except Exception as exc:  # TVM raises its own error types for a bad file
        raise UserError(f"tuning database {directory} is corrupted ({error_line(exc)}); "
                        "delete that directory to tune again") from None
