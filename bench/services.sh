#!/usr/bin/env bash
# Services, kiln vs podman (with runc, as the issue asks): `run -d` until the command is
# running, and `exec C true` into a running container, side by side in one hyperfine run
# each. Same busybox image, `--network none` for both (bench/network.sh times the bridges), podman on a
# store of its own in a temp dir. Prints the medians and the ratios kiln/podman
# (bar: <= 0.5 each, issue 14), and the resident memory of the process that watches a
# running container: kiln's monitor and podman's conmon (bar: <= 2 MiB). Needs root,
# podman, runc, hyperfine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
require podman runc hyperfine busybox python3 tar
build_kiln

work=$(mktemp -d /tmp/kiln-bench-services.XXXXXX)
export KILN_ROOT=$work/store
cleanup() {
    $kiln rm -f bench-d bench-exec bench-health >/dev/null 2>&1 || true
    "${podman[@]}" rm -f -t 0 bench-d bench-exec >/dev/null 2>&1 || true
    "${podman[@]}" system reset -f >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
podman_with_image "$work"
podman_run=(run "${podman_ulimits[@]}" --network none)

# run -d: each timed run starts a fresh container; removing the last one is not timed.
hyperfine --warmup 3 --runs 30 -N --export-json "$work/run.json" \
    --prepare "sh -c '$kiln rm -f bench-d >/dev/null 2>&1; true'" \
    -n kiln "$kiln run -d --network none --name bench-d bench-bb sleep 100000" \
    --prepare "sh -c '${podman[*]} rm -f -t 0 bench-d >/dev/null 2>&1; true'" \
    -n podman "${podman[*]} ${podman_run[*]} -d --name bench-d localhost/bench-bb sleep 100000"

$kiln run -d --network none --name bench-exec bench-bb sleep 100000 >/dev/null
"${podman[@]}" "${podman_run[@]}" -d --name bench-exec localhost/bench-bb sleep 100000 >/dev/null
hyperfine --warmup 5 --runs 50 -N --export-json "$work/exec.json" \
    -n kiln "$kiln exec bench-exec true" \
    -n podman "${podman[*]} exec bench-exec true"

# Both have served an exec by now; a probe every second keeps kiln's monitor busier.
$kiln run -d --network none --name bench-health --health-cmd true --health-interval 1s \
    bench-bb sleep 100000 >/dev/null
sleep 3
kiln_monitor() { $kiln inspect "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Id"])'; }
monitor_pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' \
    "$KILN_ROOT/containers/$(kiln_monitor bench-exec)/state.json")
health_pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' \
    "$KILN_ROOT/containers/$(kiln_monitor bench-health)/state.json")
conmon_pid=$("${podman[@]}" inspect bench-exec --format '{{.State.ConmonPid}}')

python3 - "$work/run.json" "$work/exec.json" "$monitor_pid" "$health_pid" "$conmon_pid" <<'PY'
import json, sys
for what, path in (("run -d", sys.argv[1]), ("exec true", sys.argv[2])):
    r = {x["command"]: x["median"] for x in json.load(open(path))["results"]}
    k, p = r["kiln"], r["podman"]
    print(f"{what}: kiln {k*1000:.1f} ms, podman {p*1000:.1f} ms, ratio kiln/podman = {k/p:.2f} (bar <= 0.5)")
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
k, h, c = (rss(p) for p in sys.argv[3:6])
print(f"monitor RSS: kiln {k} kB ({h} kB with a healthcheck every second), "
      f"podman's conmon {c} kB (bar <= 2048 kB)")
PY
