/* boundary: the C ABI at the device boundary (issue 12). A call that fails leaves nothing behind that touches caller
 * memory; a buffer says when its contents are no longer what was written; a device that breaks the contract is
 * refused until reset; close returns within its bound. Run by scripts/test.d/16-c-abi.sh, and under
 * ASan/UBSan/LSan by scripts/test.d/30-sanitizers.sh, where a destination written after it was freed is a
 * heap-use-after-free report.
 *
 * The slow device is the emulator's `slow_us` option (each record held back before it retires), or its paced model
 * with a tiny PCIe bandwidth; the lying one uses its fault-injection options (`ttdrv help devices`).
 *
 * Output: one line per failed expectation, then "boundary: N passed, M failed"; exit status 1 if any failed. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ttdrv.h>
#include <unistd.h>

#include "expect.h"

static ttdrv_device *open_rings(const char *selector, uint32_t queues, uint32_t timeout_ms, uint32_t compl_ring) {
  ttdrv_device_params p;
  ttdrv_device_params_init(&p);
  p.num_command_queues = queues;
  p.issue_ring_size = 64 << 10;
  p.completion_ring_size = compl_ring;
  p.timeout_ms = timeout_ms;
  p.flags = TTDRV_DEVICE_FLAG_NO_HUGEPAGES;
  ttdrv_device *d = NULL;
  if (ttdrv_device_open(selector, &p, &d) != TTDRV_STATUS_OK) {
    fprintf(stderr, "cannot open %s: %s\n", selector, ttdrv_last_error());
    exit(2);
  }
  return d;
}

static ttdrv_device *open_dev(const char *selector, uint32_t queues, uint32_t timeout_ms) {
  return open_rings(selector, queues, timeout_ms, 64 << 10);
}

static ttdrv_buffer *alloc(ttdrv_device *d, uint32_t rows, uint32_t cols) {
  ttdrv_tensor_spec s;
  ttdrv_tensor_spec_init(&s);
  s.rows = rows;
  s.cols = cols;
  ttdrv_buffer *b = NULL;
  if (ttdrv_buffer_allocate(d, &s, &b) != TTDRV_STATUS_OK) {
    fprintf(stderr, "cannot allocate: %s\n", ttdrv_last_error());
    exit(2);
  }
  return b;
}

static void fill(uint8_t *p, size_t n, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = (uint8_t)x;
  }
}

/* Records an event on `cq` and polls it (each query drains every completion ring) until it completes, however long
 * the slow device takes. */
static void drain_queue(ttdrv_device *d, uint16_t cq) {
  ttdrv_event *e = NULL;
  OK(ttdrv_event_new(d, &e));
  OK(ttdrv_event_record(e, cq));
  bool done = false;
  for (int i = 0; i < 600 && !done; i++) {
    if (ttdrv_event_query(e, &done) != TTDRV_STATUS_OK) {
      fail(__LINE__, "event query while draining: %s", ttdrv_last_error());
      break;
    }
    if (!done)
      usleep(50 * 1000);
  }
  TRUE_(done, "queue %u did not drain within 30 s", cq);
  ttdrv_event_free(e);
}

/* A blocking read that times out is cancelled: the caller frees its destination at once, and the data that arrives
 * later (and the drain that consumes it) writes nothing there — under ASan, a write would be a heap-use-after-free. */
static void test_blocking_read_timeout(void) {
  group = "blocking read timeout";
  ttdrv_device *d = open_dev("emu:slow_us=400000", 1, 150);
  ttdrv_buffer *b = alloc(d, 16, 64);
  size_t n = 16 * 64 * 4;
  uint8_t *src = malloc(n), *dst = malloc(n);
  fill(src, n, 1);
  OK(ttdrv_buffer_write(b, 0, src, n, false));
  ST(TIMEOUT, ttdrv_buffer_read(b, 0, true, dst, n), "ttdrv_buffer_read", "read on queue 0", "within 150ms");
  free(dst);
  drain_queue(d, 0);
  /* The ring still works: a non-blocking read given time delivers. */
  uint8_t *dst2 = malloc(n);
  OK(ttdrv_buffer_read(b, 0, false, dst2, n));
  drain_queue(d, 0);
  TRUE_(memcmp(src, dst2, n) == 0, "a read after the cancelled one delivered wrong data");
  free(dst2);
  free(src);
  OK(ttdrv_buffer_free(b));
  OK(ttdrv_device_close(d));
}

/* A non-blocking read whose finish times out stays pending and is delivered by a later wait (the header says so). */
static void test_nonblocking_stays_pending(void) {
  group = "non-blocking read stays pending";
  ttdrv_device *d = open_dev("emu:slow_us=300000", 1, 100);
  ttdrv_buffer *b = alloc(d, 8, 32);
  size_t n = 8 * 32 * 4;
  uint8_t *src = malloc(n), *dst = calloc(1, n);
  fill(src, n, 2);
  OK(ttdrv_buffer_write(b, 0, src, n, false));
  OK(ttdrv_buffer_read(b, 0, false, dst, n));
  ST(TIMEOUT, ttdrv_device_finish(d, 0), "finish (queue 0");
  drain_queue(d, 0);
  TRUE_(memcmp(src, dst, n) == 0, "the pending read was not delivered after the timed-out finish");
  free(src);
  free(dst);
  OK(ttdrv_buffer_free(b));
  OK(ttdrv_device_close(d));
}

