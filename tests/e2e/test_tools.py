"""Tools through ``letta-client``: register from source, attach, and calls run as Ray tasks."""

from __future__ import annotations

import textwrap
import threading
import time

import pytest
from letta_client import NotFoundError, UnprocessableEntityError

from tests.e2e.conftest import TOOL_TIMEOUT_SECONDS

from .helpers import of_type, send

ROLL_DICE = textwrap.dedent(
    '''
    def roll_dice(num_sides: int) -> int:
        """
        Returns a random number between 1 and num_sides.

        Args:
            num_sides (int): The number of sides on the die.

        Returns:
            int: A random integer between 1 and num_sides, representing the die roll.
        """
        import random

        print(f"rolling a d{num_sides}")
        return random.randint(1, num_sides)
    '''
)

FAILING = textwrap.dedent(
    '''
    def explode(reason: str) -> str:
        """Always fails.

        Args:
            reason (str): What to say when failing.
        """
        raise ValueError(reason)
    '''
)

SLEEPY = textwrap.dedent(
    '''
    def nap(seconds: int) -> str:
        """Sleeps, then answers.

        Args:
            seconds (int): How long to sleep.
        """
        import time

        time.sleep(seconds)
        return "rested"
    '''
)

ROLL_PROMPT = "This is an automated test message. Call the roll_dice tool with 16 sides and send me a message with the outcome."


@pytest.fixture
def roll_dice(client):
    return client.tools.upsert(source_code=ROLL_DICE)


def tool_agent(client, *tool_ids: str, model: str = "openai/gpt-4o-mini"):
    return client.agents.create(
        model=model,
        embedding="openai/text-embedding-3-small",
        memory_blocks=[{"label": "human", "value": "The user is Ada."}],
        tool_ids=list(tool_ids),
    )


def test_tool_schema_comes_from_the_source(client, roll_dice):
    assert roll_dice.id.startswith("tool-")
    assert roll_dice.name == "roll_dice"
    assert roll_dice.tool_type == "custom"
    assert roll_dice.json_schema["parameters"] == {
        "type": "object",
        "properties": {"num_sides": {"type": "integer", "description": "The number of sides on the die."}},
        "required": ["num_sides"],
    }
    assert roll_dice.description.startswith("Returns a random number between 1 and num_sides.")
    # Upsert by function name: the same tool, same id, new source.
    again = client.tools.create(
        source_code=ROLL_DICE.replace("random.randint", "random.randint"), tags=["dice"]
    )
    assert again.id == roll_dice.id and again.tags == ["dice"]
    assert client.tools.retrieve(roll_dice.id).name == "roll_dice"
    assert [t.id for t in client.tools.list(name="roll_dice")] == [roll_dice.id]


def test_unparseable_tool_is_a_clear_422(client):
    with pytest.raises(UnprocessableEntityError) as missing_annotation:
        client.tools.create(source_code='def f(x):\n    """Doc.\n\n    Args:\n        x: a thing.\n    """\n')
    assert "x" in str(missing_annotation.value) and "annotation" in str(missing_annotation.value)
    with pytest.raises(UnprocessableEntityError) as broken:
        client.tools.create(source_code="def f(:\n  pass")
    assert "source_code" in str(broken.value)


def test_tool_delete_and_unknown_ids(client):
    tool = client.tools.create(source_code=FAILING)
    client.tools.delete(tool.id)
    with pytest.raises(NotFoundError):
        client.tools.retrieve(tool.id)
    with pytest.raises(NotFoundError):
        client.agents.create(model="openai/gpt-4o-mini", tool_ids=[tool.id])
    with pytest.raises(UnprocessableEntityError):
        client.tools.retrieve("tool-not-an-id")


def test_agents_get_base_tools_and_attached_ones(client, roll_dice):
    agent = tool_agent(client, roll_dice.id)
    names = sorted(t.name for t in client.agents.retrieve(agent.id).tools)
    assert names == ["conversation_search", "memory_insert", "memory_replace", "roll_dice"]
    detached = client.agents.tools.detach(roll_dice.id, agent_id=agent.id)
    assert "roll_dice" not in [t.name for t in detached.tools]
    attached = client.agents.tools.attach(roll_dice.id, agent_id=agent.id)
    assert "roll_dice" in [t.name for t in attached.tools]
    assert "roll_dice" in [t.name for t in client.agents.tools.list(agent.id, limit=50)]
    bare = client.agents.create(model="openai/gpt-4o-mini", include_base_tools=False)
    assert client.agents.retrieve(bare.id).tools == []
    client.agents.delete(agent.id)
    client.agents.delete(bare.id)


def test_roll_dice_runs_as_a_tool_and_the_model_answers(client, roll_dice):
    agent = tool_agent(client, roll_dice.id)
    response = client.agents.messages.create(agent.id, messages=[{"role": "user", "content": ROLL_PROMPT}])
    types = [m.message_type for m in response.messages]
    assert types == ["tool_call_message", "tool_return_message", "assistant_message"]
    call, returned, answer = response.messages
    assert call.tool_call.name == "roll_dice"
    assert call.tool_call.arguments == '{"num_sides": 16}'
    assert returned.status == "success"
    assert returned.tool_call_id == call.tool_call.tool_call_id
    assert 1 <= int(returned.tool_return) <= 16
    assert returned.stdout == ["rolling a d16\n"]
    assert returned.tool_return in answer.content
    assert response.stop_reason.stop_reason == "end_turn"
    assert response.usage.step_count == 2
    client.agents.delete(agent.id)


