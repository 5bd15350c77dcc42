# Shared by the benchmark scripts: tool checks, a release build, a busybox root filesystem.

# require TOOL... : fail with the Debian package to install when a tool is missing.
require() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "missing $t: apt-get install ${t/busybox/busybox-static}" >&2; exit 1; }
    done
}

# build_kiln: a release build; sets $kiln to the binary (in CARGO_TARGET_DIR when set).
build_kiln() {
    cargo build --release --quiet
    kiln=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
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

# busybox_store WORK: exports KILN_ROOT=WORK/store, with WORK/base (a busybox root
# filesystem) imported there as `bench-bb`.
busybox_store() {
    busybox_rootfs "$1/base"
    export KILN_ROOT=$1/store
    $kiln -q import "$1/base" -t bench-bb >/dev/null
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

# stop_registry_and_remove WORK: the EXIT trap of a script that called start_registry.
registry_pid=
stop_registry_and_remove() {
    [ -z "$registry_pid" ] || kill "$registry_pid" 2>/dev/null || true
    [ -z "$registry_pid" ] || wait "$registry_pid" 2>/dev/null || true
    rm -rf "$1"
}

# start_registry WORK DATA: a Debian docker-registry on a free loopback port with its
# storage in DATA (deletes enabled), its config and log in WORK; sets $reg (HOST:PORT) and
# $registry_pid (the caller kills it on exit).
start_registry() {
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat > "$1/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $2
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YML
    docker-registry serve "$1/registry.yml" >"$1/registry.log" 2>&1 &
    registry_pid=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
        sleep 0.1
    done
    reg=127.0.0.1:$port
}
