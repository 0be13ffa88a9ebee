/* header_twice: compiled as C11 and as C++17 with -Wall -Wextra -Wpedantic -Werror (scripts/test.d/10-header.sh).
 * Includes the header twice (the include guard must hold), and checks at compile time what C code relies on:
 * version macros, status values, constants and the layout rules of docs/abi.md (struct_size first). */
#include <ttdrv.h>
#include <ttdrv.h>

#ifdef __cplusplus
#define STATIC_ASSERT(c, m) static_assert(c, m)
#include <cstddef>
#else
#define STATIC_ASSERT(c, m) _Static_assert(c, m)
#include <stddef.h>
#endif

STATIC_ASSERT(TTDRV_VERSION_NUMBER ==
                  ((TTDRV_VERSION_MAJOR << 16) | (TTDRV_VERSION_MINOR << 8) | TTDRV_VERSION_PATCH),
              "version number macro");
STATIC_ASSERT(sizeof(ttdrv_status) == 4, "ttdrv_status is a 32-bit value");
STATIC_ASSERT(TTDRV_STATUS_OK == 0 && TTDRV_STATUS_NULL_PARAMETER == 7001 && TTDRV_STATUS_PANIC == 7099,
              "status values are fixed");
STATIC_ASSERT(offsetof(ttdrv_device_params, struct_size) == 0, "struct_size first");
STATIC_ASSERT(offsetof(ttdrv_device_info, struct_size) == 0, "struct_size first");
STATIC_ASSERT(offsetof(ttdrv_tensor_spec, struct_size) == 0, "struct_size first");
STATIC_ASSERT(offsetof(ttdrv_program_desc, struct_size) == 0, "struct_size first");
STATIC_ASSERT(offsetof(ttdrv_mlp_desc, struct_size) == 0, "struct_size first");
STATIC_ASSERT(offsetof(ttdrv_trace_info, struct_size) == 0, "struct_size first");
STATIC_ASSERT(sizeof(((ttdrv_device_info *)0)->name) == 64, "device name is 64 bytes");
STATIC_ASSERT((TTDRV_DEVICE_FLAG_TRACE_ON_DEMAND & TTDRV_DEVICE_FLAG_NO_HUGEPAGES & TTDRV_DEVICE_FLAG_PROFILING) == 0,
              "flags are distinct bits");

/* Every handle type is opaque and usable by pointer; every function has a prototype the compiler checks. */
typedef ttdrv_status (*open_fn)(const char *, const ttdrv_device_params *, ttdrv_device **);
typedef ttdrv_status (*read_fn)(ttdrv_buffer *, uint16_t, bool, uint8_t *, size_t);
typedef ttdrv_status (*run_fn)(ttdrv_program *, uint16_t, const uint32_t *, size_t, ttdrv_buffer *const *, size_t);

int header_twice_probe(void);
int header_twice_probe(void) {
  open_fn o = ttdrv_device_open;
  read_fn r = ttdrv_buffer_read;
  run_fn p = ttdrv_program_run;
  ttdrv_event *e = NULL;
  ttdrv_mlp *m = NULL;
  return (o != NULL) + (r != NULL) + (p != NULL) + (e == NULL) + (m == NULL);
}
