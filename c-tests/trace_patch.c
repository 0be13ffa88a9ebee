/* trace_patch: patching a captured trace from C — the listings (ttdrv_trace_get_info's 0.3 counts,
 * ttdrv_trace_get_binding / _find_binding / _get_scalar, a saved file's bindings through ttdrv_trace_file_open),
 * rebinding for every later replay (ttdrv_trace_rebind) and for one (ttdrv_trace_execute_with), named scalars
 * (ttdrv_trace_set_scalar / _f32), the roles of ttdrv_program_launch_with, and a patch racing a replay on another
 * queue, refused without an event and ordered with one. Every entry point's argument checks too: NULLs, stale
 * handles, indices out of range, wrong specs, unknown names, NaN into a float scalar, bad struct sizes. Run by
 * scripts/test.d/16-c-abi.sh, and under ASan/UBSan/LSan by scripts/test.d/30-sanitizers.sh.
 *
 * The traced model is y = scale(x + b, factor): two built-in operations, whose address words and factor are
 * declared, so every binding is rebindable and the factor is the scalar "scale.factor#0".
 *
 * Output: one line per failed expectation, then "trace_patch: N passed, M failed"; exit status 1 if any failed. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ttdrv.h>
#include <unistd.h>

#include "expect.h"

#define R 32u
#define C 32u
#define N (R * C)

static ttdrv_device *open_dev(const char *selector, uint32_t queues) {
  ttdrv_device_params p;
  ttdrv_device_params_init(&p);
  p.num_command_queues = queues;
  p.trace_region_size = 4u << 20;
  p.flags = TTDRV_DEVICE_FLAG_NO_HUGEPAGES;
  ttdrv_device *d = NULL;
  if (ttdrv_device_open(selector, &p, &d) != TTDRV_STATUS_OK) {
    fprintf(stderr, "cannot open %s: %s\n", selector, ttdrv_last_error());
    exit(2);
  }
  return d;
}

static ttdrv_tensor_spec spec_rc(uint32_t rows, uint32_t cols) {
  ttdrv_tensor_spec s;
  ttdrv_tensor_spec_init(&s);
  s.rows = rows;
  s.cols = cols;
  return s;
}

static void values(float *v, uint32_t seed) {
  for (uint32_t i = 0; i < N; i++) v[i] = (float)((i * 2654435761u + seed * 40503u) % 2001u) / 100.0f - 10.0f;
}

static ttdrv_buffer *upload(ttdrv_device *d, const float *v) {
  ttdrv_tensor_spec s = spec_rc(R, C);
  ttdrv_buffer *b = NULL;
  if (!OK(ttdrv_buffer_from_host(d, &s, 0, v, N * sizeof(float), &b))) exit(2);
  return b;
}

static uint64_t address(const ttdrv_buffer *b) {
  uint64_t a = 0;
  ttdrv_buffer_address(b, &a);
  return a;
}

/* Whether `y` holds (x + b) * factor, each element computed as the device does: one float add, one float multiply. */
static bool holds(ttdrv_buffer *y, const float *x, const float *b, float factor) {
  float got[N];
  if (ttdrv_buffer_read(y, 0, true, got, sizeof got) != TTDRV_STATUS_OK) return false;
  for (uint32_t i = 0; i < N; i++) {
    float want = (x[i] + b[i]) * factor;
    if (memcmp(&got[i], &want, sizeof want) != 0) {
      fprintf(stderr, "    element %u: got %g, want %g\n", i, (double)got[i], (double)want);
      return false;
    }
  }
  return true;
}

/* Captures y = scale(x + b, factor) on queue `cq`, its intermediate freed during the capture; `*y` is the output. */
static uint32_t capture(ttdrv_device *d, uint16_t cq, ttdrv_buffer *x, ttdrv_buffer *b, float factor,
                        ttdrv_buffer **y) {
  ttdrv_tensor_spec s = spec_rc(R, C);
  ttdrv_buffer *z = NULL, *out = NULL;
  /* The compile run. */
  if (!OK(ttdrv_eltwise_binary(x, b, TTDRV_BINARY_ADD, cq, &s.mem, &z))) exit(2);
  if (!OK(ttdrv_eltwise_unary(z, TTDRV_UNARY_SCALE, factor, cq, &s.mem, &out))) exit(2);
  ttdrv_buffer_free(z);
  ttdrv_buffer_free(out);
  ttdrv_device_finish(d, cq);
  uint32_t tid = 0;
  if (!OK(ttdrv_trace_begin_capture(d, cq, &tid))) exit(2);
  OK(ttdrv_eltwise_binary(x, b, TTDRV_BINARY_ADD, cq, &s.mem, &z));
  OK(ttdrv_eltwise_unary(z, TTDRV_UNARY_SCALE, factor, cq, &s.mem, y));
  OK(ttdrv_buffer_free(z));
  if (!OK(ttdrv_trace_end_capture(d, tid, cq))) exit(2);
  return tid;
}

