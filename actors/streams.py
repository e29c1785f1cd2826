"""Reading a Ray streaming generator's items, each fetched once.

``async for ref in generator`` already waits until each item is in this process (Ray's
``_next_async`` awaits it before handing the ref out); ``await ref`` then fetches it a second
time, through another callback from Ray's thread and another wake-up of the event loop. On a
token stream that is paid per batch at every hop, so the value is taken here synchronously,
which for an item already local returns at once. An item not local after all (a large one in a
remote node's object store) is awaited as before, so the event loop never blocks on the network.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray.exceptions import GetTimeoutError

# Ray warns once per process about any ray.get inside an async actor; these gets never wait
# (timeout 0), so the warning would only mislead. Set before any get, for Parley's own processes.
os.environ.setdefault("RAY_WARN_BLOCKING_GET_INSIDE_ASYNC", "0")


async def stream_values(generator: ray.ObjectRefGenerator) -> AsyncIterator[Any]:
    """The values ``generator`` yields, in order; an item's error is raised as ``await`` would."""
    async for ref in generator:
        try:
            value = ray.get(ref, timeout=0)
        except GetTimeoutError:
            value = await ref
        yield value
