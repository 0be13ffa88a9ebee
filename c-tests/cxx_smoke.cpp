// cxx_smoke: a C++17 program that uses the C header and links the library (scripts/test.d/10-header.sh).
// RAII wrappers as a C++ user would write them; checks a round trip, an element-wise op and an error path. Host data
// goes in and out as `float *` without casts (the data pointers are `const void *` / `void *`).
#include <ttdrv.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

void check(ttdrv_status st, const char *what) {
  if (st != TTDRV_STATUS_OK) {
    throw std::runtime_error(std::string(what) + ": " + ttdrv_status_name(st) + ": " + ttdrv_last_error());
  }
}

struct DeviceCloser {
  void operator()(ttdrv_device *d) const { ttdrv_device_close(d); }
};
struct BufferFreer {
  void operator()(ttdrv_buffer *b) const { ttdrv_buffer_free(b); }
};
using Device = std::unique_ptr<ttdrv_device, DeviceCloser>;
using Buffer = std::unique_ptr<ttdrv_buffer, BufferFreer>;

ttdrv_tensor_spec spec(uint32_t rows, uint32_t cols) {
  ttdrv_tensor_spec s;
  check(ttdrv_tensor_spec_init(&s), "ttdrv_tensor_spec_init");
  s.rows = rows;
  s.cols = cols;
  return s;
}

}  // namespace

int main() try {
  if (ttdrv_version_number() != TTDRV_VERSION_NUMBER || std::strcmp(ttdrv_version(), TTDRV_VERSION_STRING) != 0) {
    std::fprintf(stderr, "header %s, library %s\n", TTDRV_VERSION_STRING, ttdrv_version());
    return 1;
  }
  ttdrv_device *raw = nullptr;
  check(ttdrv_device_open("emu", nullptr, &raw), "ttdrv_device_open");
  Device dev(raw);

  ttdrv_device_info info;
  std::memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  check(ttdrv_device_get_info(dev.get(), &info), "ttdrv_device_get_info");

  const uint32_t rows = 32, cols = 64;
  std::vector<float> a(rows * cols), b(rows * cols), got(rows * cols);
  for (size_t i = 0; i < a.size(); i++) {
    a[i] = static_cast<float>(i % 97) * 0.25f;
    b[i] = static_cast<float>(i % 13) - 6.0f;
  }
  ttdrv_tensor_spec s = spec(rows, cols);
  ttdrv_buffer *pa = nullptr, *pb = nullptr, *pc = nullptr;
  check(ttdrv_buffer_from_host(dev.get(), &s, 0, a.data(), a.size() * 4, &pa),
        "ttdrv_buffer_from_host(a)");
  Buffer ba(pa);
  check(ttdrv_buffer_from_host(dev.get(), &s, 0, b.data(), b.size() * 4, &pb),
        "ttdrv_buffer_from_host(b)");
  Buffer bb(pb);
  check(ttdrv_eltwise_binary(ba.get(), bb.get(), TTDRV_BINARY_ADD, 0, &s.mem, &pc), "ttdrv_eltwise_binary");
  Buffer bc(pc);
  check(ttdrv_buffer_read(bc.get(), 0, true, got.data(), got.size() * 4),
        "ttdrv_buffer_read");
  for (size_t i = 0; i < got.size(); i++) {
    if (std::fabs(got[i] - (a[i] + b[i])) > 1e-5f) {
      std::fprintf(stderr, "element %zu: %f, expected %f\n", i, got[i], a[i] + b[i]);
      return 1;
    }
  }
  // An error comes back as a status with a message, not an exception or a crash.
  ttdrv_status st = ttdrv_buffer_read(bc.get(), 0, true, got.data(), 3);
  if (st != TTDRV_STATUS_INVALID_ARGUMENT || std::strlen(ttdrv_last_error()) == 0) {
    std::fprintf(stderr, "short read gave %s, '%s'\n", ttdrv_status_name(st), ttdrv_last_error());
    return 1;
  }
  std::printf("cxx_smoke: %s on %s (%ux%u grid): %zu sums checked\n", ttdrv_version(), info.name, info.grid_x,
              info.grid_y, got.size());
  return 0;
} catch (const std::exception &e) {
  std::fprintf(stderr, "cxx_smoke: %s\n", e.what());
  return 1;
}
