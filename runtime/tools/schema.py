"""A tool's JSON schema (OpenAI function-calling shape) derived statically from its Python source.

The source is only parsed with ``ast``, never executed: tool code comes from clients, and the schema
must be known before (and without) running it. The rules mirror the Letta server's: the last top-level
function is the tool, its Google-style docstring describes it and every parameter, and each parameter's
annotation maps to a JSON schema type.
"""

from __future__ import annotations

import ast
import copy
import math
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from runtime.errors import ValidationFailed
from runtime.providers.base import ToolSchema

MAX_NAME_LENGTH = 48
NO_DESCRIPTION = "No description available"
_FAILED = "source_code: Schema generation failed: "

# Parameters the runtime supplies itself, so the model never sees them.
_INJECTED_PARAMS = frozenset({"self", "agent_state"})

_PRIMITIVES: dict[str, str] = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_ARRAYS = frozenset({"list", "List", "Sequence", "MutableSequence", "set", "Set", "frozenset", "FrozenSet"})
_OBJECTS = frozenset({"dict", "Dict", "Mapping", "MutableMapping"})

_PARAM_SECTIONS = frozenset(
    {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments", "other parameters"}
)
_EXAMPLE_SECTIONS = frozenset({"examples", "example"})
_SECTION_RE = re.compile(
    r"^(args|arguments|parameters|params|keyword args|keyword arguments|other parameters|returns?|"
    r"yields?|raises|exceptions|examples?|attributes|notes?|warnings?|todo|see also|references)\s*:\s*$",
    re.IGNORECASE,
)
# Sphinx field lists end the free-text description just as a Google section header does.
_SPHINX_FIELD_RE = re.compile(
    r"^:(param|parameter|arg|argument|key|keyword|type|returns?|rtype|raises?|except|exception|yields?|ytype)\b"
)
_SPHINX_PARAM_RE = re.compile(r"^:(?:param|parameter|arg|argument)\s+(?:\S+\s+)?\**(\w+)\s*:(.*)$")
# `name (type): description` or `name: description`; the lazy type group lets types hold brackets/parens.
_GOOGLE_ARG_RE = re.compile(r"^\**(\w+)\s*(?:\((.*?)\))?\s*:(.*)$")


class FunctionSchema(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]


class _UnsupportedType(Exception):
    """Raised inside the type mapping; the caller adds which parameter it belongs to."""


@dataclass
class _Docstring:
    summary: str = ""
    long_description: str = ""
    examples: str = ""
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class _Param:
    node: ast.arg
    default: ast.expr | None


def schema_from_source(source_code: str, args_json_schema: dict[str, Any] | None = None) -> FunctionSchema:
    """The schema of the last top-level function in ``source_code``.

    With ``args_json_schema`` the parameters are taken from it as given, and the per-parameter
    annotation and docstring checks are skipped; name and description still come from the source.
    """
    module = _parse(source_code)
    function = _last_function(module)
    _check_name(function.name)
    docstring = _parse_docstring(ast.get_docstring(function) or "")
    if args_json_schema is not None:
        parameters = _given_parameters(args_json_schema)
    else:
        parameters = _parameters(function, docstring, _model_classes(module))
    return FunctionSchema(name=function.name, description=_description(docstring), parameters=parameters)


# --- the function ---------------------------------------------------------------------------------


def _parse(source_code: str) -> ast.Module:
    try:
        return ast.parse(source_code)
    except SyntaxError as exc:
        where = f" at line {exc.lineno}" if exc.lineno else ""  # null bytes, for one, come without a line
        raise ValidationFailed(f"{_FAILED}invalid Python syntax{where}: {exc.msg}") from None
    except ValueError as exc:  # some Python versions report null bytes this way
        raise ValidationFailed(f"{_FAILED}{exc}") from None


def _last_function(module: ast.Module) -> ast.FunctionDef | ast.AsyncFunctionDef:
    functions = [node for node in module.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    if not functions:
        raise ValidationFailed(f"{_FAILED}no top-level function definition found in the source code")
    return functions[-1]


def _check_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationFailed(
            f"name: the function name {name!r} is {len(name)} characters long; "
            f"tool names are limited to {MAX_NAME_LENGTH}"
        )


def _signature(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[_Param]:
    """Named parameters in signature order with their defaults; *args and **kwargs are left out."""
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    # Positional defaults belong to the last len(defaults) positional parameters.
    padding: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    params = [
        _Param(node, default) for node, default in zip(positional, padding + args.defaults, strict=True)
    ]
    params += [_Param(node, default) for node, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return params


# --- parameters -----------------------------------------------------------------------------------


def _parameters(
    function: ast.FunctionDef | ast.AsyncFunctionDef,
    docstring: _Docstring,
    models: dict[str, ast.ClassDef],
) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in _signature(function):
        name = param.node.arg
        if name in _INJECTED_PARAMS:
            continue
        prop, optional = _property(function.name, param, docstring, models)
        properties[name] = prop
        if param.default is None and not optional:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def _property(
    function_name: str, param: _Param, docstring: _Docstring, models: dict[str, ast.ClassDef]
) -> tuple[dict[str, Any], bool]:
    name = param.node.arg
    where = f"parameter {name!r} of {function_name}"
    annotation = param.node.annotation
    if annotation is None:
        raise ValidationFailed(f"{_FAILED}{where} has no type annotation")
    description = docstring.params.get(name)
    if not description:
        raise ValidationFailed(f"{_FAILED}{where} has no description in the docstring's Args section")
    try:
        schema, optional = _TypeMapper(models).map(annotation)
    except RecursionError:  # absurdly nested annotations, e.g. strings inside strings
        raise ValidationFailed(f"{_FAILED}{where} has a type annotation nested too deeply") from None
    except _UnsupportedType as exc:
        raise ValidationFailed(
            f"{_FAILED}{where} has unsupported type {ast.unparse(annotation)!r}: {exc}"
        ) from None
    prop = {**schema, "description": description}
    _add_default(prop, param.default)
    return prop, optional


def _add_default(prop: dict[str, Any], default: ast.expr | None) -> None:
    """Record a default only when it is a literal that JSON can carry; other defaults stay implicit."""
    if default is None:
        return
    try:
        value = ast.literal_eval(default)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return
    ok, json_value = _as_json(value)
    if ok:
        prop["default"] = json_value


def _as_json(value: Any) -> tuple[bool, Any]:
    if isinstance(value, float):
        return math.isfinite(value), value  # `1e999` is a literal, but JSON has no infinity
    if value is None or isinstance(value, str | bool | int):
        return True, value
    if isinstance(value, list | tuple):
        items = [_as_json(item) for item in value]
        return all(ok for ok, _ in items), [item for _, item in items]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        entries = {key: _as_json(item) for key, item in value.items()}
        return all(ok for ok, _ in entries.values()), {key: item for key, (_, item) in entries.items()}
    return False, None  # bytes, sets, complex numbers: no JSON spelling


def _given_parameters(args_json_schema: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(args_json_schema, dict):
        raise ValidationFailed("args_json_schema: must be a JSON object")
    parameters = copy.deepcopy(args_json_schema)  # never alias the caller's dict
    if parameters.setdefault("type", "object") != "object":
        raise ValidationFailed(f"args_json_schema: type must be 'object', not {parameters['type']!r}")
    if not isinstance(parameters.get("properties"), dict):
        raise ValidationFailed("args_json_schema: must have a 'properties' object")
    return parameters


def given_function(name: Any, description: Any, parameters: Any, field: str) -> ToolSchema:
    """A function's schema as a client wrote it (a Letta tool's ``json_schema``, an OpenAI function
    tool), checked so that a provider can be sent it: a wrong shape fails here, naming the field,
    and never later in a turn."""
    if not isinstance(name, str) or not name:
        raise ValidationFailed(f"{field}.name: a function needs a name (a non-empty string)", f"{field}.name")
    if description is not None and not isinstance(description, str):
        raise ValidationFailed(f"{field}.description: must be a string", f"{field}.description")
    if parameters is None:
        return ToolSchema(name=name, description=description or "")
    where = f"{field}.parameters"
    if not isinstance(parameters, dict):
        raise ValidationFailed(f"{where}: must be a JSON schema object", where)
    if parameters.get("type", "object") != "object":
        raise ValidationFailed(f"{where}: type must be 'object', not {parameters['type']!r}", where)
    if not isinstance(parameters.get("properties", {}), dict):
        raise ValidationFailed(f"{where}.properties: must be an object", f"{where}.properties")
    return ToolSchema(name=name, description=description or "", parameters=parameters)


# --- annotation -> JSON schema --------------------------------------------------------------------


def _model_classes(module: ast.Module) -> dict[str, ast.ClassDef]:
    """Top-level classes deriving (directly or via another such class) from pydantic's BaseModel."""
    models: dict[str, ast.ClassDef] = {}
    for node in module.body:
        if isinstance(node, ast.ClassDef) and any(
            _type_name(base) == "BaseModel" or _type_name(base) in models for base in node.bases
        ):
            models[node.name] = node
    return models


def _type_name(node: ast.expr) -> str | None:
    """`X` or `module.X` -> "X"; anything else has no simple name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_none(node: ast.expr) -> bool:
    return (isinstance(node, ast.Constant) and node.value is None) or _type_name(node) == "NoneType"


class _TypeMapper:
    """Maps annotation ASTs to JSON schema; ``map`` also says whether None is allowed (Optional)."""

    def __init__(self, models: dict[str, ast.ClassDef]) -> None:
        self._models = models
        self._expanding: list[str] = []  # models being expanded, to refuse self-reference

    def map(self, node: ast.expr) -> tuple[dict[str, Any], bool]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return self.map(_parse_string_annotation(node.value))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self._union(_flatten_bitor(node))
        if isinstance(node, ast.Subscript):
            return self._generic(node)
        return self._plain(node), False

    def _schema(self, node: ast.expr) -> dict[str, Any]:
        # Nested positions (list items, model fields) cannot be "not required"; Optional just unwraps.
        return self.map(node)[0]

    def _plain(self, node: ast.expr) -> dict[str, Any]:
        name = _type_name(node)
        if name is None:
            raise _UnsupportedType(f"cannot map {ast.unparse(node)!r} to a JSON schema type")
        if name in _PRIMITIVES:
            return {"type": _PRIMITIVES[name]}
        if name in _ARRAYS:
            return {"type": "array"}
        if name in _OBJECTS:
            return {"type": "object"}
        if name == "Any":
            return {}
        if name in self._models:
            return self._model(self._models[name])
        raise _UnsupportedType(f"unknown type {name!r}")

    def _generic(self, node: ast.Subscript) -> tuple[dict[str, Any], bool]:
        name = _type_name(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if name == "Optional" and len(args) == 1:
            return self._union([*args, ast.Constant(None)])
        if name == "Union":
            return self._union(args)
        if name == "Annotated":
            return self.map(args[0])
        if name == "Literal":
            return _literal(args)
        if name in _ARRAYS and len(args) == 1:
            return {"type": "array", "items": self._schema(args[0])}, False
        if name in _OBJECTS:
            return {"type": "object"}, False
        raise _UnsupportedType(f"cannot map {ast.unparse(node)!r} to a JSON schema type")

    def _union(self, members: list[ast.expr]) -> tuple[dict[str, Any], bool]:
        flat = [leaf for member in members for leaf in _flatten_union(member)]
        concrete = [member for member in flat if not _is_none(member)]
        if len(concrete) != 1:
            raise _UnsupportedType("only a single type or Optional[type] is supported, not a Union")
        return self._schema(concrete[0]), len(concrete) < len(flat)

    def _model(self, cls: ast.ClassDef) -> dict[str, Any]:
        if cls.name in self._expanding:
            raise _UnsupportedType(f"model {cls.name!r} refers to itself")
        self._expanding.append(cls.name)
        try:
            properties: dict[str, Any] = {}
            required: list[str] = []
            for name, stmt in self._fields(cls).items():
                prop, optional = self.map(stmt.annotation)
                has_default = _field_info(stmt.value, prop)
                properties[name] = prop
                if not has_default and not optional:
                    required.append(name)
        finally:
            self._expanding.pop()
        schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
        if docstring := ast.get_docstring(cls):
            schema["description"] = docstring  # as pydantic does; a parameter's own description wins
        return schema

    def _fields(self, cls: ast.ClassDef, seen: frozenset[str] = frozenset()) -> dict[str, ast.AnnAssign]:
        """Own fields plus those inherited from models in the same source (bases first, as pydantic)."""
        fields: dict[str, ast.AnnAssign] = {}
        seen = seen | {cls.name}  # a redefined class name could otherwise make inheritance cyclic
        for base in reversed(cls.bases):
            name = _type_name(base)
            if name in self._models and name not in seen:
                fields.update(self._fields(self._models[name], seen))
        fields.update({stmt.target.id: stmt for stmt in _model_fields(cls)})  # type: ignore[union-attr]
        return fields


def _parse_string_annotation(text: str) -> ast.expr:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError):
        raise _UnsupportedType(f"cannot parse the string annotation {text!r}") from None


def _flatten_bitor(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*_flatten_bitor(node.left), *_flatten_bitor(node.right)]
    return [node]


def _flatten_union(node: ast.expr) -> list[ast.expr]:
    """Members of nested unions (`Optional[int | None]`, `Union["int", None]`) as one flat list."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        node = _parse_string_annotation(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [leaf for member in _flatten_bitor(node) for leaf in _flatten_union(member)]
    if isinstance(node, ast.Subscript) and _type_name(node.value) in {"Optional", "Union"}:
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if _type_name(node.value) == "Optional":
            args.append(ast.Constant(None))
        return [leaf for member in args for leaf in _flatten_union(member)]
    return [node]


def _literal(args: list[ast.expr]) -> tuple[dict[str, Any], bool]:
    try:
        values = [ast.literal_eval(arg) for arg in args]
    except ValueError:
        raise _UnsupportedType("Literal values must be constants") from None
    enum = [value for value in values if value is not None]  # Literal[..., None] means Optional
    if not enum:
        raise _UnsupportedType("a Literal needs at least one value besides None")
    schema: dict[str, Any] = {"enum": enum}
    json_type = _literal_type(enum)
    if json_type is not None:
        schema = {"type": json_type, **schema}
    return schema, len(enum) < len(values)


def _literal_type(values: list[Any]) -> str | None:
    """The one JSON type all literal values share, if any (bool is checked first: it subclasses int)."""
    if all(isinstance(value, bool) for value in values):
        return "boolean"
    if any(isinstance(value, bool) for value in values):
        return None
    if all(isinstance(value, str) for value in values):
        return "string"
    if all(isinstance(value, int) for value in values):
        return "integer"
    if all(isinstance(value, int | float) for value in values):
        return "number"
    return None


def _model_fields(cls: ast.ClassDef) -> list[ast.AnnAssign]:
    """Annotated, public, non-ClassVar fields declared in the class body."""
    fields = []
    for stmt in cls.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        annotation = stmt.annotation
        base = annotation.value if isinstance(annotation, ast.Subscript) else annotation
        if stmt.target.id.startswith("_") or _type_name(base) == "ClassVar":
            continue
        fields.append(stmt)
    return fields


def _field_info(value: ast.expr | None, prop: dict[str, Any]) -> bool:
    """Fold a field's `= default` or `= Field(...)` into ``prop``; returns whether it has a default."""
    if value is None:
        return False
    if not (isinstance(value, ast.Call) and _type_name(value.func) == "Field"):
        _add_default(prop, value)
        return True
    keywords = {kw.arg: kw.value for kw in value.keywords if kw.arg is not None}
    description = keywords.get("description")
    if isinstance(description, ast.Constant) and isinstance(description.value, str):
        prop["description"] = description.value
    default = value.args[0] if value.args else keywords.get("default")
    if default is not None and not (isinstance(default, ast.Constant) and default.value is Ellipsis):
        _add_default(prop, default)
        return True
    return "default_factory" in keywords


# --- docstrings -----------------------------------------------------------------------------------


def _description(docstring: _Docstring) -> str:
    description = docstring.summary or NO_DESCRIPTION
    if docstring.long_description:
        description += "\n\n" + docstring.long_description
    if docstring.examples:
        description += "\n\nExamples:\n" + docstring.examples
    return description


def _parse_docstring(text: str) -> _Docstring:
    """Google-style sections, with Sphinx `:param name:` fields as a fallback for parameters.

    ``text`` is already cleaned (``ast.get_docstring`` dedents it), so headers sit at column 0.
    """
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if _is_section_start(line)), len(lines))
    free_text = "\n".join(lines[:end]).strip()
    summary, _, long_description = free_text.partition("\n")
    docstring = _Docstring(summary=summary.strip(), long_description=long_description.strip())
    for title, body in _sections(lines[end:]):
        if title in _PARAM_SECTIONS:
            docstring.params.update(_google_args(body))
        elif title in _EXAMPLE_SECTIONS:
            docstring.examples = textwrap.dedent("\n".join(body)).strip()
    for name, description in _sphinx_params(lines).items():
        docstring.params.setdefault(name, description)
    return docstring


def _is_section_start(line: str) -> bool:
    return bool(_SECTION_RE.match(line) or _SPHINX_FIELD_RE.match(line))


def _sections(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(lower-cased title, body lines) per Google section header; text before the first is dropped."""
    sections: list[tuple[str, list[str]]] = []
    for line in lines:
        match = _SECTION_RE.match(line)
        if match:
            sections.append((match.group(1).lower(), []))
        elif sections:
            sections[-1][1].append(line)
    return sections


def _entries(lines: list[str], start: re.Pattern[str]) -> list[tuple[re.Match[str], list[str]]]:
    """Lines at column 0 matching ``start`` open an entry; indented or blank lines continue it."""
    entries: list[tuple[re.Match[str], list[str]]] = []
    current: list[str] | None = None  # continuation lines of the open entry, if one is open
    for line in lines:
        match = start.match(line)
        if match:
            current = []
            entries.append((match, current))
        elif current is not None and (not line.strip() or line[0].isspace()):
            current.append(line)
        else:
            current = None  # other text at column 0 closes the entry
    return entries


def _entry_text(first: str, continuation: list[str]) -> str:
    """An entry's description: its first line, then the continuation lines with their indent removed."""
    rest = textwrap.dedent("\n".join(continuation)).strip()
    return "\n".join(part for part in (first.strip(), rest) if part)


def _google_args(body: list[str]) -> dict[str, str]:
    lines = _dedent_to_first(body)
    return {
        match.group(1): _entry_text(match.group(3), rest) for match, rest in _entries(lines, _GOOGLE_ARG_RE)
    }


def _dedent_to_first(lines: list[str]) -> list[str]:
    """Remove the first non-blank line's indent from every line (common-indent dedent would be
    defeated by one stray line at column 0 that follows the section)."""
    first = next((line for line in lines if line.strip()), "")
    width = len(first) - len(first.lstrip())
    return [line[min(width, len(line) - len(line.lstrip())) :] for line in lines]


def _sphinx_params(lines: list[str]) -> dict[str, str]:
    return {
        match.group(1): _entry_text(match.group(2), rest) for match, rest in _entries(lines, _SPHINX_PARAM_RE)
    }
