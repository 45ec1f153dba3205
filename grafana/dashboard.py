"""Generates grafana/dashboards/integration-monitor.json with the Grafana Foundation SDK.

    python grafana/dashboard.py            # rewrite the committed JSON
    python grafana/dashboard.py --check    # exit 1 if the committed JSON is out of date

Edit this file, not the JSON: tests/test_grafana.py fails when the two disagree, and
tests/test_prometheus_e2e.py runs every expression below against a real Prometheus scraping the demo.
Metric names are the ones the README documents (README, "Metrics"; counters end in ``_total``, histograms in
``_bucket``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "integration-monitor.json"
UID = "integration-monitor"

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Label filters of the template variables. Quota, webhook and alert metrics have no `check` label.
IC = 'integration=~"$integration", check=~"$check"'
I = 'integration=~"$integration"'  # noqa: E741 - short on purpose: it appears in every query

# Thresholds shared with the built-in alert rules and deploy/prometheus/rules (same numbers).
ERROR_RATE_THRESHOLD = 0.05
QUOTA_WARNING = 0.80
QUOTA_CRITICAL = 0.95
TLS_WARNING_DAYS = 14
WEBHOOK_SILENCE_SECONDS = 30 * 60


def _query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> prom.Dataquery:
    q = prom.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant().format(pm.PromQueryFormat.TABLE)
    return q


def _steps(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=color) for value, color in steps])
    )


# Firing alerts that were told: an inhibited warning is firing but not sent (the critical of the same alert is).
_TOLD = (f"integration_alert_firing{{{I}}} unless on (integration, alert, severity) "
         f"integration_alert_inhibited{{{I}}} == 1")


def _up_down(up: str = "UP", down: str = "DOWN") -> list[dm.ValueMapping]:
    return [
        dm.ValueMap(
            options={
                "1": dm.ValueMappingResult(text=up, color="green", index=0),
                "0": dm.ValueMappingResult(text=down, color="red", index=1),
            }
        )
    ]


def _per_check(metric: str, how: str = "max") -> str:
    """A per-check gauge, one series per check however many replicas Prometheus scrapes: the owner of the
    integration exports it, and after a handover another replica does (README, "Running several replicas")."""
    return f"{how} by (integration, check) ({metric}{{{IC}}})"


def _per_quota(metric: str) -> str:
    """A per-quota gauge, one series per quota across replicas (see ``_per_check``)."""
    return f"max by (integration, quota, source) ({metric}{{{I}}})"


def _error_ratio(by: str) -> str:
    # A check that never failed has no failure series: `or … * 0` makes its ratio 0 instead of absent.
    runs = f"integration_probe_runs_total{{{IC}}}"
    fails = f'integration_probe_runs_total{{{IC}, outcome="failure"}}'
    return (
        f"(sum by ({by}) (rate({fails}[$__rate_interval]))"
        f" or sum by ({by}) (rate({runs}[$__rate_interval])) * 0)"
        f" / sum by ({by}) (rate({runs}[$__rate_interval]))"
    )


def _latency_quantile(q: float, by: str) -> str:
    return (
        f"histogram_quantile({q}, sum by ({by}) "
        f"(rate(integration_probe_duration_seconds_bucket{{{IC}}}[$__rate_interval])))"
    )


def _ts(title: str, unit: str, *, w: int = 12, h: int = 8) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .unit(unit)
        .span(w)
        .height(h)
        .datasource(DATASOURCE)
        .line_width(1)
        .fill_opacity(10)
        .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST).placement(cm.LegendPlacement.BOTTOM)
                .show_legend(True))
    )


def _stat(title: str, unit: str, *, w: int = 6, h: int = 5) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .unit(unit)
        .span(w)
        .height(h)
        .datasource(DATASOURCE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
    )


def _variables(d: db.Dashboard) -> db.Dashboard:
    return (
        d.with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            db.QueryVariable("integration")
            .label("Integration")
            .datasource(DATASOURCE)
            .query("label_values(integration_probe_success, integration)")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_variable(
            db.QueryVariable("check")
            .label("Check")
            .datasource(DATASOURCE)
            .query('label_values(integration_probe_success{integration=~"$integration"}, check)')
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )


def _overview(d: db.Dashboard) -> db.Dashboard:
    return (
        d.with_row(db.Row("Overview"))
        .with_panel(
            _stat("Probe status (last run)", "none", w=12, h=6)
            .description("1 if the check's last run succeeded. One tile per check.")
            .with_target(_query(_per_check("integration_probe_success"), "{{integration}}/{{check}}"))
            .mappings(_up_down())
            .thresholds(_steps((None, "red"), (1, "green")))
        )
        .with_panel(
            _stat("Error rate per integration", "percentunit", w=8, h=6)
            .description(f"Failed runs / all runs. The built-in error_rate alert fires above "
                         f"{ERROR_RATE_THRESHOLD:.0%} over 5m (with at least 10 runs).")
            .with_target(_query(_error_ratio("integration"), "{{integration}}"))
            .thresholds(_steps((None, "green"), (ERROR_RATE_THRESHOLD, "red")))
        )
        .with_panel(
            _stat("Firing alerts", "none", w=4, h=6)
            .description("Alerts the monitor's own rules fire and tell now (integration_alert_firing); a "
                         "warning inhibited by the critical of the same alert is not counted "
                         "(integration_alert_inhibited), as it is not sent.")
            .with_target(_query(f"sum({_TOLD}) or vector(0)", "firing"))
            .thresholds(_steps((None, "green"), (1, "red")))
        )
    )


def _probes(d: db.Dashboard) -> db.Dashboard:
    return (
        d.with_row(db.Row("Probes"))
        .with_panel(
            _ts("Probe success", "none")
            .description("Result of the last run of each check (1 = success).")
            .with_target(_query(_per_check("integration_probe_success"), "{{integration}}/{{check}}"))
            .line_interpolation(cm.LineInterpolation.STEP_AFTER)
            .min(0)
            .max(1)
            .mappings(_up_down())
            .thresholds(_steps((None, "red"), (1, "green")))
        )
        .with_panel(
            _ts("Error rate per integration", "percentunit")
            .description(f"Failed runs / all runs; dashed line: the {ERROR_RATE_THRESHOLD:.0%} alert threshold.")
            .with_target(_query(_error_ratio("integration"), "{{integration}}"))
            .min(0)
            .thresholds(_steps((None, "green"), (ERROR_RATE_THRESHOLD, "red")))
            .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
        )
        .with_panel(
            _ts("Errors by class", "opm")
            .description("Failed runs per minute by their final error class (the classes: README, 'Checks').")
            .with_target(_query(
                f"60 * sum by (error_class) (rate(integration_probe_errors_total{{{IC}}}[$__rate_interval]))",
                "{{error_class}}",
            ))
            .draw_style(cm.GraphDrawStyle.BARS)
            .fill_opacity(80)
            .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
            .min(0)
        )
        .with_panel(
            _ts("Runs and retries", "opm")
            .description("Runs per minute by outcome, and attempts beyond the first.")
            .with_target(_query(
                f"60 * sum by (outcome) (rate(integration_probe_runs_total{{{IC}}}[$__rate_interval]))",
                "runs: {{outcome}}",
            ))
            .with_target(_query(
                f"60 * sum(rate(integration_probe_retries_total{{{IC}}}[$__rate_interval]))", "retries", "B"
            ))
            .min(0)
        )
        .with_panel(
            _stat("HTTP status (last run)", "none")
            .with_target(_query(_per_check("integration_probe_http_status_code"), "{{integration}}/{{check}}"))
            .color_mode(cm.BigValueColorMode.VALUE)
            .thresholds(_steps((None, "green"), (400, "orange"), (500, "red")))
        )
        .with_panel(
            _stat("TLS certificate expires in", "s")
            .description(f"Earliest certificate expiry of each HTTPS check; the built-in tls_expiry alert "
                         f"fires under {TLS_WARNING_DAYS} days.")
            .with_target(_query(
                f"({_per_check('integration_probe_tls_cert_expiry_timestamp_seconds', how='min')} > 0) - time()",
                "{{integration}}/{{check}}",
            ))
            .thresholds(_steps((None, "red"), (7 * 86400, "orange"), (TLS_WARNING_DAYS * 86400, "green")))
        )
        .with_panel(
            _stat("Failed runs in a row", "none")
            .description("Consecutive failed runs of each check; the probe_down alert fires at 3.")
            .with_target(_query(_per_check("integration_probe_consecutive_failures"), "{{integration}}/{{check}}"))
            .color_mode(cm.BigValueColorMode.VALUE)
            .thresholds(_steps((None, "green"), (1, "orange"), (3, "red")))
        )
        .with_panel(
            _stat("Probes slowed by quota back-off", "none")
            .description("1 while an integration's probes run slower because one of its quotas is nearly used up.")
            .with_target(_query(f"max by (integration) (integration_probe_quota_backoff{{{I}}})", "{{integration}}"))
            .mappings(_up_down(up="BACKING OFF", down="normal"))
            .thresholds(_steps((None, "green"), (1, "orange")))
        )
        .with_panel(
            _ts("OAuth2 token requests", "opm", w=24)
            .description("Token requests per minute this replica made, by outcome; tokens from the cache or from "
                         "another replica through Redis are not requests. Failures: the check's detail says why "
                         "(auth: token endpoint: invalid_client…).")
            .with_target(_query(
                f"60 * sum by (integration, outcome) (rate(integration_auth_token_requests_total{{{I}}}"
                "[$__rate_interval]))",
                "{{integration}} {{outcome}}",
            ))
            .min(0)
        )
    )


def _traffic_quantile(q: float) -> str:
    return (
        f"histogram_quantile({q}, sum by (le) "
        f"(rate(integration_traffic_request_duration_seconds_bucket{{{I}}}[$__rate_interval])))"
    )


def _real_traffic(d: db.Dashboard) -> db.Dashboard:
    calls = f"integration_traffic_requests_total{{{I}}}"
    return (
        d.with_row(db.Row("Real traffic"))
        .with_panel(
            _ts("Calls by outcome", "opm")
            .description("The integration services' own calls per minute (recorded by the integration kit), "
                         "by final outcome: ok or the error class, retries included in the call.")
            .with_target(_query(f"60 * sum by (error_class) (rate({calls}[$__rate_interval]))", "{{error_class}}"))
            .draw_style(cm.GraphDrawStyle.BARS)
            .fill_opacity(80)
            .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
            .min(0)
        )
        .with_panel(
            _ts("Real-traffic error rate", "percentunit")
            .description(f"Failed calls / all calls per integration; dashed line: the {ERROR_RATE_THRESHOLD:.0%} "
                         "alert threshold (the error_rate rule judges real traffic beside the probes).")
            .with_target(_query(
                f'(sum by (integration) (rate(integration_traffic_requests_total{{{I}, error_class!="ok"}}'
                f"[$__rate_interval])) or sum by (integration) (rate({calls}[$__rate_interval])) * 0)"
                f" / sum by (integration) (rate({calls}[$__rate_interval]))",
                "{{integration}}",
            ))
            .min(0)
            .thresholds(_steps((None, "green"), (ERROR_RATE_THRESHOLD, "red")))
            .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
        )
        .with_panel(
            _ts("Real-traffic latency p50 / p95 / p99", "s", w=8)
            .description("Last attempt of each call, from integration_traffic_request_duration_seconds.")
            .with_target(_query(_traffic_quantile(0.5), "p50", "A"))
            .with_target(_query(_traffic_quantile(0.95), "p95", "B"))
            .with_target(_query(_traffic_quantile(0.99), "p99", "C"))
            .min(0)
        )
        .with_panel(
            _ts("Responses by status code", "opm", w=8)
            .with_target(_query(
                f"60 * sum by (code) (rate(integration_traffic_responses_total{{{I}}}[$__rate_interval]))", "{{code}}"
            ))
            .min(0)
        )
        .with_panel(
            _ts("Retries and rate-limiter waits", "opm", w=8)
            .description("Attempts beyond the first, and calls that waited for the shared rate limiter (a "
                         "throttled batch job), per minute.")
            .with_target(_query(
                f"60 * sum by (integration) (rate(integration_traffic_retries_total{{{I}}}[$__rate_interval]))",
                "{{integration}} retries", "A",
            ))
            .with_target(_query(
                f"60 * sum by (integration) (rate(integration_traffic_throttled_total{{{I}}}[$__rate_interval]))",
                "{{integration}} throttled", "B",
            ))
            .min(0)
        )
        .with_panel(
            _ts("Average rate-limiter wait", "s")
            .description("Seconds a throttled call waited for the shared rate limiter, on average.")
            .with_target(_query(
                f"sum by (integration) (rate(integration_traffic_throttle_wait_seconds_total{{{I}}}[$__rate_interval]))"
                f" / sum by (integration) (rate(integration_traffic_throttled_total{{{I}}}[$__rate_interval]))",
                "{{integration}}",
            ))
            .min(0)
        )
        .with_panel(
            _stat("Since the services' last write", "s")
            .description("Seconds since a service last wrote its traffic counters. A quiet integration may "
                         "simply make no calls; a service that should be busy and is not writing is stuck, or "
                         "cannot reach Redis.")
            .with_target(_query(
                f"time() - max by (integration) (integration_traffic_last_write_timestamp_seconds{{{I}}})",
                "{{integration}}",
            ))
            .thresholds(_steps((None, "green"), (60, "orange"), (600, "red")))
        )
        .with_panel(
            _stat("Calls not recorded / not limited (1h)", "none")
            .description("Not recorded: calls the services counted but could not write to Redis (it was down "
                         "longer than they keep counts). Not limited: calls the shared rate limiter let through "
                         "because its Redis failed.")
            .with_target(_query(f"sum by (integration) (increase(integration_traffic_lost_total{{{I}}}[1h]))",
                                "{{integration}} not recorded"))
            .with_target(_query(
                f"sum by (integration) (increase(integration_traffic_limiter_bypassed_total{{{I}}}[1h]))",
                "{{integration}} not limited", "B",
            ))
            .thresholds(_steps((None, "green"), (1, "orange")))
        )
    )


def _latency(d: db.Dashboard) -> db.Dashboard:
    return (
        d.with_row(db.Row("Latency"))
        .with_panel(
            _ts("Probe latency p50 / p95 / p99", "s", w=8)
            .description("Over the selected checks, from the integration_probe_duration_seconds histogram "
                         "(final attempt of each run).")
            .with_target(_query(_latency_quantile(0.5, "le"), "p50", "A"))
            .with_target(_query(_latency_quantile(0.95, "le"), "p95", "B"))
            .with_target(_query(_latency_quantile(0.99, "le"), "p99", "C"))
            .min(0)
        )
        .with_panel(
            _ts("p95 latency per check", "s", w=8)
            .with_target(_query(_latency_quantile(0.95, "le, integration, check"), "{{integration}}/{{check}}"))
            .min(0)
        )
        .with_panel(
            _ts("Phase breakdown (last run)", "s", w=8)
            .description("DNS, connect, TLS, time to first byte, transfer and, with OAuth2, the token (0 when "
                         "cached) of each check's last run, stacked. Select one check to read one request.")
            .with_target(_query(
                f"max by (integration, check, phase) (integration_probe_phase_seconds{{{IC}}})",
                "{{integration}}/{{check}} {{phase}}",
            ))
            .draw_style(cm.GraphDrawStyle.BARS)
            .fill_opacity(80)
            .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
            .min(0)
        )
        .with_panel(
            _ts("Flow steps (last run)", "s")
            .description("Duration of each step of the multi-step flows' last runs (create, read back, clean "
                         "up…), all attempts of the step.")
            .with_target(_query(f"integration_probe_step_duration_seconds{{{IC}}}",
                                "{{integration}}/{{check}} {{step}}"))
            .min(0)
        )
        .with_panel(
            _stat("Flow step results (last run)", "none", w=12, h=8)
            .description("1 if the step succeeded in its flow's last run, 0 if it failed; a step that did not "
                         "run is absent.")
            .with_target(_query(f"integration_probe_step_success{{{IC}}}", "{{integration}}/{{check}} {{step}}"))
            .mappings(_up_down(up="OK", down="FAILED"))
            .thresholds(_steps((None, "red"), (1, "green")))
        )
    )


def _quotas(d: db.Dashboard) -> db.Dashboard:
    quota_steps = _steps((None, "green"), (QUOTA_WARNING, "orange"), (QUOTA_CRITICAL, "red"))
    legend = "{{integration}} {{quota}} ({{source}})"
    return (
        d.with_row(db.Row("Quotas"))
        .with_panel(
            _ts("Quota usage", "percentunit", w=16)
            .description(f"used / limit per quota; dashed lines at the warning ({QUOTA_WARNING:.0%}) and "
                         f"critical ({QUOTA_CRITICAL:.0%}) alert thresholds.")
            .with_target(_query(_per_quota("integration_quota_usage_ratio"), legend))
            .min(0)
            .axis_soft_max(1)
            .thresholds(quota_steps)
            .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
        )
        .with_panel(
            bargauge.Panel()
            .title("Quota usage now")
            .unit("percentunit")
            .span(8)
            .height(8)
            .datasource(DATASOURCE)
            .with_target(_query(_per_quota("integration_quota_usage_ratio"), legend))
            .min(0)
            .max(1)
            .thresholds(quota_steps)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        )
        .with_panel(
            _ts("Quota used and limit", "short")
            .with_target(_query(_per_quota("integration_quota_used"), "used " + legend, "A"))
            .with_target(_query(_per_quota("integration_quota_limit"), "limit " + legend, "B"))
            .min(0)
        )
        .with_panel(
            _ts("Redis keys per quota", "short")
            .description("Keys a Redis quota's pattern matched (one per client/merchant/window), and how many of "
                         "them are above the quota's near_limit ratio: one hot key can hide in a healthy total.")
            .with_target(_query(_per_quota("integration_quota_keys"), "matched " + legend, "A"))
            .with_target(_query(_per_quota("integration_quota_keys_near_limit"), "near limit " + legend, "B"))
            .min(0)
        )
        .with_panel(
            _stat("Time to reset", "s", w=8)
            .description("Seconds until each quota's window resets.")
            .with_target(_query(_per_quota("integration_quota_reset_seconds"), legend))
            .color_mode(cm.BigValueColorMode.NONE)
        )
        .with_panel(
            _stat("Projected exhaustion", "s", w=8)
            .description("Time to 100% at the current burn rate; no value while usage is not rising.")
            .with_target(_query(_per_quota("integration_quota_exhaustion_seconds"), legend))
            .thresholds(_steps((None, "red"), (300, "orange"), (3600, "green")))
            .no_value("not rising")
        )
        .with_panel(
            _stat("Skipped Redis keys", "short", w=8)
            .description("Keys a Redis quota's pattern matched but that do not count (integration_quota_keys_skipped "
                         "by reason: name, not in the quota's format; value, an unexpected type or value; "
                         "over_max_keys, beyond the quota's max_keys, not read). The log has a summary with examples.")
            .with_target(_query(
                "sum by (integration, quota) (max by (integration, quota, source, reason) "
                f"(integration_quota_keys_skipped{{{I}}}))",
                "{{integration}} {{quota}}",
            ))
            .thresholds(_steps((None, "green"), (1, "orange")))
        )
    )


def _webhooks(d: db.Dashboard) -> db.Dashboard:
    return (
        d.with_row(db.Row("Webhooks"))
        .with_panel(
            _stat("Time since last webhook", "s", w=8)
            .description(f"Freshness of each integration's webhooks; the example Prometheus rule fires "
                         f"after {WEBHOOK_SILENCE_SECONDS // 60}m (the built-in one after max_silence).")
            .with_target(_query(
                f"time() - max by (integration) (integration_webhook_last_event_timestamp_seconds{{{I}}})",
                "{{integration}}",
            ))
            .thresholds(_steps((None, "green"), (WEBHOOK_SILENCE_SECONDS, "red")))
        )
        .with_panel(
            _ts("Webhook deliveries", "opm", w=8)
            .with_target(_query(
                f"60 * sum by (integration) (rate(integration_webhook_events_total{{{I}}}[$__rate_interval]))",
                "events {{integration}}", "A",
            ))
            .with_target(_query(
                f"60 * sum by (integration) (rate(integration_webhook_duplicates_total{{{I}}}[$__rate_interval]))",
                "duplicates {{integration}}", "B",
            ))
            .min(0)
        )
        .with_panel(
            _ts("Webhook duplicate ratio", "percentunit", w=8)
            .description("Duplicate deliveries / all deliveries over the configured window (vendors retry on "
                         "slow or failed acks); absent until enough events arrived.")
            .with_target(_query(f"max by (integration) (integration_webhook_duplicate_ratio{{{I}}})",
                                "{{integration}}"))
            .min(0)
        )
        .with_panel(
            _stat("Time since last event, by type", "s", w=24, h=4)
            .description("Freshness of each event type listed in the integration's webhook config.")
            .with_target(_query(
                "time() - max by (integration, event_type) "
                f"(integration_webhook_event_type_last_event_timestamp_seconds{{{I}}})",
                "{{integration}} {{event_type}}",
            ))
            .thresholds(_steps((None, "green"), (WEBHOOK_SILENCE_SECONDS, "red")))
        )
    )


def _alerts(d: db.Dashboard) -> db.Dashboard:
    return (
        d.with_row(db.Row("Alerts"))
        .with_panel(
            table.Panel()
            .title("Firing alerts")
            .description("Alerts the monitor fires now, from its own rules. inhibited: a warning held back "
                         "while the critical of the same alert fires (not sent; integration_alert_inhibited).")
            .span(12)
            .height(8)
            .datasource(DATASOURCE)
            .with_target(_query(
                f"max by (integration, alert, severity) (integration_alert_inhibited{{{I}}}) "
                f"and on (integration, alert, severity) "
                f"(max by (integration, alert, severity) (integration_alert_firing{{{I}}}) == 1)",
                instant=True,
            ))
            .mappings([dm.ValueMap(options={
                "1": dm.ValueMappingResult(text="inhibited", color="blue", index=0),
                "0": dm.ValueMappingResult(text="sent", color="red", index=1),
            })])
            .with_transformation(dm.DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": {"Time": True, "__name__": True}, "renameByName": {"Value": "state"}},
            ))
        )
        .with_panel(
            _ts("Alerts firing over time", "none")
            .with_target(_query(
                f"sum by (integration, alert, severity) (integration_alert_firing{{{I}}})",
                "{{integration}} {{alert}} ({{severity}})",
            ))
            .line_interpolation(cm.LineInterpolation.STEP_AFTER)
            .min(0)
        )
    )


def _monitor_health(d: db.Dashboard) -> db.Dashboard:
    return (
        d.with_row(db.Row("Monitor health"))
        .with_panel(
            _stat("Redis", "none", w=3)
            .with_target(_query("min(integration_monitor_redis_up)", "redis"))
            .mappings(_up_down())
            .thresholds(_steps((None, "red"), (1, "green")))
        )
        .with_panel(
            _stat("Config (last reload)", "none", w=3)
            .with_target(_query("min(integration_monitor_config_last_reload_successful)", "config"))
            .mappings(_up_down(up="OK", down="REJECTED"))
            .thresholds(_steps((None, "red"), (1, "green")))
        )
        .with_panel(
            _stat("Last successful config load", "dateTimeFromNow", w=4)
            .with_target(_query(
                "max(integration_monitor_config_last_reload_success_timestamp_seconds) * 1000", "loaded"
            ))
            .color_mode(cm.BigValueColorMode.NONE)
        )
        .with_panel(
            _stat("Notifier failures (range)", "none", w=3)
            .with_target(_query(
                'sum(increase(integration_notifications_total{result="failed"}[$__range])) or vector(0)', "failed"
            ))
            .thresholds(_steps((None, "green"), (1, "red")))
        )
        .with_panel(
            _stat("Components failing", "none", w=3)
            .description("Components whose own work fails now (integration_monitor_component_ok = 0): e.g. a "
                         "reader whose Redis reads fail while Redis answers. /api/status says why.")
            .with_target(_query("count(integration_monitor_component_ok == 0) or vector(0)", "failing"))
            .thresholds(_steps((None, "green"), (1, "red")))
        )
        .with_panel(
            _stat("Component loop crashes (range)", "none", w=3)
            .description("Crashes of a component's background loop; each is logged with its traceback and the "
                         "loop restarted with back-off. Any is a bug worth reading the log for.")
            .with_target(_query(
                "sum(increase(integration_monitor_component_errors_total[$__range])) or vector(0)", "crashes"
            ))
            .thresholds(_steps((None, "green"), (1, "red")))
        )
        .with_panel(
            _stat("Version", "none", w=5)
            .with_target(_query("count by (version) (integration_monitor_build_info)", "{{version}}"))
            .text_mode(cm.BigValueTextMode.NAME)
            .color_mode(cm.BigValueColorMode.NONE)
        )
        .with_panel(
            _ts("Scheduler lag", "s")
            .description("How late probe runs start compared to their schedule (p50/p99). "
                         "Growing lag: the monitor is overloaded.")
            .with_target(_query(
                "histogram_quantile(0.5, sum by (le) "
                "(rate(integration_monitor_scheduler_lag_seconds_bucket[$__rate_interval])))", "p50", "A",
            ))
            .with_target(_query(
                "histogram_quantile(0.99, sum by (le) "
                "(rate(integration_monitor_scheduler_lag_seconds_bucket[$__rate_interval])))", "p99", "B",
            ))
            .min(0)
            .thresholds(_steps((None, "green"), (5, "red")))
            .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
        )
        .with_panel(
            _ts("Notifications", "short")
            .description("Notifications per notifier and result over each interval.")
            .with_target(_query(
                "sum by (notifier, result) (increase(integration_notifications_total[$__rate_interval]))",
                "{{notifier}} {{result}}",
            ))
            .draw_style(cm.GraphDrawStyle.BARS)
            .fill_opacity(80)
            .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
            .min(0)
        )
    )


def _replicas(d: db.Dashboard) -> db.Dashboard:
    """Several replicas sharing one Redis (README, "Running several replicas"); empty for a daemon alone."""
    return (
        d.with_row(db.Row("Replicas"))
        .with_panel(
            _stat("Replicas in the cluster", "none", w=6)
            .description("Replicas holding a share of the work, as each replica sees them (they agree unless one "
                         "cannot reach Redis). Fewer than your pods: a replica cannot join (see its /readyz).")
            .with_target(_query("max(integration_monitor_cluster_members)", "members"))
            .color_mode(cm.BigValueColorMode.VALUE)
            .thresholds(_steps((None, "red"), (1, "green")))
        )
        .with_panel(
            _ts("Share per replica", "short", w=9)
            .description("Each replica's share: the checks it probes (rendezvous hashing, one by one: about "
                         "equal, adding up to every enabled check) and the integrations it owns (their series, "
                         "readers, back-off and alerts).")
            .with_target(_query("sum by (instance) (integration_monitor_owned_checks)", "{{instance}} checks", "A"))
            .with_target(_query("sum by (instance) (integration_monitor_owned_integrations)",
                                "{{instance}} integrations", "B"))
            .min(0)
        )
        .with_panel(
            _ts("Results between replicas", "ops", w=9)
            .description("Check results per second sent to their integration's owner, received from other "
                         "replicas, and kept where they were probed because Redis could not take them (fail "
                         "open: those checks' series then come from the prober until Redis answers).")
            .with_target(_query("sum by (path) (rate(integration_monitor_cluster_results_total[$__rate_interval]))",
                                "{{path}}"))
            .min(0)
        )
        .with_panel(
            _ts("Ownership changes", "opm", w=6)
            .description("Checks and integrations that moved between replicas per minute: a replica joined, "
                         "left or crashed. Steady moves without deploys mean replicas come and go.")
            .with_target(_query(
                "60 * sum by (unit) (rate(integration_monitor_ownership_changes_total[$__rate_interval]))", "{{unit}}"
            ))
            .min(0)
        )
    )


def build() -> dict[str, object]:
    d = (
        db.Dashboard("Integration Monitor")
        .uid(UID)
        .description("Third-party API integrations watched by integration-monitor: probes, real traffic, "
                     "latency, quotas, webhooks, alerts and the monitor's own health.")
        .tags(["integration-monitor", "generated"])
        .editable()
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
    )
    sections = (
        _variables, _overview, _probes, _real_traffic, _latency, _quotas, _webhooks, _alerts, _monitor_health,
        _replicas,
    )
    for section in sections:
        d = section(d)
    model = json.loads(JSONEncoder(sort_keys=True).encode(d.build()))
    for panel_id, panel in enumerate(model["panels"], start=1):  # the builder leaves ids unset
        panel["id"] = panel_id
    return model


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.name} is out of date: run python grafana/dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
