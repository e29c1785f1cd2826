"""Tool JSON schemas derived statically from Python source."""

from __future__ import annotations

import pytest

from runtime.errors import ValidationFailed
from runtime.tools.schema import FunctionSchema, schema_from_source

FAILED = "source_code: Schema generation failed: "

ROLL_DICE = '''
def roll_dice(num_sides: int) -> int:
    """
    Returns a random number between 1 and num_sides.
    Args:
        num_sides (int): The number of sides on the die.
    Returns:
        int: A random integer between 1 and num_sides, representing the die roll.
    """
    import random
    return random.randint(1, num_sides)
'''


def _params(source: str) -> dict:
    return schema_from_source(source).parameters


def _property(annotation: str, default: str = "") -> dict:
    """The schema of a lone parameter ``x`` with the given annotation (and default)."""
    source = f'''
from typing import *
def f(x: {annotation}{default}):
    """F.

    Args:
        x: The x.
    """
'''
    return _params(source)["properties"]["x"]


def _error(source: str, args_json_schema: dict | None = None) -> str:
    with pytest.raises(ValidationFailed) as info:
        schema_from_source(source, args_json_schema)
    return info.value.message


def test_letta_roll_dice() -> None:
    schema = schema_from_source(ROLL_DICE)
    assert isinstance(schema, FunctionSchema)
    assert schema.model_dump() == {
        "name": "roll_dice",
        "description": "Returns a random number between 1 and num_sides.",
        "parameters": {
            "type": "object",
            "properties": {
                "num_sides": {"type": "integer", "description": "The number of sides on the die."}
            },
            "required": ["num_sides"],
        },
    }


def test_optional_and_default_parameters() -> None:
    source = '''
from typing import Optional, Union
def search(query: str, limit: int = 10, page: Optional[int] = None, tag: str | None = None,
           lang: Union[str, None] = "en", exact: bool = False, *, fuzzy: float = 0.5, note: "str | None") -> str:
    """Search things.

    Args:
        query (str): What to look for.
        limit (int): How many results.
        page (Optional[int]): Which page.
        tag: A tag.
        lang: The language.
        exact: Exact matches only.
        fuzzy: Fuzziness.
        note: A note.
    """
'''
    params = _params(source)
    assert params["required"] == ["query"]
    props = params["properties"]
    assert list(props) == ["query", "limit", "page", "tag", "lang", "exact", "fuzzy", "note"]
    assert props["limit"] == {"type": "integer", "description": "How many results.", "default": 10}
    assert props["page"] == {"type": "integer", "description": "Which page.", "default": None}
    assert props["tag"]["type"] == "string"
    assert props["lang"] == {"type": "string", "description": "The language.", "default": "en"}
    assert props["exact"]["default"] is False
    assert props["fuzzy"] == {"type": "number", "description": "Fuzziness.", "default": 0.5}
    assert props["note"] == {"type": "string", "description": "A note."}  # Optional, so not required


def test_non_literal_default_is_not_required_and_not_recorded() -> None:
    assert _property("int", " = compute()") == {"type": "integer", "description": "The x."}
    assert _property("list[int]", " = (1, 2)")["default"] == [1, 2]
    assert "default" not in _property("str", " = b'raw'")  # a literal, but JSON has no bytes
    assert "default" not in _property("float", " = 1e999")  # infinity has no JSON spelling


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ("str", {"type": "string"}),
        ("int", {"type": "integer"}),
        ("float", {"type": "number"}),
        ("bool", {"type": "boolean"}),
        ("list[str]", {"type": "array", "items": {"type": "string"}}),
        ("List[int]", {"type": "array", "items": {"type": "integer"}}),
        ("typing.List[int]", {"type": "array", "items": {"type": "integer"}}),
        ("Sequence[float]", {"type": "array", "items": {"type": "number"}}),
        ("list[list[bool]]", {"type": "array", "items": {"type": "array", "items": {"type": "boolean"}}}),
        ("list", {"type": "array"}),
        ("dict", {"type": "object"}),
        ("Dict[str, int]", {"type": "object"}),
        ("dict[str, Any]", {"type": "object"}),
        ("Any", {}),
        ("'int'", {"type": "integer"}),
        ("list['str']", {"type": "array", "items": {"type": "string"}}),
        ("Annotated[int, 'meta']", {"type": "integer"}),
        ('Literal["a", "b"]', {"type": "string", "enum": ["a", "b"]}),
        ("Literal[1, 2, -3]", {"type": "integer", "enum": [1, 2, -3]}),
        ("Literal[1, 2.5]", {"type": "number", "enum": [1, 2.5]}),
        ("Literal[True]", {"type": "boolean", "enum": [True]}),
        ("Literal['a', 1]", {"enum": ["a", 1]}),
    ],
)
def test_type_mapping(annotation: str, expected: dict) -> None:
    assert _property(annotation) == {**expected, "description": "The x."}


