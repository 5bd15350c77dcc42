#!/usr/bin/env bash
# Benchmark: capturing a directory as a zstd layer (tar + zstd + sha256 of both streams).
#
# Builds a ~500 MB realistic tree (a fixed sample of /usr/lib's files), then measures in
# the same run, with hyperfine:
#   peer: tar -C TREE -c . | zstd -3 -T2 | sha256sum
#   kiln: kiln debug capture TREE OUT       (write_layer: reproducible tar, zstd -3, both digests)
# and prints both throughputs (MB of file data per second), the ratio kiln/peer, and kiln's
# peak RSS (which must not grow with the layer size).
#
# Environment: KILN (binary, default target/release/kiln, built if missing), SIZE_MB (500),
# RUNS (5), BENCH_DIR (where the tree goes, default /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${SIZE_MB:-500}
RUNS=${RUNS:-5}
KILN=${KILN:-target/release/kiln}

need() { command -v "$1" >/dev/null 2>&1 || { echo "==> installing $2"; apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need hyperfine hyperfine
need zstd zstd
need jq jq
[ -x /usr/bin/time ] || need /usr/bin/time time
if [ ! -x "$KILN" ]; then
    echo "==> building kiln (release)"
    cargo build --release --quiet --bin kiln
fi

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/kiln-layer-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree="$work/tree"
mkdir -p "$tree"

echo "==> copying up to $SIZE_MB MB of /usr/lib into $tree"
# A fixed pseudo-random sample of /usr/lib: many packages, small and large files alike.
find /usr/lib -xdev \( -type f -o -type l \) -printf '%s\t%P\n' | LC_ALL=C sort | sort -R --random-source=<(yes kiln) \
    | awk -F '\t' -v max=$((SIZE_MB * 1024 * 1024)) '!full { total += $1; if (total > max) full = 1; else print $2 }' \
    >"$work/list"
tar -C /usr/lib --no-recursion -cf - -T "$work/list" | tar -C "$tree" -xf -
bytes=$(du -sb --apparent-size "$tree" | cut -f1)
files=$(wc -l <"$work/list")
echo "    $files files, $((bytes / 1024 / 1024)) MB"

hyperfine --warmup 1 --runs "$RUNS" --export-json "$work/times.json" \
    -n peer "tar -C '$tree' -c . | zstd -3 -T2 -q -c | sha256sum" \
    -n kiln "'$KILN' debug capture '$tree' '$work/layer.tar.zst'"

/usr/bin/time -v "$KILN" debug capture "$tree" "$work/layer.tar.zst" >/dev/null 2>"$work/time.txt"
rss_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time.txt")

mean() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .mean' "$work/times.json"; }
peer=$(mean peer)
kiln=$(mean kiln)
awk -v b="$bytes" -v p="$peer" -v k="$kiln" -v rss="$rss_kb" -v out="$(stat -c %s "$work/layer.tar.zst")" 'BEGIN {
    mb = b / 1e6
    printf "\npeer (tar | zstd -3 -T2 | sha256sum): %7.1f MB/s  (%.3f s)\n", mb / p, p
    printf "kiln debug capture:                   %7.1f MB/s  (%.3f s)\n", mb / k, k
    printf "ratio kiln/peer (throughput):         %7.2f\n", p / k
    printf "kiln peak RSS:                        %7.1f MB\n", rss / 1024
    printf "kiln layer size:                      %7.1f MB\n", out / 1e6
}'
