"""A JSON path of plain names and indices walks the document directly (checks.json_assertions.JsonPath);
it must select exactly the nodes the RFC 9535 library selects, for any document."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from checks.json_assertions import compile_path

NAMES = st.sampled_from(["a", "b", "id", "0", "", "a b", "it's", 'q"uote', "é", "true"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=3))
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(NAMES, inner, max_size=4)),
    max_leaves=20,
)
STEPS = st.lists(st.one_of(NAMES, st.integers(-5, 5)), max_size=5)


def render(steps: list[Any], *, dotted: bool) -> str:
    out = "$"
    for step in steps:
        if isinstance(step, int):
            out += f"[{step}]"
        elif dotted and step.isidentifier() and step.isascii():
            out += f".{step}"
        else:
            out += "[" + json.dumps(step) + "]"  # a JSON string literal is an RFC 9535 string literal
    return out


@settings(max_examples=500, deadline=None)
@given(document=DOCUMENTS, steps=STEPS, dotted=st.booleans())
def test_plain_paths_select_what_the_library_selects(document, steps, dotted):
    path = compile_path(render(steps, dotted=dotted))
    assert path.steps == tuple(steps)  # walked directly, not by the library
    library = [node.value for node in path.query.finditer(document)]
    walked = path.select(document)
    assert len(walked) == len(library) and all(a is b for a, b in zip(walked, library, strict=True))


@given(document=DOCUMENTS)
def test_other_paths_are_the_library_s(document):
    for text in ("$.*", "$..a", "$[0:2]", "$[?@.a]", "$['a','b']", "$.a[*].b"):
        path = compile_path(text)
        assert path.steps is None
        assert path.select(document) == [node.value for node in path.query.finditer(document)]
