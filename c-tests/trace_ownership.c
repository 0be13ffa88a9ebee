/* trace_ownership: which device memory a trace owns, from C (scripts/test.d/16-c-abi.sh; the rule is stated at
 * ttdrv_trace_begin_capture in ttdrv.h and in docs/architecture.md, "Trace").
 *
 *  1. During a capture on queue 0 the "model" frees an intermediate; a buffer the caller allocates then (first fit
 *     would put it exactly there) and writes on queue 1 lands elsewhere, and no replay overwrites it.
 *  2. Two captures in progress at once (queues 0 and 1) never share an intermediate; replaying both at once under
 *     jitter gives each its own right output.
 *  3. Once the traced output is freed, a smaller, a larger or a differently shaped buffer allocated over its range
 *     makes ttdrv_trace_execute fail with INVALID_STATE naming the range and the buffer expected, and keeps its
 *     data; with nothing there it fails too; the captured spec at the captured address replays again.
 *  4. A generic program: ttdrv_program_run keeps the buffer it filled external (the replay fails once it is freed
 *     and something else lands there), ttdrv_program_run_io with the buffer as an output makes it the trace's.
 *
 * Output: one line per failed expectation, then "trace_ownership: N passed, M failed"; exit status 1 if any failed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ttdrv.h>

static unsigned n_passed, n_failed;

#define TRUE_(cond, ...)                                      \
  do {                                                        \
    if (cond) {                                               \
      n_passed++;                                             \
    } else {                                                  \
      fprintf(stderr, "FAIL line %d: %s: ", __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                           \
      fprintf(stderr, "\n");                                  \
      n_failed++;                                             \
    }                                                         \
  } while (0)
#define CHECK(call)                                                                                   \
  do {                                                                                                \
    ttdrv_status st_ = (call);                                                                        \
    if (st_ != TTDRV_STATUS_OK) {                                                                     \
      fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #call, ttdrv_status_name(st_),       \
              ttdrv_last_error());                                                                    \
      exit(2);                                                                                        \
    }                                                                                                 \
  } while (0)

#define ROWS 64
#define COLS 256
#define N (ROWS * COLS)

static ttdrv_tensor_spec spec(uint32_t rows, uint32_t cols, uint32_t dtype) {
  ttdrv_tensor_spec s;
  CHECK(ttdrv_tensor_spec_init(&s));
  s.rows = rows;
  s.cols = cols;
  s.dtype = dtype;
  memset(&s.mem, 0, sizeof s.mem);
  s.mem.buffer_type = TTDRV_BUFFER_L1;
  s.mem.layout = TTDRV_LAYOUT_INTERLEAVED;
  return s;
}

static ttdrv_device *open_dev(const char *selector) {
  ttdrv_device_params p;
  CHECK(ttdrv_device_params_init(&p));
  p.num_command_queues = 2;
  p.trace_region_size = 1 << 20;
  p.flags |= TTDRV_DEVICE_FLAG_NO_HUGEPAGES;
  ttdrv_device *dev = NULL;
  CHECK(ttdrv_device_open(selector, &p, &dev));
  return dev;
}

static uint64_t address(const ttdrv_buffer *b) {
  uint64_t a = 0;
  CHECK(ttdrv_buffer_address(b, &a));
  return a;
}

static void fill_random(float *v, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    v[i] = (float)(seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
  }
}

/* y = factor * x into an intermediate, out = relu(y), the intermediate freed: one layer of a model. */
static ttdrv_buffer *layer(ttdrv_buffer *x, uint16_t cq, float factor, uint64_t *y_addr) {
  ttdrv_memory_config mem = spec(1, 1, TTDRV_DTYPE_FLOAT32).mem;
  ttdrv_buffer *y = NULL, *out = NULL;
  CHECK(ttdrv_eltwise_unary(x, TTDRV_UNARY_SCALE, factor, cq, &mem, &y));
  CHECK(ttdrv_eltwise_unary(y, TTDRV_UNARY_RELU, 0.0f, cq, &mem, &out));
  if (y_addr) *y_addr = address(y);
  CHECK(ttdrv_buffer_free(y));
  return out;
}

