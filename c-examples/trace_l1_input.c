/* trace_l1_input: "Trace with Non-Persistent L1 Input" (section "Metal Trace" of tt-metal's guide "Advanced
 * Performance Optimizations for Models"): trace with a non-persistent L1 input. The model frees its input, so the
 * input is re-allocated at the end of capture and must land at the address the trace captured (asserted). Then per
 * iteration: write the input in place and replay. ITERATIONS distinct inputs under jitter, checked in plain C. */
#include "mlp_ref.h"

int main(void) {
  example ex;
  example_open(&ex, 5, 1, 800768);
  ttdrv_tensor_spec in_spec = spec_f32(MLP_BATCH, MLP_IN, mc_l1_height(4, MLP_BATCH, MLP_IN));

  /* First run to compile the model. */
  ttdrv_buffer *input_l1 = NULL, *output = NULL;
  CHECK(ttdrv_buffer_from_host(ex.dev, &in_spec, 0, example_input(&ex, 0), ex.n_in * sizeof(float), &input_l1));
  CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output));

  /* Capture. Record the input's address, spec and layout so the re-allocation can be checked. */
  CHECK(ttdrv_buffer_from_host(ex.dev, &in_spec, 0, example_input(&ex, 0), ex.n_in * sizeof(float), &input_l1));
  uint64_t input_trace_addr = 0;
  CHECK(ttdrv_buffer_address(input_l1, &input_trace_addr));
  ttdrv_tensor_spec spec;
  CHECK(ttdrv_buffer_get_spec(input_l1, &spec));
  CHECK(ttdrv_buffer_free(output)); /* so the input lands at the right address afterwards */
  uint32_t tid = 0;
  CHECK(ttdrv_trace_begin_capture(ex.dev, 0, &tid));
  CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output));
  CHECK(ttdrv_buffer_allocate(ex.dev, &spec, &input_l1));
  uint64_t addr = 0;
  CHECK(ttdrv_buffer_address(input_l1, &addr));
  EXPECT(addr == input_trace_addr, "input re-allocated at %#llx, but the trace captured %#llx",
         (unsigned long long)addr, (unsigned long long)input_trace_addr);
  CHECK(ttdrv_trace_end_capture(ex.dev, tid, 0));

  for (uint32_t it = 0; it < ITERATIONS; it++) {
    CHECK(ttdrv_buffer_write(input_l1, 0, example_input(&ex, it), ex.n_in * sizeof(float), false));
    CHECK(ttdrv_trace_execute(ex.dev, tid, 0, false));
    CHECK(ttdrv_buffer_read(output, 0, false, example_output(&ex, it), ex.n_out * sizeof(float)));
  }
  CHECK(ttdrv_device_finish(ex.dev, 0));

  size_t checked = example_verify(&ex);
  printf("trace_l1_input: input re-allocated at %#llx as captured; checked %zu values over %u replays\n",
         (unsigned long long)addr, checked, ITERATIONS);
  CHECK(ttdrv_trace_release(ex.dev, tid));
  CHECK(ttdrv_buffer_free(output));
  CHECK(ttdrv_buffer_free(input_l1));
  example_close(&ex);
  return 0;
}
