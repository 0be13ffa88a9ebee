/* trace_patch: "Trace with Non-Persistent L1 Input" (section "Metal Trace" of tt-metal's guide "Advanced Performance
 * Optimizations for Models", §1.3.2) done both ways, plus what tt-metal's traces cannot do: change a captured
 * argument.
 *
 * The model is the examples' MLP built from ttdrv_linear and relu ops, then a scale op: y = s * mlp(x). It frees its
 * input (and its activations) as it goes, so the input's range is free again at the end of the capture.
 *
 *   (a) the guide's way: re-allocate the input at the end of the capture, assert that it landed at the address the
 *       trace captured, and write every new input in place;
 *   (b) with rebinding: allocate every new input anywhere (here, each while the previous one is still alive, and
 *       with the captured address taken by another buffer, so it can never land there) and rebind the trace's
 *       input to it — no assertion needed. Every tenth replay also binds the output for that replay only
 *       (ttdrv_trace_execute_with): its result goes to another buffer and the trace's output keeps the previous one.
 *
 * In both, the scale factor s — a scalar of the captured scale op, "scale.factor#0" — changes every iteration with
 * ttdrv_trace_set_scalar_f32, no re-capture. ITERATIONS replays each, every output checked against plain C. */
#include "mlp_ref.h"

#define LAYERS 3u

typedef struct {
  mlp_host host;
  ttdrv_device *dev;
  ttdrv_buffer *w[LAYERS], *b[LAYERS];
  ttdrv_tensor_spec in_spec;
  size_t n_in, n_out;
  float *inputs, *outputs, *factors;
} model;

static ttdrv_buffer *alloc_f32(ttdrv_device *dev, uint32_t rows, uint32_t cols, uint32_t buffer_type) {
  ttdrv_tensor_spec s = spec_f32(rows, cols, mc_interleaved(buffer_type));
  ttdrv_buffer *b = NULL;
  CHECK(ttdrv_buffer_allocate(dev, &s, &b));
  return b;
}

/* y = s * mlp(x): relu(x W + b) for the hidden layers, x W + b for the last, then the scale op. The input and every
 * activation are freed once read (the guide's model deallocates its input). Returns y. */
static ttdrv_buffer *model_run(model *m, ttdrv_buffer *x, float s, bool consume_input) {
  ttdrv_memory_config l1 = mc_interleaved(TTDRV_BUFFER_L1);
  ttdrv_buffer *a = x;
  for (uint32_t l = 0; l < LAYERS; l++) {
    ttdrv_buffer *z = alloc_f32(m->dev, MLP_BATCH, m->host.dims[l + 1], TTDRV_BUFFER_L1), *r = NULL;
    uint32_t act = TTDRV_ACTIVATION_NONE;
    CHECK(ttdrv_linear(a, m->w[l], m->b[l], act, 0, z));
    if (l > 0 || consume_input) CHECK(ttdrv_buffer_free(a));
    if (l + 1 < LAYERS) {
      CHECK(ttdrv_eltwise_unary(z, TTDRV_UNARY_RELU, 0.0f, 0, &l1, &r));
      CHECK(ttdrv_buffer_free(z));
      a = r;
    } else {
      a = z;
    }
  }
  ttdrv_buffer *y = NULL;
  CHECK(ttdrv_eltwise_unary(a, TTDRV_UNARY_SCALE, s, 0, &l1, &y));
  CHECK(ttdrv_buffer_free(a));
  return y;
}

/* Checks output `it` against s * mlp(input `it`); exits on a mismatch. */
static size_t verify(const model *m, uint32_t it, const float *got, const char *what) {
  float *want = malloc(sizeof(float) * m->n_out);
  EXPECT(want, "out of host memory");
  mlp_host_forward(&m->host, m->inputs + (size_t)it * m->n_in, want);
  for (size_t i = 0; i < m->n_out; i++) want[i] *= m->factors[it];
  size_t bad = count_mismatches(got, want, m->n_out);
  free(want);
  EXPECT(bad == 0, "%s: wrong outputs in iteration %u (%zu of %zu values)", what, it, bad, m->n_out);
  return m->n_out;
}

