"""The product's docs say what the code does: README.md and docs/*.md against the code they describe.

Each test reads one table (or section) of the docs and compares it both ways with the code: every error
class, metric, CLI command and option, config key and HTTP endpoint is documented, and nothing
documented is gone. Links between the pages resolve. Users read only these docs, so no file of the
repository may point them at a document they do not have.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel

from alerts.api import routes as silence_routes
from integration_kit.durations import parse_duration
from integration_kit.errors import RETRYABLE_BY_DEFAULT, ErrorClass
from monitor.app import App
from monitor.cli import build_parser
from monitor.metrics import CountedHistogram, Metrics, RunHistogram
from monitor.server import core_routes
from monitor.settings import Config, parse_config
from monitor.status import CheckStatus

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
HTTP_API = (ROOT / "docs" / "http-api.md").read_text(encoding="utf-8")
# Developer-only documents outside the repository (names split so this file does not cite them).
UNSHIPPED_DOCS = ("SPEC" + ".md", "RATE_LIMITS" + ".md", "ALERTING" + ".md")


def section(text: str, heading: str) -> str:
    """The text under a markdown heading (any level) up to the next heading of the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, re.MULTILINE)
    assert match, f"no heading {heading!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


def table(text: str, first_header: str) -> list[list[str]]:
    """The rows of the markdown table whose first header cell is ``first_header`` (cells stripped; ``\\|``
    inside a cell is a literal bar)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\|\s*{re.escape(first_header)}\s*\|", line))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# ---- no citations of documents users do not have ---------------------------------------------------------


def test_no_file_cites_a_document_users_do_not_have() -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    citing = []
    for name in files.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        citing += [f"{name}: {doc}" for doc in UNSHIPPED_DOCS if doc in text]
    assert not citing, "cite the README or docs/ instead:\n" + "\n".join(citing)


def test_citations_of_readme_sections_name_a_heading() -> None:
    """``README, "Checks"`` in a source file names a heading of the README (or the start of one)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    headings = [h.strip("` ") for h in re.findall(r"^#+ (.+?)\s*$", README, re.MULTILINE)]
    cited = r"""README(?:\.md)?,?\s+\(?["']([^"'\n]+(?:\n[^"'\n]+)?)["']"""
    unknown = []
    for name in files.decode().split("\0"):
        if not name.endswith((".py", ".yaml", ".yml", ".toml", ".sh")):
            continue
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")  # tests/data has bad bytes on purpose
        for section_name in re.findall(cited, text):
            words = re.sub(r"[\s#*]+", " ", section_name).strip()
            if not any(h.startswith(words) for h in headings):
                unknown.append(f"{name}: README, {words!r}")
    assert unknown == []


# ---- error classes ---------------------------------------------------------------------------------------


def test_every_error_class_is_documented_with_an_example_detail() -> None:
    rows = table(section(README, "Checks"), "class")
    documented = {code_spans(row[0])[0]: row for row in rows}
    assert set(documented) == {c.value for c in ErrorClass}
    for name, (_, meaning, retried, example) in documented.items():
        assert meaning, name
        assert retried == ("yes" if ErrorClass(name) in RETRYABLE_BY_DEFAULT else "no"), name
        (detail,) = code_spans(example)
        assert detail.startswith(f"{name}: "), f"a detail starts with its class: {detail!r}"


# ---- metrics ---------------------------------------------------------------------------------------------


def exported_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """Exposed name (``_total`` on counters) → (type, label names) of every metric monitor/metrics.py defines."""
    metrics = Metrics()
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            name = metric._name + ("_total" if metric._type == "counter" else "")
            out[name] = (metric._type, frozenset(metric._labelnames))
    # The probe families: one check with every value set, so each family shows its labels.
    series = metrics.probes.series("i", "c")
    series.success = series.status_code = series.tls_expiry = 1.0
    series.streak = 1
    series.buckets[0] = series.runs_ok = series.runs_failed = series.retries = 1
    series.phases["connect"] = 0.1
    series.errors["timeout"] = 1
    # The histograms whose bucket counts arrive counted (real traffic): one integration each.
    counted = [m for m in vars(metrics).values() if isinstance(m, CountedHistogram)]
    for histogram in counted:
        histogram.add("i", [1] * (len(histogram.bounds) + 1), 1.0)
    # The histograms of the daemon's own without labels (the scheduler's lag).
    own = [m for m in vars(metrics).values() if isinstance(m, RunHistogram)]
    for family in [*metrics.probes.collect(), *(f for h in [*counted, *own] for f in h.collect())]:
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = frozenset(label for s in family.samples for label in s.labels if label != "le")
        out[name] = (family.type, labels)
    return out


