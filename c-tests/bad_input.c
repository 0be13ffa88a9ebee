/* bad_input: every kind of bad call the C ABI can receive, checked against the documented status, with a specific
 * message, and with the device used (and its results checked) after each group, so that a bad call which corrupted
 * state would be caught. Run by scripts/test.d/15-bad-input.sh, and under ASan/UBSan/LSan by
 * scripts/test.d/30-sanitizers.sh.
 *
 * Groups: library basics (version, status names, messages, panic boundary, per-thread errors) · open parameters ·
 * NULL for every pointer argument of every function · freed, forged and wrong-kind handles of every kind · zero,
 * huge and overflowing sizes · out-of-range values (grids, banks, cores, enums, struct_size, flags) · queue ids ·
 * calls out of order (traces, captures, events, resets) · PROGRAM_NOT_CACHED · TRACE_REGION · objects of a closed
 * device · closing with work in flight · use from a forked child.
 *
 * Output: one line per failed expectation, then "bad_input: N passed, M failed"; exit status 1 if any failed. */
#include "mlp_ref.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------------------------ */
/* Expectations                                                                                                 */

static unsigned n_passed, n_failed;
static const char *group = "setup";

static void fail_at(int line, const char *expr, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL [%s] line %d: %s: ", group, line, expr);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  n_failed++;
}

/* `got` must be `want`; on an error the thread's message must be non-empty and contain every needle; on success
 * the message must be empty (a successful call clears it). */
static int expect_status(int line, const char *expr, ttdrv_status got, ttdrv_status want,
                         const char *const *needles) {
  const char *msg = ttdrv_last_error();
  if (msg == NULL) {
    fail_at(line, expr, "ttdrv_last_error() returned NULL");
    return 0;
  }
  if (got != want) {
    fail_at(line, expr, "returned %s, expected %s\n    message: %s", ttdrv_status_name(got), ttdrv_status_name(want),
            msg);
    return 0;
  }
  if (want == TTDRV_STATUS_OK) {
    if (msg[0] != '\0') {
      fail_at(line, expr, "succeeded but left the message '%s'", msg);
      return 0;
    }
  } else {
    if (msg[0] == '\0') {
      fail_at(line, expr, "returned %s with an empty message", ttdrv_status_name(got));
      return 0;
    }
    for (; needles && *needles; needles++) {
      if (strstr(msg, *needles) == NULL) {
        fail_at(line, expr, "message does not mention '%s'\n    message: %s", *needles, msg);
        return 0;
      }
    }
  }
  n_passed++;
  return 1;
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})
/* ST(status, call, needle...) — status without the TTDRV_STATUS_ prefix. */
#define ST(want, call, ...) expect_status(__LINE__, #call, (call), TTDRV_STATUS_##want, NEEDLES(__VA_ARGS__))
#define STV(want, needles, call) expect_status(__LINE__, #call, (call), TTDRV_STATUS_##want, (needles))
#define OK(call) expect_status(__LINE__, #call, (call), TTDRV_STATUS_OK, NULL)
/* A NULL pointer argument: NULL_PARAMETER naming the function and the argument. */
#define NUL(fn, param, call) ST(NULL_PARAMETER, call, #fn, "`" param "`")
#define TRUE_(cond, ...)                     \
  do {                                       \
    if (cond)                                \
      n_passed++;                            \
    else                                     \
      fail_at(__LINE__, #cond, __VA_ARGS__); \
  } while (0)

/* Outputs are written only on success: failing calls get outputs preset to these and must leave them. */
#define SENTINEL ((void *)(uintptr_t)0x5e5e5e5e5e5e5e50ull)
#define SENT32 0x5e5e5e5eu
#define UNCHANGED(p) TRUE_((void *)(p) == SENTINEL, "output %s was written by a failing call", #p)

/* ------------------------------------------------------------------------------------------------------------ */
/* Helpers that use a device and check its results                                                             */

static mlp_host host; /* the examples' MLP and its plain-C reference */

static ttdrv_tensor_spec dram_spec(uint32_t rows, uint32_t cols) {
  return spec_f32(rows, cols, mc_interleaved(TTDRV_BUFFER_DRAM));
}

static ttdrv_device *open_dev(const char *selector, uint32_t queues, uint64_t trace_region) {
  ttdrv_device_params p;
  CHECK(ttdrv_device_params_init(&p));
  p.num_command_queues = queues;
  p.trace_region_size = trace_region;
  ttdrv_device *d = NULL;
  CHECK(ttdrv_device_open(selector, &p, &d));
  return d;
}

static void fill_pattern(float *x, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) x[i] = (float)((seed * 2654435761u + (uint32_t)i * 40503u) % 100003u) * 0.125f;
}

/* A device under test: the address a probe buffer gets when nothing leaked, and a pattern seed. */
typedef struct {
  ttdrv_device *dev;
  uint16_t queues;
  uint64_t probe_addr;
  uint32_t seed;
  const char *name;
} devctx;

#define PROBE_ROWS 48u
#define PROBE_COLS 40u

/* Round trip on every queue through a probe buffer, which must land where it did at the start: a failed call that
 * leaked device memory, or corrupted the queues, shows up here. */
static void verify_device(devctx *c, const char *after) {
  static float src[PROBE_ROWS * PROBE_COLS], dst[PROBE_ROWS * PROBE_COLS];
  ttdrv_tensor_spec s = dram_spec(PROBE_ROWS, PROBE_COLS);
  for (uint16_t q = 0; q < c->queues; q++) {
    ttdrv_buffer *b = NULL;
    CHECK(ttdrv_buffer_allocate(c->dev, &s, &b));
    uint64_t addr = 0;
    CHECK(ttdrv_buffer_address(b, &addr));
    if (c->probe_addr == 0) {
      c->probe_addr = addr;
    } else if (addr != c->probe_addr) {
      fail_at(__LINE__, "verify_device", "%s after %s: probe buffer at %#llx, was %#llx (device memory leaked)",
              c->name, after, (unsigned long long)addr, (unsigned long long)c->probe_addr);
    }
    fill_pattern(src, PROBE_ROWS * PROBE_COLS, ++c->seed);
    memset(dst, 0, sizeof dst);
    CHECK(ttdrv_buffer_write(b, q, (const uint8_t *)src, sizeof src, false));
    CHECK(ttdrv_buffer_read(b, q, true, (uint8_t *)dst, sizeof dst));
    if (memcmp(src, dst, sizeof src) != 0) {
      fail_at(__LINE__, "verify_device", "%s after %s: round trip on queue %u returned different data", c->name,
              after, q);
    } else {
      n_passed++;
    }
    CHECK(ttdrv_buffer_free(b));
  }
}

/* Runs the MLP on queue `cq` for one input and checks the output against the reference. */
static void verify_mlp(devctx *c, uint16_t cq, const char *after) {
  ttdrv_mlp *m = mlp_create(c->dev, cq, &host);
  float x[MLP_BATCH * MLP_IN], got[MLP_BATCH * MLP_OUT], want[MLP_BATCH * MLP_OUT];
  make_input(x, MLP_BATCH * MLP_IN, ++c->seed);
  ttdrv_tensor_spec in = spec_f32(MLP_BATCH, MLP_IN, mc_l1_height(4, MLP_BATCH, MLP_IN));
  ttdrv_buffer *input = NULL, *output = NULL;
  CHECK(ttdrv_buffer_from_host(c->dev, &in, cq, (const uint8_t *)x, sizeof x, &input));
  CHECK(ttdrv_mlp_run(m, cq, input, &output));
  CHECK(ttdrv_buffer_read(output, cq, true, (uint8_t *)got, sizeof got));
  mlp_host_forward(&host, x, want);
  size_t bad = count_mismatches(got, want, MLP_BATCH * MLP_OUT);
  if (bad) {
    fail_at(__LINE__, "verify_mlp", "%s after %s: %zu outputs wrong", c->name, after, bad);
  } else {
    n_passed++;
  }
  CHECK(ttdrv_buffer_free(output));
  CHECK(ttdrv_mlp_free(m));
}

static void verify_all(devctx *c, const char *after) {
  verify_device(c, after);
  verify_mlp(c, 0, after);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Library basics                                                                                               */

static void *other_thread_fails(void *arg) {
  (void)arg;
  ttdrv_status st = ttdrv_device_finish(NULL, 0);
  return (void *)(uintptr_t)(st == TTDRV_STATUS_NULL_PARAMETER && strstr(ttdrv_last_error(), "ttdrv_device_finish"));
}

/* ttdrv called from a thread-exit destructor (pthread_key_create), which runs after the Rust runtime's
 * thread-locals are gone: a cleanup free must work and a failing call must still return its status. */
static pthread_key_t exit_key;
static ttdrv_status exit_free = TTDRV_STATUS_PANIC, exit_double_free = TTDRV_STATUS_PANIC;
static int exit_message_ok;

static void at_thread_exit(void *p) {
  exit_free = ttdrv_buffer_free((ttdrv_buffer *)p);
  exit_double_free = ttdrv_buffer_free((ttdrv_buffer *)p);
  const char *m = ttdrv_last_error();
  char buf[16];
  size_t n = 0;
  exit_message_ok = m != NULL && m[0] != '\0' && ttdrv_last_error_message(buf, sizeof buf, &n) !=
                    TTDRV_STATUS_OK && n > 0;
}

static void *thread_with_exit_cleanup(void *dev) {
  ttdrv_tensor_spec s = spec_f32(8, 8, mc_interleaved(TTDRV_BUFFER_DRAM));
  ttdrv_buffer *b = NULL;
  if (ttdrv_buffer_allocate((ttdrv_device *)dev, &s, &b) == TTDRV_STATUS_OK) {
    ttdrv_device_finish(NULL, 0); /* this thread's message store now exists */
    pthread_setspecific(exit_key, b);
  }
  return NULL;
}

static void test_thread_exit(void) {
  group = "thread-exit";
  ttdrv_device *d = NULL;
  CHECK(ttdrv_device_open("emu:queues=1", NULL, &d));
  pthread_key_create(&exit_key, at_thread_exit);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, thread_with_exit_cleanup, d) == 0 ? TTDRV_STATUS_OK : TTDRV_STATUS_PANIC);
  pthread_join(th, NULL);
  TRUE_(exit_free == TTDRV_STATUS_OK, "free in a thread-exit destructor gave %s", ttdrv_status_name(exit_free));
  TRUE_(exit_double_free == TTDRV_STATUS_INVALID_HANDLE, "double free in a thread-exit destructor gave %s",
        ttdrv_status_name(exit_double_free));
  TRUE_(exit_message_ok, "no message after a failing call in a thread-exit destructor");
  pthread_key_delete(exit_key);
  OK(ttdrv_device_close(d));
}

static void test_library(void) {
  group = "library";
  /* The header this suite was compiled with and the library it runs with agree. */
  TRUE_(ttdrv_version_number() == TTDRV_VERSION_NUMBER, "ttdrv_version_number() %#x != TTDRV_VERSION_NUMBER %#x",
        ttdrv_version_number(), (unsigned)TTDRV_VERSION_NUMBER);
  TRUE_(strcmp(ttdrv_version(), TTDRV_VERSION_STRING) == 0, "ttdrv_version() '%s' != TTDRV_VERSION_STRING '%s'",
        ttdrv_version(), TTDRV_VERSION_STRING);
  TRUE_(strcmp(ttdrv_status_name(TTDRV_STATUS_OK), "TTDRV_STATUS_OK") == 0, "status name of OK");
  TRUE_(strcmp(ttdrv_status_name(TTDRV_STATUS_TRACE_REGION), "TTDRV_STATUS_TRACE_REGION") == 0,
        "status name of TRACE_REGION");
  TRUE_(strcmp(ttdrv_status_name(12345), "TTDRV_STATUS_UNKNOWN") == 0, "unknown status name");
  TRUE_(strcmp(ttdrv_status_name(UINT32_MAX), "TTDRV_STATUS_UNKNOWN") == 0, "unknown status name");

  /* The panic boundary: a panic inside an entry point is a status with a message naming it and where it was raised,
   * expected here and printed nowhere (the message goes to the log callback, if any, at error level; nothing is
   * written to stderr, which c-tests/log_callback.c checks). */
  ST(PANIC, ttdrv_debug_panic(), "ttdrv_debug_panic", "panic", "report it");
  ST(PANIC, ttdrv_debug_panic(), "ttdrv_debug_panic was called", "boundary.rs:");

  /* The message API on the panic's message. */
  size_t full = strlen(ttdrv_last_error()), n = 0;
  ST(BUFFER_TOO_SMALL, ttdrv_last_error_message(NULL, 0, &n), "panic");
  TRUE_(n == full, "ttdrv_last_error_message reported length %zu, the message has %zu", n, full);
  char small[8];
  memset(small, 'x', sizeof small);
  ST(BUFFER_TOO_SMALL, ttdrv_last_error_message(small, sizeof small, NULL), "panic");
  TRUE_(small[7] == '\0' && strncmp(small, ttdrv_last_error(), 7) == 0, "truncated copy is not the NUL-ended prefix");
  char big[1024];
  n = 0;
  TRUE_(ttdrv_last_error_message(big, sizeof big, &n) == TTDRV_STATUS_OK && strcmp(big, ttdrv_last_error()) == 0 &&
            n == full,
        "full copy of the message");
  /* A success clears it. */
  ttdrv_tensor_spec s;
  OK(ttdrv_tensor_spec_init(&s));
  n = 99;
  TRUE_(ttdrv_last_error_message(big, sizeof big, &n) == TTDRV_STATUS_OK && big[0] == '\0' && n == 0,
        "message after a success is not empty");

  /* Messages are per thread: another thread's failure leaves ours alone. */
  ST(NULL_PARAMETER, ttdrv_device_params_init(NULL), "ttdrv_device_params_init", "`params`");
  pthread_t th;
  void *ok = NULL;
  CHECK(pthread_create(&th, NULL, other_thread_fails, NULL) == 0 ? TTDRV_STATUS_OK : TTDRV_STATUS_PANIC);
  pthread_join(th, &ok);
  TRUE_(ok != NULL, "the other thread did not see its own error");
  TRUE_(strstr(ttdrv_last_error(), "ttdrv_device_params_init") != NULL,
        "this thread's message changed after another thread's failure: '%s'", ttdrv_last_error());
}

/* ------------------------------------------------------------------------------------------------------------ */
/* ttdrv_device_open parameters                                                                                 */

static void open_fails(int line, const char *what, const char *selector, const ttdrv_device_params *p,
                       ttdrv_status want, const char *needle) {
  ttdrv_device *d = SENTINEL;
  ttdrv_status st = ttdrv_device_open(selector, p, &d);
  if (expect_status(line, what, st, want, NEEDLES("ttdrv_device_open", needle))) {
    TRUE_(d == SENTINEL, "%s: output written by a failing open", what);
  }
  if (st == TTDRV_STATUS_OK) ttdrv_device_close(d);
}

