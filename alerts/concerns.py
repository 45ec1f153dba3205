"""What an early evaluation judges, between two full passes.

The engine judges every check every ``evaluation_interval`` (a full pass: nothing is ever missed for
longer). In between it wakes early — a check started failing, a deadline fell due (``for``,
``keep_firing_for``), integrations moved to this replica — and such a wake judges only what changed
since it was last judged: the checks with new results, the alerts whose deadline is due, the
integrations gained (all of their checks); the integration-wide rules (quota, webhook and traffic
silences, the real-traffic error rate) of each of those integrations run too. At 50,000 checks a full
pass costs seconds of CPU; a wake costs what the few concerned checks cost.

What a wake leaves alone moves only with time (a window sliding, a silence ending): the next full pass
judges it, as before this existed when no wake came.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alerts.voice import integration_of

if TYPE_CHECKING:
    from alerts.state import AlertState

# integration → the names of its checks to judge (None: all of them); its alerts about no check go with it
Scope = dict[str, set[str] | None]


class Concerns:
    def __init__(self) -> None:
        self._scope: Scope = {}
        self._due: dict[str, tuple[float, str, str | None]] = {}  # alert key → (when, integration, check)

    def result(self, integration: str, check: str) -> None:
        """A new result of a check: judge it at the next evaluation."""
        if integration not in self._scope:
            self._scope[integration] = {check}
        elif (checks := self._scope[integration]) is not None:
            checks.add(check)

    def integration(self, integration: str) -> None:
        """Judge every check and alert of ``integration`` at the next evaluation (it moved here)."""
        self._scope[integration] = None

    def due(self, key: str, when: float | None, integration: str, check: str | None) -> None:
        """When the state of an alert moves if its condition stays as it is (None: not while it does)."""
        if when is None:
            self._due.pop(key, None)
        else:
            self._due[key] = (when, integration, check)

    def take(self, now: float, *, full: bool) -> Scope | None:
        """What an evaluation at ``now`` judges (None: everything), taken: results that arrive while it runs
        are for the next one. A full pass forgets the deadlines too (it finds them all again)."""
        scope, self._scope = self._scope, {}
        if full:
            self._due.clear()
            return None
        for key, (when, integration, check) in list(self._due.items()):
            if when > now:
                continue
            del self._due[key]  # judged now: stepping its state says again whether (and when) it is due
            checks = scope.get(integration, set())
            if checks is not None:
                if check is None:
                    scope[integration] = checks  # its alerts about no check go with the integration
                else:
                    scope[integration] = checks | {check}
        return scope

    def next_due(self, after: float) -> float | None:
        """The earliest deadline later than ``after``."""
        return min((when for when, _, _ in self._due.values() if when > after), default=None)


def in_scope(scope: Scope, state: AlertState) -> bool:
    """Whether an evaluation of ``scope`` judges this alert (by its integration, and its check if any)."""
    integration = integration_of(state.key)
    if integration not in scope:
        return False
    checks = scope[integration]
    return checks is None or state.alert is None or state.alert.check is None or state.alert.check in checks
