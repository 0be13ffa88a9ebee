/* The MLP the examples run, and its reference computed in plain C (no ttdrv code). */
#ifndef TTDRV_EXAMPLES_MLP_REF_H
#define TTDRV_EXAMPLES_MLP_REF_H

#include "common.h"
#include <math.h>
#include <stdint.h>

#define MLP_BATCH 32u
#define MLP_IN 64u
#define MLP_OUT 64u
#define MLP_MAX_LAYERS 4

typedef struct {
  uint32_t batch;
  uint32_t dims[MLP_MAX_LAYERS + 1];
  size_t num_dims;
  float *w[MLP_MAX_LAYERS];
  float *b[MLP_MAX_LAYERS];
} mlp_host;

/* Deterministic pseudo-random values in [-scale, scale). */
static inline float lcg_value(uint32_t *s, float scale) {
  *s = *s * 1664525u + 1013904223u;
  return ((float)(*s >> 8) / 16777216.0f * 2.0f - 1.0f) * scale;
}

static inline void mlp_host_init(mlp_host *m, uint32_t seed) {
  static const uint32_t dims[] = {MLP_IN, 128, 128, MLP_OUT};
  m->batch = MLP_BATCH;
  m->num_dims = sizeof dims / sizeof dims[0];
  memcpy(m->dims, dims, sizeof dims);
  for (size_t l = 0; l + 1 < m->num_dims; l++) {
    size_t k = m->dims[l], n = m->dims[l + 1];
    m->w[l] = malloc(k * n * sizeof(float));
    m->b[l] = malloc(n * sizeof(float));
    EXPECT(m->w[l] && m->b[l], "out of host memory");
    float scale = 1.0f / sqrtf((float)k);
    for (size_t i = 0; i < k * n; i++) m->w[l][i] = lcg_value(&seed, scale);
    for (size_t i = 0; i < n; i++) m->b[l][i] = lcg_value(&seed, 0.1f);
  }
}

static inline void mlp_host_free(mlp_host *m) {
  for (size_t l = 0; l + 1 < m->num_dims; l++) {
    free(m->w[l]);
    free(m->b[l]);
  }
}

/* y = relu(x W + b) for the hidden layers, x W + b for the last. */
static inline void mlp_host_forward(const mlp_host *m, const float *x, float *y) {
  float *a = malloc(sizeof(float) * m->batch * 256), *t = malloc(sizeof(float) * m->batch * 256);
  EXPECT(a && t, "out of host memory");
  memcpy(a, x, sizeof(float) * m->batch * m->dims[0]);
  size_t layers = m->num_dims - 1;
  for (size_t l = 0; l < layers; l++) {
    size_t k = m->dims[l], n = m->dims[l + 1];
    for (size_t i = 0; i < m->batch; i++) {
      for (size_t j = 0; j < n; j++) {
        float s = 0.0f;
        for (size_t q = 0; q < k; q++) s += a[i * k + q] * m->w[l][q * n + j];
        s += m->b[l][j];
        t[i * n + j] = (l + 1 < layers && s < 0.0f) ? 0.0f : s;
      }
    }
    memcpy(a, t, sizeof(float) * m->batch * n);
  }
  memcpy(y, a, sizeof(float) * m->batch * m->dims[layers]);
  free(a);
  free(t);
}

/* The input of iteration `iter`: distinct for every iteration. */
static inline void make_input(float *x, size_t n, uint32_t iter) {
  uint32_t s = 0x9E3779B9u ^ (iter * 2654435761u);
  for (size_t i = 0; i < n; i++) x[i] = lcg_value(&s, 1.0f);
}

/* Number of elements outside the tolerance. */
static inline size_t count_mismatches(const float *got, const float *want, size_t n) {
  size_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    float d = fabsf(got[i] - want[i]);
    if (!(d <= 1e-4f * (1.0f + fabsf(want[i])))) bad++;
  }
  return bad;
}

static inline ttdrv_memory_config mc_interleaved(uint32_t buffer_type) {
  ttdrv_memory_config m;
  memset(&m, 0, sizeof m);
  m.buffer_type = buffer_type;
  m.layout = TTDRV_LAYOUT_INTERLEAVED;
  return m;
}

/* Height-sharded over cores (0,0)..(n-1,0) of L1, one shard of rows/n rows per core. */
static inline ttdrv_memory_config mc_l1_height(uint32_t n_cores, uint32_t rows, uint32_t cols) {
  ttdrv_memory_config m = mc_interleaved(TTDRV_BUFFER_L1);
  m.layout = TTDRV_LAYOUT_HEIGHT_SHARDED;
  m.shard.core_x1 = n_cores - 1;
  m.shard.shard_rows = rows / n_cores;
  m.shard.shard_cols = cols;
  return m;
}

/* Height-sharded over DRAM banks 0..n-1. */
static inline ttdrv_memory_config mc_dram_height(uint32_t n_banks, uint32_t rows, uint32_t cols) {
  ttdrv_memory_config m = mc_interleaved(TTDRV_BUFFER_DRAM);
  m.layout = TTDRV_LAYOUT_HEIGHT_SHARDED;
  m.shard.bank_last = n_banks - 1;
  m.shard.shard_rows = rows / n_banks;
  m.shard.shard_cols = cols;
  return m;
}