/* The index of the binding that holds `buf` now. */
static size_t index_of(ttdrv_device *d, uint32_t tid, const ttdrv_buffer *buf) {
  size_t n = 0;
  ttdrv_trace_binding_count(d, tid, &n);
  for (size_t i = 0; i < n; i++) {
    ttdrv_trace_binding tb = {.struct_size = sizeof tb};
    if (ttdrv_trace_get_binding(d, tid, i, &tb) == TTDRV_STATUS_OK && tb.address == address(buf)) return i;
  }
  fail(__LINE__, "no binding of trace %u holds the buffer at %#llx", tid, (unsigned long long)address(buf));
  return (size_t)-1;
}

static void listings(void) {
  group = "listings";
  ttdrv_device *d = open_dev("emu", 1);
  float xv[N], bv[N];
  values(xv, 1);
  values(bv, 2);
  ttdrv_buffer *x = upload(d, xv), *b = upload(d, bv), *y = NULL;
  uint32_t tid = capture(d, 0, x, b, 2.5f, &y);

  /* ttdrv_trace_info: the 0.3 counts, and a 0.2 caller gets exactly its fields. */
  ttdrv_trace_info info = {.struct_size = sizeof info};
  OK(ttdrv_trace_get_info(d, tid, &info));
  TRUE_(info.struct_size == TTDRV_TRACE_INFO_SIZE_V0_3, "struct_size %u", info.struct_size);
  TRUE_(info.bindings == 3 && info.rebindable == 3, "bindings %u, rebindable %u (want 3, 3)", info.bindings,
        info.rebindable);
  TRUE_(info.scalars == 1, "scalars %u (want 1)", info.scalars);
  TRUE_(info.patchable_words >= 4, "patchable words %u: three addresses and a factor at least", info.patchable_words);
  unsigned char old[TTDRV_TRACE_INFO_SIZE_V0_3 + 8];
  memset(old, 0xA5, sizeof old);
  uint32_t size02 = TTDRV_TRACE_INFO_SIZE_V0_2;
  memcpy(old, &size02, 4);
  OK(ttdrv_trace_get_info(d, tid, (ttdrv_trace_info *)(void *)old));
  bool untouched = true;
  for (size_t i = TTDRV_TRACE_INFO_SIZE_V0_2; i < sizeof old; i++) untouched &= old[i] == 0xA5;
  memcpy(&size02, old, 4);
  TRUE_(untouched && size02 == TTDRV_TRACE_INFO_SIZE_V0_2, "a 0.2 caller got bytes past its struct");

  /* Bindings. */
  size_t n = 0;
  OK(ttdrv_trace_binding_count(d, tid, &n));
  TRUE_(n == 3, "%zu bindings (want 3)", n);
  int inputs = 0, outputs = 0;
  for (size_t i = 0; i < n; i++) {
    ttdrv_trace_binding tb = {.struct_size = sizeof tb};
    OK(ttdrv_trace_get_binding(d, tid, i, &tb));
    TRUE_(tb.struct_size == TTDRV_TRACE_BINDING_SIZE_V0_3 && tb.rebindable && tb.words >= 1, "binding %zu", i);
    TRUE_(tb.spec.rows == R && tb.spec.cols == C && tb.spec.struct_size == TTDRV_TENSOR_SPEC_SIZE_V0_1,
          "binding %zu's spec", i);
    inputs += !tb.output && strncmp(tb.name, "input", 5) == 0;
    outputs += tb.output && strncmp(tb.name, "output", 6) == 0;
    size_t back = 99;
    OK(ttdrv_trace_find_binding(d, tid, tb.name, &back));
    TRUE_(back == i, "find_binding(%s) gave %zu, want %zu", tb.name, back, i);
    if (tb.output) TRUE_(tb.address == address(y), "the output binding holds y");
  }
  TRUE_(inputs == 2 && outputs == 1, "%d inputs and %d outputs (want 2 and 1)", inputs, outputs);
  ttdrv_trace_binding tb = {.struct_size = sizeof tb};
  ST(INVALID_ARGUMENT, ttdrv_trace_get_binding(d, tid, 3, &tb), "3", "ttdrv_trace_binding_count");
  ST(INVALID_ARGUMENT, ttdrv_trace_get_binding(d, tid, SIZE_MAX, &tb), "ttdrv_trace_binding_count");
  ST(NULL_PARAMETER, ttdrv_trace_get_binding(d, tid, 0, NULL), "out");
  tb.struct_size = 3;
  ST(INVALID_ARGUMENT, ttdrv_trace_get_binding(d, tid, 0, &tb), "struct_size", "sizeof(ttdrv_trace_binding)");
  tb.struct_size = sizeof tb;
  ST(INVALID_STATE, ttdrv_trace_get_binding(d, tid + 100, 0, &tb), "trace");
  ST(INVALID_HANDLE, ttdrv_trace_get_binding((ttdrv_device *)(uintptr_t)0x1234, tid, 0, &tb), "ttdrv_device");
  ST(NULL_PARAMETER, ttdrv_trace_binding_count(d, tid, NULL), "out_count");
  ST(NULL_PARAMETER, ttdrv_trace_binding_count(NULL, tid, &n), "device");
  size_t idx = 0;
  ST(INVALID_ARGUMENT, ttdrv_trace_find_binding(d, tid, "weights", &idx), "no binding named", "input0");
  ST(NULL_PARAMETER, ttdrv_trace_find_binding(d, tid, NULL, &idx), "name");
  ST(NULL_PARAMETER, ttdrv_trace_find_binding(d, tid, "input0", NULL), "out_index");

  /* Scalars. */
  OK(ttdrv_trace_scalar_count(d, tid, &n));
  TRUE_(n == 1, "%zu scalars (want 1)", n);
  ttdrv_trace_scalar sc = {.struct_size = sizeof sc};
  OK(ttdrv_trace_get_scalar(d, tid, 0, &sc));
  float f = 0;
  memcpy(&f, &sc.value_bits, 4);
  TRUE_(strcmp(sc.name, "scale.factor#0") == 0 && sc.kind == TTDRV_SCALAR_F32 && f == 2.5f && sc.words >= 1,
        "scalar 0 is %s kind %u value %g", sc.name, sc.kind, (double)f);
  ST(INVALID_ARGUMENT, ttdrv_trace_get_scalar(d, tid, 1, &sc), "ttdrv_trace_scalar_count");
  sc.struct_size = 0;
  ST(INVALID_ARGUMENT, ttdrv_trace_get_scalar(d, tid, 0, &sc), "struct_size");
  ST(NULL_PARAMETER, ttdrv_trace_get_scalar(d, tid, 0, NULL), "out");
  ST(NULL_PARAMETER, ttdrv_trace_scalar_count(d, tid, NULL), "out_count");

  /* A trace still being captured has no listing yet. */
  uint32_t open_tid = 0;
  OK(ttdrv_trace_begin_capture(d, 0, &open_tid));
  ST(INVALID_STATE, ttdrv_trace_binding_count(d, open_tid, &n), "captur");
  OK(ttdrv_trace_end_capture(d, open_tid, 0));
  OK(ttdrv_trace_release(d, open_tid));

  OK(ttdrv_trace_release(d, tid));
  ST(INVALID_STATE, ttdrv_trace_binding_count(d, tid, &n), "trace");
  ttdrv_buffer_free(x);
  ttdrv_buffer_free(b);
  ttdrv_buffer_free(y);
  ttdrv_device_close(d);
}

