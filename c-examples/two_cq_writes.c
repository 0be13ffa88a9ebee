/* two_cq_writes: "Ops and Output Readback on CQ0, Input Writes on CQ1" in section "Multiple Command Queues" of tt-
 * metal's guide "Advanced Performance Optimizations for Models": ops and output readback on CQ 0, input writes on CQ
 * 1, ordered by two events. Runs ITERATIONS distinct inputs under emulator jitter and checks every output against the
 * plain-C reference. `--drop-wait write_event` or `--drop-wait op_event` removes a wait, which must then produce wrong
 * outputs. */
#include "mlp_ref.h"

int main(int argc, char **argv) {
  example ex;
  example_open(&ex, 7, 2, 0);

  ttdrv_event *op_event = NULL, *write_event = NULL;
  CHECK(ttdrv_event_new(ex.dev, &op_event));
  CHECK(ttdrv_event_new(ex.dev, &write_event));
  ttdrv_tensor_spec in_dram = spec_f32(MLP_BATCH, MLP_IN, mc_dram_height(4, MLP_BATCH, MLP_IN));
  ttdrv_memory_config in_l1 = mc_l1_height(4, MLP_BATCH, MLP_IN);
  ttdrv_buffer *input_dram = NULL;
  CHECK(ttdrv_buffer_allocate(ex.dev, &in_dram, &input_dram));

  /* Dummy record on CQ 0: the loop waits on it first. */
  CHECK(ttdrv_event_record(op_event, 0));
  for (uint32_t it = 0; it < ITERATIONS; it++) {
    if (keep_wait(argc, argv, "op_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 1, op_event));
    CHECK(ttdrv_buffer_write(input_dram, 1, example_input(&ex, it), ex.n_in * sizeof(float), false));
    CHECK(ttdrv_event_record(write_event, 1));
    if (keep_wait(argc, argv, "write_event")) CHECK(ttdrv_device_wait_for_event(ex.dev, 0, write_event));
    ttdrv_buffer *input_l1 = NULL, *output = NULL;
    CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
    CHECK(ttdrv_event_record(op_event, 0));
    CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output));
    CHECK(ttdrv_buffer_read(output, 0, false, example_output(&ex, it), ex.n_out * sizeof(float)));
    CHECK(ttdrv_buffer_free(output)); /* immediate; the read enqueued before it on CQ 0 runs first */
  }
  CHECK(ttdrv_device_finish(ex.dev, 0));

  size_t checked = example_verify(&ex);
  printf("two_cq_writes: checked %zu values over %u iterations\n", checked, ITERATIONS);
  CHECK(ttdrv_buffer_free(input_dram));
  CHECK(ttdrv_event_free(op_event));
  CHECK(ttdrv_event_free(write_event));
  example_close(&ex);
  return 0;
}