static int check_output(ttdrv_buffer *out, uint16_t cq, const float *x, float factor) {
  static float got[N];
  CHECK(ttdrv_buffer_read(out, cq, true, got, sizeof got));
  for (size_t i = 0; i < N; i++) {
    float want = x[i] * factor > 0.0f ? x[i] * factor : 0.0f;
    if (got[i] != want) return 0;
  }
  return 1;
}

static void test_intermediate_is_owned(void) {
  static float x[N], data[N], back[N];
  ttdrv_device *dev = open_dev("emu");
  ttdrv_tensor_spec s = spec(ROWS, COLS, TTDRV_DTYPE_FLOAT32);
  fill_random(x, N, 1);
  ttdrv_buffer *in = NULL, *user = NULL;
  CHECK(ttdrv_buffer_from_host(dev, &s, 0, x, sizeof x, &in));
  CHECK(ttdrv_buffer_free(layer(in, 0, 2.0f, NULL)));
  CHECK(ttdrv_device_finish(dev, 0));

  uint32_t tid = 0;
  uint64_t y_addr = 0;
  CHECK(ttdrv_trace_begin_capture(dev, 0, &tid));
  ttdrv_buffer *out = layer(in, 0, 2.0f, &y_addr);
  CHECK(ttdrv_buffer_allocate(dev, &s, &user));
  TRUE_(address(user) != y_addr, "the caller's buffer landed on the trace's intermediate at %#llx",
        (unsigned long long)y_addr);
  fill_random(data, N, 2);
  CHECK(ttdrv_buffer_write(user, 1, data, sizeof data, false));
  CHECK(ttdrv_device_finish(dev, 1));
  CHECK(ttdrv_trace_end_capture(dev, tid, 0));
  for (int i = 0; i < 5; i++) {
    CHECK(ttdrv_trace_execute(dev, tid, 0, false));
    TRUE_(check_output(out, 0, x, 2.0f), "replay %d: wrong output", i);
    CHECK(ttdrv_buffer_read(user, 1, true, back, sizeof back));
    TRUE_(memcmp(back, data, sizeof data) == 0, "replay %d overwrote the caller's buffer", i);
  }
  CHECK(ttdrv_trace_release(dev, tid));
  CHECK(ttdrv_buffer_free(user));
  CHECK(ttdrv_buffer_free(out));
  CHECK(ttdrv_buffer_free(in));
  CHECK(ttdrv_device_close(dev));
}

static void test_concurrent_captures(void) {
  static float x[2][N];
  const float factor[2] = {2.0f, -3.0f};
  ttdrv_device *dev = open_dev("emu:jitter=12,jitter_us=100,jitter_pct=40");
  ttdrv_tensor_spec s = spec(ROWS, COLS, TTDRV_DTYPE_FLOAT32);
  ttdrv_buffer *in[2] = {NULL, NULL}, *out[2] = {NULL, NULL};
  uint32_t tid[2] = {0, 0};
  uint64_t y_addr[2] = {0, 0};
  for (uint16_t q = 0; q < 2; q++) {
    CHECK(ttdrv_buffer_allocate(dev, &s, &in[q]));
    CHECK(ttdrv_buffer_free(layer(in[q], q, factor[q], NULL)));
    CHECK(ttdrv_device_finish(dev, q));
  }
  CHECK(ttdrv_trace_begin_capture(dev, 0, &tid[0]));
  CHECK(ttdrv_trace_begin_capture(dev, 1, &tid[1]));
  for (uint16_t q = 0; q < 2; q++) out[q] = layer(in[q], q, factor[q], &y_addr[q]);
  TRUE_(y_addr[0] != y_addr[1], "both captures use the intermediate at %#llx", (unsigned long long)y_addr[0]);
  for (uint16_t q = 0; q < 2; q++) CHECK(ttdrv_trace_end_capture(dev, tid[q], q));
  for (uint32_t it = 0; it < 10; it++) {
    for (uint16_t q = 0; q < 2; q++) {
      fill_random(x[q], N, 100 + 2 * it + q);
      CHECK(ttdrv_buffer_write(in[q], q, x[q], sizeof x[q], false));
      CHECK(ttdrv_trace_execute(dev, tid[q], q, false));
    }
    for (uint16_t q = 0; q < 2; q++)
      TRUE_(check_output(out[q], q, x[q], factor[q]), "iteration %u: wrong output of the trace on queue %u", it,
            (unsigned)q);
  }
  for (uint16_t q = 0; q < 2; q++) {
    CHECK(ttdrv_trace_release(dev, tid[q]));
    CHECK(ttdrv_buffer_free(out[q]));
    CHECK(ttdrv_buffer_free(in[q]));
  }
  CHECK(ttdrv_device_close(dev));
}

