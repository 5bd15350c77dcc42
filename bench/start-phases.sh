#!/usr/bin/env bash
# Where a `kiln run --rm IMAGE true` spends its time: runs it RUNS times (default 30), each
# after an idle moment as bench/run.sh's second table, with KILN_LOG=debug, and prints the
# median time between consecutive debug events (store opened, image loaded, container
# created, overlay prepared, cgroup created, process started, command started, process
# exited, removing cgroup, container finished) and from the last one to kiln's exit. The
# profile behind the start figures of bench/run.sh. Needs root, busybox, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require busybox python3
build_kiln

work=$(mktemp -d /tmp/kiln-bench-phases.XXXXXX)
trap 'rm -rf "$work"' EXIT
busybox_store "$work"
limits=(--network none --memory 64m --pids-limit 64 --cap-drop ALL --cap-add NET_BIND_SERVICE)

python3 - "$kiln" "${RUNS:-30}" "${limits[@]}" <<'PY'
import collections, datetime, os, re, statistics, subprocess, sys, time

kiln, runs, limits = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
argv = [kiln, "run", "--rm", *limits, "bench-bb", "true"]
env = dict(os.environ, KILN_LOG="debug")
event = re.compile(r"(\S+)Z\s+DEBUG\s+\S+: (.*)")
phases = collections.defaultdict(list)
order = []
# The first run also remembers the image's user lookup (which later runs read).
subprocess.run(argv, capture_output=True, check=True)
for _ in range(runs):
    time.sleep(0.2)
    began = time.time()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    ended = time.time()
    previous, name = began, "exec"
    for line in out.stderr.splitlines():
        m = event.match(line)
        if not m:
            continue
        at = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
        # The message, without its key=value fields.
        message = re.split(r" \w+=", m.group(2))[0]
        key = f"{name} -> {message}"
        if key not in phases:
            order.append(key)
        phases[key].append((at.timestamp() - previous) * 1000)
        previous, name = at.timestamp(), message
    key = f"{name} -> exit"
    if key not in phases:
        order.append(key)
    phases[key].append((ended - previous) * 1000)
    phases["total (as python sees it)"].append((ended - began) * 1000)
order.append("total (as python sees it)")
for key in order:
    print(f"{statistics.median(phases[key]):7.2f} ms  {key}")
PY
