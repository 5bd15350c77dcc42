#!/usr/bin/env bash
# `kiln exec C true` into a detached kiln container vs `runc exec CID true` into a runc
# container of the same image (a bundle written by `kiln bundle` with the same settings),
# side by side in one run with hyperfine. Prints both medians and the ratio kiln/runc
# (bar: <= 1.0, issue 14). Needs root, runc, hyperfine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require runc hyperfine busybox python3
build_kiln

work=$(mktemp -d /tmp/kiln-bench-exec.XXXXXX)
export KILN_ROOT=$work/store
cleanup() {
    runc delete -f kiln-bench-exec >/dev/null 2>&1 || true
    $kiln rm -f bench-exec >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
busybox_rootfs "$work/base"
$kiln -q import "$work/base" -t bench-bb >/dev/null
limits=(--memory 64m --pids-limit 64 --cap-drop ALL --cap-add NET_BIND_SERVICE)
$kiln run -d --name bench-exec "${limits[@]}" bench-bb sleep 100000 >/dev/null
$kiln bundle "${limits[@]}" bench-bb "$work/bundle" sleep 100000
runc run -d -b "$work/bundle" kiln-bench-exec >/dev/null 2>&1 </dev/null

commands=(-n kiln "$kiln exec bench-exec true"
          -n runc "runc exec kiln-bench-exec true")
# KILN_OLD=path/to/kiln adds another kiln build (e.g. before a change) to the same run.
if [ -n "${KILN_OLD:-}" ]; then
    commands+=(-n kiln-old "$KILN_OLD exec bench-exec true")
fi
hyperfine --warmup 5 --runs 100 -N --export-json "$work/result.json" "${commands[@]}"
# After an idle moment, as a user's exec is (see bench/run.sh).
hyperfine --warmup 2 --runs 30 -N --prepare "sleep 0.2" --export-json "$work/idle.json" "${commands[@]}"

python3 - "$work/result.json" "$work/idle.json" <<'PY'
import sys
sys.path.insert(0, "bench")
from results import medians, record
for path, what in ((sys.argv[1], "back to back"), (sys.argv[2], "after an idle moment")):
    r = medians(path)
    k, c, o = r["kiln"], r["runc"], r.get("kiln-old")
    old = f", kiln-old {o*1000:.1f} ms (kiln/kiln-old = {k/o:.2f})" if o else ""
    print(f"exec true, {what}: kiln {k*1000:.1f} ms{old}, runc exec {c*1000:.1f} ms, ratio kiln/runc = {k/c:.2f} (bar <= 1.0)")
    record(f"exec true into a running container, {what}", k * 1000, "runc exec", c * 1000, "<= 1.0",
           old=o and o * 1000)
PY