/* ttdrv_device_reset ends every pending read, whatever its outcome: the destination is freed right after it, while
 * the paced device is still inside a 2.6 s read. (An emulator that sleeps out modelled delays fails that reset —
 * saying it is the emulated device and advising no reboot — and writes the entry later; nothing may reach the freed
 * destination. One that honours the reset at once succeeds.) */
static void test_reset_ends_pending_reads(void) {
  group = "reset ends pending reads";
  /* A 1 MiB completion ring takes the whole 250 KB read in one record, which the paced device spends 2.6 s on. */
  ttdrv_device *d = open_rings("emu:paced,pcie_gbps=0.0001", 1, 20000, 1 << 20);
  ttdrv_buffer *b = alloc(d, 64, 1000);
  size_t n = 64 * 1000 * 4;
  uint8_t *dst = malloc(n);
  OK(ttdrv_buffer_read(b, 0, false, dst, n));
  usleep(50 * 1000);
  ttdrv_status st = ttdrv_device_reset(d);
  if (st != TTDRV_STATUS_OK) {
    ST(TIMEOUT, st, "the emulated device", "No host action is needed");
    TRUE_(strstr(ttdrv_last_error(), "reboot") == NULL, "reset advice for the emulator: %s", ttdrv_last_error());
  }
  free(dst);
  usleep(3000 * 1000);
  (void)ttdrv_device_finish(d, 0);
  OK(ttdrv_device_reset(d));
  OK(ttdrv_buffer_free(b));
  OK(ttdrv_device_close(d));
}

/* A write that stops part-way says what was enqueued; the buffer then reports PARTIAL_WRITE and reads fail with
 * CONTENTS_UNDEFINED (writing nothing) until it is written whole; after a reset it reports LOST_IN_RESET. */
static void test_partial_write(void) {
  group = "partial write";
  ttdrv_device *d = open_dev("emu:slow_us=2000000", 1, 300);
  ttdrv_buffer *b = alloc(d, 256, 1024);
  size_t n = 256 * 1024 * 4;
  uint8_t *src = malloc(n), *dst = malloc(n);
  fill(src, n, 3);
  memset(dst, 0xA5, n);
  uint32_t c = 99;
  OK(ttdrv_buffer_contents(b, &c));
  TRUE_(c == TTDRV_CONTENTS_DEFINED, "a new buffer's contents are %u", c);
  ST(TIMEOUT, ttdrv_buffer_write(b, 0, src, n, false), "did not complete within 300ms", "5 of its 86 records",
     "(61440 of 1048576 bytes) were enqueued", "contents are now undefined");
  OK(ttdrv_buffer_contents(b, &c));
  TRUE_(c == TTDRV_CONTENTS_PARTIAL_WRITE, "contents after a partial write are %u", c);
  ST(CONTENTS_UNDEFINED, ttdrv_buffer_read(b, 0, true, dst, n), "stopped part-way", "Write the whole buffer");
  ST(CONTENTS_UNDEFINED, ttdrv_buffer_read(b, 0, false, dst, n), "stopped part-way");
  bool untouched = true;
  for (size_t i = 0; i < n; i++)
    untouched &= dst[i] == 0xA5;
  TRUE_(untouched, "a refused read wrote its destination");
  OK(ttdrv_device_reset(d));
  OK(ttdrv_buffer_contents(b, &c));
  TRUE_(c == TTDRV_CONTENTS_LOST_IN_RESET, "contents after a reset are %u", c);
  OK(ttdrv_buffer_free(b));
  OK(ttdrv_device_close(d));
  free(src);
  free(dst);
}

/* Writes queued behind a faulting record return OK and are dropped by the reset; afterwards every buffer reports
 * LOST_IN_RESET (none survive a reset) and cannot be read until written whole again. */
