"""The conv layers of an ONNX model, from ONNX shape inference: what `pwbench suite from-onnx` and
`from-torchvision` (through an in-memory export) turn into a suite file.

Every `Conv` node becomes a ConvSpec named after its node, with its input shape as inferred once
the symbolic dims of the graph inputs are given values (a symbolic batch: `batch`; others, e.g. a
dynamic H and W: `dims`). What a ConvSpec cannot say is returned as `Skipped` with the reason,
never dropped: ConvTranspose, ConvInteger, QLinearConv and other conv ops; 1-D and 3-D convs
(`Conv` too: only the input rank tells); shapes still symbolic after inference; non-float
element types; asymmetric pads (ConvSpec pads both sides of an axis alike; auto_pad SAME_* on an
even size gives such pads); convs inside If/Loop/Scan bodies (not in the main graph's shapes).
Biases are counted but not modelled (ConvSpec has none; an eval-mode torch export folds each
BatchNorm into its conv, so nearly every exported conv has one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pwbench import files
from pwbench.errors import UserError
from pwbench.workloads.spec import ConvSpec

# ONNX TensorProto element types ConvSpec knows (onnx.TensorProto.FLOAT = 1, ...)
DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64"}
CONV_OPS = ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv")


@dataclass(frozen=True)
class Skipped:
    name: str
    op_type: str
    reason: str


@dataclass
class ModelConvs:
    convs: list[ConvSpec] = field(default_factory=list)  # one per Conv node, count 1, in graph order
    skipped: list[Skipped] = field(default_factory=list)
    biased: int = 0  # how many of `convs` have a bias input
    batch: int | None = None  # the batch the convs have (None: no conv)
    resolved: dict = field(default_factory=dict)  # symbolic dim -> the value given


def load(path) -> "onnx.ModelProto":  # noqa: F821
    """An ONNX file, checked: not a file, not ONNX, cut short or invalid is a one-line UserError.
    An empty file and a truncation at a field boundary parse without error, so the checker must
    see every model. External weight data is not loaded: the shapes are in the initializers."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    data = files.read_bytes(path, "ONNX model")
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except DecodeError:
        raise UserError(f"{path} is not an ONNX model (it does not parse as an ONNX ModelProto: "
                        "not ONNX, or cut short)") from None
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise UserError(f"{path} is not a valid ONNX model: {_first_line(exc)}") from None
    return model


def convs(model, batch: int | None = None, dims: dict | None = None) -> ModelConvs:
    """The convs of a model after shape inference. batch: the value of a symbolic first dim of
    the graph inputs (default 1); giving one for a model whose batch is fixed is an error."""
    from onnx import shape_inference

    fixed, resolved = _fix_input_dims(model, batch, dims or {})
    try:
        inferred = shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises its own InferenceError types
        raise UserError(f"ONNX shape inference failed: {_first_line(exc)}") from None
    graph = inferred.graph
    found = ModelConvs(resolved=resolved)
    values = _value_shapes(graph)
    weights = {i.name: (list(i.dims), i.data_type) for i in graph.initializer}
    for index, node in enumerate(graph.node):
        name = node_name(node, index)
        _skip_subgraph_convs(node, found)
        if node.op_type not in CONV_OPS and "Conv" not in node.op_type:
            continue
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            domain = f" (domain {node.domain})" if node.domain not in ("", "ai.onnx") else ""
            found.skipped.append(Skipped(name, node.op_type, f"{node.op_type}{domain} is not a "
                                                             "2-D float Conv"))
            continue
        spec = _conv(node, name, values, weights, found)
        if spec is not None:
            found.convs.append(spec)
            found.biased += len(node.input) > 2 and node.input[2] != ""
    batches = [s.batch for s in found.convs]
    found.batch = max(set(batches), key=batches.count) if batches else None
    return found


def _conv(node, name, values, weights, found) -> ConvSpec | None:
    import onnx

    def skip(reason):
        found.skipped.append(Skipped(name, node.op_type, reason))

    x, x_type = values.get(node.input[0], (None, None))
    w, _ = weights.get(node.input[1]) or values.get(node.input[1], (None, None))
    if x is None or w is None:
        return skip("no inferred shape for its input or weight")
    if len(x) != 4:
        return skip(f"{len(x) - 2}-D convolution (input rank {len(x)})")
    if any(not isinstance(d, int) or d <= 0 for d in [*x, *w]):
        return skip(f"dynamic shape: input {_dims_text(x)}, weight {_dims_text(w)} "
                    "(give the symbolic dims a value: --dim NAME=VALUE)")
    if x_type not in DTYPES:
        return skip(f"element type {onnx.TensorProto.DataType.Name(x_type)} (not a float)")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    groups = int(attrs.get("group", 1))
    if len(w) != 4 or w[1] * groups != x[1] or w[0] % groups:
        return skip(f"weight {w} does not fit input {x} with group {groups}")
    kernel, stride = tuple(w[2:]), tuple(attrs.get("strides", (1, 1)))
    dilation = tuple(attrs.get("dilations", (1, 1)))
    pads = _pads(attrs, x[2:], kernel, stride, dilation)
    if pads[:2] != pads[2:]:
        return skip(f"asymmetric padding (top, left, bottom, right) = {pads}: a ConvSpec pads "
                    "both sides of an axis alike")
    try:
        return ConvSpec(x[0], x[1], w[0], x[2], x[3], kernel, stride, pads[:2], dilation, groups,
                        dtype=DTYPES[x_type], name=name)
    except UserError as exc:
        return skip(str(exc))


