/* two_cq_writes (seed §2.3.1): ops and output readback on CQ 0, input writes on CQ 1, ordered by two events.
 * Runs ITERATIONS distinct inputs under emulator jitter and checks every output against the plain-C reference.
 * `--drop-wait write_event` or `--drop-wait op_event` removes a wait, which must then produce wrong outputs. */
#include "mlp_ref.h"

int main(int argc, char **argv) {
  mlp_host host;
  mlp_host_init(&host, 7);
  ttdrv_device *dev = open_example_device(2, 0);
  ttdrv_mlp *mlp = mlp_create(dev, 0, &host);
  const size_t n_in = MLP_BATCH * MLP_IN, n_out = MLP_BATCH * MLP_OUT;
  float *inputs = malloc(sizeof(float) * n_in * ITERATIONS), *outputs = malloc(sizeof(float) * n_out * ITERATIONS);
  EXPECT(inputs && outputs, "out of host memory");

  ttdrv_event *op_event = NULL, *write_event = NULL;
  CHECK(ttdrv_event_new(dev, &op_event));
  CHECK(ttdrv_event_new(dev, &write_event));
  ttdrv_tensor_spec in_dram = spec_f32(MLP_BATCH, MLP_IN, mc_dram_height(4, MLP_BATCH, MLP_IN));
  ttdrv_memory_config in_l1 = mc_l1_height(4, MLP_BATCH, MLP_IN);
  ttdrv_buffer *input_dram = NULL;
  CHECK(ttdrv_buffer_allocate(dev, &in_dram, &input_dram));

  /* Dummy record on CQ 0: the loop waits on it first. */
  CHECK(ttdrv_event_record(op_event, 0));
  for (uint32_t it = 0; it < ITERATIONS; it++) {
    float *x = inputs + it * n_in;
    make_input(x, n_in, it);
    if (keep_wait(argc, argv, "op_event")) CHECK(ttdrv_device_wait_for_event(dev, 1, op_event));
    CHECK(ttdrv_buffer_write(input_dram, 1, (const uint8_t *)x, n_in * sizeof(float), false));
    CHECK(ttdrv_event_record(write_event, 1));
    if (keep_wait(argc, argv, "write_event")) CHECK(ttdrv_device_wait_for_event(dev, 0, write_event));
    ttdrv_buffer *input_l1 = NULL, *output = NULL;
    CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
    CHECK(ttdrv_event_record(op_event, 0));
    CHECK(ttdrv_mlp_run(mlp, 0, input_l1, &output));
    CHECK(ttdrv_buffer_read(output, 0, false, (uint8_t *)(outputs + it * n_out), n_out * sizeof(float)));
    CHECK(ttdrv_buffer_free(output)); /* immediate; the read enqueued before it on CQ 0 runs first */
  }
  CHECK(ttdrv_device_finish(dev, 0));

  size_t checked = verify_outputs(&host, inputs, outputs, ITERATIONS);
  printf("two_cq_writes: checked %zu values over %u iterations\n", checked, ITERATIONS);
  CHECK(ttdrv_buffer_free(input_dram));
  CHECK(ttdrv_event_free(op_event));
  CHECK(ttdrv_event_free(write_event));
  CHECK(ttdrv_mlp_free(mlp));
  CHECK(ttdrv_device_close(dev));
  free(inputs);
  free(outputs);
  mlp_host_free(&host);
  return 0;
}
