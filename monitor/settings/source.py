"""From a config file's bytes to a plain tree, whatever the bytes: the result is a tree or problems that
say where and what, never an exception, and in bounded time.

* Text: UTF-8 (a byte-order mark is fine). Anything else names the first bad byte by line and column;
  UTF-16 and UTF-32 files are recognised by their byte-order mark and named as such.
* YAML: parsed once (by libyaml when PyYAML has it); each event is checked before its node is composed:
  nesting deeper than ``MAX_DEPTH`` and aliases that would add more than ``MAX_ALIAS_VALUES`` values
  (an "alias bomb": a few lines that expand to billions of values) are refused. Errors give the line and
  column but never quote the file (a line may hold a secret).
* The tree: every mapping key is text and every number finite; entries with other keys are dropped
  (and reported) so that validation sees only what it can name.
* ``${VAR}`` / ``${VAR:-default}`` are expanded in every string as the shell does (the default when VAR
  is unset or empty, nested defaults too; ``$$`` is a literal ``$``), and what came
  from the environment is remembered: a problem message never shows an expanded value, it shows the
  template (``got 'ftp://u:${PW}@x/'``) or the variable's name, and masks URL user info and
  credential-named parameters the file wrote literally.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import ComposerError

from integration_kit.redact import MIN_SECRET_LEN, Redactor, secret_pattern

MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIAS_VALUES = 100_000
_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_VAR_START = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(\}|:-)")  # ${NAME} or ${NAME:-default}
# Variables pydantic-settings reads to override keys (IM_MONITOR__LISTEN=…): their values are hidden too.
OVERRIDE_PREFIX = "IM_"
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)

Problem = tuple[str, str]
# (``!!bool maybe``, ``!!int ''``: the value is not quoted, it may be a secret)
_TAG_REFUSED = "a value cannot be read (one its explicit tag, !!int, !!float, !!bool or !!timestamp, refuses)"


class Unreadable(Exception):
    """The file cannot be turned into a tree; the message says why (and where, when it can)."""


def join_path(path: str, key: Any) -> str:
    """``a.b``, ``a[0]``, ``a["x.y"]``: the path notation of every config problem."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    if not _PLAIN_KEY.match(str(key)):
        return f'{path}["{key}"]'
    return f"{path}.{key}" if path else str(key)


def decode(data: bytes) -> str:
    """The text of a config file, or Unreadable naming the encoding problem."""
    if len(data) > MAX_FILE_BYTES:
        raise Unreadable(f"the file is {len(data)} bytes, more than the {MAX_FILE_BYTES} a config may have")
    for bom, name in _WIDE_BOMS:
        if data.startswith(bom):
            raise Unreadable(f"the file is {name} (byte-order mark {bom.hex(' ')}); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise Unreadable(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, column {column} "
            "cannot start or continue a UTF-8 character; save the file as UTF-8"
        ) from None


def load_yaml(text: str) -> tuple[Any, list[Problem]]:
    """The YAML document as plain Python values and the keys written twice in one mapping (problems), or
    Unreadable. The text is parsed once: depth and alias expansion are checked on each event as the
    document's nodes are composed from it, so neither a deep nor an explosive document is ever built."""
    loader = _Loader(text)  # a safe loader; libyaml parses a big file 10× faster
    try:
        root, duplicates = _compose(loader)
        try:
            return (None if root is None else loader.construct_document(root)), duplicates
        except (LookupError, AttributeError):  # PyYAML's own errors for a value its explicit tag refuses
            raise Unreadable(f"not valid YAML: {_TAG_REFUSED}") from None
    except yaml.MarkedYAMLError as exc:
        raise Unreadable(f"not valid YAML: {_yaml_error(exc)}") from None
    except yaml.YAMLError as exc:  # reader errors (a control character, say): no mark, a short text
        raise Unreadable(f"not valid YAML: {exc}") from None
    except (ValueError, OverflowError) as exc:  # a scalar YAML accepts but Python cannot hold (2024-13-01)
        raise Unreadable(f"not valid YAML: a value cannot be read ({exc})") from None
    finally:
        loader.dispose()


