# Sourced by scripts/test: runs the integration test binaries in two lanes at once.
#
# Why lanes: a local VM has one vCPU (size small), and under TCG that is one host core. Run one
# test binary after another and a single-VM test leaves the second core idle for most of the
# suite; the HA test (three VMs) alone takes about half of it. So the HA test runs in one lane
# and everything else, one binary after another, in the other. Each binary's output is kept in
# a log and printed whole when it ends (never interleaved with the other lane), with its time.
#
#   run_lanes FEATURES -- LANE1_BINARIES... -- LANE2_BINARIES...
#
# A binary named "NAME+" runs with `--nocapture` (its own progress lines, with the numbers it
# measures, end up in the CI log). Every binary runs even after a failure; the return status is
# 1 when any failed, and the failed ones are listed last.

lanes_dir=""

# Runs one test binary (already built), logging to $lanes_dir/NAME.log; prints the log under a
# lock so that the two lanes' reports never mix.
run_binary() {
  local features=$1 lane=$2 spec=$3 name extra=() started rc=0
  name=${spec%+}
  [ "$spec" != "$name" ] && extra=(-- --nocapture)
  started=$(date +%s)
  case $name in
    :lib) cargo test --features "$features" --locked --lib --bins "${extra[@]}" >"$lanes_dir/$name.log" 2>&1 || rc=$? ;;
    :doc) cargo test --features "$features" --locked --doc "${extra[@]}" >"$lanes_dir/$name.log" 2>&1 || rc=$? ;;
    *) cargo test --features "$features" --locked --test "$name" "${extra[@]}" >"$lanes_dir/$name.log" 2>&1 || rc=$? ;;
  esac
  local took=$(( $(date +%s) - started )) verdict=ok
  [ "$rc" -eq 0 ] || { verdict="FAILED (exit $rc)"; echo "$name" >>"$lanes_dir/failed"; }
  {
    flock 9
    echo "== [lane $lane] $name: $verdict in $took s"
    sed "s/^/   /" "$lanes_dir/$name.log"
  } 9>"$lanes_dir/print.lock"
}

run_lane() {
  local features=$1 lane=$2 spec
  shift 2
  for spec in "$@"; do
    run_binary "$features" "$lane" "$spec"
  done
}

run_lanes() {
  local features=$1 one=() two=()
  shift
  [ "$1" = "--" ] && shift
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do one+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  two=("$@")
  lanes_dir=$(mktemp -d)
  # Everything is compiled first, once: the lanes then only run (cargo's build lock is not
  # held while tests run, so the two lanes' `cargo test` calls do not wait for each other).
  cargo test --features "$features" --locked --no-run
  run_lane "$features" 1 "${one[@]}" &
  local first=$!
  run_lane "$features" 2 "${two[@]}"
  wait "$first"
  if [ -s "$lanes_dir/failed" ]; then
    echo "== failed test binaries: $(tr '\n' ' ' <"$lanes_dir/failed")"
    rm -rf "$lanes_dir"
    return 1
  fi
  rm -rf "$lanes_dir"
}
