"""A config's load at N checks in instructions (callgrind), side by side with PyYAML's own safe loader
(libyaml's parser, PyYAML's composer and constructor, no checks: the floor of any load of the YAML).

Steps, over a config of ``--checks`` checks of scale.py's shape (100 an integration, 60 s interval, each
URL its own, with a query): the YAML alone (``load_yaml``: the parse with the depth, alias and duplicate
key checks, and the tree built), the whole ``parse_config`` (YAML, environment, validation, compaction),
and ``secrets_of`` on the loaded config (every secret for the redactor). The cycle collector is off in
the YAML steps as ``parse_config`` runs it. ``--before TREE``: another checkout's steps too, in the same
run (its own worker, ``PYTHONPATH=TREE``). Needs valgrind.

    .venv/bin/python bench/config_load.py [--checks 50000] [--rounds 1] [--before TREE]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(checks: int, rounds: int, floor: bool) -> None:
    import yaml
    from callgrind import step, step_done, steps_over
    from start_path import config_text

    from monitor.app import secrets_of
    from monitor.settings import parse_config
    from monitor.settings.source import load_yaml

    text = config_text(checks, own_urls=True)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for _ in range(rounds):
        gc.disable()
        if floor:
            step("PyYAML's safe loader alone")
            yaml.load(text, Loader=loader)
            step_done(checks)
        step("load_yaml")
        load_yaml(text)
        step_done(checks)
        gc.enable()
        gc.collect()
        step("parse_config")
        config = parse_config(text, env={})
        step_done(checks)
        step("secrets_of")
        secrets_of(config)
        step_done(checks)
        del config
        gc.collect()
    steps_over()


def main() -> None:
    sys.path.insert(0, str(HERE))
    if sys.argv[1:2] == ["--worker"]:  # (checks, rounds, "floor" or "") from the driving side below
        worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:5] == ["floor"])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--before", help="another checkout: its steps too, in the same run")
    args = parser.parse_args()
    from callgrind import drive_trees

    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", str(args.checks), str(args.rounds)]
    counts: dict[str, list[float]] = {}
    for suffix, steps in drive_trees(argv, args.before, floor=["floor"]):
        for name, samples in steps.items():
            label = name if name.startswith("PyYAML") else name + suffix
            counts[label] = sorted(c[0] / 1e9 for c, _ in samples)
    floor = statistics.median(counts["PyYAML's safe loader alone"])
    rows = [f"| {name} | {statistics.median(v):.2f} ({v[0]:.2f}–{v[-1]:.2f}) | {statistics.median(v) / floor:.2f} |"
            for name, v in counts.items()]
    print(f"\nG instructions at {args.checks:,} checks, median of {args.rounds} round(s) (min–max)\n\n"
          "| step | G instructions | × PyYAML's safe loader alone |\n|---|---|---|", *rows, sep="\n")

if __name__ == "__main__":
    main()