static void test_open(void) {
  group = "open";
  ttdrv_device_params p;
  ttdrv_device *d = SENTINEL;
  NUL(ttdrv_device_params_init, "params", ttdrv_device_params_init(NULL));
  NUL(ttdrv_device_open, "selector", ttdrv_device_open(NULL, NULL, &d));
  NUL(ttdrv_device_open, "out", ttdrv_device_open("emu", NULL, NULL));
  UNCHANGED(d);
  OK(ttdrv_device_close(NULL)); /* releasing NULL is a no-op */

  open_fails(__LINE__, "bogus selector", "bogus", NULL, TTDRV_STATUS_INVALID_ARGUMENT, "selector");
  open_fails(__LINE__, "emu option", "emu:warp_drive=1", NULL, TTDRV_STATUS_INVALID_ARGUMENT, "warp_drive");
  open_fails(__LINE__, "emu queues", "emu:queues=99", NULL, TTDRV_STATUS_INVALID_ARGUMENT, "queues");
  open_fails(__LINE__, "non-UTF-8 selector", "emu\xff", NULL, TTDRV_STATUS_INVALID_ARGUMENT, "UTF-8");
  /* An empty selector is refused rather than silently taken as `auto` (the header documents it). */
  open_fails(__LINE__, "empty selector", "", NULL, TTDRV_STATUS_INVALID_ARGUMENT, "auto");
  open_fails(__LINE__, "blank selector", "  ", NULL, TTDRV_STATUS_INVALID_ARGUMENT, "auto");

#define PARAM_CASE(field, value, needle)                                                               \
  do {                                                                                                 \
    CHECK(ttdrv_device_params_init(&p));                                                               \
    p.field = value;                                                                                   \
    open_fails(__LINE__, #field " = " #value, "emu", &p, TTDRV_STATUS_INVALID_ARGUMENT, needle);      \
  } while (0)
  PARAM_CASE(struct_size, 0, "struct_size");
  PARAM_CASE(struct_size, sizeof p - 1, "ttdrv_device_params_init");
  PARAM_CASE(flags, 0x100, "unknown bits");
  PARAM_CASE(flags, 0x80000000u | TTDRV_DEVICE_FLAG_NO_HUGEPAGES, "unknown bits");
  PARAM_CASE(reserved, 1, "reserved");
  PARAM_CASE(timeout_ms, 0, "timeout_ms");
  PARAM_CASE(num_command_queues, 0, "num_command_queues=0");
  PARAM_CASE(num_command_queues, 3, "num_command_queues=3");
  PARAM_CASE(num_command_queues, 70000, "num_command_queues=70000");
  PARAM_CASE(num_command_queues, UINT32_MAX, "num_command_queues=4294967295");
  PARAM_CASE(issue_ring_size, 0, "power of two");
  PARAM_CASE(issue_ring_size, 100000, "power of two");
  PARAM_CASE(issue_ring_size, UINT32_MAX, "power of two");
  PARAM_CASE(issue_ring_size, 1u << 31, "power of two");
  PARAM_CASE(completion_ring_size, 4096, "power of two");
  PARAM_CASE(trace_region_size, UINT64_MAX, "trace_region_size");
  PARAM_CASE(l1_small_size, UINT32_MAX, "l1_small_size");
#undef PARAM_CASE

  /* A caller built against a later header passes a larger struct: refused, since this library would ignore the
   * fields it does not know (docs/abi.md, "Versions"); the message says to run with a newer library. */
  struct {
    ttdrv_device_params p;
    uint64_t tail[4];
  } bigger;
  memset(&bigger, 0, sizeof bigger);
  CHECK(ttdrv_device_params_init(&bigger.p));
  bigger.p.struct_size = sizeof bigger;
  bigger.tail[0] = 0xffffffffffffffffull;
  open_fails(__LINE__, "params from a newer header", "emu", &bigger.p, TTDRV_STATUS_INVALID_ARGUMENT, "newer ttdrv.h");
  /* The frozen size of the first release is accepted whatever today's size is. */
  CHECK(ttdrv_device_params_init(&p));
  p.struct_size = TTDRV_DEVICE_PARAMS_SIZE_V0_1;
  d = NULL;
  OK(ttdrv_device_open("emu", &p, &d));
  OK(ttdrv_device_close(d));
}

/* ------------------------------------------------------------------------------------------------------------ */
/* NULL for every pointer argument                                                                              */

typedef struct {
  devctx *c;
  ttdrv_buffer *buf;  /* 32 x 64 float32, DRAM interleaved */
  ttdrv_buffer *buf2; /* same shape */
  ttdrv_event *ev;    /* recorded on queue 0 */
  ttdrv_program *prog;
  ttdrv_mlp *mlp;
} fixture;

static ttdrv_program *fill_program(ttdrv_device *dev, ttdrv_program_desc *out_desc) {
  ttdrv_program_desc d;
  CHECK(ttdrv_program_desc_init(&d));
  d.kernel_name = "ttdrv.fill";
  d.rt_words_per_core = 17; /* the fill kernel: 4 + a 12-word accessor + the value */
  if (out_desc) *out_desc = d;
  ttdrv_program *p = NULL;
  ttdrv_status st = ttdrv_program_new(dev, &d, &p);
  return st == TTDRV_STATUS_OK ? p : NULL;
}

static void test_nulls(fixture *f) {
  group = "null";
  ttdrv_device *dev = f->c->dev;
  ttdrv_tensor_spec s = dram_spec(32, 64);
  ttdrv_memory_config mem = mc_interleaved(TTDRV_BUFFER_DRAM);
  float data[32 * 64];
  memset(data, 0, sizeof data);
  ttdrv_buffer *ob = SENTINEL;
  ttdrv_event *oe = SENTINEL;
  ttdrv_program *op = SENTINEL;
  ttdrv_mlp *om = SENTINEL;

  NUL(ttdrv_device_get_info, "device", ttdrv_device_get_info(NULL, NULL));
  NUL(ttdrv_device_get_info, "out", ttdrv_device_get_info(dev, NULL));
  NUL(ttdrv_device_finish, "device", ttdrv_device_finish(NULL, 0));
  NUL(ttdrv_device_synchronize, "device", ttdrv_device_synchronize(NULL));
  NUL(ttdrv_device_reset, "device", ttdrv_device_reset(NULL));

  NUL(ttdrv_tensor_spec_init, "spec", ttdrv_tensor_spec_init(NULL));
  NUL(ttdrv_buffer_allocate, "device", ttdrv_buffer_allocate(NULL, &s, &ob));
  NUL(ttdrv_buffer_allocate, "spec", ttdrv_buffer_allocate(dev, NULL, &ob));
  NUL(ttdrv_buffer_allocate, "out", ttdrv_buffer_allocate(dev, &s, NULL));
  NUL(ttdrv_buffer_from_host, "device", ttdrv_buffer_from_host(NULL, &s, 0, (uint8_t *)data, sizeof data, &ob));
  NUL(ttdrv_buffer_from_host, "spec", ttdrv_buffer_from_host(dev, NULL, 0, (uint8_t *)data, sizeof data, &ob));
  NUL(ttdrv_buffer_from_host, "data", ttdrv_buffer_from_host(dev, &s, 0, NULL, sizeof data, &ob));
  NUL(ttdrv_buffer_from_host, "out", ttdrv_buffer_from_host(dev, &s, 0, (uint8_t *)data, sizeof data, NULL));
  NUL(ttdrv_buffer_write, "buffer", ttdrv_buffer_write(NULL, 0, (uint8_t *)data, sizeof data, false));
  NUL(ttdrv_buffer_write, "data", ttdrv_buffer_write(f->buf, 0, NULL, sizeof data, false));
  NUL(ttdrv_buffer_read, "buffer", ttdrv_buffer_read(NULL, 0, true, (uint8_t *)data, sizeof data));
  NUL(ttdrv_buffer_read, "out", ttdrv_buffer_read(f->buf, 0, true, NULL, sizeof data));
  NUL(ttdrv_buffer_read, "out", ttdrv_buffer_read(f->buf, 0, false, NULL, sizeof data));
  OK(ttdrv_buffer_free(NULL));
  NUL(ttdrv_buffer_address, "buffer", ttdrv_buffer_address(NULL, NULL));
  NUL(ttdrv_buffer_address, "out", ttdrv_buffer_address(f->buf, NULL));
  NUL(ttdrv_buffer_get_spec, "buffer", ttdrv_buffer_get_spec(NULL, &s));
  NUL(ttdrv_buffer_get_spec, "out", ttdrv_buffer_get_spec(f->buf, NULL));
  NUL(ttdrv_buffer_host_size, "buffer", ttdrv_buffer_host_size(NULL, NULL));
  NUL(ttdrv_buffer_host_size, "out", ttdrv_buffer_host_size(f->buf, NULL));
  NUL(ttdrv_buffer_contents, "buffer", ttdrv_buffer_contents(NULL, NULL));
  NUL(ttdrv_buffer_contents, "out", ttdrv_buffer_contents(f->buf, NULL));
  uint32_t words[12];
  NUL(ttdrv_buffer_accessor, "buffer", ttdrv_buffer_accessor(NULL, words, 12));
  NUL(ttdrv_buffer_accessor, "out", ttdrv_buffer_accessor(f->buf, NULL, 12));

  NUL(ttdrv_event_new, "device", ttdrv_event_new(NULL, &oe));
  NUL(ttdrv_event_new, "out", ttdrv_event_new(dev, NULL));
  OK(ttdrv_event_free(NULL));
  NUL(ttdrv_event_record, "event", ttdrv_event_record(NULL, 0));
  NUL(ttdrv_event_record_notify, "event", ttdrv_event_record_notify(NULL, 0));
  NUL(ttdrv_device_wait_for_event, "device", ttdrv_device_wait_for_event(NULL, 0, f->ev));
  NUL(ttdrv_device_wait_for_event, "event", ttdrv_device_wait_for_event(dev, 0, NULL));
  NUL(ttdrv_event_synchronize, "event", ttdrv_event_synchronize(NULL));
  NUL(ttdrv_event_synchronize_timeout, "event", ttdrv_event_synchronize_timeout(NULL, 1000));
  NUL(ttdrv_event_query, "event", ttdrv_event_query(NULL, NULL));
  NUL(ttdrv_event_query, "out_done", ttdrv_event_query(f->ev, NULL));

  /* Operations. */
  NUL(ttdrv_to_memory_config, "input", ttdrv_to_memory_config(NULL, 0, &mem, &ob));
  NUL(ttdrv_to_memory_config, "mem", ttdrv_to_memory_config(f->buf, 0, NULL, &ob));
  NUL(ttdrv_to_memory_config, "out", ttdrv_to_memory_config(f->buf, 0, &mem, NULL));
  NUL(ttdrv_reshard, "input", ttdrv_reshard(NULL, 0, &mem, &ob));
  NUL(ttdrv_reshard, "mem", ttdrv_reshard(f->buf, 0, NULL, &ob));
  NUL(ttdrv_reshard, "out", ttdrv_reshard(f->buf, 0, &mem, NULL));
  NUL(ttdrv_to_layout, "input", ttdrv_to_layout(NULL, 0, TTDRV_TENSOR_LAYOUT_TILE, &mem, &ob));
  NUL(ttdrv_to_layout, "mem", ttdrv_to_layout(f->buf, 0, TTDRV_TENSOR_LAYOUT_TILE, NULL, &ob));
  NUL(ttdrv_to_layout, "out", ttdrv_to_layout(f->buf, 0, TTDRV_TENSOR_LAYOUT_TILE, &mem, NULL));
  NUL(ttdrv_reshard_into, "input", ttdrv_reshard_into(NULL, 0, f->buf2));
  NUL(ttdrv_reshard_into, "output", ttdrv_reshard_into(f->buf, 0, NULL));
  NUL(ttdrv_matmul, "a", ttdrv_matmul(NULL, f->buf2, 0, &mem, &ob));
  NUL(ttdrv_matmul, "b", ttdrv_matmul(f->buf, NULL, 0, &mem, &ob));
  NUL(ttdrv_matmul, "mem", ttdrv_matmul(f->buf, f->buf2, 0, NULL, &ob));
  NUL(ttdrv_matmul, "out", ttdrv_matmul(f->buf, f->buf2, 0, &mem, NULL));
  NUL(ttdrv_eltwise_binary, "a", ttdrv_eltwise_binary(NULL, f->buf2, TTDRV_BINARY_ADD, 0, &mem, &ob));
  NUL(ttdrv_eltwise_binary, "b", ttdrv_eltwise_binary(f->buf, NULL, TTDRV_BINARY_ADD, 0, &mem, &ob));
  NUL(ttdrv_eltwise_binary, "mem", ttdrv_eltwise_binary(f->buf, f->buf2, TTDRV_BINARY_ADD, 0, NULL, &ob));
  NUL(ttdrv_eltwise_binary, "out", ttdrv_eltwise_binary(f->buf, f->buf2, TTDRV_BINARY_ADD, 0, &mem, NULL));
  NUL(ttdrv_eltwise_unary, "a", ttdrv_eltwise_unary(NULL, TTDRV_UNARY_RELU, 0, 0, &mem, &ob));
  NUL(ttdrv_eltwise_unary, "mem", ttdrv_eltwise_unary(f->buf, TTDRV_UNARY_RELU, 0, 0, NULL, &ob));
  NUL(ttdrv_eltwise_unary, "out", ttdrv_eltwise_unary(f->buf, TTDRV_UNARY_RELU, 0, 0, &mem, NULL));
  NUL(ttdrv_fill, "buffer", ttdrv_fill(NULL, 0, 1.0f));
  /* The transformer ops: NULL is allowed for the optional residual, mask and bias, nowhere else. */
  NUL(ttdrv_layer_norm, "x", ttdrv_layer_norm(NULL, NULL, f->buf2, f->buf2, 1e-5f, 0, f->buf));
  NUL(ttdrv_layer_norm, "gamma", ttdrv_layer_norm(f->buf, NULL, NULL, f->buf2, 1e-5f, 0, f->buf));
  NUL(ttdrv_layer_norm, "beta", ttdrv_layer_norm(f->buf, NULL, f->buf2, NULL, 1e-5f, 0, f->buf));
  NUL(ttdrv_layer_norm, "out", ttdrv_layer_norm(f->buf, NULL, f->buf2, f->buf2, 1e-5f, 0, NULL));
  NUL(ttdrv_softmax, "x", ttdrv_softmax(NULL, NULL, 1.0f, 0, f->buf));
  NUL(ttdrv_softmax, "out", ttdrv_softmax(f->buf, NULL, 1.0f, 0, NULL));
  NUL(ttdrv_bmm, "a", ttdrv_bmm(NULL, f->buf, 1, 1, 0, 0, 1.0f, 0, f->buf2));
  NUL(ttdrv_bmm, "b", ttdrv_bmm(f->buf, NULL, 1, 1, 0, 0, 1.0f, 0, f->buf2));
  NUL(ttdrv_bmm, "out", ttdrv_bmm(f->buf, f->buf, 1, 1, 0, 0, 1.0f, 0, NULL));
  NUL(ttdrv_linear, "a", ttdrv_linear(NULL, f->buf, NULL, TTDRV_ACTIVATION_NONE, 0, f->buf2));
  NUL(ttdrv_linear, "b", ttdrv_linear(f->buf, NULL, NULL, TTDRV_ACTIVATION_NONE, 0, f->buf2));
  NUL(ttdrv_linear, "out", ttdrv_linear(f->buf, f->buf, NULL, TTDRV_ACTIVATION_NONE, 0, NULL));
  ttdrv_buffer *tables[2] = {f->buf, NULL};
  NUL(ttdrv_embedding, "ids", ttdrv_embedding(NULL, tables, 1, 0, f->buf2));
  NUL(ttdrv_embedding, "tables", ttdrv_embedding(f->buf, NULL, 1, 0, f->buf2));
  NUL(ttdrv_embedding, "tables[i]", ttdrv_embedding(f->buf, tables, 2, 0, f->buf2));
  NUL(ttdrv_embedding, "out", ttdrv_embedding(f->buf, tables, 1, 0, NULL));
  NUL(ttdrv_mean_pool, "x", ttdrv_mean_pool(NULL, f->buf, true, 0, f->buf2));
  NUL(ttdrv_mean_pool, "mask", ttdrv_mean_pool(f->buf, NULL, true, 0, f->buf2));
  NUL(ttdrv_mean_pool, "out", ttdrv_mean_pool(f->buf, f->buf, true, 0, NULL));

  /* Programs. */
  ttdrv_program_desc pd;
  NUL(ttdrv_program_desc_init, "desc", ttdrv_program_desc_init(NULL));
  CHECK(ttdrv_program_desc_init(&pd));
  pd.kernel_name = "ttdrv.fill";
  NUL(ttdrv_program_new, "device", ttdrv_program_new(NULL, &pd, &op));
  NUL(ttdrv_program_new, "desc", ttdrv_program_new(dev, NULL, &op));
  NUL(ttdrv_program_new, "out", ttdrv_program_new(dev, &pd, NULL));
  pd.kernel_name = NULL;
  NUL(ttdrv_program_new, "desc->kernel_name", ttdrv_program_new(dev, &pd, &op));
  pd.kernel_name = "custom";
  pd.code_len = 64;
  NUL(ttdrv_program_new, "desc->code", ttdrv_program_new(dev, &pd, &op));
  pd.code_len = 0;
  pd.kernel_name = "ttdrv.fill";
  pd.num_ct_args = 2;
  NUL(ttdrv_program_new, "desc->ct_args", ttdrv_program_new(dev, &pd, &op));
  pd.num_ct_args = 0;
  pd.num_cbs = 1;
  NUL(ttdrv_program_new, "desc->cbs", ttdrv_program_new(dev, &pd, &op));
  pd.num_cbs = 0;
  pd.num_sems = 3;
  NUL(ttdrv_program_new, "desc->sems", ttdrv_program_new(dev, &pd, &op));
  UNCHANGED(op);
  uint32_t rt[4] = {0};
  NUL(ttdrv_program_run, "program", ttdrv_program_run(NULL, 0, rt, 0, NULL, 0));
  NUL(ttdrv_program_run, "rt_args", ttdrv_program_run(f->prog, 0, NULL, 4, NULL, 0));
  NUL(ttdrv_program_run, "buffers", ttdrv_program_run(f->prog, 0, rt, 0, NULL, 2));
  ttdrv_buffer *with_null[2] = {f->buf, NULL};
  NUL(ttdrv_program_run, "buffers[i]", ttdrv_program_run(f->prog, 0, rt, 0, with_null, 2));
  NUL(ttdrv_program_run_io, "program", ttdrv_program_run_io(NULL, 0, rt, 0, NULL, 0, NULL, 0));
  NUL(ttdrv_program_run_io, "rt_args", ttdrv_program_run_io(f->prog, 0, NULL, 4, NULL, 0, NULL, 0));
  NUL(ttdrv_program_run_io, "inputs", ttdrv_program_run_io(f->prog, 0, rt, 0, NULL, 2, NULL, 0));
  NUL(ttdrv_program_run_io, "outputs", ttdrv_program_run_io(f->prog, 0, rt, 0, NULL, 0, NULL, 1));
  NUL(ttdrv_program_run_io, "inputs[i]", ttdrv_program_run_io(f->prog, 0, rt, 0, with_null, 2, NULL, 0));
  NUL(ttdrv_program_run_io, "outputs[i]", ttdrv_program_run_io(f->prog, 0, rt, 0, NULL, 0, with_null, 2));
  NUL(ttdrv_rt_args_init, "args", ttdrv_rt_args_init(NULL));
  ttdrv_rt_args ra;
  CHECK(ttdrv_rt_args_init(&ra));
  NUL(ttdrv_program_launch, "program", ttdrv_program_launch(NULL, 0, &ra, NULL, 0, NULL, 0));
  NUL(ttdrv_program_launch, "args", ttdrv_program_launch(f->prog, 0, NULL, NULL, 0, NULL, 0));
  ra.num_common = 3;
  NUL(ttdrv_program_launch, "args->common", ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, NULL, 0));
  ra.num_common = 0;
  ra.num_steps = 1;
  NUL(ttdrv_program_launch, "args->steps", ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, NULL, 0));
  ra.num_steps = 0;
  ra.num_per_core = 17;
  NUL(ttdrv_program_launch, "args->per_core", ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, NULL, 0));
  ra.num_per_core = 0;
  NUL(ttdrv_program_launch, "inputs", ttdrv_program_launch(f->prog, 0, &ra, NULL, 2, NULL, 0));
  NUL(ttdrv_program_launch, "outputs", ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, NULL, 1));
  NUL(ttdrv_program_launch, "inputs[i]", ttdrv_program_launch(f->prog, 0, &ra, with_null, 2, NULL, 0));
  NUL(ttdrv_program_launch, "outputs[i]", ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, with_null, 2));
  OK(ttdrv_program_free(NULL));
  ttdrv_program_cache_stats cs;
  NUL(ttdrv_device_program_cache_stats, "device", ttdrv_device_program_cache_stats(NULL, &cs));
  NUL(ttdrv_device_program_cache_stats, "out", ttdrv_device_program_cache_stats(dev, NULL));

  /* The MLP. */
  ttdrv_mlp_desc md;
  NUL(ttdrv_mlp_desc_init, "desc", ttdrv_mlp_desc_init(NULL));
  CHECK(ttdrv_mlp_desc_init(&md));
  md.batch = host.batch;
  md.dims = host.dims;
  md.num_dims = host.num_dims;
  md.weights = (const float *const *)host.w;
  md.biases = (const float *const *)host.b;
  NUL(ttdrv_mlp_new, "device", ttdrv_mlp_new(NULL, 0, &md, &om));
  NUL(ttdrv_mlp_new, "desc", ttdrv_mlp_new(dev, 0, NULL, &om));
  NUL(ttdrv_mlp_new, "out", ttdrv_mlp_new(dev, 0, &md, NULL));
  md.dims = NULL;
  NUL(ttdrv_mlp_new, "desc->dims", ttdrv_mlp_new(dev, 0, &md, &om));
  md.dims = host.dims;
  md.weights = NULL;
  NUL(ttdrv_mlp_new, "desc->weights", ttdrv_mlp_new(dev, 0, &md, &om));
  md.weights = (const float *const *)host.w;
  md.biases = NULL;
  NUL(ttdrv_mlp_new, "desc->biases", ttdrv_mlp_new(dev, 0, &md, &om));
  const float *w_with_null[MLP_MAX_LAYERS] = {host.w[0], NULL, host.w[2]};
  md.biases = (const float *const *)host.b;
  md.weights = w_with_null;
  NUL(ttdrv_mlp_new, "desc->weights[i]", ttdrv_mlp_new(dev, 0, &md, &om));
  const float *b_with_null[MLP_MAX_LAYERS] = {host.b[0], host.b[1], NULL};
  md.weights = (const float *const *)host.w;
  md.biases = b_with_null;
  NUL(ttdrv_mlp_new, "desc->biases[i]", ttdrv_mlp_new(dev, 0, &md, &om));
  UNCHANGED(om);
  /* A NULL output must not consume the input: it stays the caller's and usable. */
  ttdrv_tensor_spec in = spec_f32(MLP_BATCH, MLP_IN, mc_l1_height(4, MLP_BATCH, MLP_IN));
  ttdrv_buffer *input = NULL;
  CHECK(ttdrv_buffer_allocate(dev, &in, &input));
  NUL(ttdrv_mlp_run, "mlp", ttdrv_mlp_run(NULL, 0, input, &ob));
  NUL(ttdrv_mlp_run, "out", ttdrv_mlp_run(f->mlp, 0, input, NULL));
  NUL(ttdrv_mlp_run, "input", ttdrv_mlp_run(f->mlp, 0, NULL, &ob));
  size_t hs = 0;
  OK(ttdrv_buffer_host_size(input, &hs));
  OK(ttdrv_buffer_free(input));
  OK(ttdrv_mlp_free(NULL));
  NUL(ttdrv_mlp_ops_per_run, "mlp", ttdrv_mlp_ops_per_run(NULL, NULL));
  NUL(ttdrv_mlp_ops_per_run, "out", ttdrv_mlp_ops_per_run(f->mlp, NULL));

  /* Traces. */
  NUL(ttdrv_trace_begin_capture, "device", ttdrv_trace_begin_capture(NULL, 0, NULL));
  NUL(ttdrv_trace_begin_capture, "out_id", ttdrv_trace_begin_capture(dev, 0, NULL));
  NUL(ttdrv_trace_end_capture, "device", ttdrv_trace_end_capture(NULL, 1, 0));
  NUL(ttdrv_trace_execute, "device", ttdrv_trace_execute(NULL, 1, 0, false));
  NUL(ttdrv_trace_release, "device", ttdrv_trace_release(NULL, 1));
  ttdrv_trace_info ti = {.struct_size = sizeof ti};
  NUL(ttdrv_trace_get_info, "device", ttdrv_trace_get_info(NULL, 1, &ti));
  NUL(ttdrv_trace_get_info, "out", ttdrv_trace_get_info(dev, 1, NULL));
  uint32_t lid = SENT32;
  NUL(ttdrv_trace_save, "device", ttdrv_trace_save(NULL, 1, "/tmp/x.trace"));
  NUL(ttdrv_trace_save, "path", ttdrv_trace_save(dev, 1, NULL));
  ST(INVALID_ARGUMENT, ttdrv_trace_save(dev, 1, ""), "`path` is empty", "pass the path");
  ST(INVALID_STATE, ttdrv_trace_save(dev, 999, "/tmp/ttdrv-bad-input-never-written.trace"), "999");
  NUL(ttdrv_trace_load, "device", ttdrv_trace_load(NULL, "/tmp/x.trace", NULL, 0, 0, &lid));
  NUL(ttdrv_trace_load, "path", ttdrv_trace_load(dev, NULL, NULL, 0, 0, &lid));
  NUL(ttdrv_trace_load, "out_id", ttdrv_trace_load(dev, "/tmp/x.trace", NULL, 0, 0, NULL));
  NUL(ttdrv_trace_load, "bindings", ttdrv_trace_load(dev, "/tmp/x.trace", NULL, 2, 0, &lid));
  const ttdrv_buffer *nulls[1] = {NULL};
  ST(NULL_PARAMETER, ttdrv_trace_load(dev, "/tmp/x.trace", nulls, 1, 0, &lid), "`bindings[0]` is NULL");
  ST(INVALID_ARGUMENT, ttdrv_trace_load(dev, "", NULL, 0, 0, &lid), "`path` is empty");
  ST(INVALID_ARGUMENT, ttdrv_trace_load(dev, "/nonexistent/ttdrv.trace", NULL, 0, 0, &lid), "cannot read the file");
  TRUE_(lid == SENT32, "trace_load wrote out_id on failure: %u", lid);
  UNCHANGED(ob);
  UNCHANGED(oe);
  /* The NULL-output capture above must not have left a capture running: queue 0 still takes host writes. */
  OK(ttdrv_buffer_write(f->buf, 0, (const uint8_t *)data, sizeof data, true));
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Freed, forged and wrong-kind handles                                                                         */

