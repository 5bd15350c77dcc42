#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, as root on the real
# kernel (namespaces, overlayfs, mknod), then the root-free tier as nobody (see the end).
# Installs the peers the tests use when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "error: the tests need root (namespaces, overlayfs, device nodes); run: sudo $0" >&2
    exit 1
fi

# Debian packages the tests need: command → package.
declare -A peers=(
    [busybox]=busybox-static     # base image of the test builds
    [umoci]=umoci                # unpacks kiln's images to check their trees
    [oci-image-tool]=oci-image-tool  # validates the store as an OCI layout
    [skopeo]=skopeo              # reads the store as an OCI layout
    [getfattr]=attr              # checks xattrs
    [docker-registry]=docker-registry  # the real registry (CNCF distribution 2.8) for push/pull
    [runc]=runc                  # runs kiln bundles
    [zstd]=zstd                  # decompresses layers to search them
    [mmdebstrap]=mmdebstrap      # makes the Debian root filesystems of the multi-stage test and examples/
    [flock]=util-linux           # examples/debian-base.sh makes its tarball once (tests/examples.rs)
    [buildah]=buildah            # builds the Dockerfiles kiln convert translates, to compare; pushes archives kiln loads
    [podman]=podman              # loads and runs kiln's archives, saves the ones kiln loads (tests/archive_peers.rs)
    [gzip]=gzip                  # compresses archives kiln load takes as docker load does
    [gcc]=gcc                    # builds the static probe program of tests/confinement.rs
    [losetup]=mount              # a loop device the device probes must not reach, and to throttle
    [mkfs.ext4]=e2fsprogs        # a filesystem on that loop device for the throttle test
    [jq]=jq                      # lists the test binaries for the root-free tier
    [setpriv]=util-linux         # runs the root-free tier as nobody
    [ip]=iproute2                # network namespaces of kiln-network's tests
    [nft]=nftables               # kiln-network's NAT and published ports
    [curl]=curl                  # fetches through kiln-network's NAT and ports
    [iperf3]=iperf3              # measures --network-rate-in/-out (tests/ports.rs)
    [pasta]=passt                # the network without root (kiln-network's pasta tests)
    [zsh]=zsh                    # checks kiln's zsh completions
    [fish]=fish                  # checks kiln's fish completions
    [man]=man-db                 # renders kiln's man pages
    [jsonschema]=python3-jsonschema  # validates specs against kiln's JSON Schema (tests/schema.rs)
)
missing=()
for cmd in "${!peers[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${peers[$cmd]}")
done
# The probes link statically: glibc's static library.
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] \
    || missing+=(libc6-dev)
# tests/schema.rs validates with Debian's Python modules (/usr/bin/python3's, not a pip one).
/usr/bin/python3 -c 'import jsonschema, yaml' 2>/dev/null || missing+=(python3-jsonschema python3-yaml)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# kiln kube's manifests are checked against Kubernetes' own schemas, offline
# (kubernetes-validate bundles them; from PyPI, not in Debian).
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    echo "==> installing kubernetes-validate (PyPI)"
    python3 -m pip --version >/dev/null 2>&1 || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    }
    python3 -m pip install -q --break-system-packages kubernetes-validate==1.37.0
fi
# pasta as an ordinary user opens /dev/net/tun: udev makes it 0666 on Debian, a machine
# without udev (a container, a minimal VM like this one) may have it 0600.
chmod 0666 /dev/net/tun

echo "==> cargo fmt --check"
cargo fmt --all -- --check
# The layering the crates promise (ARCHITECTURE.md): only the binary knows the terminal and
# the command line. `cargo tree -i` lists who depends on a crate.
echo "==> only the kiln binary depends on clap, indicatif and tracing-subscriber"
for front in clap indicatif tracing-subscriber; do
    users=$(cargo tree --workspace -e normal -i "$front" --prefix none --depth 1 | tail -n +2 | grep -o '^kiln[a-z-]*' | sort -u)
    if [ "$users" != "kiln" ]; then
        echo "error: $front is used by: $users (only the kiln binary may)" >&2
        exit 1
    fi
done
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
cargo test --workspace --quiet

# The root-free tier: the same test binaries again as an unprivileged user, in the explicit
# mode where the tests that need root print a `skipped (needs root: …)` line and return.
echo "==> cargo test, root-free tier (as nobody, KILN_TEST_UNPRIVILEGED=1)"
as_nobody=(setpriv --reuid=nobody --regid=nogroup --clear-groups --reset-env --)
# A checkout below a directory only root may enter (a CI work dir made by mktemp, /root)
# cannot be read by nobody: then nobody keeps one capability, CAP_DAC_READ_SEARCH, to read
# and traverse it. It is still not root, so every root-only test still says it is skipped.
# (Reading decides, not `test -r`: access(2) ignores capabilities for a non-root user.)
if ! "${as_nobody[@]}" cat "$PWD/Cargo.toml" >/dev/null 2>&1; then
    echo "    (the checkout is not readable by other users: nobody reads it with CAP_DAC_READ_SEARCH)"
    as_nobody=(setpriv --reuid=nobody --regid=nogroup --clear-groups --reset-env
               --inh-caps=+dac_read_search --ambient-caps=+dac_read_search --)
fi
cargo test --workspace --no-run --message-format=json --quiet \
    | jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test)
             | "\(.manifest_path)\t\(.executable)"' \
    | while IFS=$'\t' read -r manifest exe; do
        if ! "${as_nobody[@]}" head -c 1 "$exe" >/dev/null; then
            echo "error: nobody cannot run $exe" >&2
            exit 1
        fi
        (cd "$(dirname "$manifest")" \
            && "${as_nobody[@]}" env KILN_TEST_UNPRIVILEGED=1 PATH="$PATH" "$exe" --quiet)
    done

# Fuzzing (SECURITY.md G4): a short run of every target on its seeds and the corpus kept in
# fuzz/corpus; KILN_FUZZ_SECONDS per target (default 30; 0 skips). Needs the nightly
# toolchain (cargo fuzz); without one the stage is skipped with a note, a crash fails it.
# The long run is `fuzz/run.sh 3600` (fuzz/README.md).
fuzz_seconds=${KILN_FUZZ_SECONDS:-30}
if [ "$fuzz_seconds" = 0 ]; then
    echo "==> fuzzing skipped (KILN_FUZZ_SECONDS=0)"
elif ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "==> fuzzing SKIPPED: no nightly toolchain (rustup toolchain install nightly)"
else
    echo "==> fuzzing, ${fuzz_seconds}s per target (fuzz/run.sh)"
    fuzz/run.sh "$fuzz_seconds"
fi
