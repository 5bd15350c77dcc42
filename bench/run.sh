#!/usr/bin/env bash
# Container start: `kiln run --rm IMAGE true` (busybox image, limits and caps applied) vs
# `runc run` of a bundle of the same image (written by `kiln bundle` with the same
# settings), side by side in one run with hyperfine. Prints both medians and the ratio
# kiln/runc (bar: <= 0.5, issue 10). Needs root, runc, hyperfine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require runc hyperfine busybox python3
build_kiln

work=$(mktemp -d /tmp/kiln-bench-run.XXXXXX)
trap 'runc delete -f kiln-bench >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
busybox_store "$work"
# A network namespace with loopback only for both: runc's bundle has no interfaces
# (kiln's bridge, the default, is measured by bench/network.sh against podman's).
limits=(--network none --memory 64m --pids-limit 64 --cap-drop ALL --cap-add NET_BIND_SERVICE)
$kiln bundle "${limits[@]}" bench-bb "$work/bundle" true

commands=(-n kiln "$kiln run --rm ${limits[*]} bench-bb true"
          -n runc "runc run -b $work/bundle kiln-bench")
# KILN_OLD=path/to/kiln adds another kiln build (e.g. before a change) to the same run.
if [ -n "${KILN_OLD:-}" ]; then
    commands+=(-n kiln-old "$KILN_OLD run --rm ${limits[*]} bench-bb true")
fi
hyperfine --warmup 5 --runs 50 -N --export-json "$work/result.json" "${commands[@]}"
# The same after an idle moment, as a user's start is: back to back, each start finds the
# kernel's cgroup threadgroup lock still in the mode the previous one left it in, and a
# cgroup.procs write that would wait for an RCU grace period does not.
hyperfine --warmup 2 --runs 30 -N --prepare "sleep 0.2" --export-json "$work/idle.json" "${commands[@]}"

python3 - "$work/result.json" "$work/idle.json" <<'PY'
import sys
sys.path.insert(0, "bench")
from results import medians, record
for path, what in ((sys.argv[1], "back to back"), (sys.argv[2], "after an idle moment")):
    r = medians(path)
    k, c, o = r["kiln"], r["runc"], r.get("kiln-old")
    old = f", kiln-old {o*1000:.1f} ms (kiln/kiln-old = {k/o:.2f})" if o else ""
    print(f"container start (true), {what}: kiln {k*1000:.1f} ms{old}, runc {c*1000:.1f} ms, ratio kiln/runc = {k/c:.2f} (bar <= 0.5)")
    record(f"run --rm true (limits, caps, seccomp), {what}", k * 1000, "runc run", c * 1000,
           "<= 0.5 (goal 0.25)", old=o and o * 1000)
PY
