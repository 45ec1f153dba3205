"""The daemon's long-lived objects, kept out of the cycle collector's sight (``gc.freeze``).

Why: a full pass of CPython's cycle collector walks every tracked container not frozen, on the event
loop. What the daemon keeps for its whole life — the config, the jobs, and per check the runtime state
its first run builds (metric series, alert statistics and their arrays, the status entry, the request
plan, the last result: ~20 containers a check) — is never cyclic garbage before a reload replaces it,
yet at 50,000 checks it is a million containers: each full pass held the loop for 1–2.7 s, and passes
came every few seconds (together 36 % of the wall time, bench/gc_pauses.py). So:

* **Freeze once started, and again once the first runs have built each check's state** (the
  scheduler's ``settled_at``: every job added so far has started its first run and passed its
  deadline), and again whenever new jobs have settled (a reload, a cluster's new share).
  ``gc.collect(1)`` first, so the young garbage of that moment is not frozen with it.
* **Young collections less often** (``YOUNG_THRESHOLD`` allocations instead of 700): what survives a
  young collection is mostly the in-flight probes' objects (sessions, tasks, responses), promoted only
  to die by reference counting a few ms later; each promotion counts towards the next full pass (it
  comes when a quarter of the old generation's size has been promoted). Fewer young collections,
  fewer promotions, fewer full passes.

What this costs: a container frozen while alive and later part of garbage *cycle* is never collected
(reference counting still frees everything else, e.g. a check's previous result). A freeze happens
once per settled batch of jobs, so that is bounded by what was in flight at those moments, and a
reload unfreezes everything, collects once and freezes again.

Only ``App.run`` (the daemon's own process) uses this, never an App started in a test.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)
POLL_SECONDS = 5.0  # how often the keeper looks for newly added jobs to wait for


def freeze() -> None:
    """Everything alive now out of the collector's sight (young garbage collected first)."""
    gc.collect(1)
    gc.freeze()


def refreeze() -> None:
    """After a reload: the old config may be garbage now. One full collection with everything in
    sight, then everything alive out of sight again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def tune_young_collections() -> None:
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def keep_frozen(
    settled_at: Callable[[], float], *, clock: Callable[[], float] = time.time, freeze_now: Callable[[], None] = freeze,
) -> None:
    """Freeze (``freeze_now``) each time the jobs added so far have settled (``settled_at()``, epoch
    seconds, grows as jobs are added); runs until cancelled."""
    frozen_up_to = float("-inf")
    while True:
        target = settled_at()
        if target <= frozen_up_to:
            await asyncio.sleep(POLL_SECONDS)
            continue
        await asyncio.sleep(max(0.0, target - clock()))
        if settled_at() != target:
            continue  # more jobs were added meanwhile: wait for them too
        started = time.perf_counter()
        freeze_now()
        frozen_up_to = target
        log.info("first runs done: %d long-lived objects out of the cycle collector's sight (%.0f ms)",
                 gc.get_freeze_count(), 1000 * (time.perf_counter() - started))