/* Every function that takes a device, with `d` bad and everything else good. */
static void bad_device_everywhere(fixture *f, ttdrv_device *d, const char *const *needles) {
  ttdrv_tensor_spec s = dram_spec(32, 64);
  float data[32 * 64] = {0};
  ttdrv_device_info info = {.struct_size = sizeof info};
  ttdrv_buffer *ob = SENTINEL;
  ttdrv_event *oe = SENTINEL;
  ttdrv_program *op = SENTINEL;
  ttdrv_mlp *om = SENTINEL;
  uint32_t id = SENT32;
  ttdrv_program_desc pd;
  CHECK(ttdrv_program_desc_init(&pd));
  pd.kernel_name = "ttdrv.fill";
  ttdrv_mlp_desc md;
  CHECK(ttdrv_mlp_desc_init(&md));
  md.batch = host.batch;
  md.dims = host.dims;
  md.num_dims = host.num_dims;
  md.weights = (const float *const *)host.w;
  md.biases = (const float *const *)host.b;
  ttdrv_program_cache_stats cs;
  ttdrv_trace_info ti = {.struct_size = sizeof ti};

  STV(INVALID_HANDLE, needles, ttdrv_device_get_info(d, &info));
  STV(INVALID_HANDLE, needles, ttdrv_device_finish(d, 0));
  STV(INVALID_HANDLE, needles, ttdrv_device_synchronize(d));
  STV(INVALID_HANDLE, needles, ttdrv_device_reset(d));
  STV(INVALID_HANDLE, needles, ttdrv_buffer_allocate(d, &s, &ob));
  STV(INVALID_HANDLE, needles, ttdrv_buffer_from_host(d, &s, 0, (const uint8_t *)data, sizeof data, &ob));
  STV(INVALID_HANDLE, needles, ttdrv_event_new(d, &oe));
  STV(INVALID_HANDLE, needles, ttdrv_device_wait_for_event(d, 0, f->ev));
  STV(INVALID_HANDLE, needles, ttdrv_program_new(d, &pd, &op));
  STV(INVALID_HANDLE, needles, ttdrv_device_program_cache_stats(d, &cs));
  STV(INVALID_HANDLE, needles, ttdrv_mlp_new(d, 0, &md, &om));
  STV(INVALID_HANDLE, needles, ttdrv_trace_save(d, 1, "/tmp/ttdrv-bad-input-never-written.trace"));
  STV(INVALID_HANDLE, needles, ttdrv_trace_load(d, "/tmp/ttdrv-bad-input-never-written.trace", NULL, 0, 0, &id));
  STV(INVALID_HANDLE, needles, ttdrv_trace_begin_capture(d, 0, &id));
  STV(INVALID_HANDLE, needles, ttdrv_trace_end_capture(d, 1, 0));
  STV(INVALID_HANDLE, needles, ttdrv_trace_execute(d, 1, 0, false));
  STV(INVALID_HANDLE, needles, ttdrv_trace_release(d, 1));
  STV(INVALID_HANDLE, needles, ttdrv_trace_get_info(d, 1, &ti));
  STV(INVALID_HANDLE, needles, ttdrv_device_close(d));
  UNCHANGED(ob);
  UNCHANGED(oe);
  UNCHANGED(op);
  UNCHANGED(om);
  TRUE_(id == SENT32, "trace id written by a failing call");
}