static void patches(void) {
  group = "rebind, scalars, execute_with";
  ttdrv_device *d = open_dev("emu", 1), *other = open_dev("emu", 1);
  float xv[N], bv[N], x2v[N], x3v[N];
  values(xv, 3);
  values(bv, 4);
  values(x2v, 5);
  values(x3v, 6);
  ttdrv_buffer *x = upload(d, xv), *b = upload(d, bv), *y = NULL;
  uint32_t tid = capture(d, 0, x, b, 2.0f, &y);
  size_t ix = index_of(d, tid, x), iy = index_of(d, tid, y);
  OK(ttdrv_trace_execute(d, tid, 0, true));
  TRUE_(holds(y, xv, bv, 2.0f), "the captured replay");

  /* set_scalar: argument checks, then a value that holds for later replays. */
  float nan = NAN, neg = -1.0f;
  uint32_t nan_bits, neg_bits, three_bits;
  memcpy(&nan_bits, &nan, 4);
  memcpy(&neg_bits, &neg, 4);
  float three = 3.0f;
  memcpy(&three_bits, &three, 4);
  ST(INVALID_ARGUMENT, ttdrv_trace_set_scalar(d, tid, 0, "scale.factor#0", nan_bits, NULL, 0), "finite");
  ST(INVALID_ARGUMENT, ttdrv_trace_set_scalar_f32(d, tid, 0, "scale.factor#0", INFINITY, NULL, 0), "finite");
  ST(INVALID_ARGUMENT, ttdrv_trace_set_scalar(d, tid, 0, "scale", three_bits, NULL, 0), "no scalar named",
     "scale.factor#0");
  ST(NULL_PARAMETER, ttdrv_trace_set_scalar(d, tid, 0, NULL, three_bits, NULL, 0), "name");
  ST(NULL_PARAMETER, ttdrv_trace_set_scalar(d, tid, 0, "scale.factor#0", three_bits, NULL, 1), "after");
  const ttdrv_event *null_ev[1] = {NULL};
  ST(NULL_PARAMETER, ttdrv_trace_set_scalar(d, tid, 0, "scale.factor#0", three_bits, null_ev, 1), "after[0]");
  const ttdrv_event *forged[1] = {(const ttdrv_event *)(uintptr_t)0x5678};
  ST(INVALID_HANDLE, ttdrv_trace_set_scalar(d, tid, 0, "scale.factor#0", three_bits, forged, 1), "after[0]");
  ST(INVALID_ARGUMENT, ttdrv_trace_set_scalar(d, tid, 7, "scale.factor#0", three_bits, NULL, 0), "queue");
  ST(INVALID_STATE, ttdrv_trace_set_scalar(d, tid + 100, 0, "scale.factor#0", three_bits, NULL, 0), "trace");
  ttdrv_trace_scalar sc = {.struct_size = sizeof sc};
  OK(ttdrv_trace_get_scalar(d, tid, 0, &sc));
  TRUE_(sc.value_bits != nan_bits, "a refused value was kept");
  OK(ttdrv_trace_execute(d, tid, 0, true));
  TRUE_(holds(y, xv, bv, 2.0f), "a refused set_scalar changed the trace");
  OK(ttdrv_trace_set_scalar(d, tid, 0, "scale.factor#0", three_bits, NULL, 0));
  OK(ttdrv_trace_execute(d, tid, 0, true));
  TRUE_(holds(y, xv, bv, 3.0f), "the replay after set_scalar(3)");
  OK(ttdrv_trace_set_scalar_f32(d, tid, 0, "scale.factor#0", -0.5f, NULL, 0));
  OK(ttdrv_trace_execute(d, tid, 0, true));
  TRUE_(holds(y, xv, bv, -0.5f), "the replay after set_scalar_f32(-0.5)");
  (void)neg_bits;

  /* rebind: argument checks; a refused call changes nothing. */
  ttdrv_buffer *x2 = upload(d, x2v), *x3 = upload(d, x3v);
  ttdrv_tensor_spec wide = spec_rc(R, 2 * C);
  ttdrv_buffer *wrong = NULL, *gone = NULL, *elsewhere = NULL;
  OK(ttdrv_buffer_allocate(d, &wide, &wrong));
  ttdrv_tensor_spec s = spec_rc(R, C);
  OK(ttdrv_buffer_allocate(d, &s, &gone));
  OK(ttdrv_buffer_free(gone));
  OK(ttdrv_buffer_allocate(other, &s, &elsewhere));
  ttdrv_trace_rebinding rb[2] = {{ix, x2}, {ix, x3}};
  ST(NULL_PARAMETER, ttdrv_trace_rebind(d, tid, 0, NULL, 1, NULL, 0), "bindings");
  ST(INVALID_ARGUMENT, ttdrv_trace_rebind(d, tid, 0, rb, 2, NULL, 0), "twice");
  ttdrv_trace_rebinding bad = {ix, NULL};
  ST(NULL_PARAMETER, ttdrv_trace_rebind(d, tid, 0, &bad, 1, NULL, 0), "bindings[0].buffer");
  bad = (ttdrv_trace_rebinding){ix, gone};
  ST(INVALID_HANDLE, ttdrv_trace_rebind(d, tid, 0, &bad, 1, NULL, 0), "bindings[0].buffer", "stale");
  bad = (ttdrv_trace_rebinding){ix, (const ttdrv_buffer *)d};
  ST(INVALID_HANDLE, ttdrv_trace_rebind(d, tid, 0, &bad, 1, NULL, 0), "ttdrv_device", "ttdrv_buffer");
  bad = (ttdrv_trace_rebinding){99, x2};
  ST(INVALID_ARGUMENT, ttdrv_trace_rebind(d, tid, 0, &bad, 1, NULL, 0), "binding 99 does not exist");
  bad = (ttdrv_trace_rebinding){ix, wrong};
  ST(INVALID_ARGUMENT, ttdrv_trace_rebind(d, tid, 0, &bad, 1, NULL, 0), "spec");
  bad = (ttdrv_trace_rebinding){ix, elsewhere};
  ST(INVALID_ARGUMENT, ttdrv_trace_rebind(d, tid, 0, &bad, 1, NULL, 0), "device");
  ST(INVALID_ARGUMENT, ttdrv_trace_rebind(d, tid, 0, (const ttdrv_trace_rebinding *)(uintptr_t)0x1001, 1, NULL, 0),
     "aligned");
  ST(INVALID_ARGUMENT, ttdrv_trace_rebind(d, tid, 0, rb, SIZE_MAX, NULL, 0), "impossible");
  ST(NULL_PARAMETER, ttdrv_trace_rebind(NULL, tid, 0, rb, 1, NULL, 0), "device");
  OK(ttdrv_trace_execute(d, tid, 0, true));
  TRUE_(holds(y, xv, bv, -0.5f), "a refused rebind changed the trace");

  /* rebind for all later replays: input and output. */
  ttdrv_buffer *y2 = NULL;
  OK(ttdrv_buffer_allocate(d, &s, &y2));
  TRUE_(address(x2) != address(x) && address(y2) != address(y), "the new buffers are elsewhere");
  ttdrv_trace_rebinding both[2] = {{ix, x2}, {iy, y2}};
  OK(ttdrv_trace_rebind(d, tid, 0, both, 2, NULL, 0));
  OK(ttdrv_trace_execute(d, tid, 0, true));
  TRUE_(holds(y2, x2v, bv, -0.5f), "the replay after the rebinding");
  TRUE_(holds(y, xv, bv, -0.5f), "the old output was written after the rebinding");
  ttdrv_trace_binding tb = {.struct_size = sizeof tb};
  OK(ttdrv_trace_get_binding(d, tid, ix, &tb));
  TRUE_(tb.address == address(x2), "the listing shows the new buffer");
  /* The old input may go: the trace no longer needs it. */
  OK(ttdrv_buffer_free(x));
  OK(ttdrv_trace_execute(d, tid, 0, true));
  TRUE_(holds(y2, x2v, bv, -0.5f), "a replay after the old input was freed");
  /* A rebound buffer must stay live, as a captured one. */
  OK(ttdrv_buffer_free(y2));
  ST(INVALID_STATE, ttdrv_trace_execute(d, tid, 0, true), "range");
  OK(ttdrv_buffer_allocate(d, &s, &y2));
  both[1].buffer = y2;
  OK(ttdrv_trace_rebind(d, tid, 0, &both[1], 1, NULL, 0));

  /* execute_with: bindings for one replay. */
  ttdrv_buffer *y3 = NULL;
  OK(ttdrv_buffer_allocate(d, &s, &y3));
  ttdrv_trace_rebinding once[2] = {{ix, x3}, {iy, y3}};
  OK(ttdrv_trace_execute_with(d, tid, 0, true, once, 2, NULL, 0));
  TRUE_(holds(y3, x3v, bv, -0.5f), "the replay with bindings for it");
  OK(ttdrv_trace_execute(d, tid, 0, true));
  TRUE_(holds(y2, x2v, bv, -0.5f), "the next replay is back on the bindings of before");
  OK(ttdrv_trace_get_binding(d, tid, iy, &tb));
  TRUE_(tb.address == address(y2), "the listing is back on the bindings of before");
  ST(INVALID_ARGUMENT, ttdrv_trace_execute_with(d, tid, 0, true, rb, 2, NULL, 0), "twice");
  bad = (ttdrv_trace_rebinding){ix, wrong};
  ST(INVALID_ARGUMENT, ttdrv_trace_execute_with(d, tid, 0, true, &bad, 1, NULL, 0), "spec");
  ST(NULL_PARAMETER, ttdrv_trace_execute_with(d, tid, 0, true, NULL, 2, NULL, 0), "bindings");
  ST(INVALID_STATE, ttdrv_trace_execute_with(d, tid + 100, 0, true, once, 2, NULL, 0), "trace");
  OK(ttdrv_trace_execute_with(d, tid, 0, false, NULL, 0, NULL, 0)); /* no bindings: a plain replay */
  OK(ttdrv_device_finish(d, 0));
  TRUE_(holds(y2, x2v, bv, -0.5f), "execute_with and no bindings");

  OK(ttdrv_trace_release(d, tid));
  ST(INVALID_STATE, ttdrv_trace_rebind(d, tid, 0, once, 1, NULL, 0), "trace");
  ttdrv_buffer *bufs[] = {b, y, x2, x3, y2, y3, wrong};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ttdrv_buffer_free(bufs[i]);
  ttdrv_buffer_free(elsewhere);
  ttdrv_device_close(other);
  ttdrv_device_close(d);
}

