"""Assertions on a JSON response body, by RFC 9535 JSON path: present, not null, type, equals, regex,
non-empty. Paths are compiled once (at config load) and cached; a run only evaluates.

Each failure maps to one error class: ``missing_field`` (path selects nothing), ``null_field`` (a
selected value is null), ``assertion_failed`` (type / value / regex / emptiness), and
``malformed_json`` for a body that is not UTF-8 JSON at all. Parsing and the missing / null verdicts
are the kit's (``integration_kit.classify``, shared with integration services); the JSON paths and the
value assertions are the probes' own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Literal

import jsonpath_rfc9535
from jsonpath_rfc9535.segments import JSONPathChildSegment
from jsonpath_rfc9535.selectors import IndexSelector, NameSelector
from pydantic import BaseModel, ConfigDict, field_validator

from integration_kit.classify import Failure, field_failure, parse_json
from integration_kit.errors import ErrorClass

JsonType = Literal["string", "number", "integer", "boolean", "object", "array", "null"]

_SHOWN_VALUE_CHARS = 60  # values quoted in a detail are cut here: details stay one short line


class JsonPath:
    """A compiled RFC 9535 path; ``select(document)`` gives the values of the nodes it selects.

    A path of single names and indices (``$.data.id``, ``$['a b'].items[-1]``: the usual assertion) walks
    the document directly, the same nodes as the library's evaluation (tests/test_json_paths.py holds
    them equal) for a tenth of the cost, which is a few percent of a probe; any other path (wildcards,
    slices, filters, descendants) is the library's to evaluate."""

    __slots__ = ("query", "steps")

    def __init__(self, query: jsonpath_rfc9535.JSONPathQuery) -> None:
        self.query = query
        self.steps = _plain_steps(query)  # None: not a plain path

    def select(self, data: Any) -> list[Any]:
        if self.steps is None:
            return [node.value for node in self.query.finditer(data)]
        node = data
        for step in self.steps:
            if isinstance(step, str):
                if not isinstance(node, dict) or step not in node:
                    return []
            elif not isinstance(node, list) or not -len(node) <= step < len(node):
                return []
            node = node[step]
        return [node]


def _plain_steps(query: jsonpath_rfc9535.JSONPathQuery) -> tuple[str | int, ...] | None:
    """The member names and array indices of a path made only of ``.name`` / ``['name']`` / ``[i]``."""
    steps: list[str | int] = []
    for segment in query.segments:
        if type(segment) is not JSONPathChildSegment or len(segment.selectors) != 1:
            return None
        selector = segment.selectors[0]
        if type(selector) is NameSelector:
            steps.append(selector.name)
        elif type(selector) is IndexSelector:
            steps.append(selector.index)
        else:
            return None
    return tuple(steps)


@lru_cache(maxsize=4096)
def compile_path(path: str) -> JsonPath:
    """Compile a JSON path once per process; raises ``jsonpath_rfc9535.JSONPathError`` if invalid."""
    return JsonPath(jsonpath_rfc9535.compile(path))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "integer": _is_integer,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "number"


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON means it: ``true`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(json_equal, a, b))
    return bool(a == b)


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _SHOWN_VALUE_CHARS else text[: _SHOWN_VALUE_CHARS - 1] + "…"


class JsonAssertion(BaseModel):
    """Assertions on the node(s) a JSON path selects. A path must be present unless ``present: false``
    (then the other assertions apply only when it is). With several nodes (wildcards), every node must
    pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    present: bool = True
    not_null: bool = False
    type: JsonType | None = None
    equals: Any = None  # `equals: null` is an assertion too: whether it was given is what counts
    regex: re.Pattern[str] | None = None
    non_empty: bool = False

    @field_validator("regex", mode="before")
    @classmethod
    def _compile(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value

    def evaluate(self, path: str, values: Sequence[Any]) -> Failure | None:
        if not values:
            return field_failure(path, values, required=self.present)
        for value in values:
            failure = self._evaluate_one(path, value)
            if failure is not None:
                return failure
        return None

    def _evaluate_one(self, path: str, value: Any) -> Failure | None:
        null = field_failure(path, (value,), not_null=self.not_null or self.non_empty)
        if null is not None:
            return null
        if self.type is not None and not _TYPE_TESTS[self.type](value):
            return ErrorClass.ASSERTION_FAILED, f"assertion_failed: {path} is {json_type(value)}, expected {self.type}"
        if "equals" in self.model_fields_set and not json_equal(value, self.equals):
            return (
                ErrorClass.ASSERTION_FAILED,
                f"assertion_failed: {path} is {_shown(value)}, expected {_shown(self.equals)}",
            )
        if self.regex is not None:
            if not isinstance(value, str):
                return ErrorClass.ASSERTION_FAILED, f"assertion_failed: {path} is {json_type(value)}, not a string"
            if self.regex.search(value) is None:
                return (
                    ErrorClass.ASSERTION_FAILED,
                    f"assertion_failed: {path} is {_shown(value)}, does not match /{self.regex.pattern}/",
                )
        if self.non_empty and (value == "" or value == [] or value == {}):
            return ErrorClass.ASSERTION_FAILED, f"assertion_failed: {path} is empty"
        return None


def check_json(body: bytes, assertions: Sequence[tuple[str, JsonPath, JsonAssertion]]) -> Failure | None:
    """Parse ``body`` (UTF-8 JSON; a BOM is tolerated) and evaluate ``(path, compiled query, assertion)``
    in order; the first failure is the answer."""
    data, malformed = parse_json(body)
    if malformed is not None:
        return malformed
    return evaluate_assertions(data, assertions)


def evaluate_assertions(data: Any, assertions: Sequence[tuple[str, JsonPath, JsonAssertion]]) -> Failure | None:
    """Evaluate ``(path, compiled query, assertion)`` on a parsed document, in order; the first failure."""
    for path, query, assertion in assertions:
        try:
            values = query.select(data)
        except jsonpath_rfc9535.JSONPathError as exc:
            return ErrorClass.ASSERTION_FAILED, f"assertion_failed: {path} could not be evaluated: {exc}"
        failure = assertion.evaluate(path, values)
        if failure is not None:
            return failure
    return None
