"""The per-check probe metrics (``integration_probe_*``, README "Metrics") as one custom collector.

Why not prometheus-client Gauge/Counter/Histogram children: at 10,000 checks they are ~250,000 samples,
and prometheus-client renders those at ~30 µs each (label-name validation and escaping, a namedtuple per
sample): seconds per scrape, against issue 7's 250 ms. Here each check's values are plain numbers
updated by the recorder, and ``render_text`` writes the text exposition directly: label values are
integration and check names (validated to ``[A-Za-z0-9_.-]``), phases and error classes (fixed sets),
so nothing needs escaping. ``collect`` still yields standard metric families from the same numbers, so
the OpenMetrics format, ``get_sample_value`` and any other prometheus-client consumer see the same data.

Thread-safety: values are written on the event loop and read by a render thread. Each value is a single
attribute read; a render may see one check half-updated (at most one run apart), never a broken page:
``_count`` is derived from the buckets so a histogram is always self-consistent.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

# (name, type, help). Counters are named without ``_total`` as prometheus-client does.
SUCCESS = ("integration_probe_success", "gauge", "1 if the last run succeeded, else 0")
DURATION = ("integration_probe_duration_seconds", "histogram", "Duration of the final attempt of each run")
PHASE = ("integration_probe_phase_seconds", "gauge", "Duration of each phase of the last run's final attempt")
RUNS = ("integration_probe_runs", "counter", "Runs by outcome (success/failure)")
ERRORS = ("integration_probe_errors", "counter", "Failed runs by their final error class")
RETRIES = ("integration_probe_retries", "counter", "Attempts beyond the first")
STATUS = ("integration_probe_http_status_code", "gauge", "HTTP status of the last run's final attempt")
TLS = ("integration_probe_tls_cert_expiry_timestamp_seconds", "gauge", "Earliest TLS certificate expiry (epoch)")
# PromQL cannot count a streak from counters; the built-in probe_down rule and its Prometheus twin need it.
STREAK = ("integration_probe_consecutive_failures", "gauge", "Failed runs in a row (0 after a success)")
FAMILIES = (SUCCESS, DURATION, PHASE, RUNS, ERRORS, RETRIES, STATUS, TLS, STREAK)
# Gauges holding one last value per check (None: never observed, no sample), by CheckSeries attribute.
_LAST_VALUE = {SUCCESS[0]: "success", STATUS[0]: "status_code", TLS[0]: "tls_expiry", STREAK[0]: "streak"}
# Stands for ``integration_probe_duration_seconds_bucket{<the check's labels>`` in a kept histogram text; no
# label value holds it (names are ``[A-Za-z0-9_.-]``, phases and error classes fixed sets).
_BUCKET_HEAD = "\x00"


class CheckSeries:
    """The numbers of one check. ``None`` = never observed (no sample is exported for it)."""

    __slots__ = (
        "buckets",
        "duration_sum",
        "errors",
        "histogram_runs",
        "histogram_text",
        "labels",
        "phases",
        "retries",
        "runs_failed",
        "runs_ok",
        "status_code",
        "streak",
        "success",
        "tls_expiry",
    )

    def __init__(self, integration: str, check: str, n_buckets: int) -> None:
        self.labels = f'integration="{integration}",check="{check}"'
        self.success: float | None = None
        self.buckets = [0] * n_buckets  # per bucket (not cumulative), the last one is +Inf
        self.duration_sum = 0.0
        self.phases: dict[str, float] = {}
        self.runs_ok = 0
        self.runs_failed = 0
        self.errors: dict[str, int] = {}
        self.retries = 0
        self.status_code: float | None = None
        self.tls_expiry: float | None = None
        # The histogram's exposition lines (16 of a check's ~25), kept until the next run changes them: at
        # a 60 s interval and a 15 s scrape, three scrapes in four reuse them. Kept with _BUCKET_HEAD where
        # each bucket line starts (the family's name and this check's labels, the same 14 times), put back
        # when read: 1,477 -> 456 bytes a check (10 MB at 10,000 checks) for one str.replace per scrape.
        self.histogram_text = ""
        self.histogram_runs = -1  # runs_ok + runs_failed when histogram_text was written
        self.streak: float | None = None


class ProbeSeries(Collector):
    def __init__(self, buckets: tuple[float, ...], registry: CollectorRegistry | None = None) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._le = [repr(b) for b in self.bounds] + ["+Inf"]
        self._bucket_tails = [f'{_BUCKET_HEAD},le="{le}"}} ' for le in self._le]  # a bucket line, less its count
        self._series: dict[tuple[str, str], CheckSeries] = {}
        self._excluded = threading.local()
        if registry is not None:
            registry.register(self)

    def series(self, integration: str, check: str) -> CheckSeries:
        key = (integration, check)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = CheckSeries(integration, check, len(self.bounds) + 1)
        return found

    def remove(self, integration: str, check: str) -> None:
        self._series.pop((integration, check), None)

    def keys(self) -> list[tuple[str, str]]:
        return list(self._series)

    def retarget(self, integration: str, check: str) -> None:
        """The check's requests go elsewhere now (a reload): drop the last values that describe its old
        endpoint — the certificate's expiry (a run that meets none keeps it), and until the next run the
        status code and phases. The counters and the histogram are the check's history, and the success and
        streak gauges the next run replaces: kept."""
        found = self._series.get((integration, check))
        if found is not None:
            found.tls_expiry = found.status_code = None
            found.phases = {}

    def bucket_index(self, value: float) -> int:
        """Index of the first bucket whose upper bound is ≥ value (the last one is +Inf)."""
        return bisect_left(self.bounds, value)

    # ---- prometheus-client Collector -------------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []  # names are fixed and unique; skip the registry's collect-on-register

    def collect(self) -> Iterator[Metric]:
        if getattr(self._excluded, "on", False):
            return
        series = list(self._series.items())
        last = {name: GaugeMetricFamily(name, help_text, labels=("integration", "check"))
                for name, _, help_text in FAMILIES if name in _LAST_VALUE}
        duration = HistogramMetricFamily(DURATION[0], DURATION[2], labels=("integration", "check"))
        phase = GaugeMetricFamily(PHASE[0], PHASE[2], labels=("integration", "check", "phase"))
        runs = CounterMetricFamily(RUNS[0], RUNS[2], labels=("integration", "check", "outcome"))
        errors = CounterMetricFamily(ERRORS[0], ERRORS[2], labels=("integration", "check", "error_class"))
        retries = CounterMetricFamily(RETRIES[0], RETRIES[2], labels=("integration", "check"))
        for (integration, check), s in series:
            ic = (integration, check)
            for name, attribute in _LAST_VALUE.items():
                value = getattr(s, attribute)
                if value is not None:
                    last[name].add_metric(ic, value)
            cumulative, acc = [], 0
            for le, count in zip(self._le, list(s.buckets), strict=True):
                acc += count
                cumulative.append((le, float(acc)))
            duration.add_metric(ic, cumulative, s.duration_sum)
            for name, value in list(s.phases.items()):
                phase.add_metric((*ic, name), value)
            runs.add_metric((*ic, "success"), s.runs_ok)
            runs.add_metric((*ic, "failure"), s.runs_failed)
            for error_class, count in list(s.errors.items()):
                errors.add_metric((*ic, error_class), count)
            retries.add_metric(ic, s.retries)
        yield from (*last.values(), duration, phase, runs, errors, retries)

    def excluded(self) -> _Excluded:
        """While active (in this thread), ``collect`` yields nothing: the registry renders the rest."""
        return _Excluded(self._excluded)

    # ---- fast text exposition ---------------------------------------------------------------------

    def render_text(self, *, openmetrics: bool = False) -> str:
        """The Prometheus text format (0.0.4) of every probe family, same samples as ``collect``; with
        ``openmetrics``, as OpenMetrics writes them (counter families named without ``_total``)."""
        return "".join(self.iter_text(openmetrics=openmetrics))

    def iter_text(self, *, openmetrics: bool = False, chunk: int = 100) -> Iterator[str]:
        """``render_text`` in parts of at most ``chunk`` checks of one family (well under a ms of work
        each), so that a caller on the event loop can gather them into pieces of a few ms and stream
        those out between probes, instead of holding a second thread that fights the loop for the GIL
        through a whole scrape."""
        series = list(self._series.values())
        for name, kind, help_text in FAMILIES:
            exposed = f"{name}_total" if kind == "counter" else name
            family = name if openmetrics else exposed
            yield f"# HELP {family} {help_text}\n# TYPE {family} {kind}\n"
            gauge = _LAST_VALUE.get(name)
            for first in range(0, len(series), chunk):
                part = series[first:first + chunk]
                if gauge is not None:
                    lines = [f"{name}{{{s.labels}}} {value!r}\n" for s in part
                             if (value := getattr(s, gauge)) is not None]
                elif name == DURATION[0]:
                    lines = [self._histogram_text(s) for s in part]
                elif name == PHASE[0]:
                    lines = [f'{name}{{{s.labels},phase="{phase}"}} {value!r}\n'
                             for s in part for phase, value in list(s.phases.items())]
                elif name == RUNS[0]:
                    lines = [f'{exposed}{{{s.labels},outcome="success"}} {s.runs_ok}.0\n'
                             f'{exposed}{{{s.labels},outcome="failure"}} {s.runs_failed}.0\n' for s in part]
                elif name == ERRORS[0]:
                    lines = [f'{exposed}{{{s.labels},error_class="{error_class}"}} {count}.0\n'
                             for s in part for error_class, count in list(s.errors.items())]
                elif name == RETRIES[0]:
                    lines = [f"{exposed}{{{s.labels}}} {s.retries}.0\n" for s in part]
                else:
                    raise AssertionError(f"no text renderer for {name}")
                yield "".join(lines)

    def _histogram_text(self, s: CheckSeries) -> str:
        runs = s.runs_ok + s.runs_failed  # the recorder adds a run and its duration in one step
        name, labels = DURATION[0], s.labels
        if s.histogram_runs != runs:
            acc, lines = 0, []
            for tail, count in zip(self._bucket_tails, s.buckets, strict=True):
                acc += count
                lines.append(f"{tail}{acc}.0\n")
            lines.append(f"{name}_count{{{labels}}} {acc}.0\n{name}_sum{{{labels}}} {s.duration_sum!r}\n")
            s.histogram_text, s.histogram_runs = "".join(lines), runs
        return s.histogram_text.replace(_BUCKET_HEAD, f"{name}_bucket{{{labels}")


class _Excluded:
    __slots__ = ("_flag",)

    def __init__(self, flag: threading.local) -> None:
        self._flag = flag

    def __enter__(self) -> None:
        self._flag.on = True

    def __exit__(self, *exc_info: object) -> None:
        self._flag.on = False