static const float *input(const model *m, uint32_t it) {
  return m->inputs + (size_t)it * m->n_in;
}
static float *output(const model *m, uint32_t it) {
  return m->outputs + (size_t)it * m->n_out;
}

/* The trace's only scalar: the scale op's factor. Listed, not assumed. */
static void scalar_name(ttdrv_device *dev, uint32_t tid, char name[TTDRV_TRACE_NAME_CAPACITY]) {
  size_t n = 0;
  CHECK(ttdrv_trace_scalar_count(dev, tid, &n));
  EXPECT(n == 1, "the trace has %zu scalars; the model has one scale op", n);
  ttdrv_trace_scalar sc = {.struct_size = sizeof sc};
  CHECK(ttdrv_trace_get_scalar(dev, tid, 0, &sc));
  EXPECT(sc.kind == TTDRV_SCALAR_F32 && strncmp(sc.name, "scale.factor#", 13) == 0, "scalar 0 is %s (kind %u)",
         sc.name, sc.kind);
  memcpy(name, sc.name, TTDRV_TRACE_NAME_CAPACITY);
}

/* (a) The guide's way: the input re-allocated at the captured address, asserted, and written in place. */
static void guide_way(model *m) {
  ttdrv_buffer *x = NULL, *y = NULL;
  CHECK(ttdrv_buffer_from_host(m->dev, &m->in_spec, 0, input(m, 0), m->n_in * sizeof(float), &x));
  y = model_run(m, x, 1.0f, true); /* compiles every op's program */
  CHECK(ttdrv_buffer_free(y));
  CHECK(ttdrv_buffer_from_host(m->dev, &m->in_spec, 0, input(m, 0), m->n_in * sizeof(float), &x));
  uint64_t captured = 0, addr = 0;
  CHECK(ttdrv_buffer_address(x, &captured));
  uint32_t tid = 0;
  CHECK(ttdrv_trace_begin_capture(m->dev, 0, &tid));
  y = model_run(m, x, 1.0f, true);
  CHECK(ttdrv_buffer_allocate(m->dev, &m->in_spec, &x));
  CHECK(ttdrv_buffer_address(x, &addr));
  EXPECT(addr == captured, "input re-allocated at %#llx, but the trace captured %#llx", (unsigned long long)addr,
         (unsigned long long)captured);
  CHECK(ttdrv_trace_end_capture(m->dev, tid, 0));
  char name[TTDRV_TRACE_NAME_CAPACITY];
  scalar_name(m->dev, tid, name);

  for (uint32_t it = 0; it < ITERATIONS; it++) {
    CHECK(ttdrv_buffer_write(x, 0, input(m, it), m->n_in * sizeof(float), false));
    CHECK(ttdrv_trace_set_scalar_f32(m->dev, tid, 0, name, m->factors[it], NULL, 0));
    CHECK(ttdrv_trace_execute(m->dev, tid, 0, false));
    CHECK(ttdrv_buffer_read(y, 0, false, output(m, it), m->n_out * sizeof(float)));
  }
  CHECK(ttdrv_device_finish(m->dev, 0));
  size_t checked = 0;
  for (uint32_t it = 0; it < ITERATIONS; it++) checked += verify(m, it, output(m, it), "(a)");
  printf("trace_patch (a) the guide's way: input re-allocated at %#llx as captured (asserted); %s set every "
         "iteration; checked %zu values over %u replays\n",
         (unsigned long long)addr, name, checked, ITERATIONS);
  CHECK(ttdrv_trace_release(m->dev, tid));
  CHECK(ttdrv_buffer_free(x));
  CHECK(ttdrv_buffer_free(y));
}

