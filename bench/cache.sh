#!/usr/bin/env bash
# Cached rebuilds of a 10-step spec, kiln vs `buildah build --layers` (chroot isolation),
# side by side in one run with hyperfine:
#   1. fully cached rebuild (goals: kiln median <= 50 ms, kiln/buildah <= 0.25);
#   2. a one-step change at the end (the last step's input changes on every run; goal
#      kiln/buildah <= 0.5).
# Needs root, buildah, hyperfine, busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require buildah hyperfine busybox python3
build_kiln

work=$(mktemp -d /tmp/kiln-bench-cache.XXXXXX)
trap 'rm -rf "$work"; buildah rmi -f localhost/kiln-bench-base localhost/kiln-bench-cache >/dev/null 2>&1 || true' EXIT
busybox_rootfs "$work/base"
mkdir -p "$work/ctx"
head -c 1000000 /dev/urandom > "$work/ctx/payload"
echo 0 > "$work/ctx/last"

export KILN_ROOT=$work/store
$kiln -q import "$work/base" -t kiln-bench-base >/dev/null
ctr=$(buildah from scratch)
buildah copy "$ctr" "$work/base" / >/dev/null
buildah commit -q "$ctr" localhost/kiln-bench-base >/dev/null
buildah rm "$ctr" >/dev/null

# Ten steps that make layers, the same in both files; the last copies `last`.
{
    echo "FROM localhost/kiln-bench-base"
    echo "ENV APP=/srv/app"
    echo "WORKDIR /srv/app"
    for i in 1 2 3 4 5 6 7; do echo "RUN echo step $i > /srv/app/s$i"; done
    echo "COPY payload /srv/app/payload"
    echo "COPY last /srv/app/last"
} > "$work/ctx/Containerfile"
{
    echo "image: kiln-bench-cache"
    echo "from: kiln-bench-base"
    echo "env: { APP: /srv/app }"
    echo "steps:"
    echo "  - workdir: /srv/app"
    for i in 1 2 3 4 5 6 7; do echo "  - run: echo step $i > /srv/app/s$i"; done
    echo "  - copy: payload"
    echo "    to: /srv/app/payload"
    echo "  - copy: last"
    echo "    to: /srv/app/last"
} > "$work/ctx/kiln.yaml"

kiln_build="$kiln -q build $work/ctx"
buildah_build="buildah build -q --layers --isolation chroot -t localhost/kiln-bench-cache -f $work/ctx/Containerfile $work/ctx"
$kiln_build >/dev/null
$buildah_build >/dev/null

commands=(-n kiln "$kiln_build" -n buildah "$buildah_build")
# KILN_OLD=path/to/kiln adds another kiln build (e.g. before a change) to the same run.
if [ -n "${KILN_OLD:-}" ]; then
    commands+=(-n kiln-old "$KILN_OLD -q build $work/ctx")
fi
hyperfine --warmup 3 --runs 20 --export-json "$work/cached.json" "${commands[@]}"

# Each run changes `last`, so exactly the last step runs in both tools.
hyperfine --warmup 2 --runs 15 --export-json "$work/last.json" \
    --prepare "date +%s%N > $work/ctx/last" "${commands[@]}"

python3 - "$work/cached.json" "$work/last.json" <<'PY'
import sys
sys.path.insert(0, "bench")
from results import medians, record
for path, what, bar in ((sys.argv[1], "fully cached 10-step rebuild", "<= 0.05 (goal 0.02)"),
                        (sys.argv[2], "10-step rebuild, last step changed", "<= 0.5")):
    r = medians(path)
    k, b, o = r["kiln"], r["buildah"], r.get("kiln-old")
    old = f", kiln-old {o*1000:.1f} ms" if o else ""
    print(f"{what}: kiln {k*1000:.1f} ms{old}, buildah {b*1000:.0f} ms, ratio kiln/buildah = {k/b:.3f} (bar {bar})")
    record(what, k * 1000, "buildah --layers", b * 1000, bar, old=o and o * 1000)
PY
