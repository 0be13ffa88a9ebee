/* expect.h: the expectations of the C tests of the device boundary and of registered memory (one copy, included by
 * boundary.c and registered.c). Each test file sets `group` before a group of checks and prints n_passed/n_failed at
 * the end. Header-only: every definition is static, so each test program gets its own counters. */
#ifndef TTDRV_C_TESTS_EXPECT_H
#define TTDRV_C_TESTS_EXPECT_H
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <ttdrv.h>

static unsigned n_passed, n_failed;
static const char *group = "setup";

static void fail(int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL [%s] line %d: ", group, line);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  n_failed++;
}

/* `got` must be `want` and, on an error, the message must contain every needle (NULL-terminated list). */
static int expect(int line, const char *expr, ttdrv_status got, ttdrv_status want, const char *const *needles) {
  const char *msg = ttdrv_last_error();
  if (got != want) {
    fail(line, "%s returned %s, expected %s\n    message: %s", expr, ttdrv_status_name(got), ttdrv_status_name(want),
         msg);
    return 0;
  }
  for (; needles && *needles; needles++) {
    if (strstr(msg, *needles) == NULL) {
      fail(line, "%s: message does not mention '%s'\n    message: %s", expr, *needles, msg);
      return 0;
    }
  }
  n_passed++;
  return 1;
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define ST(want, call, ...) expect(__LINE__, #call, (call), TTDRV_STATUS_##want, NEEDLES(__VA_ARGS__))
#define OK(call) expect(__LINE__, #call, (call), TTDRV_STATUS_OK, NULL)
#define TRUE_(cond, ...)             \
  do {                               \
    if (cond)                        \
      n_passed++;                    \
    else                             \
      fail(__LINE__, __VA_ARGS__);   \
  } while (0)

static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}


#endif
