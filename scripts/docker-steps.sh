#!/usr/bin/env bash
# Runs the Dockerfile's steps without Docker (CI has no Docker engine), in a scratch directory:
#   builder stage  copy pyproject.toml, README.md and the packages; build the wheels; fresh venv;
#                  install integration-monitor[speed] from those wheels only
#   runtime stage  start the daemon from the venv, run the Dockerfile's own HEALTHCHECK command until
#                  /healthz answers, send SIGTERM (what `docker stop` sends) and require exit status 0
#
# Usage: scripts/docker-steps.sh [-c CONFIG]   (without -c: `integration-monitor demo`)
# Env: PYTHON (default python3; use a 3.11 to match the image), KEEP=1 keeps the scratch directory.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
config=""
while [ $# -gt 0 ]; do
  case "$1" in
    -c|--config) config="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  if [ "${KEEP:-}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
step() { printf '==> %s\n' "$*"; }

# The packages are the Dockerfile's own `COPY <pkg> ./<pkg>` lines, so the two cannot drift apart.
packages=$(sed -n 's#^COPY \([a-z_]*\) \./\1$#\1#p' "$repo/Dockerfile")
step "builder: copy the build context (.dockerignore: pyproject.toml, README.md, $(echo $packages | sed 's#\( \|$\)#/\1#g'))"
mkdir "$work/src"
cp "$repo/pyproject.toml" "$repo/README.md" "$work/src/"
for pkg in $packages; do cp -R "$repo/$pkg" "$work/src/"; done
find "$work/src" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

step "builder: pip wheel '.[speed]' → wheels/"
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/wheels" "$work/src[speed]"

step "builder: fresh venv, install integration-monitor[speed] from wheels/ only (--no-index)"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check --no-index --find-links "$work/wheels" \
  "integration-monitor[speed]"
"$work/venv/bin/python" -c "import uvloop" || { echo "uvloop (the speed extra) is missing" >&2; exit 1; }

# The image's HEALTHCHECK command, read from the Dockerfile so the two cannot drift apart.
mapfile -t healthcheck < <("$python" - "$repo/Dockerfile" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, re.M)
print("\n".join(json.loads(match.group(1))))
EOF
)

port="$("$work/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export INTEGRATION_MONITOR_HEALTH_URL="http://127.0.0.1:$port/healthz"  # read by the HEALTHCHECK command
if [ -n "$config" ]; then args=(run -c "$config"); else args=(demo); fi
args+=(--listen "127.0.0.1:$port")

step "runtime: integration-monitor ${args[*]} (listening on 127.0.0.1:$port)"
cd "$work"  # not the checkout: the installed package has to work on its own
PATH="$work/venv/bin:$PATH" integration-monitor "${args[@]}" >"$work/daemon.log" 2>&1 &
pid=$!

step "runtime: HEALTHCHECK ${healthcheck[*]:0:2} …"
healthy=""
for _ in $(seq 120); do
  if PATH="$work/venv/bin:$PATH" "${healthcheck[@]}" 2>/dev/null; then healthy=1; break; fi
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  sleep 0.5
done
if [ -z "$healthy" ]; then
  echo "daemon never became healthy; its log:" >&2; tail -n 50 "$work/daemon.log" >&2; exit 1
fi

step "runtime: SIGTERM (docker stop) → expect exit 0"
kill -TERM "$pid"
for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  echo "daemon still running 30 s after SIGTERM; its log:" >&2; tail -n 50 "$work/daemon.log" >&2; exit 1
fi
status=0; wait "$pid" || status=$?
pid=""
if [ "$status" != 0 ]; then
  echo "daemon exited with status $status after SIGTERM; its log:" >&2; tail -n 50 "$work/daemon.log" >&2; exit 1
fi
step "ok: built, installed, healthy, stopped cleanly"
