/* registered: registered host memory from C (ttdrv_host_memory_register, ttdrv_buffer_write_registered /
 * ttdrv_buffer_read_registered; WRITE_HOST / READ_HOST, docs/device-interface.md §4.2.10-11). Data moves between the
 * caller's page-aligned allocation and DRAM and L1 buffers, blocking and non-blocking; every argument is checked;
 * unregister waits for the transfers that use the memory, so the memory can be freed at once after it. Run by
 * scripts/test.d/16-c-abi.sh, and under ASan/UBSan/LSan by scripts/test.d/30-sanitizers.sh, where a device write into
 * the region after it was unregistered and freed is a heap-use-after-free report.
 *
 * Output: one line per failed expectation, then "registered: N passed, M failed"; exit status 1 if any failed. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ttdrv.h>

#include "expect.h"

#define PAGE TTDRV_HOST_PAGE_SIZE
#define REGION (4u << 20)

static void pattern(uint8_t *p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)((uint32_t)i * 2654435761u + seed);
}

static ttdrv_buffer *alloc_buf(ttdrv_device *d, uint32_t rows, uint32_t cols, uint32_t type, uint32_t layout) {
  ttdrv_tensor_spec s;
  ttdrv_tensor_spec_init(&s);
  s.rows = rows;
  s.cols = cols;
  s.mem.buffer_type = type;
  s.tensor_layout = layout;
  ttdrv_buffer *b = NULL;
  if (!OK(ttdrv_buffer_allocate(d, &s, &b))) return NULL;
  return b;
}

static ttdrv_device *open_dev(const char *selector, uint32_t timeout_ms) {
  ttdrv_device_params p;
  ttdrv_device_params_init(&p);
  p.timeout_ms = timeout_ms;
  p.flags = TTDRV_DEVICE_FLAG_NO_HUGEPAGES;
  ttdrv_device *d = NULL;
  if (ttdrv_device_open(selector, &p, &d) != TTDRV_STATUS_OK) {
    fprintf(stderr, "cannot open %s: %s\n", selector, ttdrv_last_error());
    exit(2);
  }
  return d;
}

/* Round trips through the region: DRAM and L1, blocking and non-blocking + finish; the bytes read back through the
 * registered region and through the ordinary read are what was written. */
static void round_trips(void) {
  group = "round trips";
  ttdrv_device *d = open_dev("emu", 20000);
  uint8_t *host = aligned_alloc(PAGE, REGION);
  memset(host, 0, REGION);
  ttdrv_host_memory *hm = NULL;
  OK(ttdrv_host_memory_register(d, host, REGION, &hm));
  size_t size = 0;
  OK(ttdrv_host_memory_size(hm, &size));
  TRUE_(size == REGION, "ttdrv_host_memory_size gave %zu, expected %u", size, REGION);

  const struct {
    uint32_t rows, cols, type;
  } cases[] = {{64, 256, TTDRV_BUFFER_DRAM}, {3, 70000, TTDRV_BUFFER_DRAM}, {7, 33, TTDRV_BUFFER_L1},
               {32, 64, TTDRV_BUFFER_L1}};
  for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (int blocking = 1; blocking >= 0; blocking--) {
      ttdrv_buffer *b = alloc_buf(d, cases[i].rows, cases[i].cols, cases[i].type, TTDRV_TENSOR_LAYOUT_ROW_MAJOR);
      if (!b) continue;
      size_t n = 0;
      OK(ttdrv_buffer_host_size(b, &n));
      size_t whole = ((n + PAGE - 1) / PAGE) * PAGE; /* n rounded up to pages */
      size_t in_off = PAGE * (i + 1), out_off = in_off + whole, pad_end = out_off + whole;
      if (pad_end > REGION) {
        fail(__LINE__, "case %u does not fit the region", i);
        continue;
      }
      uint8_t *want = malloc(n), *plain = malloc(n);
      pattern(want, n, i * 2 + (uint32_t)blocking);
      memcpy(host + in_off, want, n);
      memset(host + out_off, 0xAA, whole);
      OK(ttdrv_buffer_write_registered(b, 0, hm, in_off, n, blocking));
      if (!blocking) OK(ttdrv_device_finish(d, 0));
      OK(ttdrv_buffer_read(b, 0, true, plain, n));
      TRUE_(memcmp(plain, want, n) == 0, "case %u (%s): ttdrv_buffer_read after a registered write differs", i,
            blocking ? "blocking" : "non-blocking");
      OK(ttdrv_buffer_read_registered(b, 0, hm, out_off, n, blocking));
      if (!blocking) OK(ttdrv_device_finish(d, 0));
      TRUE_(memcmp(host + out_off, want, n) == 0, "case %u (%s): the registered read differs from what was written",
            i, blocking ? "blocking" : "non-blocking");
      /* Nothing after [out_off, out_off + n), up to the next page, was written by the read. */
      int clean = 1;
      for (size_t k = out_off + n; k < pad_end; k++) clean &= host[k] == 0xAA;
      TRUE_(clean, "case %u: the registered read wrote past its %zu bytes", i, n);
      free(want);
      free(plain);
      OK(ttdrv_buffer_free(b));
    }
  }
  OK(ttdrv_host_memory_free(hm));
  free(host);
  OK(ttdrv_device_close(d));
}

