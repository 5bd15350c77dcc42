#!/usr/bin/env bash
# Bridge networks, kiln vs podman (netavark, with runc), side by side in one hyperfine run
# each, on the same busybox image:
# 1. start: `run --rm -p PORT:80 IMG true` for both, and kiln's `--network none` for the
#    cost of the bridge itself (bars, issue 15: kiln/podman <= 0.25, kiln bridge+port /
#    kiln none <= 3);
# 2. throughput through a published port: curl on the host fetches a 100 MB file from
#    busybox httpd in the container over 127.0.0.1 (bar: kiln's throughput >= 0.9 ×
#    podman's, i.e. time kiln/podman <= 1.11).
# Needs root, podman, runc, hyperfine, curl, nft. Traffic stays on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require podman runc hyperfine busybox python3 tar curl nft
build_kiln

work=$(mktemp -d /tmp/kiln-bench-network.XXXXXX)
export KILN_ROOT=$work/store
# netavark turns ip_forward on and leaves it on: put back what the machine had.
forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
cleanup() {
    echo "$forward_before" > /proc/sys/net/ipv4/ip_forward
    $kiln rm -f bench-web >/dev/null 2>&1 || true
    "${podman[@]}" rm -f -t 0 bench-web >/dev/null 2>&1 || true
    "${podman[@]}" system reset -f >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
podman_with_image "$work"
podman_run=(run "${podman_ulimits[@]}")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)

# 1. Start and end of a container with a published port.
hyperfine --warmup 5 --runs 40 -N --export-json "$work/start.json" \
    -n kiln "$kiln run --rm -p $port:80 bench-bb true" \
    -n kiln-none "$kiln run --rm --network none bench-bb true" \
    -n podman "${podman[*]} ${podman_run[*]} --rm -p $port:80 localhost/bench-bb true"

# 2. 100 MB through a published port, container → host.
mkdir -p "$work/www"
head -c 100000000 /dev/urandom > "$work/www/big"
serve=(-v "$work/www:/www:ro" bench-bb httpd -f -p 80 -h /www)
kport=$(free_port)
pport=$(free_port)
$kiln run -d --name bench-web -p "127.0.0.1:$kport:80" "${serve[@]}" >/dev/null
"${podman[@]}" "${podman_run[@]}" -d --name bench-web -p "127.0.0.1:$pport:80" \
    -v "$work/www:/www:ro" localhost/bench-bb httpd -f -p 80 -h /www >/dev/null
for p in "$kport" "$pport"; do
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$p/big" && break
        sleep 0.1
    done
done
hyperfine --warmup 2 --runs 15 -N --export-json "$work/throughput.json" \
    -n kiln "curl -sf -o /dev/null http://127.0.0.1:$kport/big" \
    -n podman "curl -sf -o /dev/null http://127.0.0.1:$pport/big"

python3 - "$work/start.json" "$work/throughput.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
k, n, p = r["kiln"], r["kiln-none"], r["podman"]
print(f"run --rm -p: kiln {k*1000:.1f} ms, podman {p*1000:.1f} ms, ratio kiln/podman = {k/p:.2f} (bar <= 0.25)")
print(f"bridge+port vs none: kiln {k*1000:.1f} ms / {n*1000:.1f} ms = {k/n:.2f} (bar <= 3)")
t = {x["command"]: x["median"] for x in json.load(open(sys.argv[2]))["results"]}
mb = 100.0
print(f"100 MB through a published port: kiln {mb/t['kiln']:.0f} MB/s, podman {mb/t['podman']:.0f} MB/s, "
      f"throughput kiln/podman = {t['podman']/t['kiln']:.2f} (bar >= 0.9)")
PY
