/* trace_dram_input: "Trace with Persistent DRAM Input" (section "Metal Trace" of tt-metal's guide "Advanced
 * Performance Optimizations for Models"): trace with a persistent DRAM input. Compile the model once, capture it (the
 * to_memory_config into L1 included) into the trace region, then per iteration write a new input and replay the trace
 * with one command. ITERATIONS distinct inputs under jitter; every output checked against plain C. */
#include "mlp_ref.h"

int main(void) {
  example ex;
  example_open(&ex, 3, 1, 800768);

  ttdrv_tensor_spec in_dram = spec_f32(MLP_BATCH, MLP_IN, mc_dram_height(4, MLP_BATCH, MLP_IN));
  ttdrv_memory_config in_l1 = mc_l1_height(4, MLP_BATCH, MLP_IN);
  ttdrv_buffer *input_dram = NULL, *input_l1 = NULL, *output = NULL, *compiled = NULL;
  CHECK(ttdrv_buffer_allocate(ex.dev, &in_dram, &input_dram));

  /* First run to compile the model (fills the program cache). */
  CHECK(ttdrv_buffer_write(input_dram, 0, example_input(&ex, 0), ex.n_in * sizeof(float), false));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &compiled));

  /* Capture: everything from the copy into L1 to the output. */
  CHECK(ttdrv_buffer_write(input_dram, 0, example_input(&ex, 0), ex.n_in * sizeof(float), false));
  uint32_t tid = 0;
  CHECK(ttdrv_trace_begin_capture(ex.dev, 0, &tid));
  CHECK(ttdrv_to_memory_config(input_dram, 0, &in_l1, &input_l1));
  CHECK(ttdrv_mlp_run(ex.mlp, 0, input_l1, &output)); /* keep this output: replays write it */
  CHECK(ttdrv_buffer_free(compiled));              /* the compile run's output is no longer needed */
  CHECK(ttdrv_trace_end_capture(ex.dev, tid, 0));

  for (uint32_t it = 0; it < ITERATIONS; it++) {
    CHECK(ttdrv_buffer_write(input_dram, 0, example_input(&ex, it), ex.n_in * sizeof(float), false));
    CHECK(ttdrv_trace_execute(ex.dev, tid, 0, false));
    CHECK(ttdrv_buffer_read(output, 0, false, example_output(&ex, it), ex.n_out * sizeof(float)));
  }
  CHECK(ttdrv_device_finish(ex.dev, 0));

  size_t checked = example_verify(&ex);
  ttdrv_trace_info info = {.struct_size = sizeof info};
  CHECK(ttdrv_trace_get_info(ex.dev, tid, &info));
  printf("trace_dram_input: checked %zu values over %u replays of a %u-launch, %llu-byte trace\n", checked,
         ITERATIONS, info.launches, (unsigned long long)info.bytes);
  CHECK(ttdrv_trace_release(ex.dev, tid));
  CHECK(ttdrv_buffer_free(output));
  CHECK(ttdrv_buffer_free(input_dram));
  example_close(&ex);
  return 0;
}
