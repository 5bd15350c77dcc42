#!/usr/bin/env bash
# Registry throughput: `kiln push` / `kiln pull` vs `skopeo copy`, side by side in one run
# with hyperfine, against the same Debian docker-registry on a free loopback port. The
# image has 4 layers of 50 MiB of random data (so compression does not matter). Every
# push starts from an empty registry and every pull from an empty store or directory, so
# both tools really move all the bytes. Also measures a re-push of the unchanged image
# (issue 5: < 100 ms) and kiln's peak RSS while pushing and pulling, also for an image with
# one 1 GiB layer (< 100 MB; BIG_MB=0 skips that image, BIG_MB=N sizes its layer).
# Prints MB/s for each tool and the ratios kiln/skopeo (higher is better; the issue's bar
# is >= 1.0, the push goal 1.5). Needs root, docker-registry, skopeo, hyperfine, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require docker-registry skopeo hyperfine python3 /usr/bin/time
build_kiln
RUNS=${RUNS:-5}

work=$(mktemp -d /tmp/kiln-bench-registry.XXXXXX)
trap 'stop_registry_and_remove "$work"' EXIT

# The image: four `copy:` steps, one 50 MiB random file each.
mkdir -p "$work/ctx"
for i in 1 2 3 4; do head -c 50M /dev/urandom > "$work/ctx/layer$i"; done
{
    echo "image: bench-registry"
    echo "from: scratch"
    echo "steps:"
    for i in 1 2 3 4; do printf '  - copy: layer%s\n    to: /layer%s\n' "$i" "$i"; done
} > "$work/ctx/kiln.yaml"
export KILN_ROOT=$work/store
$kiln -q build --compression gzip "$work/ctx" >/dev/null

# Bytes a push or pull moves: config and layer blobs as stored.
bytes=$(python3 - "$KILN_ROOT" <<'PY'
import json, sys, os
root = sys.argv[1]
def blob(d): return os.path.join(root, "blobs", *d.split(":"))
idx = json.load(open(os.path.join(root, "index.json")))
m = next(x for x in idx["manifests"]
         if x.get("annotations", {}).get("org.opencontainers.image.ref.name", "").endswith("bench-registry:latest"))
man = json.load(open(blob(m["digest"])))
print(man["config"]["size"] + sum(l["size"] for l in man["layers"]))
PY
)

# A docker-registry with its storage in $work, on a free loopback port.
data=$work/registry-data
start_registry "$work" "$data"
src=oci:$KILN_ROOT:localhost/bench-registry:latest

echo "image: 4 layers, $bytes bytes; registry $reg; $RUNS runs each" >&2

hyperfine --runs "$RUNS" --export-json "$work/push.json" \
    --prepare "rm -rf $data" \
    -n kiln-push "$kiln -q push bench-registry $reg/bench/img:1" \
    -n skopeo-push "skopeo copy -q --dest-tls-verify=false $src docker://$reg/bench/img:1"

# What the pulls read: one push from kiln, kept from here on.
rm -rf "$data"
$kiln -q push bench-registry "$reg/bench/img:1" >/dev/null
pulls=(-n kiln-pull "KILN_ROOT=$work/pull-kiln $kiln -q pull $reg/bench/img:1"
       -n skopeo-pull "skopeo copy -q --src-tls-verify=false docker://$reg/bench/img:1 oci:$work/pull-skopeo:img")
# KILN_OLD=path/to/kiln adds another kiln build (e.g. before a change) to the same run.
if [ -n "${KILN_OLD:-}" ]; then
    pulls+=(-n kiln-old-pull "KILN_ROOT=$work/pull-kiln $KILN_OLD -q pull $reg/bench/img:1")
fi
hyperfine --runs "$RUNS" --export-json "$work/pull.json" \
    --prepare "rm -rf $work/pull-kiln $work/pull-skopeo" "${pulls[@]}"

hyperfine --warmup 2 --runs 20 --export-json "$work/repush.json" \
    -n kiln-repush "$kiln -q push bench-registry $reg/bench/img:1"