def test_literal_parameter_is_an_enum() -> None:
    source = '''
from typing import Literal
def move(direction: Literal["up", "down"], speed: Literal["slow", "fast"] = "slow") -> None:
    """Move.

    Args:
        direction: Where to.
        speed: How fast.
    """
'''
    params = _params(source)
    assert params["properties"]["direction"] == {
        "type": "string",
        "enum": ["up", "down"],
        "description": "Where to.",
    }
    assert params["properties"]["speed"]["default"] == "slow"
    assert params["required"] == ["direction"]


def test_list_of_strings() -> None:
    source = '''
def tag(labels: list[str]) -> None:
    """Tag it.

    Args:
        labels (list[str]): The labels, which may
            run on over several lines.
    """
'''
    assert _params(source)["properties"]["labels"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "The labels, which may\nrun on over several lines.",
    }


def test_missing_annotation() -> None:
    source = '''
def roll_dice(x) -> int:
    """Roll.

    Args:
        x: The x.
    """
'''
    assert _error(source) == f"{FAILED}parameter 'x' of roll_dice has no type annotation"


def test_missing_docstring_entry() -> None:
    source = '''
def roll_dice(x: int, y: int) -> int:
    """Roll.

    Args:
        x: The x.
    """
'''
    assert (
        _error(source)
        == f"{FAILED}parameter 'y' of roll_dice has no description in the docstring's Args section"
    )


def test_missing_docstring_means_no_description_and_params_fail() -> None:
    assert schema_from_source("def ping() -> str:\n    return 'pong'\n").model_dump() == {
        "name": "ping",
        "description": "No description available",
        "parameters": {"type": "object", "properties": {}, "required": []},
    }
    assert "parameter 'x' of f has no description" in _error("def f(x: int):\n    pass\n")


def test_empty_entry_description_counts_as_missing() -> None:
    source = '''
def f(x: int):
    """F.

    Args:
        x (int):
    """
'''
    assert "parameter 'x' of f has no description" in _error(source)


@pytest.mark.parametrize(
    ("annotation", "fragment"),
    [
        ("Union[int, str]", "has unsupported type 'Union[int, str]'"),
        ("int | str | None", "has unsupported type 'int | str | None'"),
        ("Widget", "has unsupported type 'Widget': unknown type 'Widget'"),
        ("list[Widget]", "unknown type 'Widget'"),
        ("bytes", "unknown type 'bytes'"),
        ("'list[int'", "cannot parse the string annotation"),
        ("Literal[x]", "Literal values must be constants"),
    ],
)
def test_unsupported_types(annotation: str, fragment: str) -> None:
    source = f'''
from typing import *
def f(x: {annotation}):
    """F.

    Args:
        x: The x.
    """
'''
    message = _error(source)
    assert message.startswith(f"{FAILED}parameter 'x' of f has unsupported type")
    assert fragment in message


def test_syntax_error_names_the_line() -> None:
    message = _error("import os\n\ndef broken(:\n    pass\n")
    assert message.startswith(f"{FAILED}invalid Python syntax at line 3")


def test_no_function() -> None:
    assert _error("x = 1\nclass A:\n    def method(self): ...\n") == (
        f"{FAILED}no top-level function definition found in the source code"
    )
    assert _error("").startswith(FAILED)


def test_the_last_function_wins() -> None:
    source = '''
def helper(x: int) -> int:
    """Helper.

    Args:
        x: The x.
    """
    return x

def main_tool(text: str) -> str:
    """The real tool.

    Args:
        text: Some text.
    """
    return helper(len(text))

VALUE = 3
'''
    schema = schema_from_source(source)
    assert schema.name == "main_tool"
    assert schema.description == "The real tool."
    assert list(schema.parameters["properties"]) == ["text"]


def test_agent_state_self_and_varargs_are_skipped() -> None:
    source = '''
def remember(self, agent_state: "AgentState", fact: str, *args, **kwargs) -> None:
    """Remember a fact.

    Args:
        fact (str): The fact.
    """
'''
    params = _params(source)
    assert params == {
        "type": "object",
        "properties": {"fact": {"type": "string", "description": "The fact."}},
        "required": ["fact"],
    }