def _yaml_error(exc: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (exc.context, exc.problem) if p]
    mark = exc.problem_mark or exc.context_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return ", ".join(parts) + where


@dataclass(slots=True)
class _Collection:
    """An open mapping or sequence while the events are scanned: where it is, and the keys it has."""

    path: str
    node: yaml.SequenceNode | yaml.MappingNode  # its node, filled as its children end
    mapping: bool
    anchor: str | None  # its anchor, if any: its size is remembered for the aliases to it
    before: int  # values in the document before it opened
    height: int = 0  # the height of its tallest child so far
    children: int = 0  # nodes ended in it so far (in a mapping: key, value, key, value…)
    key: Any = None  # the key of the value being read (in a mapping), None for a key that is no scalar
    key_node: yaml.Node | None = None  # the node of that key
    lines: dict[str, int] = field(default_factory=dict)  # key → line it was first written at

    def child_path(self) -> str:
        if not self.mapping:
            return join_path(self.path, self.children)
        return self.path if self.key is None else join_path(self.path, self.key)


def _compose(loader: Any) -> tuple[yaml.Node | None, list[Problem]]:
    """The document's node (None for an empty stream), composed as PyYAML's composer does, from the
    loader's events; on the way, refuse nesting deeper than MAX_DEPTH and aliases adding more than
    MAX_ALIAS_VALUES values, and name the keys written twice in one mapping (YAML keeps only the last
    one, silently: an integration written twice lost its first definition without a word).

    Counts what the document would be if every alias were written out: each anchored node's value
    count and height are remembered; an alias adds its node's count, at its node's height.
    """
    size: dict[str, tuple[int, int]] = {}  # anchor → (values, height) of its node
    anchors: dict[str, yaml.Node] = {}
    tags: dict[tuple[str, Any], str] = {}  # (value, implicit) → resolved tag: most values repeat
    stack: list[_Collection] = []  # the open collections, outermost first
    duplicates: list[Problem] = []
    root: yaml.Node | None = None
    total = added = 0
    while loader.check_event():
        event = loader.get_event()
        node: yaml.Node
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise Unreadable(f"nested deeper than {MAX_DEPTH} levels ({_line(event)})")
            path = stack[-1].child_path() if stack else ""
            mapping = isinstance(event, yaml.MappingStartEvent)
            kind = yaml.MappingNode if mapping else yaml.SequenceNode
            tag = event.tag if event.tag not in (None, "!") else loader.resolve(kind, None, event.implicit)
            collection = kind(tag, [], _marks(event)[0], None, flow_style=event.flow_style)
            _anchor(anchors, event, collection)
            stack.append(_Collection(path, collection, mapping, event.anchor, total))
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            ended = stack.pop()
            ended.node.end_mark = _marks(event)[1]
            node = ended.node  # its anchor was registered when it opened (an alias inside it may use it)
            total += 1
            counted = (total - ended.before, ended.height + 1)
            if ended.anchor:
                size[ended.anchor] = counted
        elif isinstance(event, yaml.ScalarEvent):
            tag = event.tag
            if tag in (None, "!"):
                key = (event.value, event.implicit)
                tag = tags.get(key) or tags.setdefault(key, loader.resolve(yaml.ScalarNode, *key))
            node = yaml.ScalarNode(tag, event.value, *_marks(event), style=event.style)
            _anchor(anchors, event, node)
            total += 1
            counted = (1, 1)
            if event.anchor:
                size[event.anchor] = counted
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise ComposerError(None, None, "found undefined alias", _marks(event)[0])
            node = anchors[event.anchor]
            counted = size.get(event.anchor or "", (1, 1))  # (1, 1): an alias inside its own anchor's node
            total += counted[0]
            added += counted[0]
            if added > MAX_ALIAS_VALUES:
                raise Unreadable(
                    f"YAML aliases expand this file by more than {MAX_ALIAS_VALUES} values ("
                    f"{_line(event)}): an alias bomb? Write the repeated parts out"
                )
            if len(stack) + counted[1] - 1 > MAX_DEPTH:  # the node's collections, nested where the alias is
                raise Unreadable(f"nested deeper than {MAX_DEPTH} levels through an alias "
                                 f"({_line(event)})")
        elif isinstance(event, yaml.DocumentStartEvent) and root is not None:
            raise ComposerError("expected a single document in the stream", root.start_mark,
                                "but found another document", _marks(event)[0])
        else:
            continue
        if not stack:
            root = node
            continue
        stack[-1].height = max(stack[-1].height, counted[1])
        _ended(stack[-1], event, node, duplicates)
    return root, duplicates