static void bad_buffer_everywhere(fixture *f, ttdrv_buffer *b, const char *const *needles) {
  float data[32 * 64] = {0};
  uint64_t addr = SENT32;
  size_t hs = SENT32;
  uint32_t words[12];
  ttdrv_tensor_spec s;
  ttdrv_memory_config mem = mc_interleaved(TTDRV_BUFFER_DRAM);
  ttdrv_buffer *ob = SENTINEL;
  uint32_t rt[1] = {0};

  STV(INVALID_HANDLE, needles, ttdrv_buffer_write(b, 0, (const uint8_t *)data, sizeof data, false));
  STV(INVALID_HANDLE, needles, ttdrv_buffer_read(b, 0, true, (uint8_t *)data, sizeof data));
  STV(INVALID_HANDLE, needles, ttdrv_buffer_address(b, &addr));
  STV(INVALID_HANDLE, needles, ttdrv_buffer_get_spec(b, &s));
  STV(INVALID_HANDLE, needles, ttdrv_buffer_host_size(b, &hs));
  uint32_t contents = SENT32;
  STV(INVALID_HANDLE, needles, ttdrv_buffer_contents(b, &contents));
  TRUE_(contents == SENT32, "ttdrv_buffer_contents wrote its output on failure");
  STV(INVALID_HANDLE, needles, ttdrv_buffer_accessor(b, words, 12));
  STV(INVALID_HANDLE, needles, ttdrv_to_memory_config(b, 0, &mem, &ob));
  STV(INVALID_HANDLE, needles, ttdrv_reshard(b, 0, &mem, &ob));
  STV(INVALID_HANDLE, needles, ttdrv_to_layout(b, 0, TTDRV_TENSOR_LAYOUT_TILE, &mem, &ob));
  STV(INVALID_HANDLE, needles, ttdrv_reshard_into(b, 0, f->buf2));
  STV(INVALID_HANDLE, needles, ttdrv_reshard_into(f->buf2, 0, b));
  STV(INVALID_HANDLE, needles, ttdrv_matmul(b, f->buf2, 0, &mem, &ob));
  STV(INVALID_HANDLE, needles, ttdrv_matmul(f->buf2, b, 0, &mem, &ob));
  STV(INVALID_HANDLE, needles, ttdrv_eltwise_binary(b, f->buf2, TTDRV_BINARY_ADD, 0, &mem, &ob));
  STV(INVALID_HANDLE, needles, ttdrv_eltwise_binary(f->buf2, b, TTDRV_BINARY_MUL, 0, &mem, &ob));
  STV(INVALID_HANDLE, needles, ttdrv_eltwise_unary(b, TTDRV_UNARY_EXP, 0, 0, &mem, &ob));
  STV(INVALID_HANDLE, needles, ttdrv_fill(b, 0, 2.0f));
  STV(INVALID_HANDLE, needles, ttdrv_layer_norm(b, NULL, f->buf2, f->buf2, 1e-5f, 0, f->buf2));
  STV(INVALID_HANDLE, needles, ttdrv_layer_norm(f->buf2, b, f->buf2, f->buf2, 1e-5f, 0, f->buf2));
  STV(INVALID_HANDLE, needles, ttdrv_layer_norm(f->buf2, NULL, f->buf2, f->buf2, 1e-5f, 0, b));
  STV(INVALID_HANDLE, needles, ttdrv_softmax(f->buf2, b, 1.0f, 0, f->buf2));
  STV(INVALID_HANDLE, needles, ttdrv_softmax(b, NULL, 1.0f, 0, f->buf2));
  STV(INVALID_HANDLE, needles, ttdrv_bmm(f->buf2, b, 1, 1, 0, 0, 1.0f, 0, f->buf2));
  STV(INVALID_HANDLE, needles, ttdrv_linear(f->buf2, f->buf2, b, TTDRV_ACTIVATION_NONE, 0, f->buf2));
  ttdrv_buffer *tables[1] = {b}, *good[1] = {f->buf2};
  STV(INVALID_HANDLE, needles, ttdrv_embedding(f->buf2, tables, 1, 0, f->buf2));
  STV(INVALID_HANDLE, needles, ttdrv_embedding(b, good, 1, 0, f->buf2));
  STV(INVALID_HANDLE, needles, ttdrv_mean_pool(f->buf2, b, true, 0, f->buf2));
  STV(INVALID_HANDLE, needles, ttdrv_mlp_run(f->mlp, 0, b, &ob));
  ttdrv_buffer *list[2] = {f->buf2, b};
  STV(INVALID_HANDLE, needles, ttdrv_program_run(f->prog, 0, rt, 0, list, 2));
  STV(INVALID_HANDLE, needles, ttdrv_program_run_io(f->prog, 0, rt, 0, list, 2, NULL, 0));
  STV(INVALID_HANDLE, needles, ttdrv_program_run_io(f->prog, 0, rt, 0, NULL, 0, list, 2));
  ttdrv_rt_args ra;
  CHECK(ttdrv_rt_args_init(&ra));
  STV(INVALID_HANDLE, needles, ttdrv_program_launch(f->prog, 0, &ra, list, 2, NULL, 0));
  STV(INVALID_HANDLE, needles, ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, list, 2));
  STV(INVALID_HANDLE, needles, ttdrv_buffer_free(b));
  UNCHANGED(ob);
  TRUE_(addr == SENT32 && hs == SENT32, "address or size written by a failing call");
}

static void bad_event_everywhere(fixture *f, ttdrv_event *e, const char *const *needles) {
  bool done = true;
  STV(INVALID_HANDLE, needles, ttdrv_event_record(e, 0));
  STV(INVALID_HANDLE, needles, ttdrv_event_record_notify(e, 0));
  STV(INVALID_HANDLE, needles, ttdrv_device_wait_for_event(f->c->dev, 0, e));
  STV(INVALID_HANDLE, needles, ttdrv_event_synchronize(e));
  STV(INVALID_HANDLE, needles, ttdrv_event_synchronize_timeout(e, 1000));
  STV(INVALID_HANDLE, needles, ttdrv_event_query(e, &done));
  STV(INVALID_HANDLE, needles, ttdrv_event_free(e));
  TRUE_(done == true, "query output written by a failing call");
}

static void bad_program_everywhere(ttdrv_program *p, const char *const *needles) {
  STV(INVALID_HANDLE, needles, ttdrv_program_run(p, 0, NULL, 0, NULL, 0));
  STV(INVALID_HANDLE, needles, ttdrv_program_run_io(p, 0, NULL, 0, NULL, 0, NULL, 0));
  ttdrv_rt_args ra;
  CHECK(ttdrv_rt_args_init(&ra));
  STV(INVALID_HANDLE, needles, ttdrv_program_launch(p, 0, &ra, NULL, 0, NULL, 0));
  STV(INVALID_HANDLE, needles, ttdrv_program_free(p));
}

static void bad_mlp_everywhere(fixture *f, ttdrv_mlp *m, const char *const *needles) {
  uint32_t ops = SENT32;
  ttdrv_buffer *ob = SENTINEL;
  /* The input is not consumed by a call that fails on the model handle. */
  ttdrv_tensor_spec in = spec_f32(MLP_BATCH, MLP_IN, mc_l1_height(4, MLP_BATCH, MLP_IN));
  ttdrv_buffer *input = NULL;
  CHECK(ttdrv_buffer_allocate(f->c->dev, &in, &input));
  STV(INVALID_HANDLE, needles, ttdrv_mlp_run(m, 0, input, &ob));
  OK(ttdrv_buffer_free(input));
  STV(INVALID_HANDLE, needles, ttdrv_mlp_ops_per_run(m, &ops));
  STV(INVALID_HANDLE, needles, ttdrv_mlp_free(m));
  UNCHANGED(ob);
  TRUE_(ops == SENT32, "ops written by a failing call");
}

/* Handle values no ttdrv call returned: a bad kind tag, an out-of-range slot of the right kind, a pointer to
 * ordinary memory, all ones. */
static uintptr_t forged(int i, unsigned kind) {
  static int local;
  switch (i) {
    case 0: return 0x12345678u;
    case 1: return ((uintptr_t)0xdeadbeefu << 32) | ((uintptr_t)999999 << 4) | kind;
    case 2: return (uintptr_t)&local;
    case 3: return (uintptr_t)&host.dims[1]; /* inside a C object, 4-byte aligned */
    default: return UINTPTR_MAX;
  }
}
#define N_FORGED 5

static void test_handles(fixture *f) {
  group = "handles";
  ttdrv_device *dev = f->c->dev;
  ttdrv_tensor_spec s = dram_spec(32, 64);

  /* Freed handles of every kind. */
  ttdrv_device *d2 = open_dev("emu", 1, 0);
  OK(ttdrv_device_close(d2));
  bad_device_everywhere(f, d2, NEEDLES("ttdrv_device", "stale"));
  ttdrv_buffer *b = NULL;
  CHECK(ttdrv_buffer_allocate(dev, &s, &b));
  OK(ttdrv_buffer_free(b));
  bad_buffer_everywhere(f, b, NEEDLES("ttdrv_buffer", "stale"));
  ttdrv_event *e = NULL;
  CHECK(ttdrv_event_new(dev, &e));
  OK(ttdrv_event_free(e));
  bad_event_everywhere(f, e, NEEDLES("ttdrv_event", "stale"));
  ttdrv_program *p = fill_program(dev, NULL);
  TRUE_(p != NULL, "could not create a fill program: %s", ttdrv_last_error());
  if (p) {
    OK(ttdrv_program_free(p));
    bad_program_everywhere(p, NEEDLES("ttdrv_program", "stale"));
  }
  ttdrv_mlp *m = mlp_create(dev, 0, &host);
  OK(ttdrv_mlp_free(m));
  bad_mlp_everywhere(f, m, NEEDLES("ttdrv_mlp", "stale"));

  /* A freed slot reused by a new object: the old handle stays dead and does not alias the new one. */
  ttdrv_buffer *b1 = NULL, *b2 = NULL;
  CHECK(ttdrv_buffer_allocate(dev, &s, &b1));
  OK(ttdrv_buffer_free(b1));
  CHECK(ttdrv_buffer_allocate(dev, &s, &b2));
  float data[32 * 64];
  fill_pattern(data, 32 * 64, 77);
  ST(INVALID_HANDLE, ttdrv_buffer_write(b1, 0, (const uint8_t *)data, sizeof data, true), "stale");
  ST(INVALID_HANDLE, ttdrv_buffer_free(b1), "stale");
  size_t hs = 0;
  OK(ttdrv_buffer_host_size(b2, &hs));
  OK(ttdrv_buffer_free(b2));

  /* Forged handles of every kind. */
  for (int i = 0; i < N_FORGED; i++) {
    bad_device_everywhere(f, (ttdrv_device *)forged(i, 1), NEEDLES("ttdrv_device"));
    bad_buffer_everywhere(f, (ttdrv_buffer *)forged(i, 2), NEEDLES("ttdrv_buffer"));
    bad_event_everywhere(f, (ttdrv_event *)forged(i, 3), NEEDLES("ttdrv_event"));
    bad_program_everywhere((ttdrv_program *)forged(i, 4), NEEDLES("ttdrv_program"));
    bad_mlp_everywhere(f, (ttdrv_mlp *)forged(i, 5), NEEDLES("ttdrv_mlp"));
  }

  /* Live handles of the wrong kind; the object itself must survive being passed where it does not belong. */
  bad_device_everywhere(f, (ttdrv_device *)f->buf, NEEDLES("is a ttdrv_buffer", "ttdrv_device is required"));
  bad_buffer_everywhere(f, (ttdrv_buffer *)f->ev, NEEDLES("is a ttdrv_event", "ttdrv_buffer is required"));
  bad_buffer_everywhere(f, (ttdrv_buffer *)dev, NEEDLES("is a ttdrv_device", "ttdrv_buffer is required"));
  bad_event_everywhere(f, (ttdrv_event *)f->prog, NEEDLES("is a ttdrv_program", "ttdrv_event is required"));
  bad_program_everywhere((ttdrv_program *)f->mlp, NEEDLES("is a ttdrv_mlp", "ttdrv_program is required"));
  bad_mlp_everywhere(f, (ttdrv_mlp *)f->buf2, NEEDLES("is a ttdrv_buffer", "ttdrv_mlp is required"));
  OK(ttdrv_buffer_host_size(f->buf, &hs));
  OK(ttdrv_event_synchronize(f->ev));
  uint32_t ops = 0;
  OK(ttdrv_mlp_ops_per_run(f->mlp, &ops));
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Sizes: zero, huge, overflowing                                                                               */

static void alloc_fails(int line, const char *what, ttdrv_device *dev, const ttdrv_tensor_spec *s, ttdrv_status want,
                        const char *needle) {
  ttdrv_buffer *b = SENTINEL;
  ttdrv_status st = ttdrv_buffer_allocate(dev, s, &b);
  if (expect_status(line, what, st, want, NEEDLES("ttdrv_buffer_allocate", needle))) {
    TRUE_(b == SENTINEL, "%s: output written by a failing allocate", what);
  }
  if (st == TTDRV_STATUS_OK) ttdrv_buffer_free(b);
}

static void test_sizes(fixture *f) {
  group = "sizes";
  ttdrv_device *dev = f->c->dev;
  ttdrv_tensor_spec s = dram_spec(32, 64);
  float data[32 * 64];
  uint8_t one = 0;
  ttdrv_buffer *ob = SENTINEL;

  /* 0-length buffers and SIZE_MAX lengths. */
  ST(INVALID_ARGUMENT, ttdrv_buffer_write(f->buf, 0, NULL, 0, false), "0 bytes", "8192");
  ST(INVALID_ARGUMENT, ttdrv_buffer_write(f->buf, 0, &one, 0, true), "0 bytes");
  ST(INVALID_ARGUMENT, ttdrv_buffer_write(f->buf, 0, (const uint8_t *)data, sizeof data - 1, false), "8191");
  ST(INVALID_ARGUMENT, ttdrv_buffer_write(f->buf, 0, (const uint8_t *)data, sizeof data + 4, false), "8196");
  ST(INVALID_ARGUMENT, ttdrv_buffer_write(f->buf, 0, (const uint8_t *)data, SIZE_MAX, false), "8192");
  ST(INVALID_ARGUMENT, ttdrv_buffer_write(f->buf, 0, (const uint8_t *)data, (size_t)1 << 62, false), "bytes");
  ST(INVALID_ARGUMENT, ttdrv_buffer_read(f->buf, 0, true, NULL, 0), "8192");
  ST(INVALID_ARGUMENT, ttdrv_buffer_read(f->buf, 0, true, (uint8_t *)data, SIZE_MAX), "8192");
  ST(INVALID_ARGUMENT, ttdrv_buffer_read(f->buf, 0, false, (uint8_t *)data, sizeof data / 2), "8192");
  ST(INVALID_ARGUMENT, ttdrv_buffer_from_host(dev, &s, 0, NULL, 0, &ob), "0 bytes");
  ST(INVALID_ARGUMENT, ttdrv_buffer_from_host(dev, &s, 0, (const uint8_t *)data, SIZE_MAX, &ob), "data");
  UNCHANGED(ob);

  /* Shapes: zero, overflowing rows * cols * element size, larger than the device. */
  ttdrv_tensor_spec z = dram_spec(0, 64);
  alloc_fails(__LINE__, "rows = 0", dev, &z, TTDRV_STATUS_INVALID_ARGUMENT, "zero dimension");
  z = dram_spec(64, 0);
  alloc_fails(__LINE__, "cols = 0", dev, &z, TTDRV_STATUS_INVALID_ARGUMENT, "zero dimension");
  z = dram_spec(0x80000000u, 0x80000000u); /* 2^62 elements: 2^64 bytes wraps to 0 in 64 bits */
  alloc_fails(__LINE__, "2^31 x 2^31", dev, &z, TTDRV_STATUS_INVALID_ARGUMENT, "too long");
  z = dram_spec(UINT32_MAX, UINT32_MAX);
  alloc_fails(__LINE__, "max x max", dev, &z, TTDRV_STATUS_INVALID_ARGUMENT, "too long");
  z = dram_spec(UINT32_MAX, 1);
  alloc_fails(__LINE__, "max rows", dev, &z, TTDRV_STATUS_OUT_OF_DEVICE_MEMORY, "cannot allocate");
  z = dram_spec(1u << 20, 1u << 12); /* 16 GiB: more than the device has */
  alloc_fails(__LINE__, "16 GiB", dev, &z, TTDRV_STATUS_OUT_OF_DEVICE_MEMORY, "free");
  z = spec_f32(1u << 16, 1u << 12, mc_interleaved(TTDRV_BUFFER_L1)); /* 1 GiB of L1 */
  alloc_fails(__LINE__, "1 GiB of L1", dev, &z, TTDRV_STATUS_OUT_OF_DEVICE_MEMORY, "L1");

  /* Counts: SIZE_MAX and counts whose byte size overflows. */
  uint32_t rt[4] = {0};
  ttdrv_buffer *list[1] = {f->buf};
  ST(INVALID_ARGUMENT, ttdrv_program_run(f->prog, 0, rt, SIZE_MAX, NULL, 0), "rt_args");
  ST(INVALID_ARGUMENT, ttdrv_program_run(f->prog, 0, rt, ((size_t)1 << 62) + 1, NULL, 0), "rt_args");
  ST(INVALID_ARGUMENT, ttdrv_program_run(f->prog, 0, rt, 0, list, SIZE_MAX), "buffers");
  ST(INVALID_ARGUMENT, ttdrv_program_run(f->prog, 0, rt, 0, list, ((size_t)1 << 61) + 1), "buffers");
  ST(INVALID_ARGUMENT, ttdrv_program_run(f->prog, 0, rt, 3, NULL, 0), "runtime words");
  ST(INVALID_ARGUMENT, ttdrv_program_run_io(f->prog, 0, rt, SIZE_MAX, NULL, 0, NULL, 0), "rt_args");
  ST(INVALID_ARGUMENT, ttdrv_program_run_io(f->prog, 0, rt, 0, list, SIZE_MAX, NULL, 0), "inputs");
  ST(INVALID_ARGUMENT, ttdrv_program_run_io(f->prog, 0, rt, 0, NULL, 0, list, ((size_t)1 << 61) + 1), "outputs");
  ST(INVALID_ARGUMENT, ttdrv_program_run_io(f->prog, 0, rt, 3, NULL, 0, list, 1), "runtime words");
  /* The compact form: huge counts, then arguments that break contract §4.2.6 (the fill program takes 17 words on one
     core). */
  ttdrv_rt_args ra;
  CHECK(ttdrv_rt_args_init(&ra));
  ttdrv_arg_step steps[3] = {{.index = 0, .limit = UINT32_MAX}, {.index = 1, .limit = UINT32_MAX}, {.index = 0}};
  uint32_t many[20] = {0};
  ra.common = many;
  ra.num_common = SIZE_MAX;
  ST(INVALID_ARGUMENT, ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, NULL, 0), "args->common");
  ra.num_common = 18;
  ST(INVALID_ARGUMENT, ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, NULL, 0), "18 common", "at most");
  ra.num_common = 13;
  ra.steps = steps;
  ra.num_steps = ((size_t)1 << 60) + 1;
  ST(INVALID_ARGUMENT, ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, NULL, 0), "args->steps");
  ra.num_steps = 3;
  ra.per_core = many;
  ra.num_per_core = 1;
  ST(INVALID_ARGUMENT, ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, NULL, 0), "step 2", "increasing");
  ra.num_steps = 2;
  ra.num_per_core = 3;
  ST(INVALID_ARGUMENT, ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, NULL, 0), "3 explicit", "need 2");
  ra.num_per_core = 2;
  ra.struct_size = 8;
  ST(INVALID_ARGUMENT, ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, NULL, 0), "struct_size", "ttdrv_rt_args_init");
  ra.struct_size = sizeof ra + 8;
  ST(INVALID_ARGUMENT, ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, NULL, 0), "struct_size", "newer");
  ra.struct_size = TTDRV_RT_ARGS_SIZE_V0_2;
  ST(INVALID_ARGUMENT, ttdrv_program_launch(f->prog, 0, &ra, NULL, 0, list, ((size_t)1 << 61) + 1), "outputs");
  uint32_t words[12];
  ST(INVALID_ARGUMENT, ttdrv_buffer_accessor(f->buf, words, 11), "12 words");
  ST(INVALID_ARGUMENT, ttdrv_buffer_accessor(f->buf, words, 0), "12 words");

  ttdrv_program_desc pd;
  ttdrv_program *op = SENTINEL;
  ttdrv_cb_config cb = {0, 64, 2, 0};
  uint32_t ct[2] = {0, 0};
  CHECK(ttdrv_program_desc_init(&pd));
  pd.kernel_name = "ttdrv.fill";
  pd.cbs = &cb;
  pd.num_cbs = SIZE_MAX;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "cbs");
  pd.num_cbs = ((size_t)1 << 60) + 1;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "cbs");
  pd.num_cbs = 0;
  pd.ct_args = ct;
  pd.num_ct_args = SIZE_MAX;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "ct_args");
  pd.num_ct_args = 0;
  pd.sems = ct;
  pd.num_sems = SIZE_MAX / 2;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "sems");
  pd.num_sems = 0;
  pd.kernel_name = "custom";
  pd.code = &one;
  pd.code_len = SIZE_MAX;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "code");
  pd.code_len = 0;
  pd.kernel_name = "ttdrv.fill";
  pd.rt_words_per_core = 70000;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "rt_words_per_core");
  UNCHANGED(op);

  ttdrv_mlp_desc md;
  ttdrv_mlp *om = SENTINEL;
  CHECK(ttdrv_mlp_desc_init(&md));
  md.batch = host.batch;
  md.dims = host.dims;
  md.weights = (const float *const *)host.w;
  md.biases = (const float *const *)host.b;
  md.num_dims = 1;
  ST(INVALID_ARGUMENT, ttdrv_mlp_new(dev, 0, &md, &om), "num_dims");
  md.num_dims = 65;
  ST(INVALID_ARGUMENT, ttdrv_mlp_new(dev, 0, &md, &om), "num_dims");
  md.num_dims = SIZE_MAX;
  ST(INVALID_ARGUMENT, ttdrv_mlp_new(dev, 0, &md, &om), "num_dims");
  uint32_t dims0[4] = {MLP_IN, 0, 128, MLP_OUT};
  md.num_dims = 4;
  md.dims = dims0;
  ST(INVALID_ARGUMENT, ttdrv_mlp_new(dev, 0, &md, &om), "layer 0");
  md.dims = host.dims;
  md.batch = 0;
  ST(INVALID_ARGUMENT, ttdrv_mlp_new(dev, 0, &md, &om), "batch");
  UNCHANGED(om);

  /* Misaligned pointers: byte data may sit anywhere; word and float arrays must be aligned for their type (C code
   * that forms them by casting an odd address gets INVALID_ARGUMENT, not undefined behaviour in the library). */
  static uint8_t raw[32 * 64 * 4 + 8];
  float back[32 * 64];
  fill_pattern(data, 32 * 64, 31);
  memcpy(raw + 1, data, sizeof data);
  OK(ttdrv_buffer_write(f->buf, 0, raw + 1, sizeof data, true));
  OK(ttdrv_buffer_read(f->buf, 0, true, raw + 3, sizeof data));
  memcpy(back, raw + 3, sizeof back);
  TRUE_(memcmp(back, data, sizeof data) == 0, "round trip through odd host addresses changed the data");
  uint32_t words_al[20] = {0};
  const uint32_t *odd_words = (const uint32_t *)(const void *)((const uint8_t *)words_al + 2);
  ST(INVALID_ARGUMENT, ttdrv_program_run(f->prog, 0, odd_words, 17, NULL, 0), "rt_args", "aligned");
  ttdrv_buffer *const *odd_list = (ttdrv_buffer *const *)(const void *)((const uint8_t *)list + 4);
  ST(INVALID_ARGUMENT, ttdrv_program_run(f->prog, 0, rt, 0, odd_list, 1), "buffers", "aligned");
  ST(INVALID_ARGUMENT, ttdrv_program_run_io(f->prog, 0, rt, 0, NULL, 0, odd_list, 1), "outputs", "aligned");
  CHECK(ttdrv_program_desc_init(&pd));
  pd.kernel_name = "ttdrv.fill";
  pd.ct_args = odd_words;
  pd.num_ct_args = 1;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "ct_args", "aligned");
  CHECK(ttdrv_mlp_desc_init(&md));
  md.batch = host.batch;
  md.num_dims = host.num_dims;
  md.dims = (const uint32_t *)(const void *)((const uint8_t *)host.dims + 1);
  md.weights = (const float *const *)host.w;
  md.biases = (const float *const *)host.b;
  ST(INVALID_ARGUMENT, ttdrv_mlp_new(dev, 0, &md, &om), "desc->dims", "aligned");
  md.dims = host.dims;
  const float *odd_w[MLP_MAX_LAYERS] = {(const float *)(const void *)((const uint8_t *)host.w[0] + 2), host.w[1],
                                        host.w[2]};
  md.weights = odd_w;
  ST(INVALID_ARGUMENT, ttdrv_mlp_new(dev, 0, &md, &om), "desc->weights[i]", "aligned");
  UNCHANGED(op);
  UNCHANGED(om);

  /* Timeouts at both ends. */
  ttdrv_event *e = NULL;
  CHECK(ttdrv_event_new(dev, &e));
  CHECK(ttdrv_event_record(e, 0));
  OK(ttdrv_event_synchronize_timeout(e, UINT64_MAX));
  OK(ttdrv_event_synchronize_timeout(e, 0)); /* completed already: no wait needed */
  OK(ttdrv_event_free(e));
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Out-of-range values                                                                                          */