/* The index of the trace's input binding: the one that held `captured` when the capture read it. */
static size_t input_binding(ttdrv_device *dev, uint32_t tid, uint64_t captured) {
  size_t n = 0;
  CHECK(ttdrv_trace_binding_count(dev, tid, &n));
  for (size_t i = 0; i < n; i++) {
    ttdrv_trace_binding b = {.struct_size = sizeof b};
    CHECK(ttdrv_trace_get_binding(dev, tid, i, &b));
    if (!b.output && b.address == captured) {
      EXPECT(b.rebindable, "binding %s is not rebindable", b.name);
      printf("trace_patch (b): the input is binding %zu (%s), %u address words\n", i, b.name, b.words);
      return i;
    }
  }
  EXPECT(0, "no input binding of trace %u was captured at %#llx", tid, (unsigned long long)captured);
  return 0;
}

/* (b) With rebinding: every new input allocated anywhere, the trace rebound to it. */
static void rebinding_way(model *m) {
  ttdrv_buffer *x = NULL, *y = NULL, *y_once = NULL, *blocker = NULL;
  CHECK(ttdrv_buffer_from_host(m->dev, &m->in_spec, 0, input(m, 0), m->n_in * sizeof(float), &x));
  uint64_t captured = 0;
  CHECK(ttdrv_buffer_address(x, &captured));
  uint32_t tid = 0;
  /* The input stays alive through the capture: no intermediate can take its range, so the trace can be rebound to
   * an input anywhere. (Freed inside the capture, an intermediate may reuse that range; the trace's words for both
   * then point there, and the driver refuses to rebind the input.) */
  CHECK(ttdrv_trace_begin_capture(m->dev, 0, &tid));
  y = model_run(m, x, 1.0f, false);
  CHECK(ttdrv_trace_end_capture(m->dev, tid, 0)); /* no re-allocation, no assertion */
  CHECK(ttdrv_buffer_free(x)); /* its range is free now; the blocker below takes it */
  x = NULL;
  char name[TTDRV_TRACE_NAME_CAPACITY];
  scalar_name(m->dev, tid, name);
  size_t ix = input_binding(m->dev, tid, captured);
  size_t iy = 0;
  CHECK(ttdrv_trace_find_binding(m->dev, tid, "output0", &iy));
  /* Whatever lands on the captured address now is not the input: the inputs below go elsewhere. */
  CHECK(ttdrv_buffer_allocate(m->dev, &m->in_spec, &blocker));
  CHECK(ttdrv_buffer_allocate(m->dev, &m->in_spec, &y_once)); /* the output of the one-replay bindings */

  ttdrv_buffer *prev = NULL;
  uint64_t addrs[2] = {0, 0};
  uint32_t once = 0;
  for (uint32_t it = 0; it < ITERATIONS; it++) {
    CHECK(ttdrv_buffer_from_host(m->dev, &m->in_spec, 0, input(m, it), m->n_in * sizeof(float), &x));
    uint64_t a = 0;
    CHECK(ttdrv_buffer_address(x, &a));
    EXPECT(a != captured, "iteration %u: the input landed on the captured address", it);
    addrs[it % 2] = a;
    ttdrv_trace_rebinding rb = {ix, x};
    CHECK(ttdrv_trace_set_scalar_f32(m->dev, tid, 0, name, m->factors[it], NULL, 0));
    if (it % 10 == 9) {
      /* This replay only: the input and the output both bound for it. */
      ttdrv_trace_rebinding both[2] = {rb, {iy, y_once}};
      CHECK(ttdrv_trace_execute_with(m->dev, tid, 0, false, both, 2, NULL, 0));
      CHECK(ttdrv_buffer_read(y_once, 0, false, output(m, it), m->n_out * sizeof(float)));
      /* The trace's own output still holds the previous replay's result. */
      float *kept = malloc(sizeof(float) * m->n_out);
      EXPECT(kept, "out of host memory");
      CHECK(ttdrv_buffer_read(y, 0, true, kept, m->n_out * sizeof(float)));
      verify(m, it - 1, kept, "(b) the output left alone by the one-replay binding");
      free(kept);
      once++;
    } else {
      CHECK(ttdrv_trace_rebind(m->dev, tid, 0, &rb, 1, NULL, 0));
      CHECK(ttdrv_trace_execute(m->dev, tid, 0, false));
      CHECK(ttdrv_buffer_read(y, 0, false, output(m, it), m->n_out * sizeof(float)));
    }
    /* The previous input is no longer bound: free it (the replays enqueued before read it first, in queue order). */
    if (prev) CHECK(ttdrv_buffer_free(prev));
    prev = x;
  }
  CHECK(ttdrv_device_finish(m->dev, 0));
  size_t checked = 0;
  for (uint32_t it = 0; it < ITERATIONS; it++) checked += verify(m, it, output(m, it), "(b)");
  printf("trace_patch (b) with rebinding: inputs at %#llx, %#llx, ... (captured at %#llx, taken by another buffer); "
         "%s set every iteration; %u replays with one-replay bindings; checked %zu values over %u replays\n",
         (unsigned long long)addrs[0], (unsigned long long)addrs[1], (unsigned long long)captured, name, once,
         checked, ITERATIONS);
  ttdrv_trace_info info = {.struct_size = sizeof info};
  CHECK(ttdrv_trace_get_info(m->dev, tid, &info));
  printf("trace_patch (b): %u launches, %u bindings (%u rebindable), %u scalars, %u patchable words\n", info.launches,
         info.bindings, info.rebindable, info.scalars, info.patchable_words);
  CHECK(ttdrv_trace_release(m->dev, tid));
  CHECK(ttdrv_buffer_free(prev));
  CHECK(ttdrv_buffer_free(y));
  CHECK(ttdrv_buffer_free(y_once));
  CHECK(ttdrv_buffer_free(blocker));
}

