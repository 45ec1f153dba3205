"""The fast /metrics exposition (monitor/probe_series.py, Metrics.exposition) against prometheus-client's
own encoders: the same samples in both formats, parsed back with prometheus-client's parsers (the
OpenMetrics one is strict), and a changed check is re-rendered."""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from integration_kit.traffic import LATENCY_BOUNDS
from monitor.metrics import LAG_BUCKETS, CountedHistogram, Metrics, RunHistogram
from monitor.probe_series import CheckSeries, ProbeSeries

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def populated() -> Metrics:
    metrics = Metrics()
    for i in range(25):
        s = metrics.probes.series(f"vendor{i // 10}", f"check-{i}")
        s.success = float(i % 2)
        s.buckets[i % len(s.buckets)] += 3
        s.duration_sum += 0.125 * i
        s.phases.update(connect=0.001 * i, ttfb=0.25)
        s.runs_ok += i
        s.runs_failed += i % 3
        if i % 5 == 0:
            s.errors["timeout"] = 2
            s.status_code = 503.0
            s.tls_expiry = 1.7e9 + i
    metrics.scheduler_lag.observe(0.02)
    metrics.quota_used.labels("vendor0", "api", "redis").set(12)
    return metrics


def sample_set(text: str, parse: Any) -> set[tuple[Any, ...]]:
    return {
        (family.name, family.type, s.name, tuple(sorted(s.labels.items())), s.value)
        for family in parse(text)
        for s in family.samples
    }


def body(metrics: Metrics, accept: str) -> tuple[str, str]:
    content_type, pieces = metrics.exposition(accept)
    return content_type, b"".join(pieces).decode()


@pytest.mark.parametrize(
    ("accept", "encoder", "parse"),
    [("", generate_latest, parse_text), (OPENMETRICS, generate_openmetrics, parse_openmetrics)],
    ids=["text", "openmetrics"],
)
def test_same_samples_as_prometheus_client(accept: str, encoder: Any, parse: Any) -> None:
    metrics = populated()
    content_type, text = body(metrics, accept)
    assert content_type.startswith("application/openmetrics-text" if accept else "text/plain")
    assert sample_set(text, parse) == sample_set(encoder(metrics.registry).decode(), parse)
    assert ("integration_probe_tls_cert_expiry_timestamp_seconds" in text) is True
    if accept:
        assert text.endswith("# EOF\n") and text.count("# EOF") == 1


@pytest.mark.parametrize("bounds", [(0.1, 1.0), ()], ids=["coarse", "none"])
def test_fewer_duration_buckets(bounds: tuple[float, ...]) -> None:
    """monitor.probe_duration_buckets: the histogram keeps its name, count and sum; only its ``le`` set
    changes (none at all: +Inf alone), in both formats, sample for sample with prometheus-client."""
    metrics = Metrics(duration_buckets=bounds)
    for i, duration in enumerate((0.05, 0.5, 5.0)):
        s = metrics.probes.series("vendor", f"c{i}")
        s.buckets[metrics.probes.bucket_index(duration)] += 1
        s.duration_sum += duration
        s.runs_ok += 1
    for accept, encoder, parse in (("", generate_latest, parse_text), (OPENMETRICS, generate_openmetrics,
                                                                         parse_openmetrics)):
        _, text = body(metrics, accept)
        got = sample_set(text, parse)
        assert got == sample_set(encoder(metrics.registry).decode(), parse)
        le = {dict(labels)["le"] for _, _, name, labels, _ in got if name.endswith("_bucket")
              and name.startswith("integration_probe_duration")}
        assert le == {*(str(b) for b in bounds), "+Inf"}
        counts = {dict(labels)["check"]: value for _, _, name, labels, value in got
                  if name == "integration_probe_duration_seconds_count"}
        assert counts == {"c0": 1, "c1": 1, "c2": 1}


def test_a_new_run_is_rendered_not_the_previous_text() -> None:
    metrics = populated()
    _, before = body(metrics, "")
    s = metrics.probes.series("vendor0", "check-1")
    s.buckets[0] += 1
    s.duration_sum += 0.002
    s.runs_ok += 1
    _, after = body(metrics, "")
    line = 'integration_probe_duration_seconds_count{integration="vendor0",check="check-1"}'
    count = {text: next(x for x in text.splitlines() if x.startswith(line)) for text in (before, after)}
    assert count[before].endswith(" 3.0") and count[after].endswith(" 4.0")
    assert sample_set(after, parse_text) == sample_set(generate_latest(metrics.registry).decode(), parse_text)


def written_line_by_line(series: ProbeSeries, s: CheckSeries) -> str:
    """One check's duration histogram as the page has always written it, each line in full."""
    name, acc, lines = "integration_probe_duration_seconds", 0, []
    for le, count in zip([*(repr(b) for b in series.bounds), "+Inf"], s.buckets, strict=True):
        acc += count
        lines.append(f'{name}_bucket{{{s.labels},le="{le}"}} {acc}.0\n')
    lines.append(f"{name}_count{{{s.labels}}} {acc}.0\n{name}_sum{{{s.labels}}} {s.duration_sum!r}\n")
    return "".join(lines)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(min_value=0.0, max_value=1e7), st.booleans()), max_size=40))