/* Every argument is checked, with a message that says what to do. */
static void arguments(void) {
  group = "arguments";
  ttdrv_device *d = open_dev("emu", 20000);
  uint8_t *host = aligned_alloc(PAGE, 4 * PAGE);
  memset(host, 0, 4 * PAGE);
  ttdrv_host_memory *hm = (ttdrv_host_memory *)(uintptr_t)0x1; /* outputs are written only on success */

  ST(NULL_PARAMETER, ttdrv_host_memory_register(NULL, host, 4 * PAGE, &hm), "device");
  ST(NULL_PARAMETER, ttdrv_host_memory_register(d, NULL, 4 * PAGE, &hm), "ptr");
  ST(NULL_PARAMETER, ttdrv_host_memory_register(d, host, 4 * PAGE, NULL), "out");
  ST(INVALID_ARGUMENT, ttdrv_host_memory_register(d, host + 8, 2 * PAGE, &hm), "multiples", "aligned_alloc");
  ST(INVALID_ARGUMENT, ttdrv_host_memory_register(d, host, 0, &hm), "non-zero");
  ST(INVALID_ARGUMENT, ttdrv_host_memory_register(d, host, PAGE + 100, &hm), "round the length up");
  TRUE_(hm == (ttdrv_host_memory *)(uintptr_t)0x1, "a failed register wrote *out");

  ttdrv_buffer *buf = alloc_buf(d, 16, 64, TTDRV_BUFFER_DRAM, TTDRV_TENSOR_LAYOUT_ROW_MAJOR); /* 4096 bytes */
  ttdrv_buffer *tiled = alloc_buf(d, 32, 32, TTDRV_BUFFER_DRAM, TTDRV_TENSOR_LAYOUT_TILE);
  OK(ttdrv_host_memory_register(d, host, 4 * PAGE, &hm));
  ST(NULL_PARAMETER, ttdrv_host_memory_size(hm, NULL), "out");
  ST(NULL_PARAMETER, ttdrv_buffer_write_registered(NULL, 0, hm, 0, PAGE, true), "buffer");
  ST(NULL_PARAMETER, ttdrv_buffer_write_registered(buf, 0, NULL, 0, PAGE, true), "host_memory");
  ST(NULL_PARAMETER, ttdrv_buffer_read_registered(buf, 0, NULL, 0, PAGE, true), "host_memory");
  ST(INVALID_HANDLE, ttdrv_buffer_write_registered(buf, 0, (ttdrv_host_memory *)buf, 0, PAGE, true),
     "ttdrv_host_memory");
  ST(INVALID_ARGUMENT, ttdrv_buffer_write_registered(buf, 0, hm, 0, PAGE - 4, true), "pass exactly 4096");
  ST(INVALID_ARGUMENT, ttdrv_buffer_read_registered(buf, 0, hm, 0, PAGE + 4, true), "pass exactly 4096");
  ST(INVALID_ARGUMENT, ttdrv_buffer_write_registered(buf, 0, hm, 3 * PAGE + 1, PAGE, true), "do not fit",
     "offset at most 0x3000");
  ST(INVALID_ARGUMENT, ttdrv_buffer_read_registered(buf, 0, hm, SIZE_MAX, PAGE, true), "do not fit");
  ST(INVALID_ARGUMENT, ttdrv_buffer_write_registered(buf, 7, hm, 0, PAGE, true), "queue");
  ST(INVALID_ARGUMENT, ttdrv_buffer_write_registered(tiled, 0, hm, 0, 32 * 32 * 4, true), "tiled",
     "ttdrv_buffer_write");
  /* The last whole fit is accepted. */
  OK(ttdrv_buffer_write_registered(buf, 0, hm, 3 * PAGE, PAGE, true));

  /* Another device's registration is refused. */
  ttdrv_device *d2 = open_dev("emu", 20000);
  ttdrv_buffer *other = alloc_buf(d2, 16, 64, TTDRV_BUFFER_DRAM, TTDRV_TENSOR_LAYOUT_ROW_MAJOR);
  ST(INVALID_ARGUMENT, ttdrv_buffer_write_registered(other, 0, hm, 0, PAGE, true), "registered host memory");
  OK(ttdrv_buffer_free(other));
  OK(ttdrv_device_close(d2));

  /* Unregistered: the handle lives on, transfers are refused; unregistering again does nothing. */
  OK(ttdrv_host_memory_unregister(hm));
  OK(ttdrv_host_memory_unregister(hm));
  ST(INVALID_ARGUMENT, ttdrv_buffer_write_registered(buf, 0, hm, 0, PAGE, true), "no longer registered",
     "register it again");
  ST(INVALID_ARGUMENT, ttdrv_buffer_read_registered(buf, 0, hm, 0, PAGE, true), "no longer registered");
  /* The same memory can be registered again once unregistered. */
  ttdrv_host_memory *again = NULL;
  OK(ttdrv_host_memory_register(d, host, 4 * PAGE, &again));
  OK(ttdrv_buffer_read_registered(buf, 0, again, 0, PAGE, true));
  OK(ttdrv_host_memory_free(again));

  /* Freed: the handle is stale. */
  OK(ttdrv_host_memory_free(hm));
  ST(INVALID_HANDLE, ttdrv_buffer_write_registered(buf, 0, hm, 0, PAGE, true), "stale");
  ST(INVALID_HANDLE, ttdrv_host_memory_unregister(hm), "stale");
  ST(INVALID_HANDLE, ttdrv_host_memory_free(hm), "stale");
  ST(INVALID_HANDLE, ttdrv_host_memory_size(hm, &(size_t){0}), "stale");
  OK(ttdrv_host_memory_free(NULL));
  ST(NULL_PARAMETER, ttdrv_host_memory_unregister(NULL), "host_memory");

  OK(ttdrv_buffer_free(buf));
  OK(ttdrv_buffer_free(tiled));
  free(host);
  OK(ttdrv_device_close(d));
}

