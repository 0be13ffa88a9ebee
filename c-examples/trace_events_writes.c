/* trace_events_writes: "Ops and Output Readback on CQ0, Input Writes on CQ1" in section "Combining Trace and Multiple
 * Command Queues" of tt-metal's guide "Advanced Performance Optimizations for Models", with the staging op and its
 * events inside the trace (device contract 1.4), which tt-metal cannot do. The guide keeps the first op (the reshard
 * from the persistent DRAM input into the L1 input) and its `op_event` outside the trace because a trace cannot record
 * or wait for events; here the trace holds the wait for `write_event`, the reshard, the record of `op_event` and the
 * model, so an iteration is: wait for `op_event`, write the input, record `write_event` (queue 1), replay, read the
 * output (queue 0). `op_event` is recorded by every replay with a fresh id, and the trace's wait for `write_event`
 * waits, at each replay, for the record made just before it. ITERATIONS distinct inputs under jitter, checked in plain
 * C. The L1 input is allocated by the staging op inside the capture and freed by the model there, so it is the
 * trace's own intermediate: no "re-allocate at the same address and assert" step. `--drop-wait write_event|op_event` removes one wait (the first from the capture). */
#define ITERATIONS 1000u
#include "mlp_ref.h"

int main(int argc, char **argv) {
  example ex;
  example_open(&ex, 19, 2, 800768);
  const size_t in_bytes = ex.n_in * sizeof(float), out_bytes = ex.n_out * sizeof(float);

  ttdrv_event *op_event, *write_event;
  CHECK(ttdrv_event_new(ex.dev, &op_event));
  CHECK(ttdrv_event_new(ex.dev, &write_event));
  ttdrv_tensor_spec in_dram = spec_f32(MLP_BATCH, MLP_IN, mc_dram_height(4, MLP_BATCH, MLP_IN));
  ttdrv_memory_config in_l1 = mc_l1_height(4, MLP_BATCH, MLP_IN);
  ttdrv_buffer *input_dram = NULL, *input_l1 = NULL, *output = NULL;
  CHECK(ttdrv_buffer_allocate(ex.dev, &in_dram, &input_dram));
  CHECK(ttdrv_event_record(op_event, 0));

  /* First run to compile the model (and the staging op). */
  CHECK(ttdrv_device_wait_for_event(ex.dev, 1, op_event));
  CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, 0), in_bytes, false));
  CHECK(ttdrv_event_record(write_event, 1));
  CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_event_record(op_event, 0));
  CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output));
  CHECK(ttdrv_device_finish(ex.dev, 0));
  CHECK(ttdrv_buffer_free(output));

  /* Capture the staging op with its events, and the model. */
  uint32_t tid = 0;
  CHECK(ttdrv_trace_begin_capture(ex.dev, 0, &tid));
  if (keep_wait(argc, argv, "write_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_event_record(op_event, 0));
  CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output));
  CHECK(ttdrv_trace_end_capture(ex.dev, tid, 0));
  /* op_event is the trace's now: recording it outside would be ambiguous, and is refused. */
  EXPECT(ttdrv_event_record(op_event, 1) == TTDRV_STATUS_INVALID_STATE, "recording a trace's event outside it");

  for (uint32_t it = 0; it < ITERATIONS; it++) {
    if (keep_wait(argc, argv, "op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, op_event));
    CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, it), in_bytes, false));
    CHECK(ttdrv_event_record(write_event, 1));
    CHECK(ttdrv_trace_execute(ex.dev, tid, 0, false));
    CHECK(ttdrv_buffer_read(output, 0, false, example_output(&ex, it), out_bytes));
  }
  CHECK(ttdrv_device_synchronize(ex.dev));

  size_t checked = example_verify(&ex);
  printf("trace_events_writes: checked %zu values over %u replays\n", checked, ITERATIONS);
  CHECK(ttdrv_trace_release(ex.dev, tid));
  CHECK(ttdrv_buffer_free(output));
  CHECK(ttdrv_buffer_free(input_dram));
  CHECK(ttdrv_event_free(op_event));
  CHECK(ttdrv_event_free(write_event));
  example_close(&ex);
  return 0;
}