# Peak RSS, one run each.
peak_rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident/ {print $2}'; }
rm -rf "$data"
push_rss=$(peak_rss $kiln -q push bench-registry "$reg/bench/img:1")
rm -rf "$work/pull-kiln"
pull_rss=$(KILN_ROOT=$work/pull-kiln peak_rss $kiln -q pull "$reg/bench/img:1")

# The same for one big layer: memory must not grow with the layer.
BIG_MB=${BIG_MB:-1024}
big_push_rss=0 big_pull_rss=0
if [ "$BIG_MB" -gt 0 ]; then
    rm -rf "$work/ctx" "$work/pull-kiln"
    mkdir -p "$work/ctx"
    head -c "${BIG_MB}M" /dev/urandom > "$work/ctx/big"
    printf 'image: bench-big\nfrom: scratch\nsteps:\n  - copy: big\n    to: /big\n' > "$work/ctx/kiln.yaml"
    $kiln -q build "$work/ctx" >/dev/null
    rm -f "$work/ctx/big"
    big_push_rss=$(peak_rss $kiln -q push bench-big "$reg/bench/big:1")
    big_pull_rss=$(KILN_ROOT=$work/pull-kiln peak_rss $kiln -q pull "$reg/bench/big:1")
    # One large layer: kiln hashes, writes and unpacks it, skopeo only writes the blob.
    bigs=(-n kiln-pull "KILN_ROOT=$work/pull-kiln $kiln -q pull $reg/bench/big:1"
          -n skopeo-pull "skopeo copy -q --src-tls-verify=false docker://$reg/bench/big:1 oci:$work/pull-skopeo:img")
    if [ -n "${KILN_OLD:-}" ]; then
        bigs+=(-n kiln-old-pull "KILN_ROOT=$work/pull-kiln $KILN_OLD -q pull $reg/bench/big:1")
    fi
    hyperfine --runs "$RUNS" --export-json "$work/bigpull.json" \
        --prepare "rm -rf $work/pull-kiln $work/pull-skopeo; sync" "${bigs[@]}"
fi

python3 - "$work" "$bytes" "$push_rss" "$pull_rss" "$BIG_MB" "$big_push_rss" "$big_pull_rss" <<'PY'
import sys
sys.path.insert(0, "bench")
from results import medians as medians_of, record
work, size, push_rss, pull_rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
big_mb, big_push_rss, big_pull_rss = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
medians = lambda name: medians_of(f"{work}/{name}.json")
push, pull, repush = medians("push"), medians("pull"), medians("repush")
def report(what, r, size, label, bar):
    mbs = lambda t: size / t / 1e6
    k, s = mbs(r[f"kiln-{what}"]), mbs(r[f"skopeo-{what}"])
    o = r.get(f"kiln-old-{what}")
    old = f", kiln-old {mbs(o):.0f} MB/s" if o else ""
    print(f"{label}: kiln {k:.0f} MB/s ({r[f'kiln-{what}']:.2f} s){old}, skopeo {s:.0f} MB/s "
          f"({r[f'skopeo-{what}']:.2f} s), ratio kiln/skopeo = {k/s:.2f} (bar {bar})")
    record(label, k, "skopeo copy", s, bar, unit="MB/s", old=o and mbs(o), better="higher")
report("push", push, size, "push 4 x 50 MiB layers", ">= 1.0")
report("pull", pull, size, "pull 4 x 50 MiB layers", ">= 1.0")
if big_mb:
    report("pull", medians("bigpull"), big_mb << 20, f"pull one {big_mb} MiB layer", ">= 1.5")
print(f"re-push unchanged: kiln {repush['kiln-repush']*1000:.0f} ms (goal < 100 ms)")
print(f"kiln peak RSS: push {push_rss/1024:.0f} MB, pull {pull_rss/1024:.0f} MB (goal < 100 MB)")
if big_mb:
    print(f"kiln peak RSS, one {big_mb} MiB layer: push {big_push_rss/1024:.0f} MB, "
          f"pull {big_pull_rss/1024:.0f} MB (goal < 100 MB)")
PY
