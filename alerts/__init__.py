"""Alerting: pure rule evaluation, the alert state machine, and notifiers as small plug-ins."""
