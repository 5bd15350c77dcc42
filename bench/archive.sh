#!/usr/bin/env bash
# Archives (issue 17): `kiln save --format oci` and `kiln load` vs `skopeo copy` between the
# same formats, side by side in one hyperfine run, on an image of SIZE_MB (default 1024) MiB
# of random data in four layers (compression does not matter):
#   save: kiln save -o x.tar IMG          vs  skopeo copy oci:STORE:IMG oci-archive:y.tar
#   load: kiln load -i x.tar (empty store) vs  skopeo copy oci-archive:x.tar oci:DIR
# kiln's load does more than skopeo's copy: it verifies every diff_id and unpacks the
# layers into the store. Prints MB/s and the ratios kiln/skopeo (higher is better; the
# issue's bar is >= 1.0). Needs root, skopeo, hyperfine, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require skopeo hyperfine python3
build_kiln
RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-1024}

work=$(mktemp -d /var/tmp/kiln-bench-archive.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ctx"
part=$((SIZE_MB / 4))
{
    echo "image: bench-archive:1"
    echo "from: scratch"
    echo "steps:"
    for i in 1 2 3 4; do
        head -c "${part}M" /dev/urandom > "$work/ctx/layer$i"
        printf '  - copy: layer%s\n    to: /layer%s\n' "$i" "$i"
    done
} > "$work/ctx/kiln.yaml"
export KILN_ROOT=$work/store
$kiln -q build --compression gzip "$work/ctx" >/dev/null
ref=localhost/bench-archive:1
$kiln save -q -o "$work/kiln.tar" "$ref"
bytes=$(stat -c %s "$work/kiln.tar")

hyperfine --runs "$RUNS" --warmup 1 -N --export-json "$work/save.json" \
    --prepare "rm -f $work/out.tar $work/skopeo.tar" \
    -n kiln "$kiln save -q -o $work/out.tar $ref" \
    -n skopeo "skopeo copy -q oci:$KILN_ROOT:$ref oci-archive:$work/skopeo.tar"
hyperfine --runs "$RUNS" --warmup 1 -N --export-json "$work/load.json" \
    --prepare "rm -rf $work/loaded $work/skopeo-dir" \
    -n kiln "$kiln --root $work/loaded -q load -i $work/kiln.tar" \
    -n skopeo "skopeo copy -q oci-archive:$work/kiln.tar:$ref oci:$work/skopeo-dir:$ref"

python3 - "$work/save.json" "$work/load.json" "$bytes" "$SIZE_MB" <<'PY'
import sys
sys.path.insert(0, "bench")
from results import medians, record
size, mib = int(sys.argv[3]) / 1e6, sys.argv[4]
for name, path in (("save", sys.argv[1]), ("load", sys.argv[2])):
    med = medians(path)
    k, s = size / med["kiln"], size / med["skopeo"]
    print(f"{name}: kiln {k:.0f} MB/s, skopeo {s:.0f} MB/s, kiln/skopeo {k / s:.2f} (bar >= 1.0)")
    record(f"{name} {mib} MiB image (OCI archive)", k, "skopeo copy", s, ">= 1.0", unit="MB/s",
           better="higher")
PY