/* On a slow device (each record held back 300 ms), non-blocking transfers are still in flight when unregister is
 * called: it waits for them, so the data is in place when it returns, and the memory is freed at once (under ASan a
 * late device write would be reported). */
static void unregister_waits(void) {
  group = "unregister waits";
  ttdrv_device *d = open_dev("emu:slow_us=300000", 20000);
  uint8_t *host = aligned_alloc(PAGE, 2 * PAGE);
  pattern(host, PAGE, 7);
  memset(host + PAGE, 0, PAGE);
  ttdrv_host_memory *hm = NULL;
  OK(ttdrv_host_memory_register(d, host, 2 * PAGE, &hm));
  ttdrv_buffer *b = alloc_buf(d, 16, 64, TTDRV_BUFFER_L1, TTDRV_TENSOR_LAYOUT_ROW_MAJOR);
  OK(ttdrv_buffer_write_registered(b, 0, hm, 0, PAGE, false));
  OK(ttdrv_buffer_read_registered(b, 0, hm, PAGE, PAGE, false));
  double t0 = now_s();
  OK(ttdrv_host_memory_free(hm));
  double waited = now_s() - t0;
  TRUE_(waited > 0.2, "free returned after %.3f s, before the transfers held back 300 ms each", waited);
  TRUE_(memcmp(host, host + PAGE, PAGE) == 0, "the non-blocking read's data was not in place when free returned");
  free(host);
  OK(ttdrv_device_finish(d, 0));
  OK(ttdrv_buffer_free(b));
  OK(ttdrv_device_close(d));
}

/* After the device is closed, transfers are CLOSED and the registration is freed without waiting (close stopped the
 * device and unmapped everything). */
static void after_close(void) {
  group = "after close";
  ttdrv_device *d = open_dev("emu", 20000);
  uint8_t *host = aligned_alloc(PAGE, PAGE);
  memset(host, 0, PAGE);
  ttdrv_host_memory *hm = NULL;
  OK(ttdrv_host_memory_register(d, host, PAGE, &hm));
  ttdrv_buffer *b = alloc_buf(d, 16, 64, TTDRV_BUFFER_DRAM, TTDRV_TENSOR_LAYOUT_ROW_MAJOR);
  OK(ttdrv_buffer_write_registered(b, 0, hm, 0, PAGE, false));
  OK(ttdrv_device_close(d));
  ST(CLOSED, ttdrv_buffer_write_registered(b, 0, hm, 0, PAGE, true), "closed");
  OK(ttdrv_host_memory_free(hm));
  free(host);
  OK(ttdrv_buffer_free(b));
}

int main(void) {
  round_trips();
  arguments();
  unregister_waits();
  after_close();
  printf("registered: %u passed, %u failed\n", n_passed, n_failed);
  return n_failed ? 1 : 0;
}
