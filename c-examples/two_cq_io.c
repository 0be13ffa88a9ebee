/* two_cq_io: "Ops on CQ0, Input Writes and Output Readback on CQ1" in section "Multiple Command Queues" of tt-metal's
 * guide "Advanced Performance Optimizations for Models": ops on CQ 0, input writes and output reads on CQ 1, four
 * events, persistent input and output buffers in DRAM. The next input is written before the current output is read, so
 * CQ 1's reads overlap the next run of the model. ITERATIONS distinct inputs under jitter, every output checked
 * against the plain-C reference. `--drop-wait NAME` (write_event, first_op_event, last_op_event, read_event) removes
 * one wait. */
#include "mlp_ref.h"

int main(int argc, char **argv) {
  example ex;
  example_open(&ex, 11, 2, 0);

  ttdrv_event *first_op_event, *write_event, *last_op_event, *read_event;
  CHECK(ttdrv_event_new(ex.dev, &first_op_event));
  CHECK(ttdrv_event_new(ex.dev, &write_event));
  CHECK(ttdrv_event_new(ex.dev, &last_op_event));
  CHECK(ttdrv_event_new(ex.dev, &read_event));
  ttdrv_tensor_spec in_dram = spec_f32(MLP_BATCH, MLP_IN, mc_dram_height(4, MLP_BATCH, MLP_IN));
  ttdrv_tensor_spec out_dram = spec_f32(MLP_BATCH, MLP_OUT, mc_dram_height(4, MLP_BATCH, MLP_OUT));
  ttdrv_memory_config in_l1 = mc_l1_height(4, MLP_BATCH, MLP_IN);
  ttdrv_buffer *input_dram = NULL, *output_dram = NULL;
  CHECK(ttdrv_buffer_allocate(ex.dev, &in_dram, &input_dram));
  CHECK(ttdrv_buffer_allocate(ex.dev, &out_dram, &output_dram));

  CHECK(ttdrv_event_record(first_op_event, 0));
  CHECK(ttdrv_event_record(read_event, 1));
  /* The first write happens before the loop; each iteration writes the next input before reading its output. */
  if (keep_wait(argc, argv, "first_op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, first_op_event));
  CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, 0), ex.n_in * sizeof(float), false));
  CHECK(ttdrv_event_record(write_event, 1));
  for (uint32_t it = 0; it < ITERATIONS; it++) {
    if (keep_wait(argc, argv, "write_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
    ttdrv_buffer *input_l1 = NULL, *output = NULL;
    CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
    CHECK(ttdrv_event_record(first_op_event, 0));
    CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output));
    if (keep_wait(argc, argv, "read_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 0, read_event));
    CHECK(ttdrv_reshard_into(output, 0, output_dram));
    CHECK(ttdrv_event_record(last_op_event, 0));
    CHECK(ttdrv_buffer_free(output));

    if (it + 1 < ITERATIONS) {
      if (keep_wait(argc, argv, "first_op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, first_op_event));
      CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, (it + 1)), ex.n_in * sizeof(float), false));
      CHECK(ttdrv_event_record(write_event, 1));
    }
    if (keep_wait(argc, argv, "last_op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, last_op_event));
    CHECK(ttdrv_buffer_read(output_dram, 1, false, example_output(&ex, it), ex.n_out * sizeof(float)));
    CHECK(ttdrv_event_record(read_event, 1));
  }
  CHECK(ttdrv_device_synchronize(ex.dev));

  size_t checked = example_verify(&ex);
  printf("two_cq_io: checked %zu values over %u iterations\n", checked, ITERATIONS);
  CHECK(ttdrv_buffer_free(input_dram));
  CHECK(ttdrv_buffer_free(output_dram));
  CHECK(ttdrv_event_free(first_op_event));
  CHECK(ttdrv_event_free(write_event));
  CHECK(ttdrv_event_free(last_op_event));
  CHECK(ttdrv_event_free(read_event));
  example_close(&ex);
  return 0;
}
