/* mlp: run the MLP eagerly on one queue for several distinct inputs and check every output against the plain-C
 * reference. */
#include "mlp_ref.h"

int main(void) {
  mlp_host host;
  mlp_host_init(&host, 42);
  ttdrv_device *dev = NULL;
  CHECK(ttdrv_device_open(example_selector("emu"), NULL, &dev));
  ttdrv_mlp *mlp = mlp_create(dev, 0, &host);

  const size_t n_in = MLP_BATCH * MLP_IN, n_out = MLP_BATCH * MLP_OUT;
  float x[MLP_BATCH * MLP_IN], got[MLP_BATCH * MLP_OUT], want[MLP_BATCH * MLP_OUT];
  ttdrv_tensor_spec in_spec = spec_f32(MLP_BATCH, MLP_IN, mc_l1_height(4, MLP_BATCH, MLP_IN));
  size_t checked = 0;
  for (uint32_t it = 0; it < 10; it++) {
    make_input(x, n_in, it);
    ttdrv_buffer *input = NULL, *output = NULL;
    CHECK(ttdrv_buffer_from_host(dev, &in_spec, 0, x, sizeof x, &input));
    CHECK(ttdrv_mlp_run(mlp, 0, input, &output)); /* consumes input */
    CHECK(ttdrv_buffer_read(output, 0, true, got, sizeof got));
    CHECK(ttdrv_buffer_free(output));
    mlp_host_forward(&host, x, want);
    size_t bad = count_mismatches(got, want, n_out);
    EXPECT(bad == 0, "iteration %u: %zu of %zu outputs wrong (e.g. %f vs %f)", it, bad, n_out, got[0], want[0]);
    checked += n_out;
  }
  uint32_t ops = 0;
  CHECK(ttdrv_mlp_ops_per_run(mlp, &ops));
  printf("mlp: checked %zu values over 10 runs of %u ops\n", checked, ops);
  CHECK(ttdrv_mlp_free(mlp));
  CHECK(ttdrv_device_close(dev));
  mlp_host_free(&host);
  return 0;
}
