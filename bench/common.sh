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

# podman_with_image WORK: sets $podman (podman on a store of its own under WORK, with runc,
# as the issues ask) and $podman_ulimits (podman raises RLIMIT_NOFILE/NPROC past this
# sandbox's hard limits, where runc gets EPERM: keep them low, as kiln leaves them), and
# imports WORK/base (a busybox root filesystem) as kiln's and podman's `bench-bb`.
podman_with_image() {
    podman=(podman --root "$1/podman" --runroot "$1/podman-run" --runtime runc
            --cgroup-manager cgroupfs --events-backend none --log-level error)
    podman_ulimits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
    busybox_rootfs "$1/base"
    $kiln -q import "$1/base" -t bench-bb >/dev/null
    tar -C "$1/base" -cf "$1/base.tar" .
    "${podman[@]}" import -q "$1/base.tar" localhost/bench-bb >/dev/null
}
