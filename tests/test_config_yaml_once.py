"""The config's YAML is parsed once (at 50,000 checks a second parse cost seconds of the start): the checks
on its events (depth, alias expansion, keys written twice) run as its nodes are composed, and the result
is what PyYAML's own safe loader gives, values and errors alike."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.settings import source
from monitor.settings.source import Unreadable, load_yaml

REFERENCE: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8),
                    st.sampled_from(["1_000", "0x1F", "yes", "~", "2024-01-02", "2024-13-01", ".inf", "<<"]))
trees = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                     max_leaves=20)
# Text made of YAML's own punctuation: anchors, aliases, tags, merge keys, flow and block collections,
# several documents, and plenty of broken ones.
yaml_ish = st.lists(st.sampled_from(["a", "b", ": ", "- ", "\n", "  ", "[", "]", "{", "}", ", ", "&x ", "*x",
                                     "&y ", "*y", "<<: ", "!!str ", "!!int ", "!t ", "? ", "---\n", "...\n", "'q'",
                                     '"d"', "1", "#c", "|\n  t\n", "~"]), max_size=30).map("".join)


def reference(text: str) -> tuple[str, Any]:
    try:
        return "value", repr(yaml.load(text, Loader=REFERENCE))  # repr: recursive values compare too
    except yaml.MarkedYAMLError as exc:
        return "error", f"not valid YAML: {source._yaml_error(exc)}"
    except yaml.YAMLError as exc:
        return "error", f"not valid YAML: {exc}"
    except (ValueError, OverflowError) as exc:
        return "error", f"not valid YAML: a value cannot be read ({exc})"
    except (LookupError, AttributeError):  # PyYAML's constructors on a value their tag refuses ('!!int ')
        return "error", f"not valid YAML: {source._TAG_REFUSED}"


def loaded(text: str) -> tuple[str, Any]:
    try:
        return "value", repr(load_yaml(text)[0])
    except Unreadable as exc:
        return "error", str(exc)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(yaml_ish, trees.map(lambda t: yaml.safe_dump(t, default_flow_style=None)),
                      trees.map(lambda t: yaml.safe_dump(t, default_flow_style=True))))
def test_one_parse_gives_what_pyyamls_safe_loader_gives(text: str) -> None:
    assert loaded(text) == reference(text)


def test_aliases_merge_keys_and_recursion_build_as_pyyaml_builds_them() -> None:
    text = "base: &b {k: 1}\nuse: {<<: *b, j: 2}\nlist: &l [1, *l]\nshared: [*b, *b]\n"
    assert loaded(text) == reference(text)
    data = load_yaml(text)[0]
    assert data["shared"][0] is data["shared"][1] is data["base"]


@pytest.mark.parametrize("text", ["a: !!int ", "a: !!float _", "a: !!bool maybe", "a: !!timestamp soon"])
def test_a_value_its_explicit_tag_refuses_is_unreadable_not_an_exception(text: str) -> None:
    """PyYAML's constructors raise IndexError, KeyError, AttributeError here: a config error all the same."""
    with pytest.raises(Unreadable, match="explicit tag") as raised:
        load_yaml(text)
    assert "maybe" not in str(raised.value) and "soon" not in str(raised.value)  # a value may be a secret


def test_the_text_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parsers: list[object] = []

    class Counted(REFERENCE):
        def __init__(self, stream: str) -> None:
            parsers.append(self)
            super().__init__(stream)

    monkeypatch.setattr(source, "_Loader", Counted)
    data, duplicates = load_yaml("a: 1\na: 2\nb: [1, {c: 3}]\n")
    assert data == {"a": 2, "b": [1, {"c": 3}]} and [path for path, _ in duplicates] == ["a"]
    assert len(parsers) == 1
