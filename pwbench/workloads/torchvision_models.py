"""torchvision classification models as ONNX graphs, architecture only (weights=None: nothing is
downloaded), for `pwbench suite from-torchvision`: the model is exported to ONNX in memory and
goes through the same shape inference as any ONNX file (workloads/onnx_convs.py).

PyPI's torchvision 0.28.0 (the release that matches torch 2.13.0) is a CUDA build: beside the
CPU-only torch its C++ ops cannot load (`_C.so` links libtorch_cuda.so), which torchvision
notices, except in `_meta_registrations.py`, whose unguarded `register_fake("torchvision::nms")`
then raises "operator torchvision::nms does not exist" and the import fails. Defining the two
op schemas first (a Python library fragment, kept alive) lets the import succeed; the model
definitions never call those ops (`torchvision.ops.nms` still says its C++ ops are missing).
"""

from __future__ import annotations

import difflib
import importlib
import io
import sys
import warnings

from pwbench.errors import UserError

_KEEP = []  # the torch.library.Library fragment: its definitions live as long as it does
INIT_WEIGHTS_FALSE = {"inception_v3", "googlenet"}  # their scipy weight init is slow and moot
OPSET = 17


def import_torchvision():
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    import torch

    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError:
        raise UserError("torchvision is not installed: pip install -e '.[models]'") from None
    except RuntimeError as exc:
        if "does not exist" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package
    library = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):  # the two unguarded register_fake calls of 0.28.0
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(library)
    return importlib.import_module("torchvision")


def names() -> list[str]:
    models = import_torchvision().models
    return models.list_models(module=models)


def check_name(name: str) -> None:
    known = names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown torchvision classification model {name!r}{hint} (one of "
                        f"{len(known)}: {', '.join(known[:6])}, ...)")


def input_size(name: str) -> int:
    """The model's standard input size: the crop size of its weights' transforms (read from the
    weights' metadata, which downloads nothing)."""
    models = import_torchvision().models
    return int(models.get_model_weights(name).DEFAULT.transforms.keywords["crop_size"])


def onnx_model(name: str, size: int):
    """The model in eval mode exported to an in-memory ONNX ModelProto with a symbolic batch
    `N`, so that its convs' batch is resolved like an ONNX file's."""
    import onnx
    import torch

    check_name(name)
    models = import_torchvision().models
    extra = {"init_weights": False} if name in INIT_WEIGHTS_FALSE else {}
    model = models.get_model(name, weights=None, **extra).eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 3, size, size),), buffer, dynamo=False,
                              opset_version=OPSET, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    except Exception as exc:  # the exporter raises many kinds for an unexportable model
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise UserError(f"torch.onnx.export cannot export torchvision {name} at {size}x{size}: "
                        f"{lines[0][:200]}") from None
    return onnx.load_from_string(buffer.getvalue())
