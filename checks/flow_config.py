"""Config of a multi-step flow (``kind: flow``): ordered steps, each an HTTP request or a GraphQL query,
values of earlier responses in later requests (``checks.flow_templates``), and cleanup steps that always
run. Validated at load time: step names unique, every reference well-formed, naming a step that runs
before it (a cleanup step may name any step), every URL absolute once its references are filled in.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from checks.auth_config import AuthConfig, absolute_http_url
from checks.base import CheckConfigBase, RetryConfig
from checks.flow_templates import REFERENCE, Reference, references, strings_in
from checks.graphql_config import GraphqlCallFields
from checks.http_config import HttpCallFields
from integration_kit.durations import Duration

STEP_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # no dots: a name is part of ${steps.<name>.…}


def _template_url(value: str) -> str:
    """A step's URL: absolute once its references are filled in (one that is a reference is checked
    when the run fills it in)."""
    references(value)
    if REFERENCE.fullmatch(value):
        return value
    absolute_http_url(REFERENCE.sub("x", value))
    return value


class _Step(BaseModel):
    """What a flow step adds to its request: a name, and its own retry policy if the flow's won't do."""

    name: str = Field(pattern=STEP_NAME)
    retry: RetryConfig | None = Field(default=None, description="default: the flow's retry")

    def template_strings(self) -> list[str]:
        raise NotImplementedError

    def step_references(self) -> list[Reference]:
        return [r for text in self.template_strings() for r in references(text)]


class HttpStep(_Step, HttpCallFields):
    kind: Literal["http"] = "http"

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        if value != "http":
            raise ValueError(f"unknown step kind {value!r}, expected 'http' (the default) or 'graphql'")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _template_url(value)

    def template_strings(self) -> list[str]:
        return [self.url, *(v.get_secret_value() for v in (*self.headers.values(), *self.query.values())),
                *strings_in(self.json_body), *([self.body] if self.body is not None else [])]


class GraphqlStep(_Step, GraphqlCallFields):
    kind: Literal["graphql"]

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _template_url(value)

    def template_strings(self) -> list[str]:
        return [self.url, *(v.get_secret_value() for v in self.headers.values()), *strings_in(self.variables)]


def _step_kind(value: Any) -> str:
    kind = value.get("kind", "http") if isinstance(value, dict) else getattr(value, "kind", "http")
    return "graphql" if kind == "graphql" else "http"  # anything else: HttpStep says what kinds there are


FlowStep = Annotated[
    Annotated[HttpStep, Tag("http")] | Annotated[GraphqlStep, Tag("graphql")], Discriminator(_step_kind)
]


class FlowCheckConfig(CheckConfigBase):
    kind: Literal["flow"]
    steps: list[FlowStep] = Field(min_length=1, description="run in order; the first failure ends them")
    cleanup: list[FlowStep] = Field(default_factory=list, description="run after the steps, whatever happened")
    cleanup_timeout: Duration | None = Field(
        default=None, description="of the flow's timeout, kept for the cleanup steps; default: a third, at most 5s"
    )
    auth: AuthConfig | None = Field(default=None, description="every step's auth unless it has its own")

    @model_validator(mode="after")
    def _flow(self) -> FlowCheckConfig:
        problems = []
        seen: dict[str, str] = {}
        for part, steps in (("steps", self.steps), ("cleanup", self.cleanup)):
            for i, step in enumerate(steps):
                if step.name in seen:
                    problems.append(f"{part}[{i}].name: duplicate step name {step.name!r} (also {seen[step.name]})")
                seen[step.name] = f"{part}[{i}]"
        main = [s.name for s in self.steps]
        every = set(seen)
        for part, steps in (("steps", self.steps), ("cleanup", self.cleanup)):
            for i, step in enumerate(steps):
                allowed = set(main[:i]) if part == "steps" else every
                for ref in step.step_references():
                    if ref.step not in allowed:
                        known = ", ".join(sorted(allowed)) or "none"
                        problems.append(f"{part}[{i}]: {ref.text} names a step that has not run by then "
                                        f"(earlier steps: {known})")
        if self.cleanup and self.cleanup_timeout is not None and self.cleanup_timeout >= self.timeout:
            problems.append("cleanup_timeout must be shorter than timeout (it is kept out of it for cleanup)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def cleanup_budget(self) -> float:
        """Seconds of ``timeout`` the steps leave to the cleanup steps (0 without cleanup)."""
        if not self.cleanup:
            return 0.0
        return self.cleanup_timeout if self.cleanup_timeout is not None else min(5.0, self.timeout / 3)

    def targets(self) -> tuple[str, ...]:
        return tuple(step.url for step in (*self.steps, *self.cleanup))

    def secret_values(self) -> list[str]:
        own = self.auth.secret_values() if self.auth is not None else []
        return own + [s for step in (*self.steps, *self.cleanup) for s in step.secret_values()]


__all__ = ["STEP_NAME", "FlowCheckConfig", "FlowStep", "GraphqlStep", "HttpStep"]
