#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 60), one after the other, on
# its checked-in seeds (seeds/TARGET, read-only) plus a working corpus (corpus/TARGET, kept
# between runs, not in git). Prints per target the executions, coverage (cov: edges,
# ft: features) and whether it crashed; exits 1 if any target crashed, timed out or ran
# out of memory (the input is in artifacts/TARGET/), 2 if the targets cannot be built.
# See README.md.
set -uo pipefail
cd "$(dirname "$0")"
fuzz_dir=$PWD
seconds=${1:-60}
toolchain=${KILN_FUZZ_TOOLCHAIN:-nightly}
cargo_fuzz_version=0.13.2

if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [SECONDS per target, default 60]" >&2
    exit 2
fi
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "error: cargo fuzz needs a nightly Rust toolchain ($toolchain); install one with" >&2
    echo "  rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz $cargo_fuzz_version"
    if ! cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked; then
        echo "error: cannot install cargo-fuzz; install it with" >&2
        echo "  cargo install cargo-fuzz --version $cargo_fuzz_version --locked" >&2
        exit 2
    fi
fi

targets=$(cargo "+$toolchain" fuzz list) || exit 2
echo "==> cargo +$toolchain fuzz build (libFuzzer, AddressSanitizer, debug assertions)"
cargo "+$toolchain" fuzz build || exit 2

# Scratch folders of the targets (layer_apply's layer dirs), on tmpfs when there is one.
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
KILN_FUZZ_TMP=$(mktemp -d "$shm/kiln-fuzz.XXXXXX") || exit 2
export KILN_FUZZ_TMP
logs=$fuzz_dir/target/logs
mkdir -p "$logs"
trap 'rm -rf "$KILN_FUZZ_TMP"' EXIT

declare -A max_len=([layer_apply]=32768 [spec]=16384 [image_documents]=16384)
failed=()
rows=()
for target in $targets; do
    mkdir -p "corpus/$target" "artifacts/$target"
    extra=()
    [ -n "${max_len[$target]:-}" ] && extra+=("-max_len=${max_len[$target]}")
    log=$logs/$target.log
    echo "==> $target: ${seconds}s"
    # Absolute paths: layer_apply works in a folder of its own.
    cargo "+$toolchain" fuzz run "$target" "$fuzz_dir/corpus/$target" "$fuzz_dir/seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048 \
        -artifact_prefix="$fuzz_dir/artifacts/$target/" "${extra[@]}" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
    corpus=$(find "corpus/$target" -type f | wc -l)
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ "$rc" -eq 0 ]; then
        verdict="ok"
    else
        failed+=("$target")
        verdict="FAILED (exit $rc)"
        grep -Eo 'ERROR: libFuzzer: [a-z-]+|panicked at .*|ERROR: AddressSanitizer: [a-z-]+' "$log" | head -3 | sed 's/^/    /'
        tail -n 30 "$log" | sed 's/^/    | /'
        if [ -n "$artifact" ]; then
            verdict+=", input $artifact; reproduce: cargo +$toolchain fuzz run $target $artifact"
        else
            verdict+=", see $log"
        fi
    fi
    rows+=("$(printf '%-17s %12s execs %7s/s  %-22s corpus %5s  %s' "$target" "${execs:-?}" "${rate:-?}" "${cov:-cov: ?}" "$corpus" "$verdict")")
done

echo "==> fuzzing, ${seconds}s per target (logs in $logs)"
printf '%s\n' "${rows[@]}"
total=$(wc -w <<<"$targets")
echo "fuzz: $((total - ${#failed[@]})) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
