"""``integration_alert_firing`` and ``integration_alert_inhibited``: the alert states this replica speaks
for, as gauges, exported after every evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from alerts.model import AlertStatus
from alerts.routing import inhibited_by
from alerts.self_health import is_monitor

if TYPE_CHECKING:
    from alerts.inputs import AlertMetrics
    from alerts.state import AlertState
    from alerts.voice import Voice


class FiringGauges:
    def __init__(self, metrics: AlertMetrics, voice: Voice) -> None:
        self._metrics = metrics
        self._voice = voice
        # (integration, alert, severity) exported so far → the (firing, inhibited) values it was given: a
        # value is set only when it changes (finding a labelled child is most of what setting one costs, and
        # a firing alert's values stay the same pass after pass).
        self._exported: dict[tuple[str, str, str], tuple[int, int]] = {}

    def export(self, states: Mapping[str, AlertState], configured: Collection[str]) -> None:
        """The gauges' labels have no target, so the inhibited one is 1 only while every firing alert under
        its labels is inhibited — then nothing under them was told. ``configured``: the integrations of the
        config; the gauges of another one (a reload removed it) go once nothing of it fires."""
        firing_gauge, inhibited_gauge = self._metrics.alert_firing, self._metrics.alert_inhibited
        inhibitions = inhibited_by(states)
        firing: set[tuple[str, str, str]] = set()
        told: set[tuple[str, str, str]] = set()
        for key, s in states.items():
            if s.status is AlertStatus.FIRING and s.alert is not None:
                labels = (s.alert.integration, s.alert.alert, str(s.alert.severity))
                firing.add(labels)
                if key not in inhibitions:
                    told.add(labels)
        exported = self._exported
        for labels in firing:
            values = (1, 0 if labels in told else 1)
            if exported.get(labels) != values:
                firing_gauge.labels(*labels).set(1)
                inhibited_gauge.labels(*labels).set(values[1])
                exported[labels] = values
        for labels in [labels for labels in exported if labels not in firing]:
            kept = labels[0] in configured or is_monitor(labels[0])
            if kept and self._voice.integration(labels[0]):
                if exported[labels] != (0, 0):
                    firing_gauge.labels(*labels).set(0)
                    inhibited_gauge.labels(*labels).set(0)
                    exported[labels] = (0, 0)
            else:  # moved to another replica, which exports it now, or removed from the config
                for gauge in (firing_gauge, inhibited_gauge):
                    with contextlib.suppress(KeyError):
                        gauge.remove(*labels)
                del exported[labels]
