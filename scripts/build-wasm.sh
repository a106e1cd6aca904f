#!/usr/bin/env bash
# Builds the filter's artifact, target/modelgate.wasm (`make wasm` runs this):
#   1. cargo builds modelgate-filter for wasm32-wasip1 with the `wasm` profile
#      (Cargo.toml: opt-level "z", LTO, symbols stripped) into
#      target/wasm32-wasip1/wasm/modelgate.wasm, an intermediate file;
#   2. binaryen's wasm-opt (Debian package `binaryen`, scripts/setup.sh installs it) optimises
#      that module for size into target/modelgate.wasm.
# target/modelgate.wasm is the one file everything else loads, embeds, ships or measures: the
# host's build.rs (`modelgate test`), the Rust and Python tests, the OCI image, the deploy's
# sha256, the benchmarks. LLVM's output leaves a lot for a whole-module optimiser: the
# numbers are in filter/README.md ("Size").
#
# wasm-opt must be told which WebAssembly features the module may use: the build strips the
# `target_features` section, and binaryen 108 (Debian 12) assumes the MVP without it. The list
# is exactly what rustc enables for wasm32-wasip1 (`rustc --print cfg`), so the optimiser can
# neither reject what LLVM emitted nor introduce an instruction Envoy's runtime was not already
# asked to run. -Oz is semantics-preserving: no --ignore-implicit-traps/-tnh, whose rewrites
# assume a trap never happens (a trap is part of the filter's behaviour: an outage in Envoy).
#
# Cargo makes step 1 a no-op when nothing changed; step 2 runs only when its input or this
# script is newer than its output. Set CARGO_TARGET_DIR to build elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR=${CARGO_TARGET_DIR:-target}
RAW=$TARGET_DIR/wasm32-wasip1/wasm/modelgate.wasm
OUT=$TARGET_DIR/modelgate.wasm

cargo build -p modelgate-filter --target wasm32-wasip1 --profile wasm

if [[ -f $OUT && $OUT -nt $RAW && $OUT -nt ${BASH_SOURCE[0]} ]]; then
    exit 0
fi

if ! command -v wasm-opt >/dev/null; then
    echo "build-wasm: wasm-opt (binaryen) is missing; run scripts/setup.sh (make setup)" >&2
    exit 2
fi

features=()
while read -r feature; do
    case $feature in
        bulk-memory) features+=(--enable-bulk-memory) ;;
        multivalue) features+=(--enable-multivalue) ;;
        mutable-globals) features+=(--enable-mutable-globals) ;;
        nontrapping-fptoint) features+=(--enable-nontrapping-float-to-int) ;;
        reference-types) features+=(--enable-reference-types) ;;
        sign-ext) features+=(--enable-sign-ext) ;;
        crt-static) ;; # a linking mode, not a WebAssembly feature
        *)
            echo "build-wasm: rustc enables the wasm feature '$feature', which this script does not map to a wasm-opt flag" >&2
            exit 2
            ;;
    esac
done < <(rustc --print cfg --target wasm32-wasip1 | sed -n 's/^target_feature="\(.*\)"$/\1/p')

# Written beside the output and renamed, so a reader never sees half a module.
wasm-opt "${features[@]}" -Oz "$RAW" -o "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "build-wasm: $OUT $(stat -c %s "$OUT") bytes (cargo's build: $(stat -c %s "$RAW") bytes)"