static void test_ranges(fixture *f) {
  group = "ranges";
  ttdrv_device *dev = f->c->dev;
  ttdrv_tensor_spec s;

  /* Shard grids outside the 8x8 grid and the 8 banks; core coordinates > 255; bank numbers > 65535. */
  s = spec_f32(32, 64, mc_l1_height(4, 32, 64));
  s.mem.shard.core_x0 = 6, s.mem.shard.core_x1 = 9;
  alloc_fails(__LINE__, "cores x 6..9", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "outside device");
  s = spec_f32(32, 64, mc_l1_height(4, 32, 64));
  s.mem.shard.core_x1 = 0, s.mem.shard.core_y1 = 3, s.mem.shard.core_y0 = 0;
  s.mem.shard.core_x0 = 0;
  s.mem.shard.core_y1 = 8;
  alloc_fails(__LINE__, "cores y 0..8", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "outside device");
  s = spec_f32(32, 64, mc_l1_height(4, 32, 64));
  s.mem.shard.core_x1 = 256;
  alloc_fails(__LINE__, "core 256", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "core coordinate 256");
  s.mem.shard.core_x1 = UINT32_MAX;
  alloc_fails(__LINE__, "core 2^32-1", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "core coordinate 4294967295");
  s = spec_f32(32, 64, mc_l1_height(4, 32, 64));
  s.mem.shard.core_x0 = 3, s.mem.shard.core_x1 = 0;
  alloc_fails(__LINE__, "cores 3..0", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "cores (3,0)-(0,0): the rectangle is reversed");
  s = spec_f32(32, 64, mc_dram_height(4, 32, 64));
  s.mem.shard.bank_last = 8;
  alloc_fails(__LINE__, "banks 0..8", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "outside device");
  s.mem.shard.bank_first = 5, s.mem.shard.bank_last = 2;
  alloc_fails(__LINE__, "banks 5..2", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "banks 5-2: the range is reversed");
  s.mem.shard.bank_first = 0, s.mem.shard.bank_last = 70000;
  alloc_fails(__LINE__, "bank 70000", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "bank range");
  s = spec_f32(32, 64, mc_l1_height(2, 32, 64));
  s.mem.shard.shard_rows = 4; /* 8 shards on 2 cores */
  alloc_fails(__LINE__, "8 shards on 2 cores", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "do not fit");
  s.mem.shard.shard_rows = 5;
  alloc_fails(__LINE__, "shard rows 5 of 32", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "does not divide");
  s.mem.shard.shard_rows = 0;
  alloc_fails(__LINE__, "shard rows 0", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "zero dimension");
  s = spec_f32(32, 64, mc_l1_height(4, 32, 64));
  s.mem.shard.shard_cols = 32;
  alloc_fails(__LINE__, "height shard width", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "whole rows");
  s = spec_f32(32, 64, mc_interleaved(TTDRV_BUFFER_L1_SMALL));
  alloc_fails(__LINE__, "L1_SMALL without region", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "l1_small_size=0");

  /* Unknown enum values. */
  s = dram_spec(32, 64);
  s.dtype = 2;
  alloc_fails(__LINE__, "dtype 2", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "dtype 2");
  s.dtype = UINT32_MAX;
  alloc_fails(__LINE__, "dtype max", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "dtype");
  s = dram_spec(32, 64);
  s.mem.buffer_type = 3;
  alloc_fails(__LINE__, "buffer_type 3", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "buffer_type 3");
  s = dram_spec(32, 64);
  s.mem.layout = 4;
  alloc_fails(__LINE__, "layout 4", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "layout 4");
  s = spec_f32(32, 64, mc_l1_height(4, 32, 64));
  s.mem.shard.orientation = 2;
  alloc_fails(__LINE__, "orientation 2", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "orientation 2");
  s = dram_spec(32, 64);
  s.tensor_layout = 2;
  alloc_fails(__LINE__, "tensor_layout 2", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "tensor_layout 2");
  s.tensor_layout = UINT32_MAX;
  alloc_fails(__LINE__, "tensor_layout max", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "TTDRV_TENSOR_LAYOUT_TILE");
  /* Tiled shards hold whole 32x32 tiles. */
  s = spec_f32(32, 64, mc_l1_height(2, 32, 64)); /* shards of 16 rows */
  s.tensor_layout = TTDRV_TENSOR_LAYOUT_TILE;
  alloc_fails(__LINE__, "tiled shard rows 16", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "whole 32x32 tiles");
  ttdrv_memory_config mem = mc_interleaved(TTDRV_BUFFER_DRAM);
  ttdrv_buffer *ob = SENTINEL;
  ST(INVALID_ARGUMENT, ttdrv_eltwise_binary(f->buf, f->buf2, 3, 0, &mem, &ob), "binary op 3");
  ST(INVALID_ARGUMENT, ttdrv_eltwise_unary(f->buf, 5, 0, 0, &mem, &ob), "unary op 5");
  mem.buffer_type = 7;
  ST(INVALID_ARGUMENT, ttdrv_to_memory_config(f->buf, 0, &mem, &ob), "buffer_type 7");
  ST(INVALID_ARGUMENT, ttdrv_to_layout(f->buf, 0, TTDRV_TENSOR_LAYOUT_TILE, &mem, &ob), "buffer_type 7");
  ST(INVALID_ARGUMENT, ttdrv_eltwise_unary(f->buf, TTDRV_UNARY_RELU, 0, 0, &mem, &ob), "buffer_type 7");
  mem = mc_interleaved(TTDRV_BUFFER_DRAM);
  ST(INVALID_ARGUMENT, ttdrv_to_layout(f->buf, 0, 2, &mem, &ob), "tensor_layout 2", "TTDRV_TENSOR_LAYOUT_TILE");
  UNCHANGED(ob);

  /* struct_size too small; larger is accepted and what lies beyond our struct is left alone. */
  s = dram_spec(32, 64);
  s.struct_size = 0;
  alloc_fails(__LINE__, "spec struct_size 0", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "struct_size");
  s.struct_size = sizeof s - 4;
  alloc_fails(__LINE__, "spec struct_size short", dev, &s, TTDRV_STATUS_INVALID_ARGUMENT, "ttdrv_tensor_spec_init");
  ttdrv_device_info info;
  memset(&info, 0, sizeof info);
  ST(INVALID_ARGUMENT, ttdrv_device_get_info(dev, &info), "struct_size");
  info.struct_size = sizeof info - 1;
  ST(INVALID_ARGUMENT, ttdrv_device_get_info(dev, &info), "sizeof(ttdrv_device_info)");
  struct {
    ttdrv_device_info i;
    uint32_t canary[8];
  } big;
  memset(&big, 0xA5, sizeof big);
  big.i.struct_size = sizeof big;
  OK(ttdrv_device_get_info(dev, &big.i));
  TRUE_(big.i.struct_size == sizeof(ttdrv_device_info) && big.canary[0] == 0xA5A5A5A5u &&
            big.canary[7] == 0xA5A5A5A5u && big.i.grid_x == 8 && big.i.dram_banks == 8,
        "get_info with a larger struct: size %u, canary %#x, grid %u", big.i.struct_size, big.canary[0],
        big.i.grid_x);
  ttdrv_trace_info ti;
  memset(&ti, 0, sizeof ti);
  ST(INVALID_ARGUMENT, ttdrv_trace_get_info(dev, 1, &ti), "struct_size");
  ttdrv_program_desc pd;
  ttdrv_program *op = SENTINEL;
  CHECK(ttdrv_program_desc_init(&pd));
  pd.kernel_name = "ttdrv.fill";
  pd.struct_size = 8;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "struct_size");
  ttdrv_mlp_desc md;
  ttdrv_mlp *om = SENTINEL;
  CHECK(ttdrv_mlp_desc_init(&md));
  md.struct_size = 0;
  ST(INVALID_ARGUMENT, ttdrv_mlp_new(dev, 0, &md, &om), "struct_size");

  /* Programs: cores outside the grid, coordinates > 255, unknown kernels. */
  CHECK(ttdrv_program_desc_init(&pd));
  pd.kernel_name = "ttdrv.fill";
  pd.cores.x1 = 8;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "ttdrv_program_new");
  pd.cores.x1 = 300;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "core coordinate 300");
  pd.cores.x1 = 0;
  pd.cores.y0 = 2, pd.cores.y1 = 1;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "ttdrv_program_new");
  /* A name in the built-in namespace that names no built-in kernel fails at creation, naming the known ones. */
  CHECK(ttdrv_program_desc_init(&pd));
  pd.kernel_name = "ttdrv.no_such_kernel";
  ST(UNSUPPORTED, ttdrv_program_new(dev, &pd, &op), "ttdrv.no_such_kernel", "ttdrv.matmul");
  UNCHANGED(op);
  CHECK(ttdrv_program_desc_init(&pd));
  pd.kernel_name = "";
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "kernel name");
  char long_name[80];
  memset(long_name, 'k', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  pd.kernel_name = long_name;
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "kernel name");
  pd.kernel_name = "ttdrv.fill\xff";
  ST(INVALID_ARGUMENT, ttdrv_program_new(dev, &pd, &op), "UTF-8");
  UNCHANGED(op);
  UNCHANGED(om);

  /* Shapes that do not fit the operation; objects of another device. */
  ttdrv_buffer *small = NULL;
  ttdrv_tensor_spec s2 = dram_spec(16, 64);
  CHECK(ttdrv_buffer_allocate(dev, &s2, &small));
  mem = mc_interleaved(TTDRV_BUFFER_DRAM);
  ST(INVALID_ARGUMENT, ttdrv_eltwise_binary(f->buf, small, TTDRV_BINARY_ADD, 0, &mem, &ob), "ttdrv_eltwise_binary");
  ST(INVALID_ARGUMENT, ttdrv_matmul(f->buf, f->buf2, 0, &mem, &ob), "ttdrv_matmul");
  ST(INVALID_ARGUMENT, ttdrv_reshard_into(f->buf, 0, small), "ttdrv_reshard_into");
  /* An MLP input of the wrong shape stays the caller's. */
  ST(INVALID_ARGUMENT, ttdrv_mlp_run(f->mlp, 0, small, &ob), "still yours");
  size_t hs = 0;
  OK(ttdrv_buffer_host_size(small, &hs));
  OK(ttdrv_buffer_free(small));

  ttdrv_device *other = open_dev("emu:queues=1", 1, 0);
  s = dram_spec(32, 64);
  ttdrv_buffer *foreign = NULL;
  ttdrv_event *fe = NULL;
  CHECK(ttdrv_buffer_allocate(other, &s, &foreign));
  CHECK(ttdrv_event_new(other, &fe));
  CHECK(ttdrv_event_record(fe, 0));
  ST(INVALID_ARGUMENT, ttdrv_eltwise_binary(f->buf, foreign, TTDRV_BINARY_ADD, 0, &mem, &ob), "belongs to device");
  ST(INVALID_ARGUMENT, ttdrv_reshard_into(f->buf, 0, foreign), "belongs to device");
  ST(INVALID_ARGUMENT, ttdrv_device_wait_for_event(dev, 0, fe), "belongs to device");
  uint32_t rt[17] = {0};
  ttdrv_buffer *list[1] = {foreign};
  ST(INVALID_ARGUMENT, ttdrv_program_run(f->prog, 0, rt, 17, list, 1), "belongs to device");
  ST(INVALID_ARGUMENT, ttdrv_program_run_io(f->prog, 0, rt, 17, NULL, 0, list, 1), "belongs to device");
  ttdrv_rt_args ra;
  CHECK(ttdrv_rt_args_init(&ra));
  ra.common = rt;
  ra.num_common = 17;
  ST(INVALID_ARGUMENT, ttdrv_program_launch(f->prog, 0, &ra, list, 1, NULL, 0), "belongs to device");
  /* An MLP input on another device (of the right shape) is refused and stays the caller's. */
  ttdrv_buffer *fin = NULL;
  ttdrv_tensor_spec in = spec_f32(MLP_BATCH, MLP_IN, mc_l1_height(4, MLP_BATCH, MLP_IN));
  CHECK(ttdrv_buffer_allocate(other, &in, &fin));
  ST(INVALID_ARGUMENT, ttdrv_mlp_run(f->mlp, 0, fin, &ob), "belongs to device");
  OK(ttdrv_buffer_free(fin));
  UNCHANGED(ob);
  OK(ttdrv_event_free(fe));
  OK(ttdrv_buffer_free(foreign));
  OK(ttdrv_device_close(other));
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Queue ids                                                                                                    */

