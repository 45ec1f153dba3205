"""``FactFeed``: how a reader component hands the alert rules its per-integration facts — after every read
it pushes them, one number at a time, into the alert engine's ``set_fact`` (monitor/wiring.py connects the
two). The webhook reader and the real-traffic reader use it; each encodes its own facts
(``integration_kit.webhook_observations``, ``alerts.rules.traffic_silence``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

SetFact = Callable[[str, str, float], None]  # (integration, fact, value)


class FactFeed:
    def __init__(self, facts: Callable[[], Mapping[str, Mapping[str, float]]]) -> None:
        """``facts``: integration → its facts now (called at every ``push``)."""
        self._facts = facts
        self._set_fact: SetFact | None = None

    def connect(self, set_fact: SetFact) -> None:
        self._set_fact = set_fact
        self.push()

    def push(self) -> None:
        for integration, facts in self._facts().items():
            self.send(integration, facts)

    def send(self, integration: str, facts: Mapping[str, float]) -> None:
        if self._set_fact is None:
            return
        for name, value in facts.items():
            self._set_fact(integration, name, value)
