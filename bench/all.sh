#!/usr/bin/env bash
# Every comparison of the benchmark scripts at their sizes, in one command, ending in one
# table: kiln's figure, kiln-old's (KILN_OLD=path/to/an/older/kiln, measured in the same
# runs: a change's before and after), the peer's, the ratio kiln/peer and its bar, with
# the peers' versions and how long it all took (about 20 minutes on 2 cores).
#   KILN_OLD=/path/to/kiln-before ./bench/all.sh
#   ONLY="run cache" ./bench/all.sh      # some of the scripts
# Each script's own output goes to $BENCH_LOG (default: a file in the work dir, printed
# at the end). Needs root and what each script needs (they say what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require python3
build_kiln
SCRIPTS=${ONLY:-"run build cache kept-containers build-large registry pull-small archive registry-cache"}

work=$(mktemp -d /tmp/kiln-bench-all.XXXXXX)
trap 'rm -rf "$work"' EXIT
export BENCH_RESULTS=$work/results.jsonl
: > "$BENCH_RESULTS"
log=${BENCH_LOG:-$work/log}
started=$(date +%s)
failed=()
for script in $SCRIPTS; do
    echo "==> bench/$script.sh" | tee -a "$log" >&2
    if ! "bench/$script.sh" >>"$log" 2>&1; then
        failed+=("$script")
        echo "    failed: see the log" >&2
    fi
done
elapsed=$(( $(date +%s) - started ))

version() { "$@" 2>/dev/null | head -n1 || echo "not installed"; }
{
    echo "kiln $(git rev-parse --short HEAD)${KILN_OLD:+, kiln-old $KILN_OLD}"
    echo "runc: $(version runc --version)"
    echo "buildah: $(version buildah --version)"
    echo "skopeo: $(version skopeo --version)"
    echo "docker-registry: $(version docker-registry --version)"
    echo "machine: $(nproc) cores, $(uname -r)"
} > "$work/versions"

python3 - "$BENCH_RESULTS" "$work/versions" "$elapsed" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def fmt(v, unit):
    if v is None:
        return "-"
    return f"{v:.1f} {unit}" if v < 100 else f"{v:.0f} {unit}"
print("| comparison | kiln | kiln-old | peer | kiln/peer | bar |")
print("|---|---:|---:|---|---:|---|")
for r in rows:
    ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}" if r["ratio"] < 0.1 else f"{r['ratio']:.2f}"
    peer = f"{r['peer_name']}: {fmt(r['peer'], r['unit'])}"
    print(f"| {r['metric']} | {fmt(r['kiln'], r['unit'])} | {fmt(r['old'], r['unit'])} | {peer} | {ratio} | {r['bar']} |")
print()
print(open(sys.argv[2]).read().strip())
print(f"took {int(sys.argv[3]) // 60} min {int(sys.argv[3]) % 60} s")
PY
[ -n "${BENCH_LOG:-}" ] || { echo; echo "--- the scripts' output ---"; cat "$log"; } >&2
if [ ${#failed[@]} -gt 0 ]; then
    echo "error: these scripts failed: ${failed[*]}" >&2
    exit 1
fi
