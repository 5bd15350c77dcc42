#!/usr/bin/env bash
# Cold 3-step build (FROM a busybox base: RUN, COPY, RUN), kiln vs buildah, side by side in
# one run with hyperfine. Prints both medians and the ratio kiln/buildah (lower is better;
# the goal is ≤ 0.5). Needs root, buildah, hyperfine, busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require buildah hyperfine busybox python3
build_kiln

work=$(mktemp -d /tmp/kiln-bench-build.XXXXXX)
trap 'rm -rf "$work"; buildah rmi -f localhost/kiln-bench-base localhost/kiln-bench-out >/dev/null 2>&1 || true' EXIT
busybox_rootfs "$work/base"
mkdir -p "$work/ctx"
head -c 1000000 /dev/urandom > "$work/ctx/payload"

# The same base image for both tools.
export KILN_ROOT=$work/store
$kiln -q import "$work/base" -t kiln-bench-base >/dev/null
ctr=$(buildah from scratch)
buildah copy "$ctr" "$work/base" / >/dev/null
buildah commit -q "$ctr" localhost/kiln-bench-base >/dev/null
buildah rm "$ctr" >/dev/null

cat > "$work/ctx/Containerfile" <<'CF'
FROM localhost/kiln-bench-base
RUN echo one > /one
COPY payload /payload
RUN cat /payload /one > /two
CF
cat > "$work/ctx/kiln.yaml" <<'KY'
image: kiln-bench-out
from: kiln-bench-base
steps:
  - run: echo one > /one
  - copy: payload
    to: /payload
  - run: cat /payload /one > /two
KY

commands=(-n kiln "$kiln -q build --no-cache $work/ctx"
          -n buildah "buildah build -q --layers --no-cache --isolation chroot -t localhost/kiln-bench-out -f $work/ctx/Containerfile $work/ctx")
# KILN_OLD=path/to/kiln adds another kiln build (e.g. before a change) to the same run.
if [ -n "${KILN_OLD:-}" ]; then
    commands+=(-n kiln-old "$KILN_OLD -q build --no-cache $work/ctx")
fi
hyperfine --warmup 2 --runs 15 --export-json "$work/result.json" "${commands[@]}"

python3 - "$work/result.json" <<'PY'
import sys
sys.path.insert(0, "bench")
from results import medians, record
r = medians(sys.argv[1])
k, b, o = r["kiln"], r["buildah"], r.get("kiln-old")
print(f"cold 3-step build: kiln {k*1000:.0f} ms, buildah {b*1000:.0f} ms, ratio kiln/buildah = {k/b:.2f} (goal <= 0.5)")
if o:
    print(f"kiln-old {o*1000:.0f} ms: kiln/kiln-old = {k/o:.2f}")
record("cold 3-step build, --no-cache", k * 1000, "buildah", b * 1000, "<= 0.5", old=o and o * 1000)
PY
