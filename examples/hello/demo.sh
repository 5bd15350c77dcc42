#!/usr/bin/env bash
# Builds kiln, builds examples/hello with it, runs the image and fetches its page.
# Needs root (namespaces, overlayfs). Installs busybox-static (the example's base), and,
# until `kiln run` lands, umoci and runc to run the image.
set -euo pipefail
cd "$(dirname "$0")/../.."

need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
missing=()
need busybox busybox-static
need umoci umoci
need runc runc
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --quiet
kiln=target/release/kiln
# gzip layers only because Debian's umoci, used below until `kiln run` lands, predates zstd.
$kiln build examples/hello --compression gzip

bundle=$(mktemp -d /tmp/kiln-hello.XXXXXX)
name="kiln-hello-$$"
cleanup() { runc kill "$name" KILL 2>/dev/null || true; runc delete -f "$name" 2>/dev/null || true; rm -rf "$bundle"; }
trap cleanup EXIT
root=${KILN_ROOT:-/var/lib/kiln}
umoci unpack --image "$root:localhost/hello:latest" "$bundle/b" >/dev/null
# Share the host's network so the page is reachable on 127.0.0.1:8080, without a tty.
python3 - "$bundle/b/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
json.dump(c, open(p, "w"))
PY
runc run -b "$bundle/b" "$name" >/dev/null 2>&1 &
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
