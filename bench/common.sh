# Shared by the benchmark scripts: tool checks, a release build, a busybox root filesystem.

# require TOOL... : fail with the Debian package to install when a tool is missing.
require() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "missing $t: apt-get install ${t/busybox/busybox-static}" >&2; exit 1; }
    done
}

# build_kiln: a release build; sets $kiln to the binary.
build_kiln() {
    cargo build --release --quiet
    kiln=$PWD/target/release/kiln
}

# busybox_rootfs DIR: DIR/bin/busybox with its applets linked by hand (`busybox --install`
# would link to the host path of the binary).
busybox_rootfs() {
    mkdir -p "$1/bin"
    cp /bin/busybox "$1/bin/busybox"
    local applet
    for applet in $(busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$1/bin/$applet"
    done
}
