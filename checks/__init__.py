"""Probe kinds. Each kind is one module with a config model and ``probe(check, ctx)``, a coroutine function
or a function that returns the coroutine of the run.

``PROBES`` is the one registry: the config's discriminated union of check kinds is built from it, so a
new kind is added here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from checks import flow, graphql, http
from checks.base import CheckConfigBase, ProbeContext
from integration_kit.results import CheckResult


@dataclass(frozen=True, slots=True)
class ProbeKind:
    config: type[CheckConfigBase]
    probe: Callable[[Any, ProbeContext], Awaitable[CheckResult]]


PROBES: dict[str, ProbeKind] = {
    "http": ProbeKind(config=http.HttpCheckConfig, probe=http.probe),
    "graphql": ProbeKind(config=graphql.GraphqlCheckConfig, probe=graphql.probe),
    "flow": ProbeKind(config=flow.FlowCheckConfig, probe=flow.probe),
}

if TYPE_CHECKING:  # a union built at run time is opaque to type checkers; every kind is a CheckConfigBase
    CheckConfig = CheckConfigBase
else:
    CheckConfig = Annotated[
        Union[tuple(kind.config for kind in PROBES.values())],  # noqa: UP007
        Field(discriminator="kind"),
    ]


def run_probe(check: CheckConfigBase, ctx: ProbeContext) -> Awaitable[CheckResult]:
    # The kind's coroutine itself, not one around it: every wait of a probe resumes each coroutine of the
    # chain that awaits it (a level costs ~2.4 k instructions a probe of ~5 waits, counted with callgrind).
    return PROBES[check.kind].probe(check, ctx)  # type: ignore[attr-defined]


__all__ = ["PROBES", "CheckConfig", "ProbeContext", "ProbeKind", "run_probe"]