def _marks(event: yaml.Event) -> tuple[Any, Any]:
    """The event's start and end: libyaml's marks or PyYAML's (nodes take either; the stubs name one)."""
    return event.start_mark, event.end_mark


def _anchor(anchors: dict[str, yaml.Node], event: yaml.NodeEvent, node: yaml.Node) -> None:
    if event.anchor is None:
        return
    if event.anchor in anchors:
        raise ComposerError("found duplicate anchor; first occurrence", anchors[event.anchor].start_mark,
                            "second occurrence", _marks(event)[0])
    anchors[event.anchor] = node


def _ended(parent: _Collection, event: yaml.Event, node: yaml.Node, duplicates: list[Problem]) -> None:
    """A node of ``parent`` ended: in a mapping, every other one is a key."""
    is_key = parent.mapping and parent.children % 2 == 0
    parent.children += 1
    if not is_key:
        parent.node.value.append(node if not parent.mapping else (parent.key_node, node))
        return
    parent.key_node = node
    parent.key = event.value if isinstance(event, yaml.ScalarEvent) else None
    if parent.key is None or parent.key == "<<":  # a merge key may repeat; what it merges is no key written here
        return
    line = event.start_mark.line + 1 if event.start_mark is not None else 0
    first = parent.lines.get(parent.key)
    if first is None:
        parent.lines[parent.key] = line
    else:
        duplicates.append((join_path(parent.path, parent.key),
                           f"written twice in one mapping (at line {first} and again at line {line}); expected "
                           "each key once (YAML would silently keep only the last one)"))


def _line(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}" if mark is not None else "somewhere"


def tree_problems(data: Any, path: str = "") -> tuple[Any, list[Problem]]:
    """(data without the entries whose key is not text, the problems: such keys and non-finite numbers)."""
    problems: list[Problem] = []
    if isinstance(data, dict):
        kept = {}
        for key, value in data.items():
            if not isinstance(key, str):
                problems.append((join_path(path, _yaml_scalar(key)), (
                    f"expected a text key, got {_kind(key)}{_yaml_scalar(key)}; quote it if it is meant as text"
                )))
                continue
            kept[key], inner = tree_problems(value, join_path(path, key))
            problems += inner
        return kept, problems
    if isinstance(data, list):
        items = []
        for i, value in enumerate(data):
            item, inner = tree_problems(value, join_path(path, i))
            items.append(item)
            problems += inner
        return items, problems
    if isinstance(data, float) and not math.isfinite(data):
        problems.append((path, f"expected a finite number, got {_yaml_scalar(data)}"))
    return data, problems


