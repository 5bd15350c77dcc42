#!/usr/bin/env bash
# The registry build cache (issue 17): a `kiln build --cache-from` rebuild of an unchanged
# 10-step spec on an empty store against `kiln pull` of the image it makes, side by side
# in one hyperfine run, both from the same Debian docker-registry on a free loopback port.
# The bar: the rebuild takes at most 1.2x the pull (only the needed layers move, no step
# runs). Each run starts from an empty store. Prints both times and the ratio (lower is
# better). Needs root, docker-registry, hyperfine, python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require docker-registry hyperfine python3 curl jq
build_kiln
RUNS=${RUNS:-10}
LAYER_KB=${LAYER_KB:-1024}

work=$(mktemp -d /tmp/kiln-bench-regcache.XXXXXX)
trap 'stop_registry_and_remove "$work"' EXIT

# The spec: busybox copied from the host, its applets, then eight steps that each write
# LAYER_KB of random data (a layer of that size each), all off the network.
mkdir -p "$work/app"
{
    echo "image: bench-cache"
    echo "from: scratch"
    echo "contexts: { hostbin: /bin }"
    echo "steps:"
    printf '  - copy: busybox\n    from: hostbin\n    to: /bin/busybox\n    mode: "0755"\n'
    printf '  - run: [/bin/busybox, --install, -s, /bin]\n    network: none\n'
    for i in $(seq 3 10); do
        printf '  - run: head -c %sk /dev/urandom > /data%s\n    network: none\n' "$LAYER_KB" "$i"
    done
} > "$work/app/kiln.yaml"

start_registry "$work" "$work/registry-data"

# Store A builds, exports the cache, pushes the image.
$kiln --root "$work/a" -q build "$work/app" --cache-to "$reg/bench-cache:buildcache" >/dev/null
$kiln --root "$work/a" -q push bench-cache "$reg/bench-cache:latest" >/dev/null

echo "10-step spec, 8 layers of ${LAYER_KB} KiB random data + busybox; registry $reg; $RUNS runs each" >&2
hyperfine --runs "$RUNS" --warmup 1 --export-json "$work/h.json" \
    -n "kiln pull" --prepare "rm -rf $work/b" \
    "$kiln --root $work/b -q pull $reg/bench-cache:latest" \
    -n "kiln build --cache-from" --prepare "rm -rf $work/c" \
    "$kiln --root $work/c -q build $work/app --cache-from $reg/bench-cache:buildcache"

# Same image both ways, and no step ran.
ran=$($kiln --root "$work/c" build "$work/app" --cache-from "$reg/bench-cache:buildcache" --json | jq .steps_run)
[ "$ran" = 0 ] || { echo "error: a step ran in the cached rebuild" >&2; exit 1; }
a=$($kiln --root "$work/a" images --json | jq -r '.[0].digest')
c=$($kiln --root "$work/c" images --json | jq -r '.[0].digest')
[ "$a" = "$c" ] || { echo "error: the rebuilt image differs: $c vs $a" >&2; exit 1; }

python3 - "$work/h.json" <<'PY'
import sys
sys.path.insert(0, "bench")
from results import medians, record
r = medians(sys.argv[1])
pull, build = r["kiln pull"], r["kiln build --cache-from"]
print(f"kiln pull of the image       {pull*1000:8.1f} ms (median)")
print(f"kiln build --cache-from      {build*1000:8.1f} ms (median)")
print(f"ratio build/pull             {build/pull:8.2f}  (bar <= 1.2)")
record("--cache-from rebuild, empty store, 10 steps", build * 1000, "kiln pull", pull * 1000, "<= 1.2")
PY
