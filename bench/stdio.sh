#!/usr/bin/env bash
# The cost of kiln's stdio relay (the container writes into a pipe that kiln copies, never
# into kiln's own stdout; SECURITY.md rule 13): `cat` of a 1 GiB file through the
# container's stdout into a file on the host, kiln vs `runc run` of the same bundle (runc
# hands the container its own stdout), side by side in one run. Prints both medians, the
# throughput and the ratio kiln/runc. KILN_OLD=path/to/kiln adds a third column (e.g. a
# build from before the relay). Needs root, runc, hyperfine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require runc hyperfine busybox python3
build_kiln

SIZE_MB=${SIZE_MB:-1024}
work=$(mktemp -d /tmp/kiln-bench-stdio.XXXXXX)
trap 'runc delete -f kiln-bench-stdio >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
busybox_rootfs "$work/base"
mkdir -p "$work/data"
head -c $((SIZE_MB << 20)) /dev/urandom > "$work/data/big"
export KILN_ROOT=$work/store
$kiln -q import "$work/base" -t bench-bb >/dev/null
run_args=(-v "$work/data:/data:ro" bench-bb cat /data/big)
$kiln bundle "${run_args[@]:0:2}" bench-bb "$work/bundle" cat /data/big

commands=(-n kiln "$kiln run --rm ${run_args[*]} > $work/out"
          -n runc "runc run -b $work/bundle kiln-bench-stdio > $work/out")
if [ -n "${KILN_OLD:-}" ]; then
    commands+=(-n kiln-old "$KILN_OLD run --rm ${run_args[*]} > $work/out")
fi
hyperfine --warmup 1 --runs "${RUNS:-10}" --export-json "$work/result.json" "${commands[@]}"

python3 - "$work/result.json" "$SIZE_MB" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
mb = int(sys.argv[2])
line = ", ".join(f"{k} {v*1000:.0f} ms ({mb/v:.0f} MB/s)" for k, v in r.items())
print(f"cat {mb} MiB through stdout: {line}; ratio kiln/runc = {r['kiln']/r['runc']:.2f}")
if "kiln-old" in r:
    print(f"relay cost: kiln/kiln-old = {r['kiln']/r['kiln-old']:.2f}")
PY
