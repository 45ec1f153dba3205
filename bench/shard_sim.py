"""Which unit to shard across replicas: checks one by one, or whole integrations? (issue 10)

    .venv/bin/python bench/shard_sim.py [--checks 100000] [--replicas 20] [--integrations 200] [--seeds 5]

A fleet shaped like real ones: integrations sized by Zipf's law (s = 1), a few big vendors and a long
tail; with 200 integrations the largest holds 17 % of the checks. Both units are placed with the
rendezvous hash the daemon uses (monitor/cluster/rendezvous.py) over replica ids like pod names, and the
table shows the busiest replica's load as a multiple of the mean (1.00 = perfectly even), side by side,
plus what a member leaving moves (rendezvous: only its own share). Median and worst over a few
replica-name sets. Pure computation, no daemon, no Redis.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.cluster.rendezvous import owners


def fleet(checks: int, integrations: int) -> list[tuple[str, int]]:
    """(integration, number of checks), Zipf-sized, summing exactly to ``checks``."""
    harmonic = sum(1 / rank for rank in range(1, integrations + 1))
    sizes = [max(1, round(checks / (rank * harmonic))) for rank in range(1, integrations + 1)]
    sizes[-1] += checks - sum(sizes)  # rounding remainder onto the smallest
    return [(f"vendor-{rank:03d}", size) for rank, size in enumerate(sizes, 1)]


def imbalance(load: Counter[str], members: list[str]) -> float:
    mean = sum(load.values()) / len(members)
    return max(load.get(m, 0) for m in members) / mean


def run(checks: int, replicas: int, integrations: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    members = [f"payments-api-{rng.getrandbits(40):010x}-{rng.getrandbits(20):05x}" for _ in range(replicas)]
    sizes = fleet(checks, integrations)
    check_keys = [f"{name}/check-{i}" for name, size in sizes for i in range(size)]

    per_check = owners(check_keys, members)
    by_check = Counter(per_check.values())
    per_integration = owners([name for name, _ in sizes], members)
    by_integration: Counter[str] = Counter()
    for name, size in sizes:
        by_integration[per_integration[name]] += size

    # A member leaves: how many checks change hands (rendezvous moves only what the leaver held).
    leaver = members[0]
    after = owners(check_keys, members[1:])
    moved = sum(1 for key in check_keys if after[key] != per_check[key])
    return {
        "per_check": imbalance(by_check, members),
        "per_integration": imbalance(by_integration, members),
        "moved_share": moved / checks,
        "leaver_share": by_check[leaver] / checks,
        "largest": sizes[0][1] / checks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=100_000)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--integrations", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    runs = [run(args.checks, args.replicas, args.integrations, seed) for seed in range(args.seeds)]

    def col(name: str) -> str:
        values = [r[name] for r in runs]
        return f"{statistics.median(values):.2f}× (worst {max(values):.2f}×)"

    print(f"{args.checks:,} checks in {args.integrations} Zipf-sized integrations (largest "
          f"{runs[0]['largest']:.0%} of the checks), {args.replicas} replicas, {args.seeds} replica-name sets\n")
    print("| unit hashed | busiest replica / mean load |")
    print("|---|---|")
    print(f"| each check (what the daemon does) | **{col('per_check')}** |")
    print(f"| each integration | {col('per_integration')} |")
    moved = statistics.median(r["moved_share"] for r in runs)
    held = statistics.median(r["leaver_share"] for r in runs)
    print(f"\nOne replica leaves: {moved:.2%} of the checks move (it held {held:.2%}; "
          f"1/{args.replicas} = {1 / args.replicas:.2%}) — nothing else moves.")


if __name__ == "__main__":
    main()
