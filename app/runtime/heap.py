"""The heap the worker starts with, kept out of the cyclic garbage collector's way.

What is imported and built before the first event (modules, classes, pydantic schemas,
FastStream's and the groq SDK's machinery: about 100,000 objects) lives as long as the
process, yet every full collection walks all of it again with the event loop stopped. At
250 ms per model call and 64 in flight that was a 45 to 75 ms stop every 7 s or so, and
every answer that arrived meanwhile waited it out (``docs/performance.md``, "Garbage
collection pauses"). ``gc.freeze()`` moves those objects to the permanent generation: a
full collection then walks only what was allocated since, 2 to 15 ms. What start-up left
as garbage is collected first, so freezing keeps nothing alive that was already dead.

Objects frozen here are still freed when their reference count drops to zero; only a
cycle among them would outlive its use, and start-up objects are not let go of.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap", "thaw_heap"]


def freeze_startup_heap() -> int:
    """Collect start-up's garbage, then exempt what is left from later collections.

    Returns how many objects are frozen (all frozen so far, in this process)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw_heap() -> None:
    """Give frozen objects back to the collector (at shutdown: an app stopped and started
    again in one process, as tests do, does not pile up its predecessors' objects)."""
    gc.unfreeze()