def _yaml_scalar(value: Any) -> str:
    """A value as it reads in YAML (``~``, ``true``, ``.inf``), for messages and paths."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return str(value)


def _kind(value: Any) -> str:
    if value is None:
        return ""
    kinds = {bool: "the boolean ", int: "the number ", float: "the number "}
    return kinds.get(type(value), f"a {type(value).__name__} ")


@dataclass(slots=True)
class Expansion:
    """What ``expand_env`` did: unset variables (as problems) and where each value came from."""

    problems: list[Problem] = field(default_factory=list)
    templates: dict[str, tuple[str, str]] = field(default_factory=dict)  # path → (as written, expanded)
    variables: dict[str, str] = field(default_factory=dict)  # value → "${NAME}" it came from

    def hide(self, problems: list[Problem], env: Mapping[str, str]) -> list[Problem]:
        """The problems with every expanded value replaced by its template or variable name."""
        names = dict(self.variables)
        for name, value in env.items():
            if name.upper().startswith(OVERRIDE_PREFIX):
                names.setdefault(value, f"${name}")
        shown = [v for v in sorted(names, key=len, reverse=True) if len(v) >= MIN_SECRET_LEN]
        pattern = re.compile("|".join(f"({secret_pattern(v)})" for v in shown)) if shown else None
        out = []
        for path, message in problems:
            if path in self.templates and self.templates[path][1]:  # "" (an unset variable) is in every text
                written, expanded = self.templates[path]
                # The value as the message quotes it; bare only when it is not quoted and long enough not to
                # be part of the message's own words (a "5" from ${IV} is in "500ms" too). One replace: the
                # written form may contain the expanded one (``${X:-x}`` → ``x``, not ``${X:-${X:-x}}``).
                if repr(expanded) in message:
                    message = message.replace(repr(expanded), repr(written))
                elif len(expanded) >= MIN_SECRET_LEN:
                    message = message.replace(expanded, written)
            if pattern is not None:
                message = pattern.sub(lambda m: names[shown[(m.lastindex or 1) - 1]], message)
            out.append((path, _mask_literal_credentials(message)))
        return out


def _mask_literal_credentials(message: str) -> str:
    """URL user info and credential-named parameters the file wrote literally; templates stay readable
    (a placeholder without the characters user info may hold keeps ``u:${PW}@`` from being masked)."""
    templates: list[str] = []

    def park(match: re.Match[str]) -> str:
        templates.append(match.group(0))
        return f"<{len(templates) - 1}>"

    masked = Redactor().text(re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", park, message))
    return re.sub(r"<(\d+)>", lambda m: templates[int(m.group(1))], masked) if templates else masked


def expand_env(data: Any, env: Mapping[str, str], expansion: Expansion, path: str = "") -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(data, str):
        expanded, used = _expand(data, env, expansion, path)
        if used:
            expansion.templates[path] = (data, expanded)
        return expanded
    if isinstance(data, dict):
        return {k: expand_env(v, env, expansion, join_path(path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, env, expansion, join_path(path, i)) for i, v in enumerate(data)]
    return data


def _expand(text: str, env: Mapping[str, str], expansion: Expansion, path: str) -> tuple[str, bool]:
    """(``text`` expanded, whether it named a variable). As the shell reads them: the default of
    ``${VAR:-default}`` stands in for a variable that is unset or empty, and may itself hold ``${…}``;
    a ``$`` that starts neither form (or an unclosed ``${``) is literal."""
    out: list[str] = []
    used = False
    at = 0
    while (dollar := text.find("$", at)) >= 0:
        out.append(text[at:dollar])
        if text.startswith("$$", dollar):
            out.append("$")
            at = dollar + 2
            continue
        start = _VAR_START.match(text, dollar)
        if start is None or (start.group(2) == ":-" and _closing_brace(text, start.end()) < 0):
            out.append("$")
            at = dollar + 1
            continue
        name, default = start.group(1), None
        at = start.end()
        if start.group(2) == ":-":
            end = _closing_brace(text, at)
            default, at = text[at:end], end + 1
        used = True
        value = env.get(name)
        if value is not None and (value or default is None):
            expansion.variables.setdefault(value, f"${{{name}}}")
            out.append(value)
        elif default is not None:
            out.append(_expand(default, env, expansion, path)[0])
        else:
            expansion.problems.append((path, f"environment variable {name} is not set (use ${{{name}:-default}})"))
    out.append(text[at:])
    return "".join(out), used


def _closing_brace(text: str, at: int) -> int:
    """Index of the ``}`` that closes a ``${`` opened before ``at`` (nested ``${…}`` skipped), or -1."""
    depth = 1
    while at < len(text):
        if text.startswith(("$$", "${"), at):
            depth += text[at + 1] == "{"
            at += 2
        elif text[at] == "}":
            depth -= 1
            if depth == 0:
                return at
            at += 1
        else:
            at += 1
    return -1
