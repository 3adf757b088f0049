"""griffe extensions for the API reference: attrs' ``__init__`` and literal blocks.

griffe reads the source without running it, so it sees no ``__init__`` on an
``@attrs.frozen`` / ``@attrs.define`` class: the reference would show every field
documented under "Args:" as *required* with an empty type column. This extension
rebuilds the signature from the class body, as griffe's own ``dataclasses``
extension does for dataclasses: one parameter per annotated field (base classes'
fields first), keyword-only when the class or the field says so, the default from
``= value``, ``attrs.field(default=...)``, ``factory=`` or ``attrs.Factory(...)``,
fields with ``init=False`` or a ``ClassVar`` left out, a leading underscore dropped
from the parameter name (as attrs does), ``alias=`` honoured.

A second extension turns the reStructuredText literal blocks some docstrings use
(a paragraph ending in ``::`` and an indented block) into fenced code blocks, so
Markdown shows neither the ``::`` nor a block without highlighting.

A third extension keeps private names out of signatures: a parameter's default that
names a private module's constant (``timeout=DEFAULT_TIMEOUT``) shows its value
(``timeout=30.0``, ``max_video_bytes=1024**3``), and a private type alias in an annotation (``task: TaskLike``)
shows what it stands for (``task: Task | TaskResult | TaskSummary | str``), so a
reader sees values and public types instead of names the reference does not hold.

Loaded by ``mkdocs.yml`` (``extensions: [docs/_griffe_attrs.py:...]``); not part of
the package and not copied into the site.
"""

from __future__ import annotations

import ast
import dataclasses
import operator
from collections.abc import Callable
from typing import Any

import griffe

DECORATORS = frozenset(
    f"{module}.{name}"
    for module in ("attrs", "attr")
    for name in ("frozen", "define", "mutable", "s", "attrs", "dataclass")
)
FIELD_CALLS = frozenset({"attrs.field", "attr.field", "attr.ib", "attr.attrib", "attrs.attrib"})
FACTORY_CALLS = frozenset({"attrs.Factory", "attr.Factory"})


def _decorator(cls: griffe.Class) -> griffe.Expr | None:
    for decorator in cls.decorators:
        value = decorator.value
        if isinstance(value, griffe.Expr) and value.canonical_path in DECORATORS:
            return value
    return None


def _call_args(expr: object) -> dict[str, Any]:
    if not isinstance(expr, griffe.ExprCall):
        return {}
    return {arg.name: arg.value for arg in expr.arguments if isinstance(arg, griffe.ExprKeyword)}


def _fields(cls: griffe.Class, class_kw_only: bool) -> list[griffe.Parameter]:
    params = []
    for member in list(cls.members.values()):
        if not isinstance(member, griffe.Attribute) or member.annotation is None:
            continue
        if "property" in member.labels or (
            "class-attribute" in member.labels and "instance-attribute" not in member.labels
        ):
            continue
        annotation = member.annotation
        if isinstance(annotation, griffe.Expr) and annotation.canonical_path in (
            "typing.ClassVar",
            "typing.Final",
        ):
            continue
        value = member.value
        args: dict[str, Any] = {}
        if isinstance(value, griffe.ExprCall) and value.canonical_path in FIELD_CALLS:
            args = _call_args(value)
            value = args.get("default")
            if "factory" in args:
                value = griffe.ExprCall(function=args["factory"], arguments=[])
        if isinstance(value, griffe.ExprCall) and value.canonical_path in FACTORY_CALLS:
            value = griffe.ExprCall(function=value.arguments[0], arguments=[])
        if str(args.get("init", "True")) == "False":
            continue
        kw_only = class_kw_only or str(args.get("kw_only", "False")) == "True"
        name = str(args["alias"]).strip("'\"") if "alias" in args else member.name.lstrip("_")
        params.append(
            griffe.Parameter(
                name,
                annotation=annotation,
                kind=(
                    griffe.ParameterKind.keyword_only
                    if kw_only
                    else griffe.ParameterKind.positional_or_keyword
                ),
                default=value,
                docstring=member.docstring,
            )
        )
    return params


