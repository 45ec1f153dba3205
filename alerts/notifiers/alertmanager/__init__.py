"""The Alertmanager notifier: the monitor's alerts posted to Alertmanager's API v2, as Prometheus posts its own.

* ``payload.py`` — what is posted (labels, annotations, times, link back): a pure function of an ``Alert``;
* ``notifier.py`` — the transport (auth, TLS, classifying failures) and the ``Notifier`` interface;
* ``pusher.py`` — one Alertmanager's sender: the newest batch, retried with backoff;
* ``feed.py`` — the daemon Component the alert engine publishes the current alerts to after every evaluation.
"""

from alerts.notifiers.alertmanager.notifier import AlertmanagerNotifier

__all__ = ["AlertmanagerNotifier"]
