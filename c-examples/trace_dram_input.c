/* trace_dram_input (seed §1.3.1): trace with a persistent DRAM input. Compile the model once, capture it (the
 * to_memory_config into L1 included) into the trace region, then per iteration write a new input and replay the
 * trace with one command. ITERATIONS distinct inputs under jitter; every output checked against plain C. */
#include "mlp_ref.h"

int main(void) {
  mlp_host host;
  mlp_host_init(&host, 3);
  ttdrv_device *dev = open_example_device(1, 800768);
  ttdrv_mlp *mlp = mlp_create(dev, 0, &host);
  const size_t n_in = MLP_BATCH * MLP_IN, n_out = MLP_BATCH * MLP_OUT;
  float *inputs = malloc(sizeof(float) * n_in * ITERATIONS), *outputs = malloc(sizeof(float) * n_out * ITERATIONS);
  EXPECT(inputs && outputs, "out of host memory");
  for (uint32_t it = 0; it < ITERATIONS; it++) make_input(inputs + it * n_in, n_in, it);

  ttdrv_tensor_spec in_dram = spec_f32(MLP_BATCH, MLP_IN, mc_dram_height(4, MLP_BATCH, MLP_IN));
  ttdrv_memory_config in_l1 = mc_l1_height(4, MLP_BATCH, MLP_IN);
  ttdrv_buffer *input_dram = NULL, *input_l1 = NULL, *output = NULL, *compiled = NULL;
  CHECK(ttdrv_buffer_allocate(dev, &in_dram, &input_dram));

  /* First run to compile the model (fills the program cache). */
  CHECK(ttdrv_buffer_write(input_dram, 0, (const uint8_t *)inputs, n_in * sizeof(float), false));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_mlp_run(mlp, 0, input_l1, &compiled));

  /* Capture: everything from the copy into L1 to the output. */
  CHECK(ttdrv_buffer_write(input_dram, 0, (const uint8_t *)inputs, n_in * sizeof(float), false));
  uint32_t tid = 0;
  CHECK(ttdrv_trace_begin_capture(dev, 0, &tid));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_mlp_run(mlp, 0, input_l1, &output)); /* keep this output: replays write it */
  CHECK(ttdrv_buffer_free(compiled));              /* the compile run's output is no longer needed */
  CHECK(ttdrv_trace_end_capture(dev, tid, 0));

  for (uint32_t it = 0; it < ITERATIONS; it++) {
    CHECK(ttdrv_buffer_write(input_dram, 0, (const uint8_t *)(inputs + it * n_in), n_in * sizeof(float), false));
    CHECK(ttdrv_trace_execute(dev, tid, 0, false));
    CHECK(ttdrv_buffer_read(output, 0, false, (uint8_t *)(outputs + it * n_out), n_out * sizeof(float)));
  }
  CHECK(ttdrv_device_finish(dev, 0));

  size_t checked = verify_outputs(&host, inputs, outputs, ITERATIONS);
  ttdrv_trace_info info = {.struct_size = sizeof info};
  CHECK(ttdrv_trace_get_info(dev, tid, &info));
  printf("trace_dram_input: checked %zu values over %u replays of a %u-launch, %llu-byte trace\n", checked,
         ITERATIONS, info.launches, (unsigned long long)info.bytes);
  CHECK(ttdrv_trace_release(dev, tid));
  CHECK(ttdrv_buffer_free(output));
  CHECK(ttdrv_buffer_free(input_dram));
  CHECK(ttdrv_mlp_free(mlp));
  CHECK(ttdrv_device_close(dev));
  free(inputs);
  free(outputs);
  mlp_host_free(&host);
  return 0;
}
