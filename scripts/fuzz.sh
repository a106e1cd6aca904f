#!/usr/bin/env bash
# Run every cargo-fuzz target of fuzz/ for a bounded time and report runs and crashes.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Defaults: 30 s per target, every target. Needs the nightly toolchain (cargo-fuzz builds with
# sanitizers); installs cargo-fuzz from crates.io when it is missing. Inputs that crash are kept
# in fuzz/artifacts/<target>/ and make the script exit 1: turn each into a regression test in
# policies/tests/regressions.rs. The growing corpus lives in fuzz/corpus/<target>/ (not committed);
# the committed seeds in fuzz/seeds/<target>/ start it.
set -euo pipefail

seconds="${1:-30}"
shift || true
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
    echo "usage: scripts/fuzz.sh [seconds-per-target>0] [target...]" >&2
    exit 2
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is required: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "fuzz: building ${targets[*]}"
cargo +nightly fuzz build

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=()
printf '%-10s %12s %8s %s\n' target runs seconds result
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    seeds=()
    [[ -d "seeds/$target" ]] && seeds=("seeds/$target")
    # -dict: JSON/KServe/JWT vocabulary; -timeout: an input that takes 10 s is a hang;
    # -rss_limit_mb bounds memory on a shared box.
    if cargo +nightly fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
        -dict=json.dict -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 \
        >"$logs/$target" 2>&1; then
        result=ok
    else
        result="CRASH (see fuzz/artifacts/$target/)"
        failed+=("$target")
    fi
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target" | tail -1)"
    printf '%-10s %12s %8s %s\n' "$target" "${runs:-?}" "$seconds" "$result"
    if [[ "$result" != ok ]]; then
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$logs/$target" | head -8 | sed 's/^/    /'
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no crashes"
