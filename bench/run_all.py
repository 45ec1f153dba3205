"""Run every benchmark of issue 7 in turn and print their tables (~16 minutes here; ~5 with --quick).

    .venv/bin/python bench/run_all.py [--quick] [--only probe_cpu scale quota_read alert_latency]

Needs the Debian packages nginx, wrk, prometheus-blackbox-exporter and redis-server (checked first).
Run it on a quiet machine: every number is CPU time or latency on a shared 2-core box.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# benchmark → (arguments, quick arguments)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "probe_cpu": (["--runs", "3", "--seconds", "8"], ["--runs", "1", "--seconds", "4"]),
    "scale": (["--sizes", "1000", "10000", "--seconds", "60"], ["--sizes", "1000", "--seconds", "30"]),
    "quota_read": (["--rounds", "8"], ["--rounds", "4", "--keys", "2000"]),
    "alert_latency": (["--trials", "3"], ["--trials", "1", "--scale", "10"]),
    "alert_model": ([], ["--phases", "2"]),
    "kit_overhead": (["--calls", "2000", "--rounds", "5"], ["--calls", "500", "--rounds", "2"]),
}
# binary → Debian package
BINARIES = {
    "nginx": "nginx",
    "wrk": "wrk",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    "redis-server": "redis-server",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (a smoke test, not results)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    args = parser.parse_args()
    missing = [pkg for binary, pkg in BINARIES.items() if shutil.which(binary) is None
               and not Path("/usr/sbin", binary).exists()]
    if missing:
        sys.exit(f"missing: apt-get install -y {' '.join(missing)}")
    failed = []
    for name in args.only:
        full, quick = BENCHES[name]
        command = [sys.executable, str(HERE / f"{name}.py"), *(quick if args.quick else full)]
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        if subprocess.run(command).returncode != 0:
            failed.append(name)
        print(f"=== {name}: {time.monotonic() - started:.0f}s", flush=True)
    if failed:
        sys.exit(f"failed or missed a target: {', '.join(failed)}")


if __name__ == "__main__":
    main()
