/* hello: open the emulated device, write a 64 MiB float32 tensor into device DRAM in one call, read it back without
 * blocking, finish the queue, and check every element. Host data is passed as it is (`float *`): the data pointers
 * are `const void *` / `void *`, so no cast is needed in C or in C++ (the Makefile also builds this file as C++17,
 * hello_cxx). */
#include "common.h"
#include <stdint.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(void) {
  const uint32_t rows = 4096, cols = 4096; /* float32: 64 MiB */
  const size_t n = (size_t)rows * cols, bytes = n * sizeof(float);

  ttdrv_device *dev = NULL;
  CHECK(ttdrv_device_open(example_selector("emu"), NULL, &dev));

  ttdrv_tensor_spec spec;
  CHECK(ttdrv_tensor_spec_init(&spec));
  spec.rows = rows;
  spec.cols = cols;
  spec.dtype = TTDRV_DTYPE_FLOAT32;
  spec.mem.buffer_type = TTDRV_BUFFER_DRAM;
  spec.mem.layout = TTDRV_LAYOUT_INTERLEAVED;

  float *src = (float *)malloc(bytes), *dst = (float *)malloc(bytes);
  EXPECT(src && dst, "out of host memory");
  for (size_t i = 0; i < n; i++) src[i] = (float)((i * 2654435761u) >> 13 & 0xffffu) * 0.125f - 4096.0f;
  memset(dst, 0, bytes);

  ttdrv_buffer *buf = NULL;
  CHECK(ttdrv_buffer_allocate(dev, &spec, &buf));
  double t0 = now_s();
  CHECK(ttdrv_buffer_write(buf, 0, src, bytes, false));
  double t1 = now_s();
  CHECK(ttdrv_buffer_read(buf, 0, false, dst, bytes));
  CHECK(ttdrv_device_finish(dev, 0));
  double t2 = now_s();

  size_t bad = 0;
  for (size_t i = 0; i < n; i++) bad += src[i] != dst[i];
  EXPECT(bad == 0, "%zu of %zu elements differ after the round trip", bad, n);

  printf("hello: checked %zu floats; write call %.1f ms (%.2f GB/s), write+read+finish %.1f ms\n", n,
         (t1 - t0) * 1e3, (double)bytes / (t1 - t0) / 1e9, (t2 - t0) * 1e3);
  CHECK(ttdrv_buffer_free(buf));
  CHECK(ttdrv_device_close(dev));
  free(src);
  free(dst);
  return 0;
}
