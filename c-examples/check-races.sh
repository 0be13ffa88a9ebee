#!/usr/bin/env bash
# Proves the two-queue examples can fail: each runs with one of its waits removed, under heavier emulator jitter,
# and must report wrong outputs. Prints PASS/FAIL per (example, wait) and exits non-zero if any ran clean.
set -uo pipefail
cd "$(dirname "$0")"
# A race shows up with high probability per run; up to three seeded runs must show it at least once. Only the queue
# that the removed wait should have held back behind the other one is delayed (the third column), which makes the
# race likely instead of requiring one queue's random delays to outrun the other's.
fail=0
while read -r ex wait delayed; do
  [ -x "build/$ex" ] || { echo "FAIL $ex --drop-wait $wait (not built: run make first)"; fail=1; continue; }
  shown=""
  for seed in 11 12 13; do
    out=$(TTDRV_EXAMPLE_DEVICE="emu:jitter=$seed,jitter_us=500,jitter_pct=50,jitter_queues=$delayed" \
      "./build/$ex" --drop-wait "$wait" 2>&1)
    if [ $? -ne 0 ] && grep -q "wrong outputs" <<<"$out"; then
      shown="seed $seed: $(grep -o 'wrong outputs in [0-9]* of [0-9]* iterations' <<<"$out")"
      break
    fi
  done
  if [ -n "$shown" ]; then
    echo "PASS $ex --drop-wait $wait ($shown)"
  elif grep -q "checked" <<<"$out"; then
    echo "FAIL $ex --drop-wait $wait: three jittered runs without the wait all produced correct outputs"
    fail=1
  else
    echo "FAIL $ex --drop-wait $wait: the example did not run: $(tail -n 1 <<<"$out")"
    fail=1
  fi
done <<'LIST'
two_cq_writes write_event 1
two_cq_writes op_event 0
two_cq_io write_event 1
two_cq_io first_op_event 0
two_cq_io last_op_event 0
two_cq_io read_event 1
trace_two_cq_writes write_event 1
trace_two_cq_writes op_event 0
trace_two_cq_io write_event 1
trace_two_cq_io first_op_event 0
trace_two_cq_io last_op_event 0
trace_two_cq_io read_event 1
trace_events_writes write_event 1
trace_events_writes op_event 0
trace_events_io write_event 1
trace_events_io first_op_event 0
trace_events_io last_op_event 0
trace_events_io read_event 1
LIST
exit $fail
