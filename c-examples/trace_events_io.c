/* trace_events_io: "Ops on CQ0, Input Writes and Output Readback on CQ1" in section "Combining Trace and Multiple
 * Command Queues" of tt-metal's guide "Advanced Performance Optimizations for Models", with the staging op and every
 * event of queue 0 inside the trace (device contract 1.4), which tt-metal cannot do. The trace holds: wait for
 * `write_event`, the reshard of the DRAM input into the L1 input (the staging op), record `first_op_event`, the model,
 * wait for `read_event`, the reshard of the output into the persistent DRAM output, record `last_op_event`. Queue 1
 * writes the next input after `first_op_event` and reads the output after `last_op_event`; queue 0 only replays. The
 * replays' events get fresh ids each time, and the trace's waits wait for queue 1's latest records as of each replay.
 * ITERATIONS distinct inputs under jitter, checked in plain C. The L1 input is allocated by the staging op inside the
 * capture and freed by the model there, so it is the trace's own intermediate: no "re-allocate at the same address and
 * assert" step. `--drop-wait NAME` removes one wait (write_event and
 * read_event from the capture). */
#define ITERATIONS 1000u
#include "mlp_ref.h"

int main(int argc, char **argv) {
  example ex;
  example_open(&ex, 23, 2, 800768);
  const size_t in_bytes = ex.n_in * sizeof(float), out_bytes = ex.n_out * sizeof(float);

  ttdrv_event *first_op_event, *write_event, *last_op_event, *read_event;
  CHECK(ttdrv_event_new(ex.dev, &first_op_event));
  CHECK(ttdrv_event_new(ex.dev, &write_event));
  CHECK(ttdrv_event_new(ex.dev, &last_op_event));
  CHECK(ttdrv_event_new(ex.dev, &read_event));
  ttdrv_tensor_spec in_dram = spec_f32(MLP_BATCH, MLP_IN, mc_dram_height(4, MLP_BATCH, MLP_IN));
  ttdrv_memory_config in_l1 = mc_l1_height(4, MLP_BATCH, MLP_IN);
  ttdrv_memory_config out_dram_mc = mc_dram_height(4, MLP_BATCH, MLP_OUT);
  ttdrv_buffer *input_dram = NULL, *input_l1 = NULL, *output = NULL, *output_dram = NULL;
  CHECK(ttdrv_buffer_allocate(ex.dev, &in_dram, &input_dram));
  CHECK(ttdrv_event_record(first_op_event, 0));
  CHECK(ttdrv_event_record(read_event, 1));

  /* First run to compile the model and the two reshards; it also creates the persistent output in DRAM. */
  CHECK(ttdrv_device_wait_for_event(ex.dev, 1, first_op_event));
  CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, 0), in_bytes, false));
  CHECK(ttdrv_event_record(write_event, 1));
  CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_event_record(first_op_event, 0));
  CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output));
  CHECK(ttdrv_device_wait_for_event(ex.dev, 0, read_event));
  CHECK(ttdrv_reshard(output, 0, &out_dram_mc, &output_dram));
  CHECK(ttdrv_reshard_into(output, 0, output_dram));
  CHECK(ttdrv_event_record(last_op_event, 0));
  CHECK(ttdrv_device_finish(ex.dev, 0));
  CHECK(ttdrv_buffer_free(output));

  /* Capture everything queue 0 does in an iteration, events included. */
  uint32_t tid = 0;
  CHECK(ttdrv_trace_begin_capture(ex.dev, 0, &tid));
  if (keep_wait(argc, argv, "write_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_event_record(first_op_event, 0));
  CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output));
  if (keep_wait(argc, argv, "read_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 0, read_event));
  CHECK(ttdrv_reshard_into(output, 0, output_dram));
  CHECK(ttdrv_event_record(last_op_event, 0));
  CHECK(ttdrv_trace_end_capture(ex.dev, tid, 0));

  /* The first write happens before the loop; each iteration writes the next input before reading its output. */
  if (keep_wait(argc, argv, "first_op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, first_op_event));
  CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, 0), in_bytes, false));
  CHECK(ttdrv_event_record(write_event, 1));
  for (uint32_t it = 0; it < ITERATIONS; it++) {
    CHECK(ttdrv_trace_execute(ex.dev, tid, 0, false));
    if (it + 1 < ITERATIONS) {
      if (keep_wait(argc, argv, "first_op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, first_op_event));
      CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, it + 1), in_bytes, false));
      CHECK(ttdrv_event_record(write_event, 1));
    }
    if (keep_wait(argc, argv, "last_op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, last_op_event));
    CHECK(ttdrv_buffer_read(output_dram, 1, false, example_output(&ex, it), out_bytes));
    CHECK(ttdrv_event_record(read_event, 1));
  }
  CHECK(ttdrv_device_synchronize(ex.dev));

  size_t checked = example_verify(&ex);
  printf("trace_events_io: checked %zu values over %u replays\n", checked, ITERATIONS);
  CHECK(ttdrv_trace_release(ex.dev, tid));
  CHECK(ttdrv_buffer_free(output));
  CHECK(ttdrv_buffer_free(output_dram));
  CHECK(ttdrv_buffer_free(input_dram));
  CHECK(ttdrv_event_free(first_op_event));
  CHECK(ttdrv_event_free(write_event));
  CHECK(ttdrv_event_free(last_op_event));
  CHECK(ttdrv_event_free(read_event));
  example_close(&ex);
  return 0;
}