def documented_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    out = {}
    for row in table(section(README, "Metrics"), "name"):
        name_cell, kind, labels = row[:3]
        names = code_spans(name_cell)
        assert names, row
        for name in names:
            out[name] = (kind, frozenset(label.strip() for label in labels.split(",") if label.strip()))
    return out


def test_the_metrics_table_lists_every_metric_with_its_type_and_labels() -> None:
    exported, documented = exported_metrics(), documented_metrics()
    assert set(documented) - set(exported) == set(), "documented but not exported"
    assert set(exported) - set(documented) == set(), "exported but not in the README's metrics table"
    for name, (kind, labels) in exported.items():
        assert documented[name] == (kind, labels), name


# ---- commands --------------------------------------------------------------------------------------------


Command = tuple[str, ...]


def commands(parser: argparse.ArgumentParser, path: Command = ()) -> Iterator[tuple[Command, argparse.ArgumentParser]]:
    """Every leaf command (``("silence", "add")``…) with its parser."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield path, parser
    for action in subparsers:
        for name, sub in action.choices.items():
            yield from commands(sub, (*path, name))


def test_the_commands_table_matches_the_command_line() -> None:
    rows = {}
    for row in table(section(README, "Commands"), "command"):
        (usage,) = code_spans(row[0])
        words = usage.split()
        assert words[0] == "integration-monitor", usage
        command = tuple(w for w in words[1:] if re.fullmatch(r"[a-z][a-z-]*", w))
        rows[command[:2] if command[:1] == ("silence",) else command[:1]] = usage
    leaves = dict(commands(build_parser()))
    assert set(rows) - {()} == set(leaves), "README commands vs integration-monitor --help"
    for command, parser in leaves.items():
        usage = rows[command]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.option_strings:  # a positional, shown by its metavar
                assert re.search(rf"(?<![\w-]){re.escape(action.metavar or action.dest)}(?![\w-])", usage), command
            elif action.required:
                assert any(re.search(rf"(?<![\w\[-]){re.escape(o)}(?![\w-])", usage) for o in action.option_strings), (
                    f"{command}: {action.option_strings} (required)"
                )
            else:
                assert any(f"[{o}" in usage for o in action.option_strings), (
                    f"{command}: optional {action.option_strings} shown as [{action.option_strings[-1]} …]"
                )


# ---- configuration ---------------------------------------------------------------------------------------


def test_the_readme_example_config_is_valid(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", section(README, "Configuration"), re.DOTALL)
    example = next(b for b in blocks if b.startswith("monitor:"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "stripe.md").write_text("Stripe's quirks\n")
    env = {"STRIPE_KEY": "sk_test_docs", "SLACK_BOT_TOKEN": "xoxb-docs"}
    config = parse_config(example, env=env, base_dir=tmp_path)
    assert "stripe" in config.integrations


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens; a repeated
    heading gets ``-1``, ``-2``…"""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#+ (.+?)\s*$", re.sub(r"```.*?```", "", markdown, flags=re.DOTALL), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def test_links_between_the_pages_resolve() -> None:
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8")):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_docs_pages_are_linked_from_the_readme() -> None:
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    assert [page for page in pages if f"]({page})" not in README and f"]({page}#" not in README] == []


