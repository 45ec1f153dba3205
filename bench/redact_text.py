"""Instructions per ``Redactor.text`` call (callgrind), this tree's redactor side by side with another
checkout's (``--before TREE``): the redactor runs on every log line, alert text and /api answer, so what
a new form of a secret costs is paid there.

Cases: 14 registered secrets, either URL-safe (``sk_live_…``: no escape changes them) or with ``/ + =``
in them (every escape writes those differently, so each adds forms), on a 120-character log line and on
a 2 KB failure detail (a vendor's JSON error body with a base64 blob), neither holding a secret (the
common case: every alternative of the pattern is tried at every position); and the detail holding one
secret base64-encoded. Deterministic: what a change to the redactor costs, on any machine. Needs valgrind.

    .venv/bin/python bench/redact_text.py [--before TREE] [--calls 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import statistics
import sys
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from callgrind import drive, step, step_done, steps_over

SECRETS = {
    "url-safe": [f"sk_live_{i:02d}a8Kq3vXz9LmN4pQr" for i in range(14)],
    "with / + =": [f"CNRY-{i:02d}/key+part=Zq8" for i in range(14)],
}
LOG_LINE = ("2026-11-30T19:44:28Z INFO probe acme/charges ok status=200 latency_ms=123.4 "
            "url=https://api.acme.test/v1/charges?limit=10")
DETAIL = ('{"error": {"type": "invalid_request_error", "message": "' + "The request could not be completed "
          "because a parameter was missing or malformed. " * 18 + '", "trace": "'
          + base64.b64encode(bytes(range(256)) * 2).decode() + '"}}')[:2048]


def load(tree: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, tree / "integration_kit" / "redact.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cases(secrets: list[str]) -> dict[str, str]:
    echoed = base64.b64encode(b'{"key": "' + secrets[3].encode() + b'"}').decode()
    return {"log line": LOG_LINE, "2 KB detail": DETAIL, "2 KB detail, a secret in base64": DETAIL[:1900] + echoed}


def worker(trees: dict[str, Path], calls: int, rounds: int) -> None:
    redactors = {label: {kind: load(tree, f"redact_{i}").Redactor(secrets) for kind, secrets in SECRETS.items()}
                 for i, (label, tree) in enumerate(trees.items())}
    for _ in range(rounds):
        for kind, secrets in SECRETS.items():
            for text_name, text in cases(secrets).items():
                for label, by_kind in redactors.items():  # (interleaved)
                    redact = by_kind[kind].text
                    step(f"{label}\t{kind}\t{text_name}")
                    for _ in range(calls):
                        redact(text)
                    step_done(calls)
    steps_over()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout's tree, measured side by side")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(dict(zip(args.worker[::2], map(Path, args.worker[1::2]), strict=True)), args.calls, args.rounds)
        return
    trees = {"this tree": Path(__file__).resolve().parent.parent}
    if args.before:
        trees["before"] = args.before.resolve()
    flat = [str(x) for label, tree in trees.items() for x in (label, tree)]
    counts = drive([sys.executable, __file__, "--calls", str(args.calls), "--rounds", str(args.rounds),
                    "--worker", *flat])
    per_call: dict[tuple[str, str], dict[str, list[float]]] = {}
    for name, samples in counts.items():
        label, kind, text_name = name.split("\t")
        per_call.setdefault((kind, text_name), {})[label] = sorted(c[0] / int(n) for c, n in samples)
    labels = list(trees)
    print(f"k instructions per Redactor.text call (callgrind), median (min–max) of {args.rounds} rounds of "
          f"{args.calls} calls; 14 secrets registered\n")
    print("| secrets | text | " + " | ".join(labels) + (" | this tree / before |" if args.before else " |"))
    print("|---|---|" + "---|" * (len(labels) + bool(args.before)))
    for (kind, text_name), by_label in per_call.items():
        cells = [f"{statistics.median(v) / 1e3:.1f} ({v[0] / 1e3:.1f}–{v[-1] / 1e3:.1f})" for v in by_label.values()]
        ratio = ([f"{statistics.median(by_label['this tree']) / statistics.median(by_label['before']):.2f}"]
                 if args.before else [])
        print(f"| {kind} | {text_name} | " + " | ".join(cells + ratio) + " |")


if __name__ == "__main__":
    main()
