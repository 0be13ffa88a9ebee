/* install_smoke: the program the install test builds through pkg-config and CMake against an installed ttdrv.
 * Checks that the header it was compiled with and the library it runs with agree, then moves data through the
 * emulated device and checks every byte. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <ttdrv.h>

#define CHECK(call)                                                                                         \
  do {                                                                                                      \
    ttdrv_status st_ = (call);                                                                              \
    if (st_ != TTDRV_STATUS_OK) {                                                                           \
      fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #call, ttdrv_status_name(st_), ttdrv_last_error()); \
      return 1;                                                                                             \
    }                                                                                                       \
  } while (0)

int main(void) {
  if (ttdrv_version_number() != TTDRV_VERSION_NUMBER || strcmp(ttdrv_version(), TTDRV_VERSION_STRING) != 0) {
    fprintf(stderr, "header %s but library %s\n", TTDRV_VERSION_STRING, ttdrv_version());
    return 1;
  }
  enum { ROWS = 64, COLS = 48 };
  static float src[ROWS * COLS], dst[ROWS * COLS];
  for (int i = 0; i < ROWS * COLS; i++) src[i] = (float)i * 0.5f - 7.0f;

  ttdrv_device *dev = NULL;
  CHECK(ttdrv_device_open("emu", NULL, &dev));
  ttdrv_tensor_spec spec;
  CHECK(ttdrv_tensor_spec_init(&spec));
  spec.rows = ROWS;
  spec.cols = COLS;
  ttdrv_buffer *buf = NULL;
  CHECK(ttdrv_buffer_from_host(dev, &spec, 0, (const uint8_t *)src, sizeof src, &buf));
  CHECK(ttdrv_buffer_read(buf, 0, true, (uint8_t *)dst, sizeof dst));
  if (memcmp(src, dst, sizeof src) != 0) {
    fprintf(stderr, "round trip through the device changed the data\n");
    return 1;
  }
  CHECK(ttdrv_buffer_free(buf));
  CHECK(ttdrv_device_close(dev));
  printf("install_smoke: ttdrv %s, %zu bytes round trip ok\n", ttdrv_version(), sizeof src);
  return 0;
}
