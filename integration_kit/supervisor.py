"""Background loops that come back after a crash and always stop when asked (asyncio).

A component's background work (an evaluation loop, a reader polling Redis, a notifier's worker) runs as
a loop under a ``Supervisor``:

* **Crash → restart.** A loop that raises is logged with its traceback (once per kind of error: the
  same error again is one line), counted (``on_crash``: the daemon's
  ``integration_monitor_component_errors_total{component}``) and started again after a ``Backoff``
  (1 s doubling to 60 s, equal jitter; a run that lasted ``stable_after``, 60 s by default, starts the
  back-off over).
  A loop that returns has finished its work and is not restarted.
* **Visible.** ``status()`` shows every loop (running, restarting, crashes, the last error, redacted);
  ``ready()`` is False while a loop waits to restart and until it has run ``stable_after`` again, so a
  loop that keeps dying keeps ``/readyz`` red instead of dying silently. Separately, the component
  ``report()``s whether its own work succeeds (a reader whose reads fail is running, but not ok):
  ``on_state`` (the daemon's ``integration_monitor_component_ok{component}``) and ``status()``.
* **Stop means stop.** ``close()`` sets ``stopping`` (loops sleep with ``sleep()``, which returns False
  at once), gives running work ``grace`` seconds to finish, then stops it with
  ``integration_kit.tasks.stop``, which cancels again until the task has ended (on Python 3.11 a
  cancellation can be lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from integration_kit.retry import Backoff
from integration_kit.tasks import RECANCEL_EVERY, stop, stop_all

log = logging.getLogger(__name__)

Loop = Callable[[], Awaitable[None]]
STABLE_AFTER = 60.0  # seconds a restarted loop must run before it counts as recovered (readiness, back-off)


@dataclass(slots=True)
class _LoopState:
    name: str
    loop: Loop
    task: asyncio.Task[None] | None = None
    crashes: int = 0
    last_error: str | None = None
    last_crash_at: float | None = None  # clock()
    restart_at: float | None = None  # clock(): set while waiting to restart
    started_at: float | None = None  # clock(): the current run
    backoff: Backoff = field(default_factory=Backoff)
    errors_seen: set[str] = field(default_factory=set)  # kinds of error already logged with a traceback


class Supervisor:
    """The loops of one component. ``component`` is the metric label (bounded: one per component)."""

    def __init__(
        self,
        component: str,
        *,
        on_crash: Callable[[], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        redact: Callable[[str], str] = lambda text: text,
        first_backoff: float = 1.0,
        max_backoff: float = 60.0,
        stable_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.component = component
        self.stopping = asyncio.Event()
        self._on_crash = on_crash
        self._on_state = on_state
        self.ok = True
        self.problem = ""  # why not ok (redacted), from report()
        self._redact = redact
        self._first, self._cap = first_backoff, max_backoff
        self._stable_after = STABLE_AFTER if stable_after is None else stable_after
        self._clock = clock
        self._loops: dict[str, _LoopState] = {}
        self._retired: set[asyncio.Task[None]] = set()  # stopped by cancel(), awaited by close()
        self._retiring: set[asyncio.Task[None]] = set()  # cancel()'s watchers, ended by close()

    # ---- running loops ------------------------------------------------------------------------------

    def start(self, name: str, loop: Loop) -> None:
        """Run ``loop()`` as a supervised task named ``name`` (unique within this supervisor)."""
        if self.running(name):
            raise ValueError(f"{self.component}: a loop named {name!r} is already running")
        state = _LoopState(name, loop, backoff=Backoff(first=self._first, cap=self._cap))
        state.task = asyncio.get_running_loop().create_task(self._run(state), name=name)
        self._loops[name] = state

    def running(self, name: str) -> bool:
        state = self._loops.get(name)
        return state is not None and state.task is not None and not state.task.done()

    def cancel(self, name: str) -> None:
        """Stop one loop (e.g. a reader whose config was removed); ``close()`` waits for it to end."""
        state = self._loops.pop(name, None)
        if state is not None and state.task is not None and not state.task.done():
            state.task.cancel()
            self._retired.add(state.task)
            state.task.add_done_callback(self._retired.discard)
            # If that cancellation gets lost (see the module doc), the loop would run on until close().
            retire = asyncio.get_running_loop().create_task(_retire(state.task), name=f"{name} (retiring)")
            self._retiring.add(retire)
            retire.add_done_callback(self._retiring.discard)

    async def sleep(self, seconds: float, wake: asyncio.Event | None = None) -> bool:
        """Wait ``seconds`` (or until ``wake`` is set); False as soon as the supervisor is stopping."""
        if self.stopping.is_set():
            return False
        waits = [asyncio.ensure_future(self.stopping.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        return not self.stopping.is_set()

    async def _run(self, state: _LoopState) -> None:
        while not self.stopping.is_set():
            state.started_at, state.restart_at = self._clock(), None
            try:
                await state.loop()
                return  # finished its work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.stopping.is_set():
                    return
                self._crashed(state, exc)
            wait = state.backoff.failed()
            state.restart_at = self._clock() + wait
            if not await self.sleep(wait):
                return

    def _crashed(self, state: _LoopState, exc: Exception) -> None:
        now = self._clock()
        if state.started_at is not None and now - state.started_at >= self._stable_after:
            state.backoff.succeeded()  # it ran well for a while: this is a new failure, not a crash loop
        state.crashes += 1
        state.last_crash_at = now
        state.last_error = self._redact(f"{type(exc).__name__}: {exc}")[:300]
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}:{exc}"[:500]
        if kind not in state.errors_seen and len(state.errors_seen) < 100:
            state.errors_seen.add(kind)
            log.exception("%s: loop %s crashed; restarting it with back-off", self.component, state.name)
        else:
            log.error("%s: loop %s crashed again (%s, %d crashes); restarting it with back-off",
                      self.component, state.name, state.last_error, state.crashes)
        if self._on_crash is not None:
            try:
                self._on_crash()
            except Exception:
                log.exception("%s: counting a crash failed", self.component)

    # ---- what the daemon shows -----------------------------------------------------------------------

    def report(self, ok: bool, problem: str = "") -> None:
        """The component's own verdict on its work (e.g. "the last Redis read failed: …")."""
        self.ok, self.problem = ok, "" if ok else self._redact(problem)[:300]
        if self._on_state is not None:
            self._on_state(ok)

    @property
    def crashes(self) -> int:
        return sum(state.crashes for state in self._loops.values())

    def ready(self) -> tuple[bool, str]:
        """Not ready while a loop waits to restart, or has not yet run ``stable_after`` since a crash."""
        now = self._clock()
        troubled = [
            f"loop {s.name} crashed {s.crashes} time(s), last: {s.last_error}"
            for s in self._loops.values()
            if s.last_crash_at is not None and (s.restart_at is not None or now - s.last_crash_at < self._stable_after)
        ]
        return (not troubled, "; ".join(troubled))

    def status(self) -> dict[str, Any]:
        """``{"ok": …, "problem": …, "loops": {name: …}}``."""
        now = self._clock()
        loops: dict[str, Any] = {}
        for name, s in sorted(self._loops.items()):
            restarting = s.restart_at is not None and s.task is not None and not s.task.done()
            loops[name] = {
                "running": s.task is not None and not s.task.done() and not restarting,
                "restarting_in": round(max(0.0, s.restart_at - now), 3) if restarting and s.restart_at else None,
                "crashes": s.crashes,
                "last_error": s.last_error,
                "last_crash_seconds_ago": None if s.last_crash_at is None else round(now - s.last_crash_at, 3),
            }
        return {"ok": self.ok, "problem": self.problem or None, "loops": loops}

    # ---- stopping ------------------------------------------------------------------------------------

    async def close(self, grace: float = 5.0) -> None:
        """Stop every loop: ``stopping`` is set, running work gets ``grace`` seconds, then it is cancelled
        (again and again, until the task has ended; see the module doc)."""
        self.stopping.set()
        tasks = {s.task for s in self._loops.values() if s.task is not None} | self._retired
        pending = {t for t in tasks if not t.done()}
        if pending and grace > 0:
            _, pending = await asyncio.wait(pending, timeout=grace)
        await stop_all(pending | self._retiring)
        for state in self._loops.values():
            task = state.task
            if task is not None and task.done() and not task.cancelled():
                with contextlib.suppress(BaseException):
                    task.result()  # retrieved: no "exception was never retrieved" warning
        self._retired.clear()


async def _retire(task: asyncio.Task[Any]) -> None:
    """After ``Supervisor.cancel``: give the cancellation a moment, then ``stop`` the task if it runs on."""
    await asyncio.wait({task}, timeout=RECANCEL_EVERY)
    if not task.done():
        await stop(task)
