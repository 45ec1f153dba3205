"""Values from earlier steps of a flow in later requests: ``${steps.<step>.json.<path>}``,
``${steps.<step>.headers.<Name>}`` and ``${steps.<step>.status}``.

``<path>`` is an RFC 9535 JSONPath without its leading ``$`` (``id``, ``data.items[0].id``,
``['odd key']``) and must select exactly one value of the step's JSON response; a header is looked up
case-insensitively. References are parsed and their paths compiled at load time (``references``); a
run fills them in (``render``):

* a string that is exactly one reference becomes the value itself (a number stays a number in a JSON
  body), anything else is text with each reference replaced (non-string values as JSON);
* in a URL, a value inside the URL is percent-encoded (it becomes one path segment or query value); a
  URL that is exactly one reference is used as it is, and must be an absolute http(s) URL.

The config loader's ``${VAR}`` expansion leaves these alone: a variable name has no dots.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jsonpath_rfc9535

from checks.json_assertions import JsonPath, compile_path
from integration_kit.classify import Failure
from integration_kit.errors import ErrorClass

REFERENCE = re.compile(r"\$\{steps\.([A-Za-z0-9_-]+)\.(json|headers|status)(?:\.([^}]+))?\}")
_ANY_STEPS = re.compile(r"\$\{steps\.")


@dataclass(frozen=True, slots=True)
class Reference:
    text: str  # as written, for details: ${steps.create.json.id}
    step: str
    source: str  # json | headers | status
    argument: str | None  # the JSON path ($-prefixed) or the header name

    @property
    def query(self) -> JsonPath:
        assert self.argument is not None
        return compile_path(self.argument)


@dataclass(frozen=True, slots=True)
class StepValues:
    """What a finished step left for later ones."""

    status: int | None
    headers: Mapping[str, str]  # case-insensitive
    document: Any  # the parsed JSON body, or _NOT_JSON
    is_json: bool


def references(text: str) -> list[Reference]:
    """The references in ``text``; ValueError naming a malformed one or an invalid path."""
    found = []
    for match in REFERENCE.finditer(text):
        step, source, argument = match.groups()
        if source == "status" and argument is not None:
            raise ValueError(f"{match.group(0)}: status takes no path")
        if source != "status" and not argument:
            raise ValueError(f"{match.group(0)}: {source} needs a path or a header name")
        if source == "json":
            argument = "$" + (argument if argument.startswith("[") else "." + argument)
            try:
                compile_path(argument)
            except jsonpath_rfc9535.JSONPathError as exc:
                raise ValueError(f"{match.group(0)}: invalid JSON path {argument!r}: {exc}") from None
        found.append(Reference(match.group(0), step, source, argument))
    leftover = REFERENCE.sub("", text)
    if _ANY_STEPS.search(leftover):
        raise ValueError(
            "malformed step reference: expected ${steps.<step>.json.<path>}, ${steps.<step>.headers.<Name>} "
            "or ${steps.<step>.status}"
        )
    return found


def strings_in(value: Any) -> list[str]:
    """Every string in a JSON-like value (keys included), where references may sit."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in strings_in(v)]
    return []


class Unresolved(Exception):
    """A reference that cannot be filled in; ``failure`` says why (``missing_field`` and friends)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure[1])
        self.failure = failure


def resolve(reference: Reference, seen: Mapping[str, StepValues]) -> Any:
    values = seen.get(reference.step)
    if values is None:
        raise Unresolved(
            (ErrorClass.MISSING_FIELD, f"missing_field: {reference.text}: step {reference.step} did not run")
        )
    if reference.source == "status":
        return values.status
    if reference.source == "headers":
        assert reference.argument is not None
        header = next((v for k, v in values.headers.items() if k.lower() == reference.argument.lower()), None)
        if header is None:
            raise Unresolved((ErrorClass.MISSING_FIELD, f"missing_field: {reference.text}: no such header"))
        return header
    if not values.is_json:
        raise Unresolved((ErrorClass.MALFORMED_JSON, f"malformed_json: {reference.text}: the response was not JSON"))
    nodes = reference.query.select(values.document)
    if not nodes:
        raise Unresolved((ErrorClass.MISSING_FIELD, f"missing_field: {reference.text}"))
    if len(nodes) > 1:
        raise Unresolved((ErrorClass.ASSERTION_FAILED,
                          f"assertion_failed: {reference.text} selects {len(nodes)} values, not one"))
    if nodes[0] is None:
        raise Unresolved((ErrorClass.NULL_FIELD, f"null_field: {reference.text}"))
    return nodes[0]


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def render(value: Any, seen: Mapping[str, StepValues], *, url: bool = False) -> Any:
    """``value`` with its references filled in (see the module docstring); raises ``Unresolved``."""
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value)
        if whole is not None:
            [reference] = references(value)
            resolved = resolve(reference, seen)
            return _as_text(resolved) if url else resolved

        def fill(match: re.Match[str]) -> str:
            [reference] = references(match.group(0))
            text = _as_text(resolve(reference, seen))
            return quote(text, safe="") if url else text

        return REFERENCE.sub(fill, value)
    if isinstance(value, Mapping):
        return {_as_text(render(k, seen)): render(v, seen) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, seen) for v in value]
    return value


__all__ = ["REFERENCE", "Reference", "StepValues", "Unresolved", "references", "render", "resolve", "strings_in"]
