#!/usr/bin/env bash
# Fuzzing (issue 7): runs each cargo-fuzz target for SECONDS (default 60)
# and prints its executions, coverage and findings. Not part of CI's time
# budget; results go in RELIABILITY.md ("Fuzzing").
#   targets: validate_bytes, validate_tree, webhook (fuzz/fuzz_targets/)
# usage: bench/fuzz.sh [SECONDS] [TARGET...]
# The corpus grows in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>,
# not committed); crashes land in fuzz/artifacts/<target>/. cargo-fuzz needs
# nightly features: on a stable toolchain RUSTC_BOOTSTRAP=1 enables them.
# Reproduce a finding: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_PER=${1:-60}; shift || true
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(validate_bytes validate_tree webhook)
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "cargo install cargo-fuzz" >&2; exit 2; }
cargo fuzz build >/dev/null 2>&1 || { cargo fuzz build; exit 2; }
status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
  before=$(ls "artifacts/$t" | wc -l)
  log=$(mktemp)
  cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECONDS_PER" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1
  rc=$?
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  persec=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9/a-zA-Z]*\).*/\1/p' <<<"$last")
  after=$(ls "artifacts/$t" | wc -l)
  printf '%-15s %4ss  execs %-10s (%s/s)  cov %-6s ft %-6s corpus %-12s findings %s (rc %s)\n' \
    "$t" "$SECONDS_PER" "${execs:-?}" "${persec:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" \
    "$((after - before))" "$rc"
  if [ "$rc" -ne 0 ]; then
    status=1
    grep -E 'panicked at|^SUMMARY|Test unit written to' "$log" | head -5 | sed 's/^/    /'
  fi
  rm -f "$log"
done
exit $status
