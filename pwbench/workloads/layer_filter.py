"""`--filter`: which layers of a suite to run, as a small expression language of its own.

Filters come from CI configuration and pull requests, so they are data, never code: the text is
parsed with Python's parser into a syntax tree, every node is checked against the short list
below, and the tree is turned into plain functions over a layer's columns (`ConvSpec.describe`).
Nothing is evaluated as Python, no name outside the columns exists, and there are no attributes,
calls or subscripts but the two string tests named here. Everything else is one line, exit 2.

    condition := value OP value [OP value ...]     OP: == != < <= > >= in, not in
               | condition and condition | condition or condition | not condition
               | COLUMN.startswith('text') | COLUMN.endswith('text') | ( condition )
    value     := COLUMN | 'text' | number | True | False | [value, ...] | (value, ...)

    kind == 'depthwise' and stride == 2
    layer in ['conv1', 'layer1.0.conv2'] or 'expand' in layer
    out_channels >= 256 and not layer.startswith('stem')

Pairs (kernel_size, stride, padding, dilation) are text, '3' or '1x7'; a number compares with a
text that reads as that number (`stride == 2` is `stride == '2'`), and `'x' in layer` asks whether
the text contains 'x'.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable

from pwbench.errors import UserError

MAX_LENGTH = 2000  # characters: a filter is a line of a CI file, not a program
MAX_DEPTH = 50  # nested operations

_ORDER = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_STRING_TESTS = {"startswith": str.startswith, "endswith": str.endswith}

Row = dict
Value = Callable[[Row], object]


class FilterError(ValueError):
    """What is wrong with a filter, in words."""


def compile_filter(text: str, columns) -> Callable[[Row], bool]:
    """The filter as a function of a layer's columns; FilterError says what is not allowed."""
    if len(text) > MAX_LENGTH:
        raise FilterError(f"longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise FilterError(f"not an expression ({exc.msg})") from None
    except (RecursionError, MemoryError, ValueError):  # deep nesting; NUL bytes
        raise FilterError("not an expression") from None
    return _Compiler(set(columns)).condition(tree.body, 0)


class _Compiler:
    def __init__(self, columns: set[str]):
        self.columns = columns

    def condition(self, node, depth: int) -> Callable[[Row], bool]:
        if depth > MAX_DEPTH:
            raise FilterError(f"nested more than {MAX_DEPTH} deep")
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(v, depth + 1) for v in node.values]
            if isinstance(node.op, ast.And):
                return lambda row: all(p(row) for p in parts)
            return lambda row: any(p(row) for p in parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.condition(node.operand, depth + 1)
            return lambda row: not inner(row)
        if isinstance(node, ast.Compare):
            return self.comparison(node, depth)
        if isinstance(node, ast.Call):
            return self.string_test(node)
        _refuse_bit_operators(node)
        raise FilterError(f"{_shown(node)} is not a condition (compare a column with a value, "
                          "e.g. kind == 'depthwise')")

    def comparison(self, node: ast.Compare, depth: int) -> Callable[[Row], bool]:
        values = [self.value(v, depth + 1) for v in (node.left, *node.comparators)]
        tests = [_test(op) for op in node.ops]
        pairs = list(zip(tests, values, values[1:]))
        return lambda row: all(test(left(row), right(row)) for test, left, right in pairs)

    def string_test(self, node: ast.Call) -> Callable[[Row], bool]:
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr in _STRING_TESTS
                and isinstance(func.value, ast.Name) and len(node.args) == 1 and not node.keywords
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            raise FilterError(f"{_shown(node)}: the only calls are COLUMN.startswith('text') and "
                              "COLUMN.endswith('text')")
        column, test, text = self.column(func.value), _STRING_TESTS[func.attr], node.args[0].value
        return lambda row: isinstance(column(row), str) and test(column(row), text)

    def value(self, node, depth: int) -> Value:
        if depth > MAX_DEPTH:
            raise FilterError(f"nested more than {MAX_DEPTH} deep")
        if isinstance(node, ast.Name):
            return self.column(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)):
            constant = node.value
            return lambda row: constant
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
                and isinstance(node.operand, ast.Constant)
                and type(node.operand.value) in (int, float)):
            constant = -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
            return lambda row: constant
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.value(v, depth + 1) for v in node.elts]
            return lambda row: [item(row) for item in items]
        _refuse_bit_operators(node)
        raise FilterError(f"{_shown(node)} is not allowed: only column names, 'text', numbers, "
                          "True, False and [lists] of them")

    def column(self, node: ast.Name) -> Value:
        if node.id not in self.columns:
            raise FilterError(f"no column {node.id!r}")
        name = node.id
        return lambda row: row.get(name)


def _refuse_bit_operators(node) -> None:
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        raise FilterError(f"{_shown(node)}: write 'and' / 'or', not '&' / '|'")


def _test(op) -> Callable[[object, object], bool]:
    if isinstance(op, ast.Eq):
        return _equal
    if isinstance(op, ast.NotEq):
        return lambda a, b: not _equal(a, b)
    if isinstance(op, ast.In):
        return _contains
    if isinstance(op, ast.NotIn):
        return lambda a, b: not _contains(a, b)
    if type(op) in _ORDER:
        compare = _ORDER[type(op)]
        return lambda a, b: _ordered(compare, a, b)
    raise FilterError(f"operator {type(op).__name__} is not allowed (use == != < <= > >= in)")


def _number(value):
    """A number, or a text that reads as one ('2'), as a number; anything else as it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _equal(a, b) -> bool:
    if isinstance(a, str) != isinstance(b, str):  # a pair's text against a number
        a, b = _number(a), _number(b)
    return a == b


def _contains(item, collection) -> bool:
    if isinstance(collection, str):
        return isinstance(item, str) and item in collection
    if isinstance(collection, list):
        return any(_equal(item, c) for c in collection)
    raise FilterError("the right side of 'in' must be a [list] or a text column")


def _ordered(compare, a, b) -> bool:
    a, b = (_number(a), _number(b)) if isinstance(a, str) != isinstance(b, str) else (a, b)
    if isinstance(a, str) != isinstance(b, str) or a is None or b is None:
        return False  # a text that is no number ('1x7') is neither above nor below a number
    return compare(a, b)


def _shown(node) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # noqa: BLE001 - only for the message
        text = type(node).__name__
    return repr(text if len(text) <= 60 else text[:57] + "...")


def select(specs, text: str | None) -> list:
    """The specs whose columns (`describe()`) satisfy the filter; UserError for a bad filter."""
    specs = list(specs)
    if not text:
        return specs
    rows = [s.describe() for s in specs]
    columns = list(dict.fromkeys(c for r in rows for c in r))
    try:
        keep = compile_filter(text, columns)
        return [s for s, r in zip(specs, rows) if keep(r)]
    except FilterError as exc:
        shown = repr(text if len(text) <= 100 else text[:100] + "...")
        raise UserError(f"bad --filter {shown}: {exc}. Columns: {', '.join(columns)}") from None
