/* trace_save_load: a Metal Trace (section "Metal Trace" of tt-metal's guide "Advanced Performance Optimizations for
 * Models") captured and saved by one process and replayed by another, which never compiles or captures the model.
 *
 *   trace_save_load save FILE   builds the MLP from ttdrv_linear and relu ops, runs it once to compile it, captures
 *                               it (its activations freed during the capture, so the trace owns them) and saves it
 *   trace_save_load load FILE   allocates the same buffers in the same order (so that they land at the addresses
 *                               the saved records use), loads the trace with those buffers as its bindings, and
 *                               replays it for ITERATIONS distinct inputs, every output checked against plain C
 *   trace_save_load load-moved FILE
 *                               as `load`, with every buffer at another address than the saver's (buffers
 *                               allocated first in DRAM and in L1, freed before the load, shift them all): it lists
 *                               the file's bindings (ttdrv_trace_file_open) to match each to its buffer — by spec
 *                               and role, then by rank of address — and checks that each is rebindable; the loader
 *                               rewrites the address words of the saved records
 *
 * `make run` runs the three, one after the other, in separate processes. */
#include "mlp_ref.h"

#define LAYERS 3u

/* The buffers both processes allocate, in this order: weights and biases in DRAM, input and output in L1. */
typedef struct {
  ttdrv_buffer *w[LAYERS], *b[LAYERS], *x, *y;
} model;

static ttdrv_buffer *alloc_f32(ttdrv_device *dev, uint32_t rows, uint32_t cols, uint32_t buffer_type) {
  ttdrv_tensor_spec s = spec_f32(rows, cols, mc_interleaved(buffer_type));
  ttdrv_buffer *b = NULL;
  CHECK(ttdrv_buffer_allocate(dev, &s, &b));
  return b;
}

static void model_allocate(ttdrv_device *dev, const mlp_host *h, model *m) {
  EXPECT(h->num_dims == LAYERS + 1, "the reference MLP has %zu layers, this example %u", h->num_dims - 1, LAYERS);
  for (uint32_t l = 0; l < LAYERS; l++) {
    uint32_t k = h->dims[l], n = h->dims[l + 1];
    m->w[l] = alloc_f32(dev, k, n, TTDRV_BUFFER_DRAM);
    m->b[l] = alloc_f32(dev, 1, n, TTDRV_BUFFER_DRAM);
    CHECK(ttdrv_buffer_write(m->w[l], 0, h->w[l], sizeof(float) * k * n, true));
    CHECK(ttdrv_buffer_write(m->b[l], 0, h->b[l], sizeof(float) * n, true));
  }
  m->x = alloc_f32(dev, MLP_BATCH, MLP_IN, TTDRV_BUFFER_L1);
  m->y = alloc_f32(dev, MLP_BATCH, MLP_OUT, TTDRV_BUFFER_L1);
}

static void model_free(model *m) {
  for (uint32_t l = 0; l < LAYERS; l++) {
    CHECK(ttdrv_buffer_free(m->w[l]));
    CHECK(ttdrv_buffer_free(m->b[l]));
  }
  CHECK(ttdrv_buffer_free(m->x));
  CHECK(ttdrv_buffer_free(m->y));
}

/* y = relu(x W + b) for the hidden layers, x W + b into `y` for the last; every activation is freed once read. */
static void model_run(ttdrv_device *dev, const mlp_host *h, const model *m) {
  ttdrv_memory_config l1 = mc_interleaved(TTDRV_BUFFER_L1);
  ttdrv_buffer *a = m->x;
  for (uint32_t l = 0; l < LAYERS; l++) {
    if (l + 1 == LAYERS) {
      CHECK(ttdrv_linear(a, m->w[l], m->b[l], TTDRV_ACTIVATION_NONE, 0, m->y));
    } else {
      ttdrv_buffer *z = alloc_f32(dev, MLP_BATCH, h->dims[l + 1], TTDRV_BUFFER_L1), *r = NULL;
      CHECK(ttdrv_linear(a, m->w[l], m->b[l], TTDRV_ACTIVATION_NONE, 0, z));
      CHECK(ttdrv_eltwise_unary(z, TTDRV_UNARY_RELU, 0.0f, 0, &l1, &r));
      CHECK(ttdrv_buffer_free(z));
      if (a != m->x) CHECK(ttdrv_buffer_free(a));
      a = r;
    }
  }
  if (a != m->x) CHECK(ttdrv_buffer_free(a));
}

typedef struct {
  uint32_t memory; /* 0 DRAM, 1 L1 */
  uint64_t address;
  const ttdrv_buffer *buffer;
} binding;

static int by_memory_then_address(const void *pa, const void *pb) {
  const binding *a = pa, *b = pb;
  if (a->memory != b->memory) return a->memory < b->memory ? -1 : 1;
  return a->address < b->address ? -1 : a->address > b->address;
}

