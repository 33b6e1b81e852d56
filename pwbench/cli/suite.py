"""`pwbench suite from-onnx MODEL.onnx` and `pwbench suite from-torchvision NAME`: a suite file of
a model's conv layers (workloads/onnx_convs.py, workloads/suite_file.py), which `pwbench run
--suite FILE` then measures. Without --output the file goes to stdout and the summary to stderr."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pwbench.cli.options import given_path, positive_int
from pwbench.errors import UserError


def add(sub):
    suite = sub.add_parser("suite", help="write a suite file from a model (ONNX or torchvision)")
    from pwbench.cli import Parser

    how = suite.add_subparsers(dest="source", required=True, parser_class=Parser)
    onnx = how.add_parser("from-onnx", help="every Conv of an ONNX model, shapes from ONNX shape "
                                            "inference")
    onnx.add_argument("model", type=given_path, help="an .onnx file")
    onnx.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE",
                      help="a value for a symbolic input dim other than the batch, e.g. H=224")
    tv = how.add_parser("from-torchvision", help="a torchvision classification model "
                                                 "(architecture only: nothing is downloaded)")
    tv.add_argument("name", help="e.g. resnet50, mobilenet_v2, efficientnet_b0, inception_v3")
    tv.add_argument("--size", type=positive_int,
                    help="input height and width (default: the model's standard crop size)")
    for parser in (onnx, tv):
        parser.add_argument("--batch", type=positive_int,
                            help="the value of a symbolic batch dim (default 1)")
        parser.add_argument("--output", type=given_path, metavar="FILE",
                            help="where to write the suite (default: stdout); never over an "
                                 "existing file without --force")
        parser.add_argument("--force", action="store_true", help="replace --output if it exists")
    return suite


def main(args) -> int:
    from pwbench.workloads import onnx_convs, suite_file

    if args.output is not None and os.path.lexists(args.output) and not args.force:
        raise UserError(f"{args.output} exists: give --force to replace it, or another --output")
    if args.source == "from-onnx":
        dims = _dims(args.dim)
        model = onnx_convs.load(args.model)
        source, description = (f"{args.model.name} (ONNX)",
                               f"{args.model.name} (ONNX): its conv layers, generated")
        command = f"pwbench suite from-onnx {args.model.name}"
    else:
        from pwbench.workloads import torchvision_models

        torchvision_models.check_name(args.name)
        size = args.size or torchvision_models.input_size(args.name)
        dims, model = {}, torchvision_models.onnx_model(args.name, size)
        source = f"torchvision {args.name} (weights=None) at {size}x{size}, exported to ONNX"
        description = f"torchvision {args.name} at {size}x{size}: its conv layers, generated"
        command = f"pwbench suite from-torchvision {args.name}" + (f" --size {size}" if args.size else "")
    found = onnx_convs.convs(model, args.batch, dims)
    _require_convs(found, source)
    command += f" --batch {args.batch}" if args.batch else ""
    text = suite_file.to_toml(found, source, f"{description}, batch {found.batch}", command)
    line = suite_file.summary(found, suite_file.fold(found.convs))
    if args.output is None:
        sys.stdout.write(text)
        print(f"{source}: {line}", file=sys.stderr)
        return 0
    _write(args.output, text)
    print(f"wrote {args.output}: {line}")
    return 0


def _dims(given: list[str]) -> dict:
    dims = {}
    for item in given:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) <= 0:
            raise UserError(f"--dim {item!r}: expected NAME=VALUE with a positive integer value")
        dims[name] = int(value)
    return dims


def _require_convs(found, source: str) -> None:
    if found.convs:
        return
    if not found.skipped:
        raise UserError(f"{source} has no Conv node: nothing to benchmark")
    reasons = "; ".join(f"{s.name}: {s.reason}" for s in found.skipped[:3])
    raise UserError(f"{source} has {len(found.skipped)} conv node(s) but none a suite can hold "
                    f"({reasons}{'; ...' if len(found.skipped) > 3 else ''})")


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
