#!/usr/bin/env bash
# Mutation testing of policies/ with cargo-mutants (config: .cargo/mutants.toml).
#
#   scripts/mutants.sh                 every mutant of policies/src (`make mutants`; hours on 2 cores)
#   scripts/mutants.sh --in-diff       only mutants on lines this checkout changes against main's
#                                      merge-base, committed or not (`make test`)
#   scripts/mutants.sh [--in-diff] [--skip-slow] [cargo-mutants args...]
#                                      e.g. -f policies/src/kserve_v2.rs --baseline skip --timeout 300
#   --skip-slow                        leave out the one slow unit test (a million rate-limit keys,
#                                      ~6 s of CPU per mutant): for files it does not exercise,
#                                      i.e. all but ratelimit.rs, ratelimit/slots.rs and store.rs
#
# Builds go to target/mutants-build (override with CARGO_TARGET_DIR) with Cargo.toml's `mutants`
# profile, so the dependencies are built once, optimised, and reused by every later run; each
# mutant then rebuilds only modelgate-policies. Run one job (the default): two jobs would share
# that target directory and, since cargo names a workspace crate's artifacts the same whichever
# copy of the tree builds them, test each other's builds. For two runs at once, give each its
# own CARGO_TARGET_DIR.
#
# A mutant that no test catches is a rule no test states: add the test (docs/mutants.md lists
# the survivors judged equivalent or harmless). Results go to mutants.out/ (not committed).
# With --in-diff and no change under policies/src, it exits 0 at once without building, so a
# clean checkout of main costs nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/mutants-build}"

args=()
# Unit and integration tests; doc tests catch nothing the others do not.
test_args=(-- --lib --tests)
if [[ ${1:-} == --in-diff ]]; then
    shift
    # main's merge-base; where there is no `main` branch (a CI checkout of main itself),
    # HEAD: then only uncommitted changes count.
    base=$(git merge-base HEAD main 2>/dev/null || git rev-parse HEAD)
    diff_file="$(mktemp)"
    trap 'rm -f "$diff_file"' EXIT
    git diff "$base" -- 'policies/src/*.rs' ':!policies/src/**/tests.rs' >"$diff_file"
    if [[ ! -s $diff_file ]]; then
        echo "mutants: no change under policies/src against ${base:0:12}; nothing to test"
        exit 0
    fi
    args+=(--in-diff "$diff_file")
fi
if [[ ${1:-} == --skip-slow ]]; then
    shift
    test_args+=(-- --skip a_million_distinct_keys_stay_within_max_keys)
fi

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "mutants: installing cargo-mutants" >&2
    cargo install cargo-mutants --locked
fi
exec cargo mutants -p modelgate-policies "${args[@]}" "$@" "${test_args[@]}"
