#!/usr/bin/env bash
# A cold build whose context holds one large file (issue 18: SIZE_MB, default 1024, of
# random data copied into the image), kiln vs `buildah build --no-cache` (chroot
# isolation, its default storage), side by side in one hyperfine run. The bars: kiln's
# spread (max - min over the median) <= 20 % and kiln/buildah <= 0.5. Both write the layer
# to disk and sync it, as each does on its own. Needs root, buildah, hyperfine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require buildah hyperfine busybox python3
build_kiln
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-5}

work=$(mktemp -d /var/tmp/kiln-bench-large.XXXXXX)
trap 'rm -rf "$work"; buildah rmi -f localhost/kiln-bench-large >/dev/null 2>&1 || true' EXIT
mkdir -p "$work/ctx"
head -c "${SIZE_MB}M" /dev/urandom > "$work/ctx/big"
printf 'FROM scratch\nCOPY big /big\n' > "$work/ctx/Containerfile"
printf 'image: kiln-bench-large\nfrom: scratch\nsteps:\n  - copy: big\n    to: /big\n' > "$work/ctx/kiln.yaml"
export KILN_ROOT=$work/store

commands=(-n kiln "$kiln -q build --no-cache $work/ctx"
          -n buildah "buildah build -q --no-cache --isolation chroot -t localhost/kiln-bench-large -f $work/ctx/Containerfile $work/ctx")
# KILN_OLD=path/to/kiln adds another kiln build (e.g. before a change) to the same run.
if [ -n "${KILN_OLD:-}" ]; then
    commands+=(-n kiln-old "$KILN_OLD -q build --no-cache $work/ctx")
fi
# Each run starts with the previous one's writes on disk and its layers gone.
hyperfine --runs "$RUNS" --warmup 1 --export-json "$work/result.json" \
    --prepare "rm -rf $work/store; buildah rmi -f localhost/kiln-bench-large >/dev/null 2>&1 || true; sync" \
    "${commands[@]}"

python3 - "$work/result.json" "$SIZE_MB" <<'PY'
import sys
sys.path.insert(0, "bench")
from results import medians, spreads, record
r, s = medians(sys.argv[1]), spreads(sys.argv[1])
k, b, o = r["kiln"], r["buildah"], r.get("kiln-old")
old = f", kiln-old {o:.2f} s (spread {s['kiln-old']:.0%})" if o else ""
print(f"cold build, {sys.argv[2]} MiB file: kiln {k:.2f} s (spread {s['kiln']:.0%}){old}, "
      f"buildah {b:.2f} s (spread {s['buildah']:.0%}), ratio kiln/buildah = {k/b:.2f} (bar <= 0.5, spread <= 20 %)")
record(f"cold build, {sys.argv[2]} MiB file in the context", k * 1000, "buildah", b * 1000,
       "<= 0.5", old=o and o * 1000)
record(f"cold build, {sys.argv[2]} MiB file: spread", s["kiln"] * 100, "buildah", s["buildah"] * 100,
       "kiln <= 20 %", unit="%", old=o and s["kiln-old"] * 100)
PY
