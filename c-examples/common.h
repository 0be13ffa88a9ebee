/* Helpers shared by the examples: fail loudly with ttdrv's own message. */
#ifndef TTDRV_EXAMPLES_COMMON_H
#define TTDRV_EXAMPLES_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ttdrv.h>

#define CHECK(call)                                                                                   \
  do {                                                                                                \
    ttdrv_status st_ = (call);                                                                        \
    if (st_ != TTDRV_STATUS_OK) {                                                                     \
      fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call, ttdrv_status_name(st_), \
              ttdrv_last_error());                                                                    \
      exit(1);                                                                                        \
    }                                                                                                 \
  } while (0)

#define EXPECT(cond, ...)                                          \
  do {                                                             \
    if (!(cond)) {                                                 \
      fprintf(stderr, "%s:%d: expectation failed: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                                \
      fprintf(stderr, "\n");                                       \
      exit(1);                                                     \
    }                                                              \
  } while (0)

/* The device the examples use: the emulated device unless TTDRV_EXAMPLE_DEVICE says otherwise. */
static inline const char *example_selector(const char *fallback) {
  const char *s = getenv("TTDRV_EXAMPLE_DEVICE");
  return (s && *s) ? s : fallback;
}

#endif