static void test_reused_output(void) {
  static float x[N], data[4 * N], back[4 * N];
  ttdrv_device *dev = open_dev("emu");
  ttdrv_tensor_spec s = spec(ROWS, COLS, TTDRV_DTYPE_FLOAT32);
  fill_random(x, N, 3);
  ttdrv_buffer *in = NULL;
  CHECK(ttdrv_buffer_from_host(dev, &s, 0, x, sizeof x, &in));
  CHECK(ttdrv_buffer_free(layer(in, 0, 2.0f, NULL)));
  uint32_t tid = 0;
  CHECK(ttdrv_trace_begin_capture(dev, 0, &tid));
  ttdrv_buffer *out = layer(in, 0, 2.0f, NULL);
  CHECK(ttdrv_trace_end_capture(dev, tid, 0));
  CHECK(ttdrv_trace_execute(dev, tid, 0, true));
  uint64_t out_addr = address(out);
  CHECK(ttdrv_buffer_free(out));

  const struct {
    const char *name;
    ttdrv_tensor_spec s;
  } others[] = {
      {"smaller", spec(ROWS / 2, COLS, TTDRV_DTYPE_FLOAT32)},
      {"larger", spec(ROWS * 2, COLS, TTDRV_DTYPE_FLOAT32)},
      {"differently shaped", spec(ROWS * 2, COLS / 2, TTDRV_DTYPE_FLOAT32)},
      {"bfloat16", spec(ROWS, COLS * 2, TTDRV_DTYPE_BFLOAT16)},
  };
  char range[64];
  for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
    ttdrv_buffer *o = NULL;
    CHECK(ttdrv_buffer_allocate(dev, &others[i].s, &o));
    TRUE_(address(o) == out_addr, "%s: allocated at %#llx, not over the output at %#llx", others[i].name,
          (unsigned long long)address(o), (unsigned long long)out_addr);
    size_t bytes = (size_t)others[i].s.rows * others[i].s.cols * (others[i].s.dtype == TTDRV_DTYPE_FLOAT32 ? 4 : 2);
    fill_random(data, bytes / 4, 7 + (uint32_t)i);
    CHECK(ttdrv_buffer_write(o, 0, data, bytes, false));
    ttdrv_status st = ttdrv_trace_execute(dev, tid, 0, false);
    const char *msg = ttdrv_last_error();
    snprintf(range, sizeof range, "L1 range [%#llx, ", (unsigned long long)out_addr);
    TRUE_(st == TTDRV_STATUS_INVALID_STATE, "%s: execute returned %s", others[i].name, ttdrv_status_name(st));
    TRUE_(strstr(msg, range) && strstr(msg, "[64, 256] Float32 L1") && strstr(msg, "holds that range now"),
          "%s: the message does not name the range and the buffer expected: %s", others[i].name, msg);
    CHECK(ttdrv_buffer_read(o, 0, true, back, bytes));
    TRUE_(memcmp(back, data, bytes) == 0, "%s: its data changed", others[i].name);
    CHECK(ttdrv_buffer_free(o));
  }
  ttdrv_status st = ttdrv_trace_execute(dev, tid, 0, false);
  TRUE_(st == TTDRV_STATUS_INVALID_STATE && strstr(ttdrv_last_error(), "no live buffer holds"),
        "nothing over the output: %s: %s", ttdrv_status_name(st), ttdrv_last_error());
  CHECK(ttdrv_buffer_allocate(dev, &s, &out));
  TRUE_(address(out) == out_addr, "the output's spec did not land at its address");
  CHECK(ttdrv_trace_execute(dev, tid, 0, true));
  TRUE_(check_output(out, 0, x, 2.0f), "wrong output after the output was allocated again");
  CHECK(ttdrv_trace_release(dev, tid));
  CHECK(ttdrv_buffer_free(out));
  CHECK(ttdrv_buffer_free(in));
  CHECK(ttdrv_device_close(dev));
}

