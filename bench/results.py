"""Shared by the benchmark scripts' reports (each runs `python3 - <<'PY'` from the repo
root with `sys.path.insert(0, "bench")`): medians from hyperfine's JSON, and one row per
comparison for bench/all.sh's table, appended as a JSON line to the file BENCH_RESULTS
names (nothing when it is unset)."""

import json
import os


def medians(path):
    """Each command's median in seconds, by its hyperfine name."""
    return {x["command"]: x["median"] for x in json.load(open(path))["results"]}


def spreads(path):
    """Each command's spread, (max - min) / median."""
    return {
        x["command"]: (max(x["times"]) - min(x["times"])) / x["median"]
        for x in json.load(open(path))["results"]
    }


def record(metric, kiln, peer_name, peer, bar, unit="ms", old=None, better="lower"):
    """One comparison: kiln's figure, the peer's, the bar the ratio kiln/peer is held to
    (text such as "<= 0.5"), kiln-old's figure when KILN_OLD was measured too. `better`
    says which way the figure improves ("lower" for times, "higher" for rates)."""
    path = os.environ.get("BENCH_RESULTS")
    if not path:
        return
    row = {
        "metric": metric,
        "unit": unit,
        "kiln": kiln,
        "old": old,
        "peer_name": peer_name,
        "peer": peer,
        "ratio": (kiln / peer) if peer else None,
        "bar": bar,
        "better": better,
    }
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