/* A patch on queue 0 while a replay still runs on queue 1: refused, naming the queue, unless an event recorded on
 * queue 1 after the replay orders it. Every record of the emulated device takes 2 ms, so the replay is in flight. */
static void races(void) {
  group = "a patch racing a replay";
  ttdrv_device *d = open_dev("emu:slow_us=2000", 2);
  float xv[N], bv[N], x2v[N];
  values(xv, 7);
  values(bv, 8);
  values(x2v, 9);
  ttdrv_buffer *x = upload(d, xv), *b = upload(d, bv), *y = NULL, *x2 = upload(d, x2v);
  uint32_t tid = capture(d, 0, x, b, 3.0f, &y);
  size_t ix = index_of(d, tid, x);
  ttdrv_trace_rebinding rb = {ix, x2};
  OK(ttdrv_trace_execute(d, tid, 1, false));
  ST(INVALID_STATE, ttdrv_trace_rebind(d, tid, 0, &rb, 1, NULL, 0), "queue 1", "event");
  ST(INVALID_STATE, ttdrv_trace_set_scalar_f32(d, tid, 0, "scale.factor#0", 1.0f, NULL, 0), "queue 1");
  ST(INVALID_STATE, ttdrv_trace_execute_with(d, tid, 0, false, &rb, 1, NULL, 0), "queue 1");
  ttdrv_event *ev = NULL;
  OK(ttdrv_event_new(d, &ev));
  OK(ttdrv_event_record(ev, 1));
  const ttdrv_event *after[1] = {ev};
  OK(ttdrv_trace_rebind(d, tid, 0, &rb, 1, after, 1));
  OK(ttdrv_event_synchronize(ev));
  TRUE_(holds(y, xv, bv, 3.0f), "the replay on queue 1 ran with the old input");
  OK(ttdrv_trace_execute(d, tid, 1, false));
  OK(ttdrv_device_finish(d, 1));
  TRUE_(holds(y, x2v, bv, 3.0f), "the next replay on queue 1 sees the rebinding made on queue 0");
  /* That replay is known done: no event needed. */
  OK(ttdrv_trace_set_scalar_f32(d, tid, 0, "scale.factor#0", 0.25f, NULL, 0));
  OK(ttdrv_trace_execute(d, tid, 0, true));
  TRUE_(holds(y, x2v, bv, 0.25f), "set_scalar once the other queue's replay was done");
  OK(ttdrv_trace_release(d, tid));
  ttdrv_event_free(ev);
  ttdrv_buffer *bufs[] = {x, b, y, x2};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ttdrv_buffer_free(bufs[i]);
  ttdrv_device_close(d);
}

