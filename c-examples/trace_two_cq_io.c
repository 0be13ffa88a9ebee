/* trace_two_cq_io: "Ops on CQ0, Input Writes and Output Readback on CQ1" in section "Combining Trace and Multiple
 * Command Queues" of tt-metal's guide "Advanced Performance Optimizations for Models": trace with a non-persistent L1
 * input, ops on CQ 0, input writes and output reads on CQ 1, four events, persistent DRAM input and output. (Where the
 * guide's capture block says `op_event` it means `first_op_event`, and `sharded_l1_mem_config` means
 * `input_sharded_l1_mem_config`.) ITERATIONS distinct inputs under jitter, checked in plain C. `--drop-wait NAME`
 * removes one wait. */
#include "mlp_ref.h"

int main(int argc, char **argv) {
  example ex;
  example_open(&ex, 17, 2, 800768);
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

  /* First run to compile the model; it also creates the persistent output in DRAM. */
  CHECK(ttdrv_device_wait_for_event(ex.dev, 1, first_op_event));
  CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, 0), in_bytes, false));
  CHECK(ttdrv_event_record(write_event, 1));
  CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_event_record(first_op_event, 0));
  CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output));
  CHECK(ttdrv_device_wait_for_event(ex.dev, 0, read_event));
  CHECK(ttdrv_reshard(output, 0, &out_dram_mc, &output_dram));
  CHECK(ttdrv_event_record(last_op_event, 0));

  /* Capture the model. */
  CHECK(ttdrv_device_wait_for_event(ex.dev, 1, first_op_event));
  CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, 0), in_bytes, false));
  CHECK(ttdrv_event_record(write_event, 1));
  CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_event_record(first_op_event, 0));
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

  /* The first write happens before the loop; each iteration writes the next input before reading its output. */
  if (keep_wait(argc, argv, "first_op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, first_op_event));
  CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, 0), in_bytes, false));
  CHECK(ttdrv_event_record(write_event, 1));
  for (uint32_t it = 0; it < ITERATIONS; it++) {
    if (keep_wait(argc, argv, "write_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
    CHECK(ttdrv_reshard_into(input_dram, 0, input_l1));
    CHECK(ttdrv_event_record(first_op_event, 0));
    CHECK(ttdrv_trace_execute(ex.dev, tid, 0, false));
    if (keep_wait(argc, argv, "read_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 0, read_event));
    CHECK(ttdrv_reshard_into(output, 0, output_dram));
    CHECK(ttdrv_event_record(last_op_event, 0));

    if (it + 1 < ITERATIONS) {
      if (keep_wait(argc, argv, "first_op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, first_op_event));
      CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, (it + 1)), in_bytes, false));
      CHECK(ttdrv_event_record(write_event, 1));
    }
    if (keep_wait(argc, argv, "last_op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, last_op_event));
    CHECK(ttdrv_buffer_read(output_dram, 1, false, example_output(&ex, it), out_bytes));
    CHECK(ttdrv_event_record(read_event, 1));
  }
  CHECK(ttdrv_device_synchronize(ex.dev));

  size_t checked = example_verify(&ex);
  printf("trace_two_cq_io: checked %zu values over %u replays\n", checked, ITERATIONS);
  CHECK(ttdrv_trace_release(ex.dev, tid));
  CHECK(ttdrv_buffer_free(output));
  CHECK(ttdrv_buffer_free(output_dram));
  CHECK(ttdrv_buffer_free(input_l1));
  CHECK(ttdrv_buffer_free(input_dram));
  CHECK(ttdrv_event_free(first_op_event));
  CHECK(ttdrv_event_free(write_event));
  CHECK(ttdrv_event_free(last_op_event));
  CHECK(ttdrv_event_free(read_event));
  example_close(&ex);
  return 0;
}