def test_async_def() -> None:
    source = '''
async def fetch(url: str, timeout: float = 5.0) -> str:
    """Fetch a page.

    Args:
        url: The address.
        timeout: Seconds to wait.
    """
'''
    schema = schema_from_source(source)
    assert schema.name == "fetch"
    assert schema.parameters["required"] == ["url"]
    assert schema.parameters["properties"]["timeout"]["default"] == 5.0


def test_args_json_schema_overrides_parameters() -> None:
    given = {"properties": {"n": {"type": "integer"}}, "required": ["n"]}
    schema = schema_from_source("def f(n):\n    '''Count.'''\n", given)
    assert schema.name == "f"
    assert schema.description == "Count."
    assert schema.parameters == {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    }
    assert "type" not in given  # the caller's dict is left alone


def test_args_json_schema_must_be_an_object_schema() -> None:
    assert _error("def f(): pass", {"type": "object"}).startswith("args_json_schema: ")
    assert _error("def f(): pass", {"type": "array", "properties": {}}).startswith("args_json_schema: ")


def test_name_length_limit() -> None:
    name = "a" * 48
    assert schema_from_source(f"def {name}(): pass").name == name
    assert _error(f"def {name}b(): pass").startswith("name: ")
    assert _error(f"def {name}b(): pass", {"properties": {}}).startswith("name: ")


def test_description_long_text_and_examples() -> None:
    source = '''
def add(a: int, b: int) -> int:
    """Add two numbers.

    Handles negative numbers
    as well.

    Args:
        a: First.
        b: Second.

    Returns:
        int: The sum.

    Examples:
        >>> add(1, 2)
        3
    """
'''
    assert schema_from_source(source).description == (
        "Add two numbers.\n\nHandles negative numbers\nas well.\n\nExamples:\n>>> add(1, 2)\n3"
    )


def test_sphinx_param_fallback() -> None:
    source = '''
def greet(name: str, times: int = 1) -> str:
    """Greet someone.

    :param name: Who to greet,
        by name.
    :param int times: How often.
    :returns: The greeting.
    """
'''
    schema = schema_from_source(source)
    assert schema.description == "Greet someone."
    assert schema.parameters["properties"] == {
        "name": {"type": "string", "description": "Who to greet,\nby name."},
        "times": {"type": "integer", "description": "How often.", "default": 1},
    }


def test_docstring_arg_types_may_hold_brackets_and_parens() -> None:
    source = '''
def f(x: dict, y: list[int]):
    """F.

    Args:
        x (Dict[str, Tuple(int)]): The x.
        y (list[int], optional): The y.
    """
'''
    props = _params(source)["properties"]
    assert props["x"]["description"] == "The x."
    assert props["y"]["description"] == "The y."


def test_pydantic_model_parameter() -> None:
    source = '''
from typing import Optional
from pydantic import BaseModel, Field

class Step(BaseModel):
    """One step."""
    name: str = Field(..., description="The step name.")
    minutes: int = 5
    note: Optional[str] = None
    tags: list[str] = Field(default_factory=list)

class Plan(Step):
    steps: list[Step]

def make_plan(plan: Plan) -> str:
    """Make a plan.

    Args:
        plan: The plan.
    """
'''
    plan = _params(source)["properties"]["plan"]
    assert plan["type"] == "object"
    assert plan["description"] == "The plan."
    assert plan["required"] == ["name", "steps"]
    step = plan["properties"]["steps"]["items"]
    assert step["description"] == "One step."
    assert step["properties"] == {
        "name": {"type": "string", "description": "The step name."},
        "minutes": {"type": "integer", "default": 5},
        "note": {"type": "string", "default": None},
        "tags": {"type": "array", "items": {"type": "string"}},
    }
    assert step["required"] == ["name"]


def test_self_referencing_model_is_refused() -> None:
    source = '''
from pydantic import BaseModel

class Node(BaseModel):
    children: list["Node"]

def walk(root: Node):
    """Walk.

    Args:
        root: The root.
    """
'''
    assert "refers to itself" in _error(source)


def test_plain_class_is_not_a_model() -> None:
    source = '''
class Widget:
    size: int

def f(w: Widget):
    """F.

    Args:
        w: The widget.
    """
'''
    assert "unknown type 'Widget'" in _error(source)


def test_source_is_never_executed() -> None:
    source = '''
raise SystemExit("executed!")

def f(x: int):
    """F.

    Args:
        x: The x.
    """
'''
    assert schema_from_source(source).name == "f"