/* A one-core fill of `y` (R x C) with `value`, as a generic program: block words, the accessor, the value. */
static ttdrv_program *fill_program(ttdrv_device *d, ttdrv_buffer *y, float value, uint32_t rt[17]) {
  ttdrv_program_desc pd;
  ttdrv_program_desc_init(&pd);
  pd.kernel_name = "ttdrv.fill";
  pd.rt_words_per_core = 17;
  ttdrv_program *p = NULL;
  if (!OK(ttdrv_program_new(d, &pd, &p))) exit(2);
  const uint32_t block[4] = {0, R, 0, C};
  memcpy(rt, block, sizeof block);
  ttdrv_buffer_accessor(y, rt + 4, 12);
  memcpy(&rt[16], &value, 4);
  return p;
}

static bool all_equal(ttdrv_buffer *y, float v) {
  float got[N];
  if (ttdrv_buffer_read(y, 0, true, got, sizeof got) != TTDRV_STATUS_OK) return false;
  for (uint32_t i = 0; i < N; i++)
    if (got[i] != v) return false;
  return true;
}

static void launch_with(void) {
  group = "ttdrv_program_launch_with";
  ttdrv_device *d = open_dev("emu", 1);
  ttdrv_tensor_spec s = spec_rc(R, C);
  ttdrv_buffer *y = NULL, *y2 = NULL;
  OK(ttdrv_buffer_allocate(d, &s, &y));
  OK(ttdrv_buffer_allocate(d, &s, &y2));
  uint32_t rt[17];
  ttdrv_program *p = fill_program(d, y, 7.0f, rt);
  ttdrv_rt_args a;
  ttdrv_rt_args_init(&a);
  a.per_core = rt;
  a.num_per_core = 17;
  ttdrv_buffer *outs[1] = {y};
  /* The accessor's address is word 3 of the 12 (device contract §8.3), after the 4 block words. */
  ttdrv_arg_role roles[2] = {{TTDRV_ARG_ROLE_ADDRESS, 4 + 3, 0, NULL}, {TTDRV_ARG_ROLE_SCALAR, 16, 0, "fill"}};
  OK(ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, roles, 2)); /* the compile run */
  TRUE_(all_equal(y, 7.0f), "the launch outside a capture");

  /* Argument checks. */
  ttdrv_arg_role bad[1];
  bad[0] = (ttdrv_arg_role){TTDRV_ARG_ROLE_SCALAR, 16, 0, NULL};
  ST(NULL_PARAMETER, ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, bad, 1), "roles[0].name");
  bad[0] = (ttdrv_arg_role){7, 16, 0, NULL};
  ST(INVALID_ARGUMENT, ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, bad, 1), "roles[0].kind",
     "TTDRV_ARG_ROLE_ADDRESS");
  bad[0] = (ttdrv_arg_role){TTDRV_ARG_ROLE_SCALAR, 70000, 0, "fill"};
  ST(INVALID_ARGUMENT, ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, bad, 1), "roles[0].word");
  bad[0] = (ttdrv_arg_role){TTDRV_ARG_ROLE_SCALAR, 99, 0, "fill"};
  ST(INVALID_ARGUMENT, ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, bad, 1), "runtime word 99");
  bad[0] = (ttdrv_arg_role){TTDRV_ARG_ROLE_SCALAR, 16, 0, "has space"};
  ST(INVALID_ARGUMENT, ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, bad, 1), "printable");
  bad[0] = (ttdrv_arg_role){TTDRV_ARG_ROLE_SCALAR, 16, 1, "fill"};
  ST(INVALID_ARGUMENT, ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, bad, 1), "buffer", "0");
  bad[0] = (ttdrv_arg_role){TTDRV_ARG_ROLE_ADDRESS, 16, 0, NULL};
  ST(INVALID_ARGUMENT, ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, bad, 1), "not an address inside");
  bad[0] = (ttdrv_arg_role){TTDRV_ARG_ROLE_ADDRESS, 7, 0, "name"};
  ST(INVALID_ARGUMENT, ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, bad, 1), "NULL");
  bad[0] = (ttdrv_arg_role){TTDRV_ARG_ROLE_ADDRESS, 7, 5, NULL};
  ST(INVALID_ARGUMENT, ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, bad, 1), "buffer 5");
  ttdrv_arg_role twice[2] = {{TTDRV_ARG_ROLE_ADDRESS, 7, 0, NULL}, {TTDRV_ARG_ROLE_SCALAR, 7, 0, "x"}};
  ST(INVALID_ARGUMENT, ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, twice, 2), "two roles");
  ST(NULL_PARAMETER, ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, NULL, 1), "roles");
  ST(NULL_PARAMETER, ttdrv_program_launch_with(p, 0, NULL, NULL, 0, outs, 1, roles, 2), "args");
  ST(NULL_PARAMETER, ttdrv_program_launch_with(NULL, 0, &a, NULL, 0, outs, 1, roles, 2), "program");

  /* Captured with roles: the output is rebindable and the value a scalar. */
  uint32_t tid = 0;
  OK(ttdrv_trace_begin_capture(d, 0, &tid));
  OK(ttdrv_program_launch_with(p, 0, &a, NULL, 0, outs, 1, roles, 2));
  OK(ttdrv_trace_end_capture(d, tid, 0));
  ttdrv_trace_binding tb = {.struct_size = sizeof tb};
  OK(ttdrv_trace_get_binding(d, tid, 0, &tb));
  TRUE_(tb.rebindable && tb.output, "the declared output is rebindable");
  ttdrv_trace_scalar sc = {.struct_size = sizeof sc};
  OK(ttdrv_trace_get_scalar(d, tid, 0, &sc));
  TRUE_(strcmp(sc.name, "fill") == 0 && sc.kind == TTDRV_SCALAR_U32, "the declared scalar: %s, kind %u", sc.name,
        sc.kind);
  ttdrv_trace_rebinding rb = {0, y2};
  OK(ttdrv_trace_rebind(d, tid, 0, &rb, 1, NULL, 0));
  ST(INVALID_ARGUMENT, ttdrv_trace_set_scalar_f32(d, tid, 0, "fill", -1.25f, NULL, 0), "integer",
     "ttdrv_trace_set_scalar");
  float v = -1.25f;
  uint32_t bits;
  memcpy(&bits, &v, 4);
  OK(ttdrv_trace_set_scalar(d, tid, 0, "fill", bits, NULL, 0));
  OK(ttdrv_trace_execute(d, tid, 0, true));
  TRUE_(all_equal(y2, -1.25f), "the rebound output holds the new value");
  TRUE_(all_equal(y, 7.0f), "the first output keeps its data");
  OK(ttdrv_trace_release(d, tid));

  /* Without roles (ttdrv_program_launch): not rebindable, and the rebinding says why. */
  OK(ttdrv_trace_begin_capture(d, 0, &tid));
  OK(ttdrv_program_launch(p, 0, &a, NULL, 0, outs, 1));
  OK(ttdrv_trace_end_capture(d, tid, 0));
  OK(ttdrv_trace_get_binding(d, tid, 0, &tb));
  TRUE_(!tb.rebindable, "an undeclared launch's buffer is not rebindable");
  ST(INVALID_STATE, ttdrv_trace_rebind(d, tid, 0, &rb, 1, NULL, 0), "launch_with");
  OK(ttdrv_trace_release(d, tid));
  ttdrv_program_free(p);
  ttdrv_buffer_free(y);
  ttdrv_buffer_free(y2);
  ttdrv_device_close(d);
}

