#!/usr/bin/env bash
# Builds kiln, builds examples/hello with it, runs the image and fetches its page.
# Needs root (namespaces, overlayfs, cgroups). Installs busybox-static (the example's base) and nftables.
set -euo pipefail
cd "$(dirname "$0")/../.."

# busybox-static is the example's base; nftables gives the bridge network its NAT and
# published ports.
missing=()
command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --quiet
kiln=target/release/kiln
$kiln build examples/hello

# The spec's run: section gives the limits, dropped capabilities, read-only root and the
# published port: the container has its own address on kiln's bridge, its page is on the
# host's 127.0.0.1:8080.
$kiln run --rm hello &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    # Plain bash HTTP, so the demo needs no client tool.
    if page=$(timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 && printf "GET / HTTP/1.0\r\n\r\n" >&3 && sed "1,/^\r$/d" <&3' 2>/dev/null) && [ -n "$page" ]; then
        echo "==> the hello image answers: $page"
        exit 0
    fi
    sleep 0.1
done
echo "the hello image did not answer on 127.0.0.1:8080" >&2
exit 1