int main(void) {
  model m;
  mlp_host_init(&m.host, 11);
  EXPECT(m.host.num_dims == LAYERS + 1, "the reference MLP has %zu layers, this example %u", m.host.num_dims - 1,
         LAYERS);
  m.dev = open_example_device(1, 1u << 20);
  for (uint32_t l = 0; l < LAYERS; l++) {
    uint32_t k = m.host.dims[l], n = m.host.dims[l + 1];
    m.w[l] = alloc_f32(m.dev, k, n, TTDRV_BUFFER_DRAM);
    m.b[l] = alloc_f32(m.dev, 1, n, TTDRV_BUFFER_DRAM);
    CHECK(ttdrv_buffer_write(m.w[l], 0, m.host.w[l], sizeof(float) * k * n, true));
    CHECK(ttdrv_buffer_write(m.b[l], 0, m.host.b[l], sizeof(float) * n, true));
  }
  m.in_spec = spec_f32(MLP_BATCH, MLP_IN, mc_interleaved(TTDRV_BUFFER_L1));
  m.n_in = (size_t)MLP_BATCH * MLP_IN;
  m.n_out = (size_t)MLP_BATCH * MLP_OUT;
  m.inputs = malloc(sizeof(float) * m.n_in * ITERATIONS);
  m.outputs = malloc(sizeof(float) * m.n_out * ITERATIONS);
  m.factors = malloc(sizeof(float) * ITERATIONS);
  EXPECT(m.inputs && m.outputs && m.factors, "out of host memory");
  for (uint32_t it = 0; it < ITERATIONS; it++) {
    make_input(m.inputs + it * m.n_in, m.n_in, it);
    m.factors[it] = 0.5f + 0.03125f * (float)it * (it % 2 ? -1.0f : 1.0f);
  }

  guide_way(&m);
  memset(m.outputs, 0, sizeof(float) * m.n_out * ITERATIONS);
  rebinding_way(&m);

  for (uint32_t l = 0; l < LAYERS; l++) {
    CHECK(ttdrv_buffer_free(m.w[l]));
    CHECK(ttdrv_buffer_free(m.b[l]));
  }
  CHECK(ttdrv_device_close(m.dev));
  free(m.inputs);
  free(m.outputs);
  free(m.factors);
  mlp_host_free(&m.host);
  return 0;
}
