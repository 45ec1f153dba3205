"""The transport to Alertmanager: ``POST {url}/api/v2/alerts`` with the configured auth and TLS settings.

``post`` sends one batch to one Alertmanager and classifies a failure into ``DeliveryError``: a
connection error, a timeout, 429 and 5xx can be retried; 400 (alerts rejected), 401/403 (credentials),
404 (no Alertmanager API at that URL) and TLS certificate errors need a human. ``send`` is the
``Notifier`` interface (used by ``send-test-alert``): the notification's alerts once to every URL.
The state that the daemon keeps re-sending every evaluation goes through ``AlertmanagerFeed`` instead.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from alerts.content import bounded
from alerts.notifier_config import AlertmanagerConfig
from alerts.notifiers.alertmanager.payload import postable_alert
from alerts.notifiers.base import DeliveryError, DeliveryReceipt, NotifierContext
from integration_kit.retry import parse_retry_after

if TYPE_CHECKING:
    from alerts.model import Notification, Severity

API_PATH = "/api/v2/alerts"
SEND_VALID_FOR = 300.0  # a one-off post (a test alert) stays firing in Alertmanager this long
_BODY_EXCERPT = 300

_HINTS = {
    400: "Alertmanager rejected the alerts",
    401: "Alertmanager (or its proxy) refused our credentials",
    403: "Alertmanager (or its proxy) refused our credentials",
    404: "no Alertmanager API at this URL (check the URL and its path prefix)",
}


class AlertmanagerNotifier:
    name = "alertmanager"
    min_interval = 0.0
    channel_key: str | None = None

    def __init__(self, config: AlertmanagerConfig, context: NotifierContext) -> None:
        self.config = config
        self.min_severity: Severity = config.min_severity
        self._redactor = context.redactor
        self._public_url = context.public_url
        self._headers = {"Content-Type": "application/json"}
        if config.bearer_token is not None:
            self._headers["Authorization"] = f"Bearer {config.bearer_token.get_secret_value()}"
        if config.basic_auth is not None:
            self._headers["Authorization"] = config.basic_auth.header
        self._ssl = self._ssl_context()  # here, so that a CA file that is not one fails the (re)load
        self._session: aiohttp.ClientSession | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        return self.config.urls

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if not self.config.verify_tls:
            return False
        if self.config.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.config.ca_file))
        return True

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=len(self.config.urls) * 2),
            )
        return self._session

    async def post(self, url: str, alerts: Sequence[Mapping[str, Any]]) -> None:
        """One batch to the Alertmanager at ``url``; raises ``DeliveryError`` saying whether to retry."""
        where = f"alertmanager {url}"
        try:
            async with self._open().post(
                url + API_PATH, json=list(alerts), headers=self._headers
            ) as response:
                if response.status < 300:
                    return
                body = (await response.content.read(_BODY_EXCERPT)).decode("utf-8", "replace")
                raise self._refused(where, response.status, response.reason or "", body,
                                    response.headers.get("Retry-After"))
        except DeliveryError:
            raise
        except aiohttp.ClientSSLError as exc:  # a certificate problem is fixed by a human, not by waiting
            raise DeliveryError(f"{where}: TLS: {self._detail(exc)}", retryable=False, code="tls") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise DeliveryError(f"{where}: {kind}: {self._detail(exc)}", retryable=True, code="connect") from None

    def _refused(self, where: str, status: int, reason: str, body: str, retry_after: str | None) -> DeliveryError:
        text = bounded(self._redactor.text(" ".join(body.split())), _BODY_EXCERPT)
        hint = _HINTS.get(status, "")
        message = f"{where}: {status} {reason}" + (f" — {hint}" if hint else "") + (f": {text}" if text else "")
        if status == 429 or status >= 500:
            wait = parse_retry_after(retry_after, now=time.time())
            return DeliveryError(message, retryable=True, retry_after=wait, code=str(status))
        return DeliveryError(message, retryable=False, code=str(status))

    def _detail(self, exc: BaseException) -> str:
        return bounded(self._redactor.text(str(exc)), 300) or "no detail"

    async def send(self, notification: Notification) -> DeliveryReceipt:
        """The notification's alerts once to every URL; delivered when at least one Alertmanager took them
        (the members of a cluster share notifications, so one is enough to be heard)."""
        now = time.time()
        payload = [
            postable_alert(alert, now=now, valid_for=SEND_VALID_FOR, extra_labels=self.config.labels,
                           base_url=self._public_url, redactor=self._redactor)
            for alert in notification.alerts
        ]
        results = await asyncio.gather(*(self.post(url, payload) for url in self.urls), return_exceptions=True)
        failures: list[DeliveryError] = []
        for result in results:
            if isinstance(result, DeliveryError):
                failures.append(result)
            elif isinstance(result, BaseException):
                raise result
        if len(failures) == len(results):
            raise DeliveryError(
                "; ".join(f.reason for f in failures), retryable=any(f.retryable for f in failures),
                retry_after=failures[0].retry_after, code=failures[0].code,
            )
        accepted = len(results) - len(failures)
        return DeliveryReceipt(notifier=self.name, action=f"posted to {accepted} of {len(results)} Alertmanager(s)")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
