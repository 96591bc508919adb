# shellcheck shell=bash
# Shared by the test scripts (source it): named steps that record PASS/FAIL without
# aborting the script, and the closing summary line `NAME: N passed, N failed`.
# The sourcing script defines say().

passed=0
failed=0
failures=()

# run_step NAME COMMAND...: runs one test step, records its result, never aborts.
run_step() {
  local name=$1
  shift
  say ""
  say "=== $name"
  local began=$SECONDS
  if "$@"; then
    say "--- PASS $name ($((SECONDS - began))s)"
    passed=$((passed + 1))
    return 0
  fi
  say "--- FAIL $name ($((SECONDS - began))s)"
  failed=$((failed + 1))
  failures+=("$name")
  return 1
}

# finish_steps SUITE: prints the failed steps and the summary; returns non-zero on any
# failure.
finish_steps() {
  local f
  say ""
  if ((failed)); then
    say "failed steps:"
    for f in "${failures[@]}"; do
      say "  - $f"
    done
  fi
  say "$1: $passed passed, $failed failed"
  ((failed == 0))
}
