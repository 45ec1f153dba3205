# syntax=docker/dockerfile:1
# integration-monitor: the sidecar image.
#   docker build -t integration-monitor .
#   docker run -v ./config.yaml:/etc/integration-monitor/config.yaml:ro -p 9478:9478 integration-monitor
# scripts/docker-steps.sh runs the same steps without Docker (CI has no Docker engine): keep them in step.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: build our wheel, then install it and its dependencies into a venv -----------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY integration_kit ./integration_kit
COPY monitor ./monitor
COPY checks ./checks
COPY alerts ./alerts
# Wheels of the project and every dependency (all ship manylinux wheels, uvloop and isal included: no compiler
# needed), then a venv installed from those wheels only (--no-index: no name can come from elsewhere).
RUN python -m pip wheel --wheel-dir /wheels ".[speed]" \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels "integration-monitor[speed]"

# --- runtime: the venv only; no pip cache, no sources, no build tools ----------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="integration-monitor" \
      org.opencontainers.image.description="Sidecar that watches third-party API integrations: probes, quotas, webhooks, Prometheus metrics, Slack alerts" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INTEGRATION_MONITOR_HEALTH_URL=http://127.0.0.1:9478/healthz
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 monitor \
 && useradd --system --uid 10001 --gid monitor --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin monitor \
 && mkdir -p /etc/integration-monitor
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
# /metrics /healthz /readyz /api/status (monitor.listen must be 0.0.0.0:9478 inside a container)
EXPOSE 9478
# python:slim has no curl: ask /healthz with the standard library (urlopen raises on non-2xx → exit 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['INTEGRATION_MONITOR_HEALTH_URL'], timeout=4)"]
# Exec form: the daemon is PID 1 and receives SIGTERM itself (finishes in-flight probes, exits 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["integration-monitor"]
CMD ["run", "-c", "/etc/integration-monitor/config.yaml"]
