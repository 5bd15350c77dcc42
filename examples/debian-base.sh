#!/bin/sh
# The base image of the c-multistage and python-app examples: a minimal Debian 12
# (bookworm) root filesystem with gcc and Python, made by mmdebstrap from Debian's mirror
# and imported into kiln's store as debian-examples:bookworm.
#
#   ./debian-base.sh [TARBALL]
#
# The root filesystem is kept in TARBALL (default
# ~/.cache/kiln-examples/debian-bookworm.tar, about 450 MB) and made only when it is not
# there: delete it for a fresh one. Runs of this script at the same time make it once
# (a lock beside it). Needs mmdebstrap (apt-get install mmdebstrap), Debian's mirror and
# kiln on PATH; the image goes into the store kiln uses (KILN_ROOT, else the default).
set -eu

packages=gcc,libc6-dev,python3-pip,python3-venv
image=debian-examples:bookworm
tarball=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-examples/debian-bookworm.tar}

mkdir -p "$(dirname "$tarball")"
exec 9>"$tarball.lock"
flock 9
if [ ! -s "$tarball" ]; then
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        echo "error: mmdebstrap is missing: apt-get install mmdebstrap" >&2
        exit 1
    fi
    echo "==> mmdebstrap: Debian bookworm (minbase) with $packages, into $tarball"
    rm -f "$tarball.part"
    mmdebstrap --quiet --variant=minbase --include="$packages" --format=tar \
        bookworm "$tarball.part"
    mv "$tarball.part" "$tarball"
fi
exec 9>&-

echo "==> kiln import $tarball -t $image"
kiln import "$tarball" -t "$image"
