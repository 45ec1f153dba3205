"""Webhook health: the processed-event-ID helper and the monitor's reader."""