static void test_writes_dropped_by_reset(void) {
  group = "writes dropped by a reset";
  ttdrv_device *d = open_dev("emu", 1, 20000);
  size_t n = 32 * 64 * 4;
  uint8_t *src = malloc(n), *dst = malloc(n);
  fill(src, n, 4);
  ttdrv_buffer *old = alloc(d, 32, 64), *queued = alloc(d, 32, 64);
  OK(ttdrv_buffer_write(old, 0, src, n, true));
  ttdrv_program_desc pd;
  ttdrv_program *p = NULL;
  OK(ttdrv_program_desc_init(&pd));
  pd.kernel_name = "no.such.kernel";
  OK(ttdrv_program_new(d, &pd, &p));
  OK(ttdrv_program_run(p, 0, NULL, 0, NULL, 0));
  OK(ttdrv_buffer_write(queued, 0, src, n, false));
  ST(DEVICE_FAULT, ttdrv_device_finish(d, 0), "invalid kernel image");
  OK(ttdrv_device_reset(d));
  ttdrv_buffer *both[2] = {old, queued};
  for (int i = 0; i < 2; i++) {
    uint32_t c = 99;
    OK(ttdrv_buffer_contents(both[i], &c));
    TRUE_(c == TTDRV_CONTENTS_LOST_IN_RESET, "buffer %d's contents after the reset are %u", i, c);
    ST(CONTENTS_UNDEFINED, ttdrv_buffer_read(both[i], 0, true, dst, n), "was reset since it was last written");
  }
  OK(ttdrv_buffer_write(queued, 0, src, n, true));
  OK(ttdrv_buffer_read(queued, 0, true, dst, n));
  TRUE_(memcmp(src, dst, n) == 0, "a buffer written whole after the reset reads back wrong");
  OK(ttdrv_fill(old, 0, 1.5f));
  uint32_t c = 99;
  OK(ttdrv_buffer_contents(old, &c));
  TRUE_(c == TTDRV_CONTENTS_DEFINED, "a buffer filled after the reset reports %u", c);
  OK(ttdrv_program_free(p));
  OK(ttdrv_buffer_free(old));
  OK(ttdrv_buffer_free(queued));
  OK(ttdrv_device_close(d));
  free(src);
  free(dst);
}

/* A completion entry that claims more data than it holds is PROTOCOL naming it; nothing is copied; every later call
 * fails the same way until a reset, after which the device works. */
static void test_protocol(void) {
  group = "protocol";
  ttdrv_device *d = open_dev("emu:bad_entry=data_len@1", 1, 20000);
  ttdrv_buffer *b = alloc(d, 11, 48);
  size_t n = 11 * 48 * 4;
  uint8_t *src = malloc(n), *dst = malloc(n + 8192);
  fill(src, n, 5);
  memset(dst, 0x5C, n + 8192);
  OK(ttdrv_buffer_write(b, 0, src, n, false));
  ST(PROTOCOL, ttdrv_buffer_read(b, 0, true, dst + 4096, n), "broke the contract",
     "queue 0's completion entry at ring offset 0x0", "data_len 6208");
  bool untouched = true;
  for (size_t i = 0; i < n + 8192; i++)
    untouched &= dst[i] == 0x5C;
  TRUE_(untouched, "memory around or at the destination changed");
  ST(PROTOCOL, ttdrv_device_finish(d, 0), "data_len 6208");
  OK(ttdrv_device_reset(d));
  OK(ttdrv_buffer_write(b, 0, src, n, true));
  OK(ttdrv_buffer_read(b, 0, true, dst, n));
  TRUE_(memcmp(src, dst, n) == 0, "a round trip after the reset reads back wrong");
  OK(ttdrv_buffer_free(b));
  OK(ttdrv_device_close(d));
  free(src);
  free(dst);
}

static char abandoned[4096];

static void on_log(void *userdata, ttdrv_log_level level, const char *message, size_t len) {
  (void)userdata;
  (void)len;
  if (level <= TTDRV_LOG_LEVEL_WARN && strstr(message, "abandoning") != NULL && abandoned[0] == '\0')
    snprintf(abandoned, sizeof abandoned, "%s", message);
}

/* Close returns within its bound (5 s of draining, then a reset) with seconds of work on both queues — about 4 s on
 * queue 0 and 8 s on queue 1, so draining them one after the other would take about 9 s — returns OK, and reports
 * the abandoned work through the log callback. */
static void test_close_bound(void) {
  group = "close bound";
  OK(ttdrv_set_log_callback(on_log, NULL));
  ttdrv_device *d = open_dev("emu:slow_us=20000", 2, 30000);
  ttdrv_buffer *b = alloc(d, 1, 16);
  uint8_t src[64];
  fill(src, sizeof src, 6);
  for (int i = 0; i < 200; i++)
    OK(ttdrv_buffer_write(b, 0, src, sizeof src, false));
  for (int i = 0; i < 400; i++)
    OK(ttdrv_buffer_write(b, 1, src, sizeof src, false));
  double t0 = now_s();
  OK(ttdrv_device_close(d));
  double took = now_s() - t0;
  TRUE_(took < 6.5, "close took %.2f s; its bound is 5 s of draining plus the reset", took);
  TRUE_(strstr(abandoned, "abandoning the work still in flight after 5s") != NULL && strstr(abandoned, "queue 1:"),
        "close did not log the abandoned work: '%s'", abandoned);
  OK(ttdrv_buffer_free(b));
  OK(ttdrv_set_log_callback(NULL, NULL));
}

int main(void) {
  test_blocking_read_timeout();
  test_nonblocking_stays_pending();
  test_reset_ends_pending_reads();
  test_partial_write();
  test_writes_dropped_by_reset();
  test_protocol();
  test_close_bound();
  printf("boundary: %u passed, %u failed\n", n_passed, n_failed);
  return n_failed ? 1 : 0;
}