def _set_init(cls: griffe.Class) -> None:
    decorator = _decorator(cls)
    if decorator is None or "__init__" in cls.members:
        return
    params: dict[str, griffe.Parameter] = {}
    try:
        mro = [*reversed(cls.mro()), cls]
    except ValueError:
        mro = [cls]
    for klass in mro:
        dec = _decorator(klass)
        if dec is None:
            continue
        if str(_call_args(dec).get("init", "True")) == "False":
            return
        kw_only = str(_call_args(dec).get("kw_only", "False")) == "True"
        for param in _fields(klass, kw_only):
            params[param.name] = param
    ordered = [p for p in params.values() if p.kind is not griffe.ParameterKind.keyword_only]
    ordered += [p for p in params.values() if p.kind is griffe.ParameterKind.keyword_only]
    cls.set_member(
        "__init__",
        griffe.Function(
            "__init__",
            lineno=0,
            endlineno=0,
            parent=cls,
            parameters=griffe.Parameters(
                griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword),
                *ordered,
            ),
            returns="None",
        ),
    )


def _walk(obj: griffe.Module | griffe.Class, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if isinstance(obj, griffe.Class):
        _set_init(obj)
    for member in list(obj.members.values()):
        if not member.is_alias and isinstance(member, (griffe.Module, griffe.Class)):
            _walk(member, seen)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def fence_literal_blocks(text: str) -> str:
    """``intro::`` + an indented block -> ``intro:`` + a fenced block (``python``, or
    ``text`` for drawings); a bare ``Example::`` becomes ``For example:`` (a line
    ``Example:`` would open a Google "Examples" section)."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        # The summary line's block is not indented (the docstring's first line sat
        # right after the quotes): it runs to the next blank line.
        first = i == 0 and j < len(lines)
        if (
            not line.endswith("::")
            or j >= len(lines)
            or (_indent(lines[j]) <= _indent(line) and not first)
        ):
            out.append(lines[i])
            i += 1
            continue
        base = " " * _indent(line)
        k = j
        if first and _indent(lines[j]) == 0:
            while k < len(lines) and lines[k].strip():
                k += 1
        while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) > len(base)):
            k += 1
        block = lines[j:k]
        while block and not block[-1].strip():
            block.pop()
        cut = min(_indent(b) for b in block if b.strip())
        body = [base + b[cut:] if b.strip() else "" for b in block]
        drawing = any(ch in "".join(block) for ch in "─│├└▶▼")
        head = line[:-2].rstrip()
        if head.strip() in ("Example", "Examples"):
            head = base + "For example:"
        elif head.strip():
            head += ":"
        if head.strip():
            out += [head, ""]
        out += [f"{base}```{'text' if drawing else 'python'}", *body, f"{base}```"]
        if k < len(lines):
            out.append("")
        i = k
    return "\n".join(out)


def _fence_all(obj: griffe.Object, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if obj.docstring is not None:
        obj.docstring.value = fence_literal_blocks(obj.docstring.value)
    for member in list(obj.members.values()):
        if not member.is_alias:
            _fence_all(member, seen)  # type: ignore[arg-type]


class AttrsInit(griffe.Extension):
    """Give attrs classes the ``__init__`` attrs would generate (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _walk(pkg, set())


class FencedLiteralBlocks(griffe.Extension):
    """Turn reStructuredText literal blocks (``::``) into fenced code blocks."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _fence_all(pkg, set())


_ARITHMETIC: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.Not: operator.not_,
}


def evaluate(text: str) -> str:
    """A constant written as arithmetic (``24 * 3600.0``) as its value (``86400.0``);
    anything else as it is."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            return _ARITHMETIC[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _ARITHMETIC:
            return _ARITHMETIC[type(node.op)](value(node.operand))
        raise ValueError(text)

    try:
        return repr(value(ast.parse(text, mode="eval").body))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError):
        return text


def _is_private(path: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in path.split("."))


def _private_constants(
    obj: griffe.Module, public: set[str], out: dict[str, griffe.Attribute]
) -> None:
    """Module-level attributes with a value in private modules, not exported."""
    for member in list(obj.members.values()):
        if member.is_alias:
            continue
        if isinstance(member, griffe.Module):
            _private_constants(member, public, out)
        elif (
            isinstance(member, griffe.Attribute)
            and member.value is not None
            and _is_private(member.path)
            and member.path not in public
        ):
            out[member.path] = member


def _exported(pkg: griffe.Module) -> set[str]:
    """The canonical paths of the names public modules export (``__all__``)."""
    paths: set[str] = set()
    modules = [pkg, *(m for m in pkg.modules.values() if not _is_private(m.path))]
    for module in modules:
        for name in module.exports or ():
            member = module.members.get(str(name))
            if member is not None:
                paths.add(member.target_path if member.is_alias else member.path)
    return paths


def _target(expr: object, table: dict[str, griffe.Attribute]) -> griffe.Attribute | None:
    if not isinstance(expr, (griffe.ExprName, griffe.ExprAttribute)):
        return None
    try:
        return table.get(expr.canonical_path)
    except Exception:  # an unresolvable name stays as written
        return None


def _map_children(expr: Any, fn: Callable[[Any], Any]) -> Any:
    """``expr`` with ``fn`` applied to each sub-expression it holds (in place)."""
    if isinstance(expr, griffe.Expr) and dataclasses.is_dataclass(expr):
        for field in dataclasses.fields(expr):
            if field.name == "parent":
                continue
            item = getattr(expr, field.name)
            if isinstance(item, griffe.Expr):
                setattr(expr, field.name, fn(item))
            elif isinstance(item, list):
                setattr(
                    expr, field.name, [fn(x) if isinstance(x, griffe.Expr) else x for x in item]
                )
    return expr


def inline_aliases(expr: Any, table: dict[str, griffe.Attribute], depth: int = 0) -> Any:
    """``expr`` with each private alias replaced by its value (aliases of aliases too)."""
    found = _target(expr, table)
    if found is not None and isinstance(found.value, griffe.Expr) and depth < 8:
        return inline_aliases(found.value, table, depth + 1)
    return _map_children(expr, lambda item: inline_aliases(item, table, depth))


def _constant(attribute: griffe.Attribute) -> str | None:
    """A private constant's value as source text (a literal, or arithmetic on literals
    as written: ``1024**3`` reads better than its value); ``None`` for anything else
    (a call, a name)."""
    text = str(attribute.value)
    if evaluate(text) != text:
        return text
    try:
        ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError):
        return None
    return text


