"""Keeping Python's full garbage collections short and rare in Parley's long-lived processes.

A full collection walks every tracked object. A Ray worker that has imported Ray, pydantic, the
provider SDKs and Parley holds some 150,000 of them, and walking them took 77 ms here
(``gc.collect(2)`` in a conversation actor's process); during a 100-stream benchmark each actor
and the replica ran two to four, of 65-180 ms each. Each is a stall of every token stream the
process serves, which expect their next batch within some 30 ms.

- ``freeze_startup_heap`` moves every object alive at that point (modules, classes, start-up
  state, which live as long as the process anyway) into the permanent generation, which
  collections skip; a full collection then walks only what was made since. Call it at the end
  of a process's start-up, and once more after its first real work (a provider SDK loads most of
  its types on first use).
- The thresholds make a full collection wait for 100 middle ones instead of 10 (young and middle
  ones keep Python's defaults: larger young generations made each young collection a longer
  pause, 10-45 ms under load here).
"""

from __future__ import annotations

import gc

# Young, middle, full: a young collection after this many net allocations, a middle one after so
# many young ones, a full one after so many middle ones (and once the survivors grew by 25 %).
THRESHOLDS = (700, 10, 100)


def freeze_startup_heap() -> None:
    # Collect first: what start-up made and dropped is freed now, not kept forever by the freeze.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