def config_keys(model: type[BaseModel] = Config, path: str = "") -> Iterator[tuple[str, str]]:
    """(section path, key) of every key the config accepts: ``("integrations.<>.checks[].retry", "attempts")``.
    A mapping with names chosen by the user adds ``.<>``, a list ``[]``."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        if path:
            yield path, key
        for sub, suffix in nested_models(field.annotation):
            yield from config_keys(sub, f"{path}.{key}{suffix}".lstrip("."))


def nested_models(annotation: object, suffix: str = "") -> Iterator[tuple[type[BaseModel], str]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, suffix
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from nested_models(args[0], suffix)
    elif origin is dict:
        yield from nested_models(args[1], suffix + ".<>")
    elif origin in (list, tuple):
        yield from nested_models(args[0], suffix + "[]")
    else:
        for arg in args:
            yield from nested_models(arg, suffix)


def documented_config_keys() -> set[tuple[str, str]]:
    """(section path, key) of every row of docs/configuration.md; a heading names its section path as its
    first code span (several headings may share one path: the kinds of a discriminated union), and may
    name more paths that take the same keys (``auth`` on an integration and on a check) in further code
    spans that start with a top-level section."""
    out = set()
    for match in re.finditer(r"^#+ (.*)$", CONFIGURATION, re.MULTILINE):
        heading = code_spans(match.group(1))
        if not heading:
            continue
        paths = [heading[0], *(s for s in heading[1:] if s.split(".")[0] in Config.model_fields)]
        body = CONFIGURATION[match.end() :].split("\n#", 1)[0]
        keys = {code_spans(row[0])[0] for row in table(body, "key")}
        out |= {(re.sub(r"<[^>]*>", "<>", path), key) for path in paths for key in keys}
    return out


def test_the_configuration_reference_lists_every_key() -> None:
    accepted, documented = set(config_keys()), documented_config_keys()
    assert sorted(accepted - documented) == [], "keys missing from docs/configuration.md"
    assert sorted(documented - accepted) == [], "documented in docs/configuration.md but not accepted"


def config_default(path: str) -> object:
    """The default of a config key given as a documented path (``integrations.<name>.checks[].interval``)."""
    model: type[BaseModel] = Config
    parts = path.split(".")
    for i, part in enumerate(parts):
        name = part.removesuffix("[]")
        if name.startswith("<"):
            continue
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        assert name in fields, f"{path}: no key {name!r} in {model.__name__}"
        if i == len(parts) - 1:
            return fields[name].get_default(call_default_factory=True)
        following = next(p for p in parts[i + 1 :] if not p.startswith("<")).removesuffix("[]")
        model = next(m for m, _ in nested_models(fields[name].annotation) if following in m.model_fields
                     or any(f.alias == following for f in m.model_fields.values()))
    raise AssertionError(f"{path}: not a key")


def documented_default(value: object, cell: str) -> bool:
    if isinstance(value, tuple):  # the burn-rate tiers: "1h & 5m × 14.4, …, 1d & 2h × 3 (warning)"
        tiers = [f"{fmt_duration(w.long)} & {fmt_duration(w.short)} × {w.factor:g}"
                 + ("" if w.severity == "critical" else f" ({w.severity})") for w in value]
        return cell == ", ".join(tiers)
    if isinstance(value, float) and not re.fullmatch(r"[0-9.]+", cell):
        return parse_duration(cell) == value
    return float(cell) == value  # type: ignore[arg-type]


def fmt_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def test_the_alert_timing_table_shows_the_defaults_of_the_code() -> None:
    rows = table(section(README, "Alert timing"), "setting")
    wrong, checked = [], 0
    for setting, default, _ in rows:
        spans = code_spans(setting)
        prefix = spans[0].rsplit(".", 2)[0] + "."  # "…quota.for" is the first span's sibling rule
        for path in (prefix + s.removeprefix("…") if s.startswith("…") else s for s in spans):
            value = config_default(path)
            checked += 1
            if not documented_default(value, code_spans(default)[0]):
                wrong.append(f"{path}: README says {default}, the code {value!r}")
    assert wrong == [] and checked >= 20


# ---- HTTP API --------------------------------------------------------------------------------------------


def test_the_http_api_lists_every_endpoint() -> None:
    def endpoint(method: str, path: str) -> str:
        return f"{method} {re.sub(r'{[^}]*}', '{}', path)}"

    served = {endpoint(r.method, r.path) for r in [*core_routes(), *silence_routes(control=None)]}  # type: ignore[arg-type]
    listed = {endpoint(code_spans(method)[0], code_spans(path)[0]) for method, path, _ in table(HTTP_API, "method")}
    headings = {endpoint(*h.split(" ", 1)) for h in re.findall(r"^## `([A-Z]+ /[^`]*)`", HTTP_API, re.MULTILINE)}
    assert listed == served
    assert headings == served, "one section per endpoint"


def documented_fields(heading: str) -> set[str]:
    return {name for row in table(section(HTTP_API, heading), "field") for name in code_spans(row[0])[:2]}


def test_the_status_document_is_documented_field_by_field() -> None:
    config = parse_config("integrations: {a: {checks: [{name: c, kind: http, url: 'http://127.0.0.1:1/'}]}}", env={})
    document = App(config).status_document()
    assert set(document["monitor"]) == documented_fields("`monitor`")
    integration = document["integrations"]["a"]
    assert set(integration) == documented_fields("`integrations.<name>`")
    # (results_on: only on a replica that does not own the integration; tests/test_cluster_probes.py reads it)
    check = set(CheckStatus(integration="a", check="c").as_dict()) | set(integration["checks"]["c"]) | {"results_on"}
    assert check == documented_fields("`integrations.<name>.checks.<check>`")