static void print_info(ttdrv_device *dev, uint32_t tid, const char *what) {
  ttdrv_trace_info info = {.struct_size = sizeof info};
  CHECK(ttdrv_trace_get_info(dev, tid, &info));
  printf("trace_save_load %s: %u launches, %llu bytes of records, trace region %llu bytes, %u bindings, %u owned "
         "ranges (%llu bytes), %u event records, %u event waits\n",
         what, info.launches, (unsigned long long)info.bytes, (unsigned long long)info.region_bytes, info.bindings,
         info.owned_ranges, (unsigned long long)info.owned_bytes, info.event_records, info.event_waits);
}

/* Replays the loaded trace for ITERATIONS distinct inputs and checks every output against plain C. */
static void replay(ttdrv_device *dev, uint32_t tid, const mlp_host *host, const model *m, float *inputs,
                   float *outputs, const char *file, const char *what) {
  size_t n_in = (size_t)MLP_BATCH * MLP_IN, n_out = (size_t)MLP_BATCH * MLP_OUT;
  for (uint32_t it = 0; it < ITERATIONS; it++) {
    CHECK(ttdrv_buffer_write(m->x, 0, inputs + it * n_in, sizeof(float) * n_in, false));
    CHECK(ttdrv_trace_execute(dev, tid, 0, false));
    CHECK(ttdrv_buffer_read(m->y, 0, false, outputs + it * n_out, sizeof(float) * n_out));
  }
  CHECK(ttdrv_device_finish(dev, 0));
  size_t checked = verify_outputs(host, inputs, outputs, ITERATIONS);
  printf("trace_save_load %s: checked %zu values over %u replays of the trace loaded from %s\n", what, checked,
         ITERATIONS, file);
}

/* The buffers for the file's bindings, in the file's order, found through its listing: a binding takes the buffer
 * of its spec and role (input or output) whose address has the same rank among those buffers' as the binding's
 * saved address among those bindings' — the buffers are allocated in the saver's order, so they keep their order
 * whatever shifted them. Every binding must be rebindable, since no buffer is where the saver's was. */
static size_t bind_from_file(const model *m, const char *file, const ttdrv_buffer **out) {
  const ttdrv_buffer *mine[2 * LAYERS + 2];
  bool mine_output[2 * LAYERS + 2];
  size_t n_mine = 0;
  for (uint32_t l = 0; l < LAYERS; l++) {
    mine_output[n_mine] = false, mine[n_mine++] = m->w[l];
    mine_output[n_mine] = false, mine[n_mine++] = m->b[l];
  }
  mine_output[n_mine] = false, mine[n_mine++] = m->x;
  mine_output[n_mine] = true, mine[n_mine++] = m->y;

  ttdrv_trace_file *f = NULL;
  CHECK(ttdrv_trace_file_open(file, &f));
  size_t n = 0, moved = 0;
  CHECK(ttdrv_trace_file_binding_count(f, &n));
  EXPECT(n == n_mine, "%s has %zu bindings; this model has %zu buffers", file, n, n_mine);
  ttdrv_trace_binding fb[2 * LAYERS + 2];
  for (size_t i = 0; i < n; i++) {
    fb[i] = (ttdrv_trace_binding){.struct_size = sizeof fb[i]};
    CHECK(ttdrv_trace_file_get_binding(f, i, &fb[i]));
  }
  CHECK(ttdrv_trace_file_free(f));
  for (size_t i = 0; i < n; i++) {
    size_t rank = 0; /* bindings like this one saved at a lower address */
    for (size_t j = 0; j < n; j++)
      rank += memcmp(&fb[j].spec, &fb[i].spec, sizeof fb[i].spec) == 0 && fb[j].output == fb[i].output &&
              fb[j].address < fb[i].address;
    const ttdrv_buffer *found = NULL;
    for (size_t k = 0; k < n_mine && !found; k++) {
      ttdrv_tensor_spec s;
      uint64_t a = 0;
      CHECK(ttdrv_buffer_get_spec(mine[k], &s));
      CHECK(ttdrv_buffer_address(mine[k], &a));
      if (memcmp(&s, &fb[i].spec, sizeof s) != 0 || mine_output[k] != fb[i].output) continue;
      size_t r = 0;
      for (size_t q = 0; q < n_mine; q++) {
        ttdrv_tensor_spec s2;
        uint64_t a2 = 0;
        CHECK(ttdrv_buffer_get_spec(mine[q], &s2));
        CHECK(ttdrv_buffer_address(mine[q], &a2));
        r += memcmp(&s2, &s, sizeof s) == 0 && mine_output[q] == mine_output[k] && a2 < a;
      }
      if (r == rank) {
        found = mine[k];
        EXPECT(fb[i].rebindable || a == fb[i].address,
               "binding %s is not rebindable, and its buffer is at %#llx, not at the saved %#llx", fb[i].name,
               (unsigned long long)a, (unsigned long long)fb[i].address);
        moved += a != fb[i].address;
      }
    }
    EXPECT(found, "no buffer of this model fits binding %s (%ux%u, %s)", fb[i].name, fb[i].spec.rows,
           fb[i].spec.cols, fb[i].output ? "output" : "input");
    out[i] = found;
  }
  EXPECT(moved == n, "only %zu of %zu buffers are at another address than the saver's", moved, n);
  printf("trace_save_load load-moved: %zu bindings listed from %s, every buffer at another address than the "
         "saver's\n",
         n, file);
  return n;
}

