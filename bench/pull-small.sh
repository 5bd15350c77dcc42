#!/usr/bin/env bash
# Many small layers (issue 18): `kiln pull` of an image of LAYERS (default 32) layers of KB
# (default 2048) KiB of random data each, vs `skopeo copy docker:// oci:`, side by side in
# one hyperfine run from the same Debian docker-registry on a free loopback port; each pull
# into an empty store or directory. Here round trips, not bandwidth, are the cost: kiln
# fetches small layers 4 at a time, large ones 2 (`pull_parallelism`). KILN_OLD=path/to/kiln
# adds another build to the same run. Needs root, docker-registry, skopeo, hyperfine, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require docker-registry skopeo hyperfine python3 curl
build_kiln
LAYERS=${LAYERS:-32}
KB=${KB:-2048}
RUNS=${RUNS:-10}

work=$(mktemp -d /tmp/kiln-bench-pull-small.XXXXXX)
trap 'stop_registry_and_remove "$work"' EXIT
start_registry "$work" "$work/registry-data"

mkdir -p "$work/ctx"
{
    echo "image: bench-small"
    echo "from: scratch"
    echo "steps:"
    for i in $(seq "$LAYERS"); do
        head -c "${KB}k" /dev/urandom > "$work/ctx/f$i"
        printf '  - copy: f%s\n    to: /f%s\n' "$i" "$i"
    done
} > "$work/ctx/kiln.yaml"
$kiln --root "$work/store" -q build "$work/ctx" >/dev/null
$kiln --root "$work/store" -q push bench-small "$reg/bench/small:1" >/dev/null

commands=(-n kiln "$kiln --root $work/pulled -q pull $reg/bench/small:1"
          -n skopeo "skopeo copy -q --src-tls-verify=false docker://$reg/bench/small:1 oci:$work/pulled:img")
if [ -n "${KILN_OLD:-}" ]; then
    commands+=(-n kiln-old "$KILN_OLD --root $work/pulled -q pull $reg/bench/small:1")
fi
echo "$LAYERS layers of $KB KiB; registry $reg; $RUNS runs each" >&2
hyperfine -N --runs "$RUNS" --warmup 1 --prepare "rm -rf $work/pulled" \
    --export-json "$work/result.json" "${commands[@]}"

python3 - "$work/result.json" "$LAYERS" "$KB" <<'PY'
import sys
sys.path.insert(0, "bench")
from results import medians, record
r = medians(sys.argv[1])
k, s, o = r["kiln"], r["skopeo"], r.get("kiln-old")
what = f"pull {sys.argv[2]} x {sys.argv[3]} KiB layers"
old = f", kiln-old {o*1000:.0f} ms" if o else ""
print(f"{what}: kiln {k*1000:.0f} ms{old}, skopeo {s*1000:.0f} ms, ratio kiln/skopeo = {k/s:.2f} (lower is better)")
record(what, k * 1000, "skopeo copy", s * 1000, "<= 1.0", old=o and o * 1000)
PY
