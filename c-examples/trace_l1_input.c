/* trace_l1_input (seed §1.3.2): trace with a non-persistent L1 input. The model frees its input, so the input is
 * re-allocated at the end of capture and must land at the address the trace captured (asserted). Then per
 * iteration: write the input in place and replay. ITERATIONS distinct inputs under jitter, checked in plain C. */
#include "mlp_ref.h"

int main(void) {
  mlp_host host;
  mlp_host_init(&host, 5);
  ttdrv_device *dev = open_example_device(1, 800768);
  ttdrv_mlp *mlp = mlp_create(dev, 0, &host);
  const size_t n_in = MLP_BATCH * MLP_IN, n_out = MLP_BATCH * MLP_OUT;
  float *inputs = malloc(sizeof(float) * n_in * ITERATIONS), *outputs = malloc(sizeof(float) * n_out * ITERATIONS);
  EXPECT(inputs && outputs, "out of host memory");
  for (uint32_t it = 0; it < ITERATIONS; it++) make_input(inputs + it * n_in, n_in, it);
  ttdrv_tensor_spec in_spec = spec_f32(MLP_BATCH, MLP_IN, mc_l1_height(4, MLP_BATCH, MLP_IN));

  /* First run to compile the model. */
  ttdrv_buffer *input_l1 = NULL, *output = NULL;
  CHECK(ttdrv_buffer_from_host(dev, &in_spec, 0, (const uint8_t *)inputs, n_in * sizeof(float), &input_l1));
  CHECK(ttdrv_mlp_run(mlp, 0, input_l1, &output));

  /* Capture. Record the input's address, spec and layout so the re-allocation can be checked. */
  CHECK(ttdrv_buffer_from_host(dev, &in_spec, 0, (const uint8_t *)inputs, n_in * sizeof(float), &input_l1));
  uint64_t input_trace_addr = 0;
  CHECK(ttdrv_buffer_address(input_l1, &input_trace_addr));
  ttdrv_tensor_spec spec;
  CHECK(ttdrv_buffer_get_spec(input_l1, &spec));
  CHECK(ttdrv_buffer_free(output)); /* so the input lands at the right address afterwards */
  uint32_t tid = 0;
  CHECK(ttdrv_trace_begin_capture(dev, 0, &tid));
  CHECK(ttdrv_mlp_run(mlp, 0, input_l1, &output));
  CHECK(ttdrv_buffer_allocate(dev, &spec, &input_l1));
  uint64_t addr = 0;
  CHECK(ttdrv_buffer_address(input_l1, &addr));
  EXPECT(addr == input_trace_addr, "input re-allocated at %#llx, but the trace captured %#llx", (unsigned long long)addr,
         (unsigned long long)input_trace_addr);
  CHECK(ttdrv_trace_end_capture(dev, tid, 0));

  for (uint32_t it = 0; it < ITERATIONS; it++) {
    CHECK(ttdrv_buffer_write(input_l1, 0, (const uint8_t *)(inputs + it * n_in), n_in * sizeof(float), false));
    CHECK(ttdrv_trace_execute(dev, tid, 0, false));
    CHECK(ttdrv_buffer_read(output, 0, false, (uint8_t *)(outputs + it * n_out), n_out * sizeof(float)));
  }
  CHECK(ttdrv_device_finish(dev, 0));

  size_t checked = verify_outputs(&host, inputs, outputs, ITERATIONS);
  printf("trace_l1_input: input re-allocated at %#llx as captured; checked %zu values over %u replays\n",
         (unsigned long long)addr, checked, ITERATIONS);
  CHECK(ttdrv_trace_release(dev, tid));
  CHECK(ttdrv_buffer_free(output));
  CHECK(ttdrv_buffer_free(input_l1));
  CHECK(ttdrv_mlp_free(mlp));
  CHECK(ttdrv_device_close(dev));
  free(inputs);
  free(outputs);
  mlp_host_free(&host);
  return 0;
}
