/* trace_two_cq_writes: "Ops and Output Readback on CQ0, Input Writes on CQ1" in section "Combining Trace and Multiple
 * Command Queues" of tt-metal's guide "Advanced Performance Optimizations for Models": trace with a non-persistent L1
 * input, ops and output readback on CQ 0, input writes on CQ 1. The trace's input is the output of the first op (a
 * reshard from the persistent DRAM input into the L1 input in place), which is not captured because events must follow
 * it. ITERATIONS distinct inputs under jitter, checked in plain C. `--drop-wait write_event|op_event` removes one
 * wait. */
#include "mlp_ref.h"

int main(int argc, char **argv) {
  example ex;
  example_open(&ex, 13, 2, 800768);
  const size_t in_bytes = ex.n_in * sizeof(float), out_bytes = ex.n_out * sizeof(float);

  ttdrv_event *op_event, *write_event;
  CHECK(ttdrv_event_new(ex.dev, &op_event));
  CHECK(ttdrv_event_new(ex.dev, &write_event));
  ttdrv_tensor_spec in_dram = spec_f32(MLP_BATCH, MLP_IN, mc_dram_height(4, MLP_BATCH, MLP_IN));
  ttdrv_memory_config in_l1 = mc_l1_height(4, MLP_BATCH, MLP_IN);
  ttdrv_buffer *input_dram = NULL, *input_l1 = NULL, *output = NULL;
  CHECK(ttdrv_buffer_allocate(ex.dev, &in_dram, &input_dram));
  CHECK(ttdrv_event_record(op_event, 0));

  /* First run to compile the model. */
  CHECK(ttdrv_device_wait_for_event(ex.dev, 1, op_event));
  CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, 0), in_bytes, false));
  CHECK(ttdrv_event_record(write_event, 1));
  CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_event_record(op_event, 0));
  CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output));

  /* Capture the model (not the first op, which events must follow). */
  CHECK(ttdrv_device_wait_for_event(ex.dev, 1, op_event));
  CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, 0), in_bytes, false));
  CHECK(ttdrv_event_record(write_event, 1));
  CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_event_record(op_event, 0));
  uint64_t input_trace_addr = 0, addr = 0;
  CHECK(ttdrv_buffer_address(input_l1, &input_trace_addr));
  ttdrv_tensor_spec spec;
  CHECK(ttdrv_buffer_get_spec(input_l1, &spec));
  CHECK(ttdrv_buffer_free(output));
  uint32_t tid = 0;
  CHECK(ttdrv_trace_begin_capture(ex.dev, 0, &tid));
  CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output));
  CHECK(ttdrv_buffer_allocate(ex.dev, &spec, &input_l1));
  CHECK(ttdrv_buffer_address(input_l1, &addr));
  EXPECT(addr == input_trace_addr, "input re-allocated at %#llx, but the trace captured %#llx",
         (unsigned long long)addr, (unsigned long long)input_trace_addr);
  CHECK(ttdrv_trace_end_capture(ex.dev, tid, 0));

  for (uint32_t it = 0; it < ITERATIONS; it++) {
    if (keep_wait(argc, argv, "op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, op_event));
    CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, it), in_bytes, false));
    CHECK(ttdrv_event_record(write_event, 1));
    if (keep_wait(argc, argv, "write_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
    CHECK(ttdrv_reshard_into(input_dram, 0, input_l1)); /* in place: the trace's input address */
    CHECK(ttdrv_event_record(op_event, 0));
    CHECK(ttdrv_trace_execute(ex.dev, tid, 0, false));
    CHECK(ttdrv_buffer_read(output, 0, false, example_output(&ex, it), out_bytes));
  }
  CHECK(ttdrv_device_finish(ex.dev, 0));

  size_t checked = example_verify(&ex);
  printf("trace_two_cq_writes: checked %zu values over %u replays\n", checked, ITERATIONS);
  CHECK(ttdrv_trace_release(ex.dev, tid));
  CHECK(ttdrv_buffer_free(output));
  CHECK(ttdrv_buffer_free(input_l1));
  CHECK(ttdrv_buffer_free(input_dram));
  CHECK(ttdrv_event_free(op_event));
  CHECK(ttdrv_event_free(write_event));
  example_close(&ex);
  return 0;
}