static void bad_queue_everywhere(fixture *f, ttdrv_device *dev, ttdrv_buffer *buf, ttdrv_event *ev, uint16_t cq,
                                 const char *needle) {
  float data[32 * 64] = {0};
  ttdrv_tensor_spec s = dram_spec(32, 64);
  ttdrv_memory_config mem = mc_interleaved(TTDRV_BUFFER_DRAM);
  ttdrv_buffer *ob = SENTINEL;
  uint32_t id = SENT32;
  const char *const *n = NEEDLES("command queue", needle);
  STV(INVALID_ARGUMENT, n, ttdrv_buffer_write(buf, cq, (const uint8_t *)data, sizeof data, false));
  STV(INVALID_ARGUMENT, n, ttdrv_buffer_read(buf, cq, true, (uint8_t *)data, sizeof data));
  STV(INVALID_ARGUMENT, n, ttdrv_buffer_read(buf, cq, false, (uint8_t *)data, sizeof data));
  STV(INVALID_ARGUMENT, n, ttdrv_buffer_from_host(dev, &s, cq, (const uint8_t *)data, sizeof data, &ob));
  STV(INVALID_ARGUMENT, n, ttdrv_device_finish(dev, cq));
  STV(INVALID_ARGUMENT, n, ttdrv_event_record(ev, cq));
  STV(INVALID_ARGUMENT, n, ttdrv_event_record_notify(ev, cq));
  STV(INVALID_ARGUMENT, n, ttdrv_device_wait_for_event(dev, cq, ev));
  STV(INVALID_ARGUMENT, n, ttdrv_trace_begin_capture(dev, cq, &id));
  STV(INVALID_ARGUMENT, n, ttdrv_trace_end_capture(dev, 1, cq));
  STV(INVALID_ARGUMENT, n, ttdrv_trace_execute(dev, 1, cq, false));
  STV(INVALID_ARGUMENT, n, ttdrv_to_memory_config(buf, cq, &mem, &ob));
  STV(INVALID_ARGUMENT, n, ttdrv_reshard(buf, cq, &mem, &ob));
  STV(INVALID_ARGUMENT, n, ttdrv_to_layout(buf, cq, TTDRV_TENSOR_LAYOUT_TILE, &mem, &ob));
  STV(INVALID_ARGUMENT, n, ttdrv_eltwise_unary(buf, TTDRV_UNARY_RELU, 0, cq, &mem, &ob));
  STV(INVALID_ARGUMENT, n, ttdrv_fill(buf, cq, 1.0f));
  (void)f;
  UNCHANGED(ob);
  TRUE_(id == SENT32, "trace id written by a failing call");
}

