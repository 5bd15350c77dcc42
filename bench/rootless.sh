#!/usr/bin/env bash
# Rootless kiln (issue 16), side by side in one hyperfine run, every command started the
# same way (setpriv to the user it runs as):
#   1. `kiln run --rm --network none IMG true`: rootless vs rootful (bar: <= 1.5x) and vs
#      rootless `podman run --rm` with runc as the same user (bar: <= 0.3x);
#   2. a fully cached rebuild of a 10-step spec: rootless vs rootful (bar: <= 2x);
#   3. root's `kiln run --rm --userns=auto` (a user namespace and idmapped root of the
#      container's own) vs root's plain run (no bar: the cost of the hardening).
# Makes a throwaway user with a subordinate id range (removed at the end).
# Needs root, hyperfine, busybox-static, uidmap, podman.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require hyperfine busybox python3 podman setpriv newuidmap
build_kiln

user=kilnbench$$
work=$(mktemp -d /tmp/kiln-bench-rootless.XXXXXX)
chmod 0755 "$work"
cleanup() {
    pkill -KILL -u "$user" 2>/dev/null || true
    sleep 0.2
    usermod --del-subuids 1900000000-1900065535 --del-subgids 1900000000-1900065535 "$user" 2>/dev/null || true
    userdel --remove "$user" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
useradd --system --create-home --home-dir "/home/$user" --shell /bin/sh --user-group "$user"
usermod --add-subuids 1900000000-1900065535 --add-subgids 1900000000-1900065535 "$user"
install -m 0755 "$kiln" "$work/kiln"
as_user=(setpriv --reuid "$user" --regid "$user" --init-groups --reset-env --)
as_root=(setpriv --reuid 0 --regid 0 --keep-groups --)

busybox_rootfs "$work/base"
chmod -R a+rX "$work/base"
tar -C "$work/base" -cf "$work/base.tar" .
chmod a+r "$work/base.tar"
root_store=$work/root-store
"$work/kiln" --root "$root_store" -q import "$work/base" -t bench-bb >/dev/null
(cd /tmp && "${as_user[@]}" "$work/kiln" -q import "$work/base" -t bench-bb >/dev/null)
podman=(podman --runtime runc --cgroup-manager cgroupfs --events-backend none --log-level error)
(cd /tmp && "${as_user[@]}" "${podman[@]}" import -q "$work/base.tar" localhost/bench-bb >/dev/null)

mkdir -p "$work/app"
{
    echo "image: bench-cache"
    echo "from: bench-bb"
    for i in 1 2 3 4 5 6 7 8 9 10; do
        echo "  - run: echo step $i > /s$i"
        echo "    network: none"
    done
} | sed '3i steps:' > "$work/app/kiln.yaml"
chmod -R a+rX "$work/app"
"$work/kiln" --root "$root_store" -q build "$work/app" >/dev/null
(cd "$work/app" && "${as_user[@]}" "$work/kiln" -q build >/dev/null)

run=(run --rm --network none bench-bb true)
hyperfine --warmup 5 --runs 40 -N --export-json "$work/run.json" \
    -n rootful "${as_root[*]} $work/kiln --root $root_store ${run[*]}" \
    -n rootful-userns-auto "${as_root[*]} $work/kiln --root $root_store run --rm --network none --userns=auto bench-bb true" \
    -n rootless "${as_user[*]} $work/kiln ${run[*]}" \
    -n podman-rootless "${as_user[*]} ${podman[*]} ${run[*]}"
hyperfine --warmup 3 --runs 30 -N --export-json "$work/build.json" \
    -n rootful "${as_root[*]} $work/kiln --root $root_store -q build $work/app" \
    -n rootless "${as_user[*]} $work/kiln -q build $work/app"

python3 - "$work/run.json" "$work/build.json" <<'PY'
import json, sys
med = lambda f: {x["command"]: x["median"] * 1000 for x in json.load(open(f))["results"]}
r, b = med(sys.argv[1]), med(sys.argv[2])
print(f"run --rm true: rootless {r['rootless']:.1f} ms, rootful {r['rootful']:.1f} ms "
      f"({r['rootless']/r['rootful']:.2f}x, bar <= 1.5), podman rootless {r['podman-rootless']:.1f} ms "
      f"(kiln/podman {r['rootless']/r['podman-rootless']:.2f}, bar <= 0.3)")
print(f"run --rm --userns=auto true (root): {r['rootful-userns-auto']:.1f} ms, "
      f"{r['rootful-userns-auto']/r['rootful']:.2f}x root's plain run")
print(f"cached 10-step build: rootless {b['rootless']:.1f} ms, rootful {b['rootful']:.1f} ms "
      f"({b['rootless']/b['rootful']:.2f}x, bar <= 2)")
PY
