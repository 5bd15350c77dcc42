#!/usr/bin/env bash
# Container start as stopped containers pile up (issue 18): `kiln run --rm --network none
# IMAGE true` with 0, 100, 500 and 1000 exited containers kept in the store, and `kiln ps
# -a` at each count. The bar: at most +1 ms at 1000 kept containers; `ps` linear. Prints
# the medians per count. KILN_OLD=path/to/kiln measures another build on the same stores.
# Needs root, hyperfine, busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require hyperfine busybox python3
build_kiln
COUNTS=${COUNTS:-"0 100 500 1000"}

work=$(mktemp -d /tmp/kiln-bench-kept.XXXXXX)
trap 'rm -rf "$work"' EXIT
busybox_store "$work"

kept=0
for count in $COUNTS; do
    while [ "$kept" -lt "$count" ]; do
        $kiln run --network none bench-bb true >/dev/null
        kept=$((kept + 1))
    done
    commands=(-n "kiln run $count" "$kiln run --rm --network none bench-bb true"
              -n "kiln ps $count" "$kiln ps -a -q")
    if [ -n "${KILN_OLD:-}" ]; then
        commands+=(-n "kiln-old run $count" "$KILN_OLD run --rm --network none bench-bb true")
    fi
    hyperfine --warmup 3 --runs 30 -N --export-json "$work/kept-$count.json" "${commands[@]}" >/dev/null
done

python3 - "$work" $COUNTS <<'PY'
import sys
sys.path.insert(0, "bench")
from results import medians, record
work, counts = sys.argv[1], sys.argv[2:]
r = {}
for c in counts:
    r.update(medians(f"{work}/kept-{c}.json"))
first, last = counts[0], counts[-1]
for c in counts:
    old = f", kiln-old {r[f'kiln-old run {c}']*1000:.1f} ms" if f"kiln-old run {c}" in r else ""
    print(f"{c:>5} kept: run --rm {r[f'kiln run {c}']*1000:6.1f} ms{old}, ps -a {r[f'kiln ps {c}']*1000:6.1f} ms")
k, base = r[f"kiln run {last}"] * 1000, r[f"kiln run {first}"] * 1000
o = r.get(f"kiln-old run {last}")
print(f"start with {last} kept: +{k - base:.1f} ms over {first} kept (bar <= +1 ms)")
record(f"run --rm start, {last} containers kept", k, f"same, {first} kept", base, "<= +1 ms",
       old=o and o * 1000)
PY