/* A one-core fill of the first 8 values of `b` with 1.5, as a generic program. */
static ttdrv_program *fill_program(ttdrv_device *dev, ttdrv_buffer *b, uint32_t rt[17]) {
  ttdrv_program_desc d;
  CHECK(ttdrv_program_desc_init(&d));
  d.kernel_name = "ttdrv.fill";
  d.rt_words_per_core = 17;
  ttdrv_program *p = NULL;
  CHECK(ttdrv_program_new(dev, &d, &p));
  const uint32_t block[4] = {0, 1, 0, 8};
  memcpy(rt, block, sizeof block);
  CHECK(ttdrv_buffer_accessor(b, rt + 4, 12));
  float v = 1.5f;
  memcpy(&rt[16], &v, 4);
  return p;
}

static void test_generic_programs(void) {
  ttdrv_device *dev = open_dev("emu");
  ttdrv_tensor_spec s = spec(1, 8, TTDRV_DTYPE_FLOAT32), s2 = spec(2, 8, TTDRV_DTYPE_FLOAT32);
  ttdrv_memory_config mem = s.mem;
  for (int name_outputs = 0; name_outputs < 2; name_outputs++) {
    ttdrv_buffer *y = NULL, *out = NULL, *other = NULL;
    uint32_t rt[17];
    CHECK(ttdrv_buffer_allocate(dev, &s, &y));
    ttdrv_program *p = fill_program(dev, y, rt);
    ttdrv_buffer *list[1] = {y};
    CHECK(ttdrv_program_run_io(p, 0, rt, 17, NULL, 0, list, 1));
    CHECK(ttdrv_eltwise_unary(y, TTDRV_UNARY_RELU, 0.0f, 0, &mem, &out));
    CHECK(ttdrv_buffer_free(out));
    CHECK(ttdrv_device_finish(dev, 0));
    uint32_t tid = 0;
    CHECK(ttdrv_trace_begin_capture(dev, 0, &tid));
    if (name_outputs)
      CHECK(ttdrv_program_run_io(p, 0, rt, 17, NULL, 0, list, 1));
    else
      CHECK(ttdrv_program_run(p, 0, rt, 17, list, 1));
    CHECK(ttdrv_eltwise_unary(y, TTDRV_UNARY_RELU, 0.0f, 0, &mem, &out));
    uint64_t y_addr = address(y);
    CHECK(ttdrv_buffer_free(y));
    CHECK(ttdrv_buffer_allocate(dev, &s2, &other));
    CHECK(ttdrv_trace_end_capture(dev, tid, 0));
    ttdrv_status st = ttdrv_trace_execute(dev, tid, 0, true);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ttdrv_last_error()); /* the calls below clear it */
    if (name_outputs) {
      TRUE_(address(other) != y_addr, "run_io: a buffer landed on the trace's intermediate");
      TRUE_(st == TTDRV_STATUS_OK, "run_io: execute returned %s: %s", ttdrv_status_name(st), msg);
      float got[8];
      CHECK(ttdrv_buffer_read(out, 0, true, got, sizeof got));
      TRUE_(got[0] == 1.5f && got[7] == 1.5f, "run_io: wrong output %g", (double)got[0]);
    } else {
      TRUE_(address(other) == y_addr, "run: the freed buffer stays the caller's, so first fit lands there");
      TRUE_(st == TTDRV_STATUS_INVALID_STATE && strstr(msg, "reads (its input"), "run: execute returned %s: %s",
            ttdrv_status_name(st), msg);
    }
    CHECK(ttdrv_trace_release(dev, tid));
    CHECK(ttdrv_buffer_free(other));
    CHECK(ttdrv_buffer_free(out));
    CHECK(ttdrv_program_free(p));
  }
  CHECK(ttdrv_device_close(dev));
}

int main(void) {
  test_intermediate_is_owned();
  test_concurrent_captures();
  test_reused_output();
  test_generic_programs();
  printf("trace_ownership: %u passed, %u failed\n", n_passed, n_failed);
  return n_failed ? 1 : 0;
}