int main(int argc, char **argv) {
  EXPECT(argc == 3 && (strcmp(argv[1], "save") == 0 || strcmp(argv[1], "load") == 0 ||
                       strcmp(argv[1], "load-moved") == 0),
         "usage: %s save|load|load-moved FILE", argv[0]);
  const char *file = argv[2];
  mlp_host host;
  mlp_host_init(&host, 5);
  ttdrv_device *dev = open_example_device(1, 1u << 20);
  ttdrv_buffer *pad_dram = NULL, *pad_l1 = NULL;
  if (strcmp(argv[1], "load-moved") == 0) {
    /* Taken before the model's buffers, so that every one of them lands at another address than the saver's, and
     * past the ranges the saved trace owns (its activations, in L1 after the saver's input and output); freed
     * before the load, which needs those ranges free. */
    pad_dram = alloc_f32(dev, 8, 64, TTDRV_BUFFER_DRAM);
    pad_l1 = alloc_f32(dev, 32, 1024, TTDRV_BUFFER_L1);
  }
  model m;
  model_allocate(dev, &host, &m);
  if (pad_dram) CHECK(ttdrv_buffer_free(pad_dram));
  if (pad_l1) CHECK(ttdrv_buffer_free(pad_l1));
  size_t n_in = (size_t)MLP_BATCH * MLP_IN, n_out = (size_t)MLP_BATCH * MLP_OUT;
  float *inputs = malloc(sizeof(float) * n_in * ITERATIONS), *outputs = malloc(sizeof(float) * n_out * ITERATIONS);
  EXPECT(inputs && outputs, "out of host memory");
  for (uint32_t it = 0; it < ITERATIONS; it++) make_input(inputs + it * n_in, n_in, it);

  uint32_t tid = 0;
  if (strcmp(argv[1], "save") == 0) {
    CHECK(ttdrv_buffer_write(m.x, 0, inputs, sizeof(float) * n_in, false));
    model_run(dev, &host, &m); /* compiles every op's program */
    CHECK(ttdrv_trace_begin_capture(dev, 0, &tid));
    model_run(dev, &host, &m);
    CHECK(ttdrv_trace_end_capture(dev, tid, 0));
    CHECK(ttdrv_trace_save(dev, tid, file));
    print_info(dev, tid, "save");
    printf("trace_save_load save: trace saved to %s\n", file);
  } else if (strcmp(argv[1], "load-moved") == 0) {
    const ttdrv_buffer *bindings[2 * LAYERS + 2];
    size_t nb = bind_from_file(&m, file, bindings);
    CHECK(ttdrv_trace_load(dev, file, bindings, nb, 0, &tid));
    print_info(dev, tid, "load-moved");
    replay(dev, tid, &host, &m, inputs, outputs, file, "load-moved");
  } else {
    binding b[2 * LAYERS + 2];
    size_t nb = 0;
    for (uint32_t l = 0; l < LAYERS; l++) {
      b[nb++] = (binding){0, 0, m.w[l]};
      b[nb++] = (binding){0, 0, m.b[l]};
    }
    b[nb++] = (binding){1, 0, m.x};
    b[nb++] = (binding){1, 0, m.y};
    for (size_t i = 0; i < nb; i++) CHECK(ttdrv_buffer_address(b[i].buffer, &b[i].address));
    /* The file lists its bindings by memory (DRAM, L1, L1_SMALL), then address. */
    qsort(b, nb, sizeof b[0], by_memory_then_address);
    const ttdrv_buffer *bindings[2 * LAYERS + 2];
    for (size_t i = 0; i < nb; i++) bindings[i] = b[i].buffer;
    CHECK(ttdrv_trace_load(dev, file, bindings, nb, 0, &tid));
    print_info(dev, tid, "load");
    replay(dev, tid, &host, &m, inputs, outputs, file, "load");
  }
  CHECK(ttdrv_trace_release(dev, tid));
  model_free(&m);
  CHECK(ttdrv_device_close(dev));
  free(inputs);
  free(outputs);
  mlp_host_free(&host);
  return 0;
}
