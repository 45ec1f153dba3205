"""Config of ``monitor.cluster``: several replicas of the daemon sharing one Redis act as one monitor.

Clustering needs Redis (that is where replicas meet), so it is on by default exactly when
``monitor.redis_url`` is set; ``enabled: false`` keeps every replica on its own, as before clustering
existed (each probes everything and alerts on its own).
"""

from __future__ import annotations

import re
import socket

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from integration_kit.durations import Duration, format_duration

MIN_HEARTBEAT = 0.05
MAX_HEARTBEAT = 60.0
MAX_TTL = 600.0
# Pod names and hostnames (RFC 1123 labels joined by dots), plus "_" and ":" that some platforms use.
REPLICA_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,252}$"


def default_replica_id() -> str:
    """The hostname: in Kubernetes the pod name, unique among the live pods of a Deployment. (Two daemons
    on one host share it; the second then adds a suffix of its own: see monitor.cluster.membership.)"""
    host = socket.gethostname() or "localhost"
    return host if re.match(REPLICA_ID, host) else "localhost"


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = Field(
        default=None, description="replicas share the work through Redis; default: on when monitor.redis_url is set"
    )
    replica_id: str | None = Field(
        default=None, description="this replica's name among its peers; default: the hostname (the pod name)"
    )
    heartbeat: Duration = Field(default=2.0, description="how often a replica renews its membership")
    ttl: Duration = Field(default=10.0, description="a replica that has not renewed for this long is gone")
    key_prefix: str = Field(default="im:cluster:", min_length=1, max_length=100)

    @field_validator("replica_id")
    @classmethod
    def _replica_id(cls, value: str | None) -> str | None:
        if value is not None and not re.match(REPLICA_ID, value):
            raise ValueError(
                f"expected a name of 1 to 253 letters, digits, '.', '-', '_' or ':' starting with a letter or digit "
                f"(a pod name or hostname), got {value!r}"
            )
        return value

    @field_validator("heartbeat")
    @classmethod
    def _heartbeat(cls, value: float) -> float:
        if not MIN_HEARTBEAT <= value <= MAX_HEARTBEAT:
            raise ValueError(
                f"expected {MIN_HEARTBEAT * 1000:g}ms to {MAX_HEARTBEAT:g}s, got {format_duration(value)}: a "
                "crashed replica's share waits for its lease to run out, so keep it short"
            )
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl_covers_heartbeats(cls, ttl: float, info: ValidationInfo) -> float:
        if ttl > MAX_TTL:
            raise ValueError(f"expected at most {format_duration(MAX_TTL)}, got {format_duration(ttl)}: a crashed "
                             "replica's checks go unprobed that long")
        heartbeat = info.data.get("heartbeat")  # absent when the heartbeat itself was invalid
        if heartbeat is not None and ttl < 2 * heartbeat:
            raise ValueError(
                f"expected at least twice the heartbeat ({format_duration(heartbeat)}), got {format_duration(ttl)}: "
                "otherwise one late "
                "heartbeat declares a healthy replica gone"
            )
        return ttl