static inline ttdrv_tensor_spec spec_f32(uint32_t rows, uint32_t cols, ttdrv_memory_config mem) {
  ttdrv_tensor_spec s;
  CHECK(ttdrv_tensor_spec_init(&s));
  s.rows = rows;
  s.cols = cols;
  s.dtype = TTDRV_DTYPE_FLOAT32;
  s.mem = mem;
  return s;
}

/* Creates the MLP on the device: weights in DRAM, intermediates and output interleaved in L1. */
static inline ttdrv_mlp *mlp_create(ttdrv_device *dev, uint16_t cq, const mlp_host *m) {
  ttdrv_mlp_desc d;
  CHECK(ttdrv_mlp_desc_init(&d));
  d.batch = m->batch;
  d.dims = m->dims;
  d.num_dims = m->num_dims;
  d.dtype = TTDRV_DTYPE_FLOAT32;
  d.weights_mem = mc_interleaved(TTDRV_BUFFER_DRAM);
  d.act_mem = mc_interleaved(TTDRV_BUFFER_L1);
  d.out_mem = mc_interleaved(TTDRV_BUFFER_L1);
  d.weights = (const float *const *)m->w;
  d.biases = (const float *const *)m->b;
  ttdrv_mlp *mlp = NULL;
  CHECK(ttdrv_mlp_new(dev, cq, &d, &mlp));
  return mlp;
}

/* Opens the device an example runs on: the emulated device with seeded jitter by default, so that a missing
 * wait produces wrong data instead of passing by luck. */
static inline ttdrv_device *open_example_device(uint32_t queues, uint64_t trace_region) {
  ttdrv_device_params p;
  CHECK(ttdrv_device_params_init(&p));
  p.num_command_queues = queues;
  p.trace_region_size = trace_region;
  ttdrv_device *dev = NULL;
  CHECK(ttdrv_device_open(example_selector("emu:jitter=7,jitter_us=100"), &p, &dev));
  return dev;
}

/* `--drop-wait NAME` on the command line removes one wait, to prove the example can fail. */
static inline int keep_wait(int argc, char **argv, const char *name) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--drop-wait") == 0 && strcmp(argv[i + 1], name) == 0) return 0;
  return 1;
}

/* Iterations of each example; an example may define more before including this header. */
#ifndef ITERATIONS
#define ITERATIONS 100u
#endif

/* Checks every iteration's output against the reference for its input; exits with "wrong outputs in N of M
 * iterations" (the phrase check-races.sh looks for) if any differs. Returns the number of values checked. */
static inline size_t verify_outputs(const mlp_host *m, const float *inputs, const float *outputs, uint32_t iterations) {
  const size_t n_in = (size_t)m->batch * m->dims[0], n_out = (size_t)m->batch * m->dims[m->num_dims - 1];
  float *want = malloc(sizeof(float) * n_out);
  EXPECT(want, "out of host memory");
  size_t wrong = 0, checked = 0;
  for (uint32_t it = 0; it < iterations; it++) {
    mlp_host_forward(m, inputs + it * n_in, want);
    wrong += count_mismatches(outputs + it * n_out, want, n_out) != 0;
    checked += n_out;
  }
  free(want);
  EXPECT(wrong == 0, "wrong outputs in %zu of %u iterations", wrong, iterations);
  return checked;
}

/* What every example of the guide sets up: the reference MLP, the device, the MLP on it, and ITERATIONS distinct inputs
 * with room for their outputs. */
typedef struct {
  mlp_host host;
  ttdrv_device *dev;
  ttdrv_mlp *mlp;
  size_t n_in, n_out; /* floats per input and per output */
  float *inputs, *outputs;
} example;

static inline void example_open(example *ex, uint32_t seed, uint32_t queues, uint64_t trace_region) {
  mlp_host_init(&ex->host, seed);
  ex->dev = open_example_device(queues, trace_region);
  ex->mlp = mlp_create(ex->dev, 0, &ex->host);
  ex->n_in = (size_t)MLP_BATCH * MLP_IN;
  ex->n_out = (size_t)MLP_BATCH * MLP_OUT;
  ex->inputs = malloc(sizeof(float) * ex->n_in * ITERATIONS);
  ex->outputs = malloc(sizeof(float) * ex->n_out * ITERATIONS);
  EXPECT(ex->inputs && ex->outputs, "out of host memory");
  for (uint32_t it = 0; it < ITERATIONS; it++) make_input(ex->inputs + it * ex->n_in, ex->n_in, it);
}

/* Iteration `it`'s input and output (the buffer calls take any host pointer: `const void *` / `void *`). */
static inline const float *example_input(const example *ex, uint32_t it) {
  return ex->inputs + (size_t)it * ex->n_in;
}
static inline float *example_output(const example *ex, uint32_t it) {
  return ex->outputs + (size_t)it * ex->n_out;
}

/* Checks every output against the reference; see verify_outputs. */
static inline size_t example_verify(const example *ex) {
  return verify_outputs(&ex->host, ex->inputs, ex->outputs, ITERATIONS);
}

static inline void example_close(example *ex) {
  CHECK(ttdrv_mlp_free(ex->mlp));
  CHECK(ttdrv_device_close(ex->dev));
  free(ex->inputs);
  free(ex->outputs);
  mlp_host_free(&ex->host);
}

#endif