def test_the_duration_histogram_is_written_byte_for_byte_kept_or_not(runs: list[tuple[int, float, bool]]) -> None:
    """The histogram text kept between scrapes (monitor/probe_series.py) reads back as the lines written in
    full, for checks that ran since the last scrape and checks that did not, in both formats."""
    metrics = Metrics()
    checks = [metrics.probes.series(f"vendor-{i % 2}", f"check_{i}.v2") for i in range(4)]

    def page(openmetrics: bool) -> str:
        text = metrics.probes.render_text(openmetrics=openmetrics)
        return "".join(line + "\n" for line in text.splitlines() if line.startswith("integration_probe_duration"))

    def written() -> str:
        return "".join(written_line_by_line(metrics.probes, s) for s in checks)

    for check, duration, scrape in runs:
        s = checks[check]
        s.buckets[metrics.probes.bucket_index(duration)] += 1
        s.duration_sum += duration
        s.runs_ok += 1
        if scrape:
            assert page(False) == written()
    assert page(False) == written() == page(True)  # kept texts read again (nothing ran since)


def test_pieces_follow_the_budgets_and_add_up_to_the_same_page() -> None:
    """The server writes piece by piece between probes: a piece ends once its rendering took
    ``piece_seconds`` or its text reached ``piece_bytes`` (0: after every part of 100 checks of one family;
    budgets never reached: one piece for the probe families and the rest), and however the page is cut,
    it is the same page."""
    metrics = populated()
    for i in range(2000):
        metrics.probes.series("vendor", f"c{i}").runs_ok += 1
    never = {"piece_seconds": float("inf"), "piece_bytes": 1 << 40}
    for accept in ("", OPENMETRICS):
        one = list(metrics.exposition(accept, **never)[1])
        assert len(one) == 1
        for budget in ({"piece_seconds": 0.0}, {"piece_bytes": 0}):
            many = list(metrics.exposition(accept, **{**never, **budget})[1])
            assert len(many) > 9 * 20  # 9 probe families of 2,025 checks, 100 a part
            assert max(len(p) for p in many[:-1]) < 100 * 1_500  # a part: 100 checks' histograms at most
            assert b"".join(many) == one[0]
        by_size = list(metrics.exposition(accept, **{**never, "piece_bytes": 50_000})[1])
        assert 1 < len(by_size) < len(many) and max(len(p) for p in by_size[:-1]) < 50_000 + 100 * 1_500
        assert b"".join(by_size) == one[0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(LAG_BUCKETS), st.floats(min_value=-1.0, max_value=1e6, allow_nan=False)),
                max_size=30))
def test_the_lag_histogram_is_exported_as_prometheus_clients_histogram(lags: list[float]) -> None:
    """The scheduler's lag histogram (monitor.metrics.RunHistogram) against prometheus-client's ``Histogram``
    with the same name, help and buckets, observed alike (values on a bound, between, past the last, negative):
    the same page, byte for byte, in both formats."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    name, help_text = "integration_monitor_scheduler_lag_seconds", "Delay between a run's scheduled and actual start"
    lag = RunHistogram(name, help_text, LAG_BUCKETS, registry=ours)
    reference = Histogram(name, help_text, buckets=LAG_BUCKETS, registry=theirs)
    for value in lags:
        lag.observe(value)
        reference.observe(value)
    for encoder in (generate_latest, generate_openmetrics):
        assert encoder(ours) == encoder(theirs)
    assert Metrics().registry.get_sample_value(f"{name}_count") == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["acme", "globex", "initech"]), st.one_of(
    st.sampled_from(LATENCY_BOUNDS), st.floats(min_value=0.0, max_value=1e4, allow_nan=False))), max_size=40),
    st.integers(min_value=1, max_value=4))
def test_the_traffic_histogram_is_exported_as_prometheus_clients_histogram(
    calls: list[tuple[str, float]], deltas: int
) -> None:
    """The real-traffic latency histogram (monitor.metrics.CountedHistogram), its counts added in a few
    deltas as the traffic reader adds what Redis counted, against prometheus-client's ``Histogram`` with the
    same name, help, label and buckets observing the same calls: the same page, byte for byte, in both
    formats (``le="1.0"``, as prometheus-client writes it)."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    name, help_text = "integration_traffic_request_duration_seconds", "Duration of the last attempt of each call"
    counted = CountedHistogram(name, help_text, LATENCY_BOUNDS, registry=ours)
    reference = Histogram(name, help_text, ("integration",), buckets=LATENCY_BOUNDS, registry=theirs)
    for integration in sorted({i for i, _ in calls}):
        reference.labels(integration)  # (its label sets in that order, as ours are exported)
    for part in range(deltas):
        per: dict[str, tuple[list[int], list[float]]] = {}
        for integration, latency in calls[part::deltas]:
            counts, total = per.setdefault(integration, ([0] * (len(LATENCY_BOUNDS) + 1), [0.0]))
            counts[bisect_left(LATENCY_BOUNDS, latency)] += 1  # the first bound >= it: Histogram's ``le``
            total[0] += latency
            reference.labels(integration).observe(latency)
        for integration, (counts, total) in per.items():
            counted.add(integration, counts, total[0])
    for encoder in (generate_latest, generate_openmetrics):
        (lines, sums), (their_lines, their_sums) = _sums_apart(encoder(ours)), _sums_apart(encoder(theirs))
        assert lines == their_lines
        assert [n for n, _ in sums] == [n for n, _ in their_sums]
        assert all(math.isclose(a, b, rel_tol=1e-12) for (_, a), (_, b) in zip(sums, their_sums, strict=True))


def _sums_apart(page: bytes) -> tuple[list[bytes], list[tuple[bytes, float]]]:
    """The page's lines but its ``_sum`` samples, and those (name, value): added delta by delta, a sum's
    last bits may differ from one added call by call."""
    lines, sums = [], []
    for line in page.splitlines():
        name, _, value = line.rpartition(b" ")
        if name.split(b"{")[0].endswith(b"_sum"):
            sums.append((name, float(value)))
        else:
            lines.append(line)
    return lines, sums
