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
/* Structs only grow: today's size is at least the frozen size of the first release (docs/abi.md, "Versions"). */
STATIC_ASSERT(sizeof(ttdrv_device_params) >= TTDRV_DEVICE_PARAMS_SIZE_V0_1, "params size");
STATIC_ASSERT(sizeof(ttdrv_device_info) >= TTDRV_DEVICE_INFO_SIZE_V0_1, "info size");
STATIC_ASSERT(sizeof(ttdrv_tensor_spec) >= TTDRV_TENSOR_SPEC_SIZE_V0_1, "spec size");
STATIC_ASSERT(sizeof(ttdrv_program_desc) >= TTDRV_PROGRAM_DESC_SIZE_V0_1, "program desc size");
STATIC_ASSERT(sizeof(ttdrv_mlp_desc) >= TTDRV_MLP_DESC_SIZE_V0_1, "mlp desc size");
STATIC_ASSERT(sizeof(ttdrv_trace_info) >= TTDRV_TRACE_INFO_SIZE_V0_1, "trace info size");
STATIC_ASSERT(sizeof(ttdrv_trace_info) >= TTDRV_TRACE_INFO_SIZE_V0_2, "trace info size");
STATIC_ASSERT(offsetof(ttdrv_trace_info, event_records) == TTDRV_TRACE_INFO_SIZE_V0_1, "0.2 fields follow 0.1's");
STATIC_ASSERT(sizeof(ttdrv_trace_info) >= TTDRV_TRACE_INFO_SIZE_V0_3, "trace info size");
STATIC_ASSERT(offsetof(ttdrv_trace_info, rebindable) == TTDRV_TRACE_INFO_SIZE_V0_2, "0.3 fields follow 0.2's");
STATIC_ASSERT(offsetof(ttdrv_trace_binding, struct_size) == 0, "struct_size first");
STATIC_ASSERT(offsetof(ttdrv_trace_scalar, struct_size) == 0, "struct_size first");
STATIC_ASSERT(sizeof(ttdrv_trace_binding) >= TTDRV_TRACE_BINDING_SIZE_V0_3, "trace binding size");
STATIC_ASSERT(sizeof(ttdrv_trace_scalar) >= TTDRV_TRACE_SCALAR_SIZE_V0_3, "trace scalar size");
STATIC_ASSERT(sizeof(((ttdrv_trace_binding *)0)->name) == TTDRV_TRACE_NAME_CAPACITY, "binding name array");
STATIC_ASSERT(TTDRV_ARG_ROLE_ADDRESS != TTDRV_ARG_ROLE_SCALAR, "role kinds are distinct");
STATIC_ASSERT(sizeof(ttdrv_rt_args) >= TTDRV_RT_ARGS_SIZE_V0_2, "rt args size");
STATIC_ASSERT(TTDRV_LOG_LEVEL_OFF == 0 && TTDRV_LOG_LEVEL_ERROR == 1 && TTDRV_LOG_LEVEL_TRACE == 5,
              "log levels are fixed");
STATIC_ASSERT((TTDRV_DEVICE_FLAG_TRACE_ON_DEMAND & TTDRV_DEVICE_FLAG_NO_HUGEPAGES & TTDRV_DEVICE_FLAG_PROFILING) == 0,
              "flags are distinct bits");

/* Every handle type is opaque and usable by pointer; every function has a prototype the compiler checks: host data is
 * `void *` (any element type, no cast), read-only queries take const handles, the log callback has its typedef. */
typedef ttdrv_status (*open_fn)(const char *, const ttdrv_device_params *, ttdrv_device **);
typedef ttdrv_status (*read_fn)(ttdrv_buffer *, uint16_t, bool, void *, size_t);
typedef ttdrv_status (*write_fn)(ttdrv_buffer *, uint16_t, const void *, size_t, bool);
typedef ttdrv_status (*run_fn)(ttdrv_program *, uint16_t, const uint32_t *, size_t, ttdrv_buffer *const *, size_t);
typedef ttdrv_status (*info_fn)(const ttdrv_device *, ttdrv_device_info *);
typedef ttdrv_status (*host_size_fn)(const ttdrv_buffer *, size_t *);
typedef ttdrv_status (*set_log_fn)(ttdrv_log_callback, void *);
typedef void (*log_cb)(void *, ttdrv_log_level, const char *, size_t);

int header_twice_probe(void);
int header_twice_probe(void) {
  open_fn o = ttdrv_device_open;
  read_fn r = ttdrv_buffer_read;
  write_fn w = ttdrv_buffer_write;
  run_fn p = ttdrv_program_run;
  info_fn i = ttdrv_device_get_info;
  host_size_fn h = ttdrv_buffer_host_size;
  set_log_fn l = ttdrv_set_log_callback;
  log_cb cb = (ttdrv_log_callback)NULL;
  ttdrv_event *e = NULL;
  ttdrv_mlp *m = NULL;
  return (o != NULL) + (r != NULL) + (w != NULL) + (p != NULL) + (i != NULL) + (h != NULL) + (l != NULL) +
         (cb == NULL) + (e == NULL) + (m == NULL);
}