static void test_queues(fixture *f, devctx *one) {
  group = "queues";
  /* A one-queue device: queue 1 does not exist; 65535 never does. */
  ttdrv_tensor_spec s = dram_spec(32, 64);
  ttdrv_buffer *b = NULL;
  ttdrv_event *e = NULL;
  CHECK(ttdrv_buffer_allocate(one->dev, &s, &b));
  CHECK(ttdrv_event_new(one->dev, &e));
  CHECK(ttdrv_event_record(e, 0));
  bad_queue_everywhere(f, one->dev, b, e, 1, "queue 1 does not exist");
  bad_queue_everywhere(f, one->dev, b, e, 65535, "queue 65535 does not exist");
  bad_queue_everywhere(f, f->c->dev, f->buf, f->ev, 2, "queue 2 does not exist");
  bad_queue_everywhere(f, f->c->dev, f->buf, f->ev, 65535, "queue 65535 does not exist");

  /* Programs, the MLP: creation and runs on a missing queue. */
  uint32_t rt[17] = {0};
  ST(INVALID_ARGUMENT, ttdrv_program_run(f->prog, 2, rt, 17, NULL, 0), "queue 2");
  ST(INVALID_ARGUMENT, ttdrv_program_run_io(f->prog, 2, rt, 17, NULL, 0, NULL, 0), "queue 2");
  ttdrv_rt_args ra;
  CHECK(ttdrv_rt_args_init(&ra));
  ra.common = rt;
  ra.num_common = 17;
  ST(INVALID_ARGUMENT, ttdrv_program_launch(f->prog, 2, &ra, NULL, 0, NULL, 0), "queue 2");
  ttdrv_mlp_desc md;
  ttdrv_mlp *om = SENTINEL;
  CHECK(ttdrv_mlp_desc_init(&md));
  md.batch = host.batch;
  md.dims = host.dims;
  md.num_dims = host.num_dims;
  md.weights = (const float *const *)host.w;
  md.biases = (const float *const *)host.b;
  md.act_mem = mc_interleaved(TTDRV_BUFFER_L1);
  md.out_mem = mc_interleaved(TTDRV_BUFFER_L1);
  ST(INVALID_ARGUMENT, ttdrv_mlp_new(one->dev, 1, &md, &om), "queue 1");
  UNCHANGED(om);
  /* A valid input on a missing queue: refused before the model takes it, so it stays the caller's. */
  ttdrv_tensor_spec in = spec_f32(MLP_BATCH, MLP_IN, mc_l1_height(4, MLP_BATCH, MLP_IN));
  ttdrv_buffer *input = NULL, *ob = SENTINEL;
  CHECK(ttdrv_buffer_allocate(f->c->dev, &in, &input));
  ST(INVALID_ARGUMENT, ttdrv_mlp_run(f->mlp, 65535, input, &ob), "queue 65535");
  UNCHANGED(ob);
  size_t hs = 0;
  OK(ttdrv_buffer_host_size(input, &hs));
  OK(ttdrv_buffer_free(input));

  OK(ttdrv_event_free(e));
  OK(ttdrv_buffer_free(b));
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Calls out of order: captures, traces, events, resets                                                         */

static void test_order(fixture *f) {
  group = "order";
  ttdrv_device *dev = f->c->dev;
  float data[32 * 64], back[32 * 64];
  ttdrv_tensor_spec s = dram_spec(32, 64);
  ttdrv_buffer *ob = SENTINEL;

  /* Events never recorded. */
  ttdrv_event *e = NULL;
  bool done = true;
  CHECK(ttdrv_event_new(dev, &e));
  ST(INVALID_STATE, ttdrv_device_wait_for_event(dev, 0, e), "never recorded");
  ST(INVALID_STATE, ttdrv_event_synchronize(e), "never recorded");
  ST(INVALID_STATE, ttdrv_event_synchronize_timeout(e, 1000), "never recorded");
  ST(INVALID_STATE, ttdrv_event_query(e, &done), "never recorded");
  TRUE_(done == true, "query output written by a failing call");

  /* Traces that do not exist. */
  ST(INVALID_STATE, ttdrv_trace_execute(dev, 424242, 0, false), "trace 424242 does not exist");
  ST(INVALID_STATE, ttdrv_trace_execute(dev, 0, 0, true), "trace 0 does not exist");
  ST(INVALID_STATE, ttdrv_trace_release(dev, 424242), "does not exist");
  ST(INVALID_STATE, ttdrv_trace_end_capture(dev, 424242, 0), "does not exist");
  ttdrv_trace_info ti = {.struct_size = sizeof ti};
  ST(INVALID_STATE, ttdrv_trace_get_info(dev, 424242, &ti), "does not exist");

  /* A capture on queue 0 while queue 1 stays live. The MLP was compiled (run once) by the setup, so it can be
   * captured; its input is written before the capture. */
  ttdrv_buffer *x = NULL;
  fill_pattern(data, 32 * 64, 5);
  CHECK(ttdrv_buffer_from_host(dev, &s, 0, (const uint8_t *)data, sizeof data, &x));
  CHECK(ttdrv_event_record(e, 1));
  float in[MLP_BATCH * MLP_IN], got[MLP_BATCH * MLP_OUT], want[MLP_BATCH * MLP_OUT];
  make_input(in, MLP_BATCH * MLP_IN, 1234);
  ttdrv_tensor_spec ins = spec_f32(MLP_BATCH, MLP_IN, mc_l1_height(4, MLP_BATCH, MLP_IN));
  ttdrv_buffer *input = NULL, *output = NULL;
  CHECK(ttdrv_buffer_from_host(dev, &ins, 0, (const uint8_t *)in, sizeof in, &input));
  CHECK(ttdrv_device_finish(dev, 0));

  uint32_t tid = 0, id2 = SENT32;
  OK(ttdrv_trace_begin_capture(dev, 0, &tid));
  TRUE_(tid != 0, "trace id 0");
  ST(INVALID_STATE, ttdrv_trace_begin_capture(dev, 0, &id2), "already being captured");
  TRUE_(id2 == SENT32, "trace id written by a failing begin");
  ST(INVALID_STATE, ttdrv_buffer_write(x, 0, (const uint8_t *)data, sizeof data, false), "during trace capture");
  ST(INVALID_STATE, ttdrv_buffer_write(x, 0, (const uint8_t *)data, sizeof data, true), "during trace capture");
  ST(INVALID_STATE, ttdrv_buffer_read(x, 0, true, (uint8_t *)back, sizeof back), "during trace capture");
  ST(INVALID_STATE, ttdrv_buffer_read(x, 0, false, (uint8_t *)back, sizeof back), "during trace capture");
  ST(INVALID_STATE, ttdrv_buffer_from_host(dev, &s, 0, (const uint8_t *)data, sizeof data, &ob), "trace capture");
  /* Events are captured (contract 1.4): a wait needs an event with a record; one recorded inside belongs to the trace,
   * so recording it elsewhere fails. */
  ttdrv_event *ce = NULL;
  OK(ttdrv_event_new(dev, &ce));
  ST(INVALID_STATE, ttdrv_device_wait_for_event(dev, 0, ce), "never recorded");
  OK(ttdrv_event_record_notify(ce, 0));
  ST(INVALID_STATE, ttdrv_event_record(ce, 1), "recorded inside trace");
  OK(ttdrv_event_free(ce));
  ST(INVALID_STATE, ttdrv_device_finish(dev, 0), "trace capture");
  ST(INVALID_STATE, ttdrv_device_synchronize(dev), "trace capture");
  ST(INVALID_STATE, ttdrv_trace_get_info(dev, tid, &ti), "still being captured");
  ST(INVALID_STATE, ttdrv_trace_release(dev, tid), "still being captured");
  ST(INVALID_STATE, ttdrv_trace_execute(dev, tid, 1, false), "still being captured");
  ST(INVALID_STATE, ttdrv_trace_end_capture(dev, tid, 1), "being captured on queue 0");
  ST(INVALID_STATE, ttdrv_trace_end_capture(dev, tid + 1, 0), "in progress there is trace");
  UNCHANGED(ob);
  /* Queue 1 is not capturing: I/O and events work there, and their results are right. */
  fill_pattern(data, 32 * 64, 6);
  OK(ttdrv_buffer_write(x, 1, (const uint8_t *)data, sizeof data, false));
  memset(back, 0, sizeof back);
  OK(ttdrv_buffer_read(x, 1, true, (uint8_t *)back, sizeof back));
  TRUE_(memcmp(data, back, sizeof data) == 0, "queue 1 round trip during a capture on queue 0");
  OK(ttdrv_event_record(e, 1));
  OK(ttdrv_event_synchronize(e));
  OK(ttdrv_device_finish(dev, 1));
  /* The captured work itself. */
  OK(ttdrv_mlp_run(f->mlp, 0, input, &output));
  OK(ttdrv_trace_end_capture(dev, tid, 0));
  ST(INVALID_STATE, ttdrv_trace_end_capture(dev, tid, 0), "already ended");
  /* The MLP freed its input, which the trace reads first: that range is not the trace's, so a replay with no input
   * there is refused, naming it. Allocated again (same spec, same address) and written, the replay's output must be
   * the reference of that input. */
  ST(INVALID_STATE, ttdrv_trace_execute(dev, tid, 0, false), "no live buffer holds", "reads (its input");
  CHECK(ttdrv_buffer_from_host(dev, &ins, 0, (const uint8_t *)in, sizeof in, &input));
  OK(ttdrv_trace_execute(dev, tid, 0, false));
  OK(ttdrv_buffer_read(output, 0, true, (uint8_t *)got, sizeof got));
  mlp_host_forward(&host, in, want);
  TRUE_(count_mismatches(got, want, MLP_BATCH * MLP_OUT) == 0, "replayed MLP output is wrong");
  OK(ttdrv_trace_get_info(dev, tid, &ti));
  TRUE_(ti.stored && ti.queue == 0 && ti.launches > 0 && ti.bytes > 0, "trace info: stored %d queue %u launches %u",
        ti.stored, ti.queue, ti.launches);
  /* Release, then every use of the released trace. */
  OK(ttdrv_trace_release(dev, tid));
  ST(INVALID_STATE, ttdrv_trace_release(dev, tid), "does not exist", "already released");
  ST(INVALID_STATE, ttdrv_trace_execute(dev, tid, 0, false), "does not exist");
  ST(INVALID_STATE, ttdrv_trace_execute(dev, tid, 0, true), "does not exist");
  ST(INVALID_STATE, ttdrv_trace_get_info(dev, tid, &ti), "does not exist");
  ST(INVALID_STATE, ttdrv_trace_end_capture(dev, tid, 0), "does not exist");
  OK(ttdrv_buffer_free(output));
  OK(ttdrv_buffer_free(input));

  /* Read of a freed buffer. */
  OK(ttdrv_buffer_free(x));
  ST(INVALID_HANDLE, ttdrv_buffer_read(x, 0, true, (uint8_t *)back, sizeof back), "stale");
  ST(INVALID_HANDLE, ttdrv_buffer_free(x), "stale");

  OK(ttdrv_event_free(e));
}

/* A reset drops recorded events and traces: using them afterwards is an error, recording again works. */
static void test_reset(void) {
  group = "reset";
  ttdrv_device *dev = open_dev("emu:queues=1", 1, 65536);
  devctx c = {dev, 1, 0, 300, "reset device"};
  verify_device(&c, "open");
  ttdrv_event *e = NULL;
  bool done = false;
  uint32_t tid = 0;
  CHECK(ttdrv_event_new(dev, &e));
  CHECK(ttdrv_event_record(e, 0));
  OK(ttdrv_event_synchronize(e));
  OK(ttdrv_trace_begin_capture(dev, 0, &tid));
  OK(ttdrv_trace_end_capture(dev, tid, 0)); /* an empty trace */
  OK(ttdrv_device_reset(dev));
  ST(INVALID_STATE, ttdrv_device_wait_for_event(dev, 0, e), "reset");
  ST(INVALID_STATE, ttdrv_event_query(e, &done), "reset");
  ST(INVALID_STATE, ttdrv_event_synchronize(e), "reset");
  ST(INVALID_STATE, ttdrv_trace_execute(dev, tid, 0, false), "reset");
  OK(ttdrv_trace_release(dev, tid));
  /* A capture in progress at a reset is dropped with the queue's state: it can neither be ended nor block a new
   * capture. */
  OK(ttdrv_trace_begin_capture(dev, 0, &tid));
  OK(ttdrv_device_reset(dev));
  ST(INVALID_STATE, ttdrv_trace_end_capture(dev, tid, 0), "reset");
  ST(INVALID_STATE, ttdrv_trace_release(dev, tid), "reset");
  ST(INVALID_STATE, ttdrv_trace_get_info(dev, tid, &(ttdrv_trace_info){.struct_size = sizeof(ttdrv_trace_info)}),
     "reset");
  uint32_t tid2 = 0;
  OK(ttdrv_trace_begin_capture(dev, 0, &tid2));
  OK(ttdrv_trace_end_capture(dev, tid2, 0));
  OK(ttdrv_trace_execute(dev, tid2, 0, true));
  OK(ttdrv_trace_release(dev, tid2));
  OK(ttdrv_event_record(e, 0));
  OK(ttdrv_event_synchronize(e));
  OK(ttdrv_event_query(e, &done));
  TRUE_(done, "event recorded and synchronized is not done");
  /* A kernel the device does not implement: the driver cannot know (real silicon loads the code; the emulated
   * device matches names), so creating the program works and the device faults when it runs (contract §8.1). */
  ttdrv_program_desc pd;
  ttdrv_program *p = NULL;
  CHECK(ttdrv_program_desc_init(&pd));
  pd.kernel_name = "no.such.kernel";
  OK(ttdrv_program_new(dev, &pd, &p));
  OK(ttdrv_program_run(p, 0, NULL, 0, NULL, 0));
  ST(DEVICE_FAULT, ttdrv_device_finish(dev, 0), "invalid kernel image", "ttdrv_device_reset");
  ST(DEVICE_FAULT, ttdrv_event_record(e, 0) == TTDRV_STATUS_OK ? ttdrv_event_synchronize(e) : TTDRV_STATUS_OK,
     "invalid kernel image");
  OK(ttdrv_device_reset(dev));
  OK(ttdrv_program_free(p));
  OK(ttdrv_event_free(e));
  verify_device(&c, "reset");
  verify_mlp(&c, 0, "reset");
  OK(ttdrv_device_close(dev));
}

/* PROGRAM_NOT_CACHED: a program that never ran cannot be captured; after one run it can. */
static void test_not_cached(devctx *c) {
  group = "program-not-cached";
  ttdrv_device *dev = c->dev;
  ttdrv_tensor_spec s = dram_spec(16, 32);
  float got[16 * 32];
  ttdrv_buffer *b = NULL;
  CHECK(ttdrv_buffer_allocate(dev, &s, &b));
  uint32_t tid = 0;
  CHECK(ttdrv_trace_begin_capture(dev, 0, &tid));
  ST(PROGRAM_NOT_CACHED, ttdrv_fill(b, 0, 5.0f), "ttdrv_fill", "not in the program cache", "Run it once");
  OK(ttdrv_trace_end_capture(dev, tid, 0)); /* the capture goes on after the refused dispatch */
  OK(ttdrv_trace_release(dev, tid));
  OK(ttdrv_fill(b, 0, 1.0f)); /* the "compile" run */
  CHECK(ttdrv_trace_begin_capture(dev, 0, &tid));
  OK(ttdrv_fill(b, 0, 5.0f));
  OK(ttdrv_trace_end_capture(dev, tid, 0));
  OK(ttdrv_buffer_read(b, 0, true, (uint8_t *)got, sizeof got));
  TRUE_(got[0] == 1.0f && got[16 * 32 - 1] == 1.0f, "the captured fill ran during capture (%f)", got[0]);
  OK(ttdrv_trace_execute(dev, tid, 0, false));
  OK(ttdrv_buffer_read(b, 0, true, (uint8_t *)got, sizeof got));
  size_t wrong = 0;
  for (size_t i = 0; i < 16 * 32; i++) wrong += got[i] != 5.0f;
  TRUE_(wrong == 0, "%zu elements not filled by the replay", wrong);
  OK(ttdrv_trace_release(dev, tid));
  OK(ttdrv_buffer_free(b));
}

/* TRACE_REGION: no region, then one page per bank too small; the message gives the sizes, and the size it asks
 * for is enough. */
static uint64_t trace_region_case(uint64_t region, int expect_fit) {
  ttdrv_device *dev = open_dev("emu:queues=1", 1, region);
  devctx c = {dev, 1, 0, 900, "trace-region device"};
  verify_device(&c, "open");
  ttdrv_mlp *m = mlp_create(dev, 0, &host);
  float in[MLP_BATCH * MLP_IN], got[MLP_BATCH * MLP_OUT], want[MLP_BATCH * MLP_OUT];
  make_input(in, MLP_BATCH * MLP_IN, 99);
  ttdrv_tensor_spec ins = spec_f32(MLP_BATCH, MLP_IN, mc_l1_height(4, MLP_BATCH, MLP_IN));
  ttdrv_buffer *input = NULL, *output = NULL;
  CHECK(ttdrv_buffer_from_host(dev, &ins, 0, (const uint8_t *)in, sizeof in, &input));
  CHECK(ttdrv_mlp_run(m, 0, input, &output)); /* compile run */
  CHECK(ttdrv_buffer_free(output));
  CHECK(ttdrv_buffer_from_host(dev, &ins, 0, (const uint8_t *)in, sizeof in, &input));
  uint32_t tid = 0;
  CHECK(ttdrv_trace_begin_capture(dev, 0, &tid));
  CHECK(ttdrv_mlp_run(m, 0, input, &output));
  uint64_t need = 0;
  char region_text[64];
  snprintf(region_text, sizeof region_text, "trace_region_size=%lluB", (unsigned long long)region);
  if (expect_fit) {
    OK(ttdrv_trace_end_capture(dev, tid, 0));
    /* The MLP freed its input; the trace reads it from outside, so it is allocated again (at the same address) and
     * written before the replay, as tt-metal's guide does for a non-persistent L1 input. */
    CHECK(ttdrv_buffer_from_host(dev, &ins, 0, (const uint8_t *)in, sizeof in, &input));
    OK(ttdrv_trace_execute(dev, tid, 0, true));
    OK(ttdrv_buffer_free(input));
  } else {
    ST(TRACE_REGION, ttdrv_trace_end_capture(dev, tid, 0), "ttdrv_trace_end_capture", region_text, "at least");
    const char *p = strstr(ttdrv_last_error(), "at least ");
    need = p ? strtoull(p + strlen("at least "), NULL, 10) : 0;
    TRUE_(need > region, "the message asks for %llu bytes, no more than the %llu there are", (unsigned long long)need,
          (unsigned long long)region);
    ttdrv_trace_info ti = {.struct_size = sizeof ti};
    OK(ttdrv_trace_get_info(dev, tid, &ti));
    TRUE_(!ti.stored && ti.region_bytes == need, "trace info: stored %d, region_bytes %llu, message %llu", ti.stored,
          (unsigned long long)ti.region_bytes, (unsigned long long)need);
    ST(TRACE_REGION, ttdrv_trace_execute(dev, tid, 0, false), "never stored");
  }
  OK(ttdrv_buffer_read(output, 0, true, (uint8_t *)got, sizeof got));
  mlp_host_forward(&host, in, want);
  /* Without a stored trace nothing ran: the output is only checked after a replay. */
  if (expect_fit) TRUE_(count_mismatches(got, want, MLP_BATCH * MLP_OUT) == 0, "replayed output wrong");
  OK(ttdrv_trace_release(dev, tid));
  OK(ttdrv_buffer_free(output));
  OK(ttdrv_mlp_free(m));
  verify_device(&c, "the trace region cases");
  verify_mlp(&c, 0, "the trace region cases");
  OK(ttdrv_device_close(dev));
  return need;
}

static void test_trace_region(void) {
  group = "trace-region";
  uint64_t need = trace_region_case(0, 0);
  if (need > 8 * 4096) {
    uint64_t need2 = trace_region_case(need - 8 * 4096, 0); /* one page per bank short */
    TRUE_(need2 == need, "the needed size changed with the region: %llu vs %llu", (unsigned long long)need2,
          (unsigned long long)need);
  }
  if (need) trace_region_case(need, 1); /* exactly what the message asked for is enough */
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Objects of a closed device; closing with work in flight; a forked child                                     */

static void test_closed(void) {
  group = "closed";
  ttdrv_device *d = open_dev("emu", 1, 0);
  ttdrv_tensor_spec s = dram_spec(32, 64);
  float data[32 * 64];
  fill_pattern(data, 32 * 64, 3);
  ttdrv_buffer *b = NULL, *ob = SENTINEL;
  ttdrv_event *e = NULL;
  CHECK(ttdrv_buffer_from_host(d, &s, 0, (const uint8_t *)data, sizeof data, &b));
  CHECK(ttdrv_event_new(d, &e));
  CHECK(ttdrv_event_record(e, 0));
  ttdrv_mlp *m = mlp_create(d, 0, &host);
  ttdrv_tensor_spec ins = spec_f32(MLP_BATCH, MLP_IN, mc_l1_height(4, MLP_BATCH, MLP_IN));
  ttdrv_buffer *input = NULL;
  CHECK(ttdrv_buffer_allocate(d, &ins, &input));
  OK(ttdrv_device_close(d));
  ST(INVALID_HANDLE, ttdrv_device_close(d), "stale"); /* closing twice */

  ttdrv_memory_config mem = mc_interleaved(TTDRV_BUFFER_DRAM);
  ST(CLOSED, ttdrv_buffer_write(b, 0, (const uint8_t *)data, sizeof data, false), "closed");
  ST(CLOSED, ttdrv_buffer_read(b, 0, true, (uint8_t *)data, sizeof data), "closed");
  ST(CLOSED, ttdrv_fill(b, 0, 1.0f), "closed");
  ST(CLOSED, ttdrv_to_memory_config(b, 0, &mem, &ob), "closed");
  ST(CLOSED, ttdrv_to_layout(b, 0, TTDRV_TENSOR_LAYOUT_TILE, &mem, &ob), "closed");
  ST(CLOSED, ttdrv_event_record(e, 0), "closed");
  ST(CLOSED, ttdrv_event_synchronize(e), "closed");
  bool done = false;
  ST(CLOSED, ttdrv_event_query(e, &done), "closed");
  ST(CLOSED, ttdrv_mlp_run(m, 0, input, &ob), "closed"); /* refused before the model takes the input */
  UNCHANGED(ob);
  /* What the handle itself knows still answers; releasing works. */
  uint64_t addr = 0;
  OK(ttdrv_buffer_address(b, &addr));
  uint32_t contents = SENT32;
  OK(ttdrv_buffer_contents(b, &contents));
  TRUE_(contents == TTDRV_CONTENTS_DEFINED, "contents %u of a written buffer after close", contents);
  uint32_t ops = 0;
  OK(ttdrv_mlp_ops_per_run(m, &ops));
  OK(ttdrv_buffer_free(input));
  OK(ttdrv_buffer_free(b));
  OK(ttdrv_event_free(e));
  OK(ttdrv_mlp_free(m));
}

static void test_close_in_flight(void) {
  group = "close-in-flight";
  /* Paced: the device moves data at modelled PCIe speed, so the writes are still in flight at close. */
  ttdrv_device *d = open_dev("emu:queues=1,paced", 1, 0);
  const uint32_t rows = 4096, cols = 2048; /* 32 MiB */
  const size_t bytes = (size_t)rows * cols * sizeof(float);
  float *src = malloc(bytes), *dst = malloc(bytes);
  EXPECT(src && dst, "out of host memory");
  fill_pattern(src, (size_t)rows * cols, 11);
  memset(dst, 0, bytes);
  ttdrv_tensor_spec s = dram_spec(rows, cols);
  ttdrv_buffer *b = NULL, *b2 = NULL;
  CHECK(ttdrv_buffer_allocate(d, &s, &b));
  CHECK(ttdrv_buffer_allocate(d, &s, &b2));
  OK(ttdrv_buffer_write(b2, 0, (const uint8_t *)dst, bytes, false));
  OK(ttdrv_buffer_write(b, 0, (const uint8_t *)src, bytes, false));
  OK(ttdrv_buffer_read(b, 0, false, (uint8_t *)dst, bytes)); /* delivered by the drain in close */
  OK(ttdrv_device_close(d));
  TRUE_(memcmp(src, dst, bytes) == 0, "close returned before the non-blocking read enqueued before it was delivered");
  ST(CLOSED, ttdrv_buffer_write(b, 0, (const uint8_t *)src, bytes, false), "closed");
  OK(ttdrv_buffer_free(b));
  OK(ttdrv_buffer_free(b2));
  free(src);
  free(dst);
}

static void test_fork(fixture *f) {
  group = "fork";
  ttdrv_device *dev = f->c->dev;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    fail_at(__LINE__, "fork", "%s", strerror(errno));
    return;
  }
  if (pid == 0) {
    /* The child: every use of the parent's device is FORKED; its own new device works. */
    unsigned before = n_failed;
    float data[32 * 64] = {0};
    ttdrv_tensor_spec s = dram_spec(32, 64);
    ttdrv_buffer *ob = SENTINEL;
    ttdrv_event *oe = SENTINEL;
    ST(FORKED, ttdrv_device_finish(dev, 0), "parent process", "Open the device again");
    ST(FORKED, ttdrv_device_synchronize(dev), "parent process");
    ST(FORKED, ttdrv_device_reset(dev), "parent process");
    ST(FORKED, ttdrv_buffer_allocate(dev, &s, &ob), "parent process");
    ST(FORKED, ttdrv_buffer_write(f->buf, 0, (const uint8_t *)data, sizeof data, true), "parent process");
    ST(FORKED, ttdrv_buffer_read(f->buf, 0, true, (uint8_t *)data, sizeof data), "parent process");
    ST(FORKED, ttdrv_event_new(dev, &oe), "parent process");
    ST(FORKED, ttdrv_event_record(f->ev, 0), "parent process");
    ST(FORKED, ttdrv_fill(f->buf, 0, 1.0f), "parent process");
    bool done = false;
    ST(FORKED, ttdrv_event_synchronize(f->ev), "parent process");
    ST(FORKED, ttdrv_event_synchronize_timeout(f->ev, 1000), "parent process");
    ST(FORKED, ttdrv_event_query(f->ev, &done), "parent process");
    ST(FORKED, ttdrv_device_wait_for_event(dev, 0, f->ev), "parent process");
    uint32_t rt[17] = {0};
    ST(FORKED, ttdrv_program_run(f->prog, 0, rt, 17, NULL, 0), "parent process");
    ST(FORKED, ttdrv_program_run_io(f->prog, 0, rt, 17, NULL, 0, NULL, 0), "parent process");
    ST(FORKED, ttdrv_mlp_run(f->mlp, 0, f->buf, &ob), "parent process");
    ST(FORKED, ttdrv_trace_execute(dev, 1, 0, false), "parent process");
    ttdrv_memory_config mem = mc_interleaved(TTDRV_BUFFER_L1);
    ST(FORKED, ttdrv_to_memory_config(f->buf, 0, &mem, &ob), "parent process");
    uint32_t tid = 0;
    ST(FORKED, ttdrv_trace_begin_capture(dev, 0, &tid), "parent process");
    ST(FORKED, ttdrv_device_close(dev), "belongs to the parent process");
    ST(INVALID_HANDLE, ttdrv_device_finish(dev, 0), "stale"); /* the child's handle is released */
    UNCHANGED(ob);
    UNCHANGED(oe);
    ttdrv_device *mine = open_dev("emu:queues=1", 1, 0);
    devctx c = {mine, 1, 0, 500, "child's device"};
    verify_device(&c, "fork");
    OK(ttdrv_device_close(mine));
    _exit(n_failed == before ? 0 : 1);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  TRUE_(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the forked child failed (status %#x; its lines are above)",
        status);
  /* The parent keeps working: the same handles, the same device. */
  OK(ttdrv_device_finish(dev, 0));
  OK(ttdrv_event_record(f->ev, 0));
  OK(ttdrv_event_synchronize(f->ev));
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Threads: bad and good calls from several threads at once; a buffer freed while another thread uses it        */

typedef struct {
  ttdrv_device *dev;
  uint16_t cq;
  uint32_t id;
  unsigned checks, failures;
  char first_failure[512];
} worker;

static void worker_fail(worker *w, const char *what) {
  w->failures++;
  if (w->first_failure[0] == '\0') {
    snprintf(w->first_failure, sizeof w->first_failure, "thread %u: %s (message: %s)", w->id, what,
             ttdrv_last_error());
  }
}

static void *worker_main(void *arg) {
  worker *w = arg;
  float src[16 * 40], dst[16 * 40];
  char want[64];
  for (uint32_t it = 0; it < 40; it++) {
    /* A bad call whose message only this thread could have caused. */
    ttdrv_tensor_spec s = dram_spec(16, 40);
    s.dtype = 1000 + w->id * 100 + it;
    ttdrv_buffer *b = SENTINEL;
    snprintf(want, sizeof want, "dtype %u ", s.dtype);
    w->checks++;
    if (ttdrv_buffer_allocate(w->dev, &s, &b) != TTDRV_STATUS_INVALID_ARGUMENT || b != SENTINEL ||
        strstr(ttdrv_last_error(), want) == NULL) {
      worker_fail(w, "bad dtype: wrong status, output or message");
    }
    /* A good round trip on this thread's queue. */
    s.dtype = TTDRV_DTYPE_FLOAT32;
    fill_pattern(src, 16 * 40, w->id * 1000 + it);
    w->checks++;
    if (ttdrv_buffer_from_host(w->dev, &s, w->cq, (const uint8_t *)src, sizeof src, &b) != TTDRV_STATUS_OK ||
        ttdrv_last_error()[0] != '\0' ||
        ttdrv_buffer_read(b, w->cq, true, (uint8_t *)dst, sizeof dst) != TTDRV_STATUS_OK ||
        memcmp(src, dst, sizeof src) != 0) {
      worker_fail(w, "round trip");
    }
    /* Use after free from this thread. */
    w->checks++;
    if (ttdrv_buffer_free(b) != TTDRV_STATUS_OK || ttdrv_buffer_free(b) != TTDRV_STATUS_INVALID_HANDLE ||
        strstr(ttdrv_last_error(), "stale") == NULL) {
      worker_fail(w, "double free");
    }
  }
  return NULL;
}

typedef struct {
  ttdrv_buffer *victim;
  uint16_t cq;
  atomic_int writes_ok;
  atomic_int freed;
  int bad_status, ok_after_invalid, saw_invalid;
} victim_state;

/* Writes the victim until it is freed by another thread: every call returns OK or, once freed, INVALID_HANDLE. */
static void *victim_writer(void *arg) {
  victim_state *v = arg;
  float src[16 * 40];
  fill_pattern(src, 16 * 40, 4242);
  for (long i = 0; i < 200000; i++) {
    ttdrv_status st = ttdrv_buffer_write(v->victim, v->cq, (const uint8_t *)src, sizeof src, (i % 4) == 0);
    if (st == TTDRV_STATUS_OK) {
      if (v->saw_invalid) v->ok_after_invalid++;
      atomic_fetch_add(&v->writes_ok, 1);
    } else if (st == TTDRV_STATUS_INVALID_HANDLE) {
      v->saw_invalid = 1;
      if (atomic_load(&v->freed) && i % 8 == 7) break;
    } else {
      v->bad_status = (int)st;
      break;
    }
  }
  return NULL;
}

typedef struct {
  ttdrv_program *prog;
  ttdrv_buffer *buf;
  uint32_t rt[17];
  uint16_t cq;
  atomic_int runs_ok;
  atomic_int freed;
  int bad_status, ok_after_invalid, saw_invalid;
} dispatch_victim;

/* Dispatches the victim program on the victim buffer until both are freed by another thread: every call returns OK
 * or, once either handle is freed, INVALID_HANDLE. The dispatch path resolves its handles without a lock or a
 * reference count (crates/ffi/src/handles.rs); under valgrind (scripts/test.d/40-valgrind.sh) a dispatch that read a
 * freed program or buffer would be reported. */
static void *victim_dispatcher(void *arg) {
  dispatch_victim *v = arg;
  for (long i = 0; i < 200000; i++) {
    ttdrv_status st = ttdrv_program_run(v->prog, v->cq, v->rt, 17, &v->buf, 1);
    if (st == TTDRV_STATUS_OK) {
      if (v->saw_invalid) v->ok_after_invalid++;
      atomic_fetch_add(&v->runs_ok, 1);
    } else if (st == TTDRV_STATUS_INVALID_HANDLE) {
      v->saw_invalid = 1;
      if (atomic_load(&v->freed) && i % 8 == 7) break;
    } else {
      v->bad_status = (int)st;
      break;
    }
  }
  return NULL;
}

static void test_threads(devctx *c) {
  group = "threads";
  enum { N = 4 };
  worker w[N];
  pthread_t th[N];
  for (uint32_t i = 0; i < N; i++) {
    memset(&w[i], 0, sizeof w[i]);
    w[i].dev = c->dev;
    w[i].cq = (uint16_t)(i % c->queues);
    w[i].id = i;
    CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0 ? TTDRV_STATUS_OK : TTDRV_STATUS_PANIC);
  }
  /* Meanwhile: a buffer freed by this thread while another writes it. */
  victim_state v;
  memset(&v, 0, sizeof v);
  v.cq = 1 % c->queues;
  ttdrv_tensor_spec s = dram_spec(16, 40);
  CHECK(ttdrv_buffer_allocate(c->dev, &s, &v.victim));
  pthread_t vt;
  CHECK(pthread_create(&vt, NULL, victim_writer, &v) == 0 ? TTDRV_STATUS_OK : TTDRV_STATUS_PANIC);
  while (atomic_load(&v.writes_ok) < 20) sched_yield();
  OK(ttdrv_buffer_free(v.victim));
  atomic_store(&v.freed, 1);
  pthread_join(vt, NULL);
  /* And a program and a buffer freed while another thread dispatches them. */
  dispatch_victim dv;
  memset(&dv, 0, sizeof dv);
  dv.cq = 1 % c->queues;
  ttdrv_tensor_spec ds = dram_spec(16, 40);
  CHECK(ttdrv_buffer_allocate(c->dev, &ds, &dv.buf));
  dv.prog = fill_program(c->dev, NULL);
  TRUE_(dv.prog != NULL, "could not create the victim program");
  uint32_t block[4] = {0, 1, 0, 8};
  float value = 2.5f;
  memcpy(dv.rt, block, sizeof block);
  CHECK(ttdrv_buffer_accessor(dv.buf, dv.rt + 4, 12));
  memcpy(&dv.rt[16], &value, sizeof value);
  pthread_t dt;
  CHECK(pthread_create(&dt, NULL, victim_dispatcher, &dv) == 0 ? TTDRV_STATUS_OK : TTDRV_STATUS_PANIC);
  while (atomic_load(&dv.runs_ok) < 20) sched_yield();
  /* The program is freed while the other thread dispatches it. The buffer only once its launches are done: freeing
   * it with fills still queued on queue 1 would hand its range to the workers' allocations on other queues, which
   * the fills could then overwrite (cross-queue reuse needs an event; docs/architecture.md). The Rust test
   * crates/ffi/tests/ffi_handles.rs frees buffers while they are dispatched, without other users of device memory. */
  OK(ttdrv_program_free(dv.prog));
  atomic_store(&dv.freed, 1);
  pthread_join(dt, NULL);
  OK(ttdrv_device_synchronize(c->dev));
  OK(ttdrv_buffer_free(dv.buf));
  TRUE_(dv.bad_status == 0, "dispatches of a program being freed returned %s",
        ttdrv_status_name((uint32_t)dv.bad_status));
  TRUE_(dv.saw_invalid && dv.ok_after_invalid == 0, "after the frees: saw INVALID_HANDLE %d, then OK %d times",
        dv.saw_invalid, dv.ok_after_invalid);
  for (int i = 0; i < N; i++) {
    pthread_join(th[i], NULL);
    TRUE_(w[i].failures == 0, "%u of %u checks failed; first: %s", w[i].failures, w[i].checks, w[i].first_failure);
  }
  TRUE_(v.bad_status == 0, "writes to a buffer being freed returned %s", ttdrv_status_name((uint32_t)v.bad_status));
  TRUE_(v.saw_invalid && v.ok_after_invalid == 0, "after the free: saw INVALID_HANDLE %d, then OK %d times",
        v.saw_invalid, v.ok_after_invalid);
  OK(ttdrv_device_synchronize(c->dev));
}

/* ------------------------------------------------------------------------------------------------------------ */

int main(void) {
  mlp_host_init(&host, 42);
  test_library();
  test_thread_exit();
  test_open();

  /* The main device: two queues and a trace region, as the trace examples use. */
  devctx main_dev = {open_dev("emu", 2, 800768), 2, 0, 0, "main device"};
  devctx one = {open_dev("emu:queues=1", 1, 0), 1, 0, 100, "one-queue device"};
  fixture f = {&main_dev, NULL, NULL, NULL, NULL, NULL};
  ttdrv_tensor_spec s = dram_spec(32, 64);
  float data[32 * 64];
  fill_pattern(data, 32 * 64, 1);
  CHECK(ttdrv_buffer_from_host(main_dev.dev, &s, 0, (const uint8_t *)data, sizeof data, &f.buf));
  CHECK(ttdrv_buffer_from_host(main_dev.dev, &s, 0, (const uint8_t *)data, sizeof data, &f.buf2));
  CHECK(ttdrv_event_new(main_dev.dev, &f.ev));
  CHECK(ttdrv_event_record(f.ev, 0));
  f.prog = fill_program(main_dev.dev, NULL);
  EXPECT(f.prog != NULL, "fill program: %s", ttdrv_last_error());
  f.mlp = mlp_create(main_dev.dev, 0, &host);
  verify_all(&main_dev, "setup"); /* also the MLP's compile run */
  verify_device(&one, "setup");

  test_nulls(&f);
  verify_all(&main_dev, "NULL arguments");
  test_handles(&f);
  verify_all(&main_dev, "bad handles");
  test_sizes(&f);
  verify_all(&main_dev, "bad sizes");
  test_ranges(&f);
  verify_all(&main_dev, "out-of-range values");
  test_queues(&f, &one);
  verify_all(&main_dev, "bad queue ids");
  verify_device(&one, "bad queue ids");
  test_order(&f);
  verify_all(&main_dev, "calls out of order");
  test_reset();
  test_not_cached(&main_dev);
  verify_all(&main_dev, "PROGRAM_NOT_CACHED");
  test_trace_region();
  test_closed();
  test_close_in_flight();
  verify_all(&main_dev, "closing other devices");
  test_threads(&main_dev);
  verify_all(&main_dev, "threads");
  test_fork(&f);
  group = "fork";
  verify_all(&main_dev, "fork");
  verify_device(&one, "fork");

  /* The fixture's objects still hold what they were given. */
  float back[32 * 64];
  CHECK(ttdrv_buffer_read(f.buf2, 0, true, (uint8_t *)back, sizeof back));
  TRUE_(memcmp(back, data, sizeof data) == 0, "a fixture buffer changed during the suite");

  CHECK(ttdrv_mlp_free(f.mlp));
  CHECK(ttdrv_program_free(f.prog));
  CHECK(ttdrv_event_free(f.ev));
  CHECK(ttdrv_buffer_free(f.buf));
  CHECK(ttdrv_buffer_free(f.buf2));
  CHECK(ttdrv_device_close(main_dev.dev));
  CHECK(ttdrv_device_close(one.dev));
  mlp_host_free(&host);
  printf("bad_input: %u passed, %u failed\n", n_passed, n_failed);
  return n_failed ? 1 : 0;
}
