"""deploy/: the Kubernetes sidecar example, docker-compose and the example config agree with the image
(Dockerfile) and with each other, and the example config is one the monitor accepts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.settings import parse_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
ENV = {"STRIPE_KEY": "rk_test_x", "SLACK_BOT_TOKEN": "xoxb-test", "REDIS_URL": "redis://redis:6379/0"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dockerfile_json(keyword: str) -> list[str]:
    (line,) = re.findall(rf"^{keyword} (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
    value: list[str] = json.loads(line)
    return value


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    spec: dict[str, Any] = load(K8S / "deployment.yaml")["spec"]["template"]
    return spec


@pytest.fixture(scope="module")
def monitor_container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["spec"]["containers"]
    assert len(containers) == 2, "the example is an app with the monitor as its sidecar"
    container: dict[str, Any] = next(c for c in containers if c["name"] == "integration-monitor")
    return container


def test_example_config_is_valid_and_the_configmap_carries_the_same_file() -> None:
    example = (DEPLOY / "config.example.yaml").read_text()
    configmap = load(K8S / "configmap.yaml")["data"]["config.yaml"]
    assert yaml.safe_load(example) == yaml.safe_load(configmap)
    config = parse_config(configmap, env=ENV)
    assert config.monitor.listen == "0.0.0.0:9478", "inside a container the monitor must listen on all interfaces"
    assert config.alerting.slack is not None


def test_sidecar_runs_the_image_command_with_the_mounted_config(
    pod: dict[str, Any], monitor_container: dict[str, Any]
) -> None:
    assert monitor_container["args"] == dockerfile_json("CMD")
    config_file = Path(monitor_container["args"][-1])
    (mount,) = monitor_container["volumeMounts"]
    assert mount["mountPath"] == str(config_file.parent) and mount["readOnly"] is True
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    configmap = load(K8S / "configmap.yaml")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert config_file.name in configmap["data"]


def test_secrets_come_from_the_secret(monitor_container: dict[str, Any]) -> None:
    secret = load(K8S / "secret.yaml")
    assert monitor_container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    referenced = set(re.findall(r"\$\{([A-Z_]+)", load(K8S / "configmap.yaml")["data"]["config.yaml"]))
    assert referenced <= set(secret["stringData"]), "every ${VAR} of the config comes from the Secret"
    assert "env" not in monitor_container, "no credentials inline in the pod spec"


def test_probes_ports_and_scrape_annotations(pod: dict[str, Any], monitor_container: dict[str, Any]) -> None:
    (port,) = monitor_container["ports"]
    assert port["containerPort"] == 9478
    assert monitor_container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert monitor_container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    # A sidecar's readiness is its pod's: /readyz failing (Slack rejects the token) would take the app
    # out of its Service. The example has no readiness probe on the monitor.
    assert "readinessProbe" not in monitor_container
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])


def test_sidecar_runs_as_the_image_user_locked_down(pod: dict[str, Any], monitor_container: dict[str, Any]) -> None:
    (user,) = re.findall(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    security = monitor_container["securityContext"]
    assert (str(security["runAsUser"]), str(security["runAsGroup"])) == user
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_compose_wires_redis_prometheus_grafana_and_the_monitor() -> None:
    compose = load(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"redis", "integration-monitor", "prometheus", "grafana"}
    monitor = services["integration-monitor"]
    assert monitor["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    config_path = dockerfile_json("CMD")[-1]
    assert f"./config.example.yaml:{config_path}:ro" in monitor["volumes"]
    assert monitor["command"].endswith(f"run -c {config_path}}}"), "default command: the image's CMD"
    assert monitor["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    # Prometheus scrapes the monitor under the job name the rules expect, and loads the rules.
    scrape = load(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "integration-monitor"
    assert job["static_configs"] == [{"targets": ["integration-monitor:9478"]}]
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in services["prometheus"]["volumes"]
    rules = (DEPLOY / "prometheus" / "rules" / "integration-monitor.rules.yml").read_text()
    assert 'up{job="integration-monitor"}' in rules
    for service in services.values():
        image = service.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, f"unpinned image {image!r}"
