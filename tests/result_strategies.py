"""Hypothesis strategies for probe results: every field of a ``CheckResult`` (``result_fields``), texts that may
carry a secret (``SECRET``) where a result carries text."""

from __future__ import annotations

from hypothesis import strategies as st

from integration_kit.errors import ErrorClass
from integration_kit.results import RequestSummary, StepResult

SECRET = "s3cr3t-token-Zq9"

text = st.text(max_size=12) | st.just(f"sent {SECRET} back")
seconds = st.floats(min_value=0, max_value=1e10, allow_nan=False)
error_class = st.none() | st.sampled_from(ErrorClass)
pairs = st.lists(st.tuples(text, text), max_size=3).map(tuple)
requests = st.none() | st.builds(RequestSummary, method=text, url=st.just("https://api.test/v1?key=" + SECRET) | text,
                                 headers=st.dictionaries(text, text, max_size=2), body_excerpt=st.none() | text)
steps = st.lists(st.builds(StepResult, name=text, ok=st.booleans(), error_class=error_class, detail=text,
                           duration=seconds, phases=st.dictionaries(st.just("ttfb"), seconds)),
                 max_size=2).map(tuple)
result_fields = st.fixed_dictionaries({
    "integration": text, "check": text, "kind": text, "ok": st.booleans(), "error_class": error_class,
    "detail": text, "started_at": seconds, "duration": seconds, "total_duration": seconds,
    "attempts": st.integers(min_value=0, max_value=20),
    "attempt_classes": st.lists(error_class, max_size=3).map(tuple),
    "status_code": st.none() | st.integers(min_value=100, max_value=599),
    "phases": st.dictionaries(st.sampled_from(["dns", "connect", "tls", "ttfb", "transfer"]), seconds),
    "tls_expiry": st.none() | seconds, "request": requests, "response_excerpt": st.none() | text,
    "rate_limit_headers": pairs, "rate_limit_body": pairs, "body_bytes": st.none() | st.integers(min_value=0),
    "steps": steps,
})