def _pads(attrs, size, kernel, stride, dilation) -> tuple:
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return tuple(attrs.get("pads", (0, 0, 0, 0)))
    if auto == "VALID":
        return (0, 0, 0, 0)
    begin, end = [], []  # SAME_UPPER / SAME_LOWER: output size = ceil(input / stride)
    for n, k, s, d in zip(size, kernel, stride, dilation):
        total = max(0, (-(-n // s) - 1) * s + d * (k - 1) + 1 - n)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return (*begin, *end)


def _fix_input_dims(model, batch, dims) -> tuple:
    """A copy of the model whose graph inputs have values for their symbolic dims, and the
    values used. The exporter's shapes of inner values still carry the old symbols: dropped, so
    that inference recomputes them from the now static inputs."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    symbols = sorted({d.dim_param for v in model.graph.input if v.type.HasField("tensor_type")
                      for d in v.type.tensor_type.shape.dim if d.HasField("dim_param")})
    resolved = {}
    for value in model.graph.input:
        if not value.type.HasField("tensor_type"):
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param"):
                given = dims.get(dim.dim_param, (batch or 1) if axis == 0 else None)
                if given is not None:
                    resolved[dim.dim_param] = given
                    dim.dim_value = given  # setting the value clears the symbol (a oneof)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    first = {v.type.tensor_type.shape.dim[0].dim_value for v in inputs
             if v.type.HasField("tensor_type") and len(v.type.tensor_type.shape.dim)
             and v.type.tensor_type.shape.dim[0].HasField("dim_value")}
    if batch is not None and first and batch not in first and not resolved:
        raise UserError(f"the model's batch is fixed at {sorted(first)[0]} (its inputs have no "
                        f"symbolic batch dim), so --batch {batch} cannot change it: leave --batch "
                        "out and give the run's `--batch` instead")
    unknown = set(dims) - resolved.keys()
    if unknown:
        raise UserError(f"--dim {', '.join(sorted(unknown))}: no graph input has such a symbolic "
                        f"dim (they have: {', '.join(symbols) or 'none'})")
    del model.graph.value_info[:]
    for value in model.graph.output:
        if value.type.HasField("tensor_type"):
            value.type.tensor_type.ClearField("shape")
    return model, resolved


def _value_shapes(graph) -> dict:
    """name -> (dims, element type); a dim is an int, or its symbol (or '?') when unknown."""
    out = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if not value.type.HasField("tensor_type"):
            continue
        tensor = value.type.tensor_type
        dims = ([d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in tensor.shape.dim] if tensor.HasField("shape") else None)
        out[value.name] = (dims, tensor.elem_type)
    return out


def _skip_subgraph_convs(node, found) -> None:
    """Convs inside control flow (If/Loop/Scan bodies): their shapes are not the main graph's."""
    for attribute in node.attribute:
        for graph in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
            for index, inner in enumerate(_walk(graph)):
                if "Conv" in inner.op_type:
                    found.skipped.append(Skipped(node_name(inner, index), inner.op_type,
                                                 f"inside the body of a {node.op_type} node"))


def _walk(graph):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                yield from _walk(sub)


def node_name(node, index: int) -> str:
    """A layer name from a node: torch module names from the TorchScript exporter's scopes, the
    node's own name otherwise, `<op>_<index>` for an unnamed node."""
    if node.name.startswith("/"):
        return module_name(node.name)
    return node.name or f"{node.op_type}_{index}"


def module_name(scope: str) -> str:
    """'/layer1/layer1.0/conv1/Conv' -> 'layer1.0.conv1';
    '/features/features.1/features.1.0/block/block.1/fc1/Conv' -> 'features.1.0.block.1.fc1'.
    Each scope names a submodule relative to its parent attribute; one that extends the
    previous scope ('block' -> 'block.0') is an index into it. The last part is the op."""
    stack: list[str] = []
    for part in [p for p in scope.split("/") if p][:-1]:
        if stack and part.startswith(stack[-1] + "."):
            stack[-1] = part
        else:
            stack.append(part)
    return ".".join(stack) if stack else scope


def _dims_text(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__