def test_tool_exception_is_an_error_result_and_the_run_goes_on(client):
    tool = client.tools.create(source_code=FAILING)
    agent = tool_agent(client, tool.id)
    conversation = client.conversations.create(agent_id=agent.id)
    chunks = send(client, conversation.id, 'call explode with {"reason": "kaboom"}')
    [returned] = of_type(chunks, "tool_return_message")
    assert returned.status == "error"
    assert "ValueError: kaboom" in returned.tool_return
    assert any("Traceback" in line for line in returned.stderr or [])
    assert of_type(chunks, "stop_reason")[0].stop_reason == "end_turn"
    assert "ValueError: kaboom" in of_type(chunks, "assistant_message")[0].content
    client.agents.delete(agent.id)


HOG = """
def hog(megabytes: int) -> int:
    \"\"\"Hold a block of memory.

    Args:
        megabytes: How much.
    \"\"\"
    block = bytearray(megabytes * 1024 * 1024)
    return len(block) // (1024 * 1024)
"""


def test_a_tool_past_its_memory_cap_gets_a_memory_error_and_its_worker_lives_on(client):
    tool = client.tools.create(source_code=HOG)
    agent = tool_agent(client, tool.id)
    conversation = client.conversations.create(agent_id=agent.id)
    chunks = send(client, conversation.id, 'call hog with {"megabytes": 4096}')
    [returned] = of_type(chunks, "tool_return_message")
    assert returned.status == "error"
    assert "MemoryError" in returned.tool_return
    chunks = send(client, conversation.id, 'call hog with {"megabytes": 8}')
    [returned] = of_type(chunks, "tool_return_message")
    assert (returned.status, returned.tool_return) == ("success", "8")
    client.agents.delete(agent.id)


def test_hung_tool_is_killed_at_its_timeout(client):
    tool = client.tools.create(source_code=SLEEPY)
    agent = tool_agent(client, tool.id)
    conversation = client.conversations.create(agent_id=agent.id)
    started = time.monotonic()
    chunks = send(client, conversation.id, 'call nap with {"seconds": 600}')
    took = time.monotonic() - started
    [returned] = of_type(chunks, "tool_return_message")
    assert returned.status == "error"
    assert "TimeoutError" in returned.tool_return
    assert TOOL_TIMEOUT_SECONDS <= took < TOOL_TIMEOUT_SECONDS + 10
    assert of_type(chunks, "stop_reason")[0].stop_reason == "end_turn"
    # The conversation is free and tools still run (a new worker replaced the killed one).
    again = send(client, conversation.id, 'call nap with {"seconds": 0}')
    assert of_type(again, "tool_return_message")[0].tool_return == "rested"
    client.agents.delete(agent.id)


def test_cancel_stops_a_running_tool(client):
    tool = client.tools.create(source_code=SLEEPY)
    agent = tool_agent(client, tool.id)
    conversation = client.conversations.create(agent_id=agent.id)
    stream = client.conversations.messages.create(
        conversation.id,
        messages=[{"role": "user", "content": 'call nap with {"seconds": 600}'}],
        background=True,
    )
    run_id = None
    for chunk in stream:
        run_id = run_id or getattr(chunk, "run_id", None)
        if chunk.message_type == "tool_call_message":
            break
    assert run_id is not None
    time.sleep(0.5)
    client.conversations.cancel(conversation.id)
    deadline = time.monotonic() + 10
    while client.runs.retrieve(run_id).status not in ("cancelled", "completed", "failed"):
        assert time.monotonic() < deadline, "the run did not end after cancel"
        time.sleep(0.1)
    assert client.runs.retrieve(run_id).status == "cancelled"
    assert of_type(send(client, conversation.id, "hello"), "assistant_message")
    client.agents.delete(agent.id)


def test_concurrent_memory_edits_from_two_conversations_both_land(client):
    agent = tool_agent(client)
    first = client.conversations.create(agent_id=agent.id)
    second = client.conversations.create(agent_id=agent.id)
    results: dict[str, list] = {}
    barrier = threading.Barrier(2)

    def edit(conversation_id: str, fact: str) -> None:
        barrier.wait()
        prompt = f'call memory_insert with {{"label": "human", "new_string": "{fact}"}}'
        results[fact] = send(client, conversation_id, prompt)

    threads = [
        threading.Thread(target=edit, args=(first.id, "Likes tea.")),
        threading.Thread(target=edit, args=(second.id, "Plays chess.")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for chunks in results.values():
        assert of_type(chunks, "tool_return_message")[0].status == "success"
    value = client.agents.blocks.retrieve("human", agent_id=agent.id).value
    assert "Likes tea." in value and "Plays chess." in value and value.startswith("The user is Ada.")
    # Both conversations see the edited memory from their next turn on.
    client.agents.delete(agent.id)


def test_memory_replace_errors_are_readable(client):
    agent = tool_agent(client)
    conversation = client.conversations.create(agent_id=agent.id)
    chunks = send(
        client,
        conversation.id,
        'call memory_replace with {"label": "human", "old_string": "Bob", "new_string": "Eve"}',
    )
    [returned] = of_type(chunks, "tool_return_message")
    assert returned.status == "error" and "does not occur" in returned.tool_return
    client.agents.delete(agent.id)


def test_max_steps_stops_the_loop_after_the_tool(client, roll_dice):
    agent = tool_agent(client, roll_dice.id)
    response = client.agents.messages.create(
        agent.id, messages=[{"role": "user", "content": ROLL_PROMPT}], max_steps=1
    )
    assert [m.message_type for m in response.messages] == ["tool_call_message", "tool_return_message"]
    assert response.stop_reason.stop_reason == "max_steps"
    assert response.usage.step_count == 1
    # The next turn picks up from there.
    again = client.agents.messages.create(agent.id, messages=[{"role": "user", "content": "say next"}])
    assert again.messages[-1].content == "next"
    client.agents.delete(agent.id)