static void files(void) {
  group = "a saved file's bindings";
  char path[] = "/tmp/ttdrv-trace-patch-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) {
    fail(__LINE__, "mkstemp failed");
    return;
  }
  close(fd);
  ttdrv_device *d = open_dev("emu", 1);
  float xv[N], bv[N];
  values(xv, 10);
  values(bv, 11);
  ttdrv_buffer *x = upload(d, xv), *b = upload(d, bv), *y = NULL;
  uint32_t tid = capture(d, 0, x, b, 1.5f, &y);
  OK(ttdrv_trace_save(d, tid, path));
  ttdrv_trace_file *f = NULL;
  OK(ttdrv_trace_file_open(path, &f));
  size_t n = 0, live = 0;
  OK(ttdrv_trace_file_binding_count(f, &n));
  OK(ttdrv_trace_binding_count(d, tid, &live));
  TRUE_(n == 3 && n == live, "the file lists %zu bindings, the trace %zu", n, live);
  for (size_t i = 0; i < n; i++) {
    ttdrv_trace_binding fb = {.struct_size = sizeof fb}, tb = {.struct_size = sizeof tb};
    OK(ttdrv_trace_file_get_binding(f, i, &fb));
    OK(ttdrv_trace_get_binding(d, tid, i, &tb));
    TRUE_(strcmp(fb.name, tb.name) == 0 && fb.address == tb.address && fb.output == tb.output &&
              fb.rebindable == tb.rebindable && fb.words == tb.words &&
              memcmp(&fb.spec, &tb.spec, sizeof fb.spec) == 0,
          "file binding %zu (%s) differs from the trace's (%s)", i, fb.name, tb.name);
  }
  ttdrv_trace_binding fb = {.struct_size = sizeof fb};
  ST(INVALID_ARGUMENT, ttdrv_trace_file_get_binding(f, n, &fb), "ttdrv_trace_file_binding_count");
  ST(NULL_PARAMETER, ttdrv_trace_file_get_binding(f, 0, NULL), "out");
  OK(ttdrv_trace_file_scalar_count(f, &n));
  TRUE_(n == 1, "the file lists %zu scalars", n);
  ttdrv_trace_scalar sc = {.struct_size = sizeof sc};
  OK(ttdrv_trace_file_get_scalar(f, 0, &sc));
  float v = 0;
  memcpy(&v, &sc.value_bits, 4);
  TRUE_(strcmp(sc.name, "scale.factor#0") == 0 && v == 1.5f, "file scalar %s = %g", sc.name, (double)v);
  ST(INVALID_ARGUMENT, ttdrv_trace_file_get_scalar(f, 1, &sc), "ttdrv_trace_file_scalar_count");
  ST(NULL_PARAMETER, ttdrv_trace_file_scalar_count(f, NULL), "out_count");
  ST(INVALID_HANDLE, ttdrv_trace_file_binding_count((const ttdrv_trace_file *)d, &n), "ttdrv_trace_file");
  OK(ttdrv_trace_file_free(f));
  ST(INVALID_HANDLE, ttdrv_trace_file_binding_count(f, &n), "stale");
  ST(INVALID_HANDLE, ttdrv_trace_file_free(f), "stale");
  OK(ttdrv_trace_file_free(NULL));

  /* Files that are not trace files. */
  ST(NULL_PARAMETER, ttdrv_trace_file_open(NULL, &f), "path");
  ST(NULL_PARAMETER, ttdrv_trace_file_open(path, NULL), "out");
  ST(INVALID_ARGUMENT, ttdrv_trace_file_open("", &f), "empty");
  ST(INVALID_ARGUMENT, ttdrv_trace_file_open("/nonexistent/ttdrv.trace", &f), "cannot read");
  FILE *fp = fopen(path, "r+b");
  if (fp) {
    fseek(fp, 40, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, 40, SEEK_SET);
    fputc(c ^ 0xFF, fp);
    fclose(fp);
  }
  f = NULL;
  ST(INVALID_ARGUMENT, ttdrv_trace_file_open(path, &f), "not a valid trace file");
  TRUE_(f == NULL, "a failed open wrote its output");
  fp = fopen(path, "wb");
  if (fp) fclose(fp);
  ST(INVALID_ARGUMENT, ttdrv_trace_file_open(path, &f), "shorter than");
  remove(path);

  OK(ttdrv_trace_release(d, tid));
  ttdrv_buffer_free(x);
  ttdrv_buffer_free(b);
  ttdrv_buffer_free(y);
  ttdrv_device_close(d);
}

int main(void) {
  listings();
  patches();
  races();
  launch_with();
  files();
  printf("trace_patch: %u passed, %u failed\n", n_passed, n_failed);
  return n_failed ? 1 : 0;
}