def _inline_constants(expr: Any, table: dict[str, griffe.Attribute]) -> Any:
    if not (isinstance(expr, griffe.Expr) and dataclasses.is_dataclass(expr)):
        return expr
    found = _target(expr, table)
    if found is not None:
        return _constant(found) or expr
    return _map_children(expr, lambda item: _inline_constants(item, table))


def _default(default: Any, table: dict[str, griffe.Attribute]) -> Any:
    """A default with each private constant in it replaced by its value, worked out
    when the whole is arithmetic on literals (``not QUEUE_WHEN_BUSY`` -> ``False``)."""
    default = _inline_constants(default, table)
    if not isinstance(default, griffe.Expr):
        return default
    text = str(default)
    value = evaluate(text)
    return value if value != text else default


def _publish(obj: griffe.Object, table: dict[str, griffe.Attribute], seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if isinstance(obj, griffe.Function):
        for function in [obj, *(obj.overloads or ())]:
            for param in function.parameters:
                param.annotation = inline_aliases(param.annotation, table)
                param.default = _default(param.default, table)
            function.returns = inline_aliases(function.returns, table)
    elif isinstance(obj, griffe.Attribute) and not _is_private(obj.name):
        obj.annotation = inline_aliases(obj.annotation, table)
    for member in list(obj.members.values()):
        if not member.is_alias:
            _publish(member, table, seen)  # type: ignore[arg-type]


class PublicSignatures(griffe.Extension):
    """Show private constants' values and private aliases' meaning in signatures."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        table: dict[str, griffe.Attribute] = {}
        _private_constants(pkg, _exported(pkg), table)
        _publish(pkg, table, set())


__all__ = [
    "AttrsInit",
    "FencedLiteralBlocks",
    "PublicSignatures",
    "evaluate",
    "fence_literal_blocks",
    "inline_aliases",
]
