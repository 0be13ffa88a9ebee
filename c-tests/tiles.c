/* tiles: tiled tensors (TTDRV_TENSOR_LAYOUT_TILE; the in-tile order is docs/device-interface.md §8.3.2) from C
 * (scripts/test.d/17-tiles.sh).
 *
 *  1. Round trips: tiled buffers whose shapes are and are not multiples of 32 — interleaved DRAM float32, block-
 *     sharded L1 bfloat16, height-sharded DRAM float32 — read back bit-exact; the spec reports the tensor layout, and
 *     the host size is the logical shape's.
 *  2. Compute: matmul of tiled operands (a tiled output) against a plain C reference; an add of a tiled and a
 *     row-major operand into a row-major output, exact; untilize and tilize on the device (ttdrv_to_layout).
 *  3. Raw device bytes: a tiled [33, 17] float32 buffer is two tiles, pages 0 and 1 of an interleaved DRAM tensor.
 *     A row-major view of the same pages — the buffer's own accessor (ttdrv_buffer_accessor) with tensor_layout 0 and
 *     a shape of one 1024-element row per tile — is copied by the built-in copy kernel, which moves bytes without
 *     interpreting them, into a row-major buffer and read back. Every element is checked against the documented order
 *     (four 16x16 faces: top-left, top-right, bottom-left, bottom-right, each row-major), padding zero.
 *
 * Exits 1 with the failing check on the first failure; prints "tiles: N checks passed". */
#include "mlp_ref.h"
#include <math.h>
#include <stdint.h>

static unsigned n_checks;

#define CHECK_THAT(cond, ...) \
  do {                        \
    EXPECT(cond, __VA_ARGS__); \
    n_checks++;               \
  } while (0)

/* Element (r, c) of the test tensors: distinct, non-zero, exact in float32 and bfloat16. */
static float value(uint32_t r, uint32_t c) { return (float)(r * 8 + c % 8 + 1) * ((c / 8) % 2 ? -1.0f : 1.0f); }

static uint16_t bf16(float x) { /* the values above are exact in bfloat16: truncation is exact */
  uint32_t b;
  memcpy(&b, &x, 4);
  return (uint16_t)(b >> 16);
}

static ttdrv_tensor_spec tiled(uint32_t rows, uint32_t cols, uint32_t dtype, ttdrv_memory_config mem) {
  ttdrv_tensor_spec s = spec_f32(rows, cols, mem);
  s.dtype = dtype;
  s.tensor_layout = TTDRV_TENSOR_LAYOUT_TILE;
  return s;
}

static void round_trip(ttdrv_device *dev, const char *what, ttdrv_tensor_spec s) {
  size_t n = (size_t)s.rows * s.cols, es = s.dtype == TTDRV_DTYPE_FLOAT32 ? 4 : 2;
  uint8_t *in = malloc(n * es), *out = malloc(n * es);
  EXPECT(in && out, "out of host memory");
  for (size_t i = 0; i < n; i++) {
    float v = value((uint32_t)(i / s.cols), (uint32_t)(i % s.cols));
    if (es == 4) {
      memcpy(in + 4 * i, &v, 4);
    } else {
      uint16_t h = bf16(v);
      memcpy(in + 2 * i, &h, 2);
    }
  }
  ttdrv_buffer *b = NULL;
  CHECK(ttdrv_buffer_from_host(dev, &s, 0, in, n * es, &b));
  size_t host = 0;
  CHECK(ttdrv_buffer_host_size(b, &host));
  CHECK_THAT(host == n * es, "%s: host size %zu, want %zu (the logical shape, not the padded one)", what, host, n * es);
  ttdrv_tensor_spec got;
  CHECK(ttdrv_buffer_get_spec(b, &got));
  CHECK_THAT(got.tensor_layout == TTDRV_TENSOR_LAYOUT_TILE, "%s: spec reports tensor_layout %u", what,
             got.tensor_layout);
  memset(out, 0xA5, n * es);
  CHECK(ttdrv_buffer_read(b, 0, true, out, n * es));
  CHECK_THAT(memcmp(in, out, n * es) == 0, "%s: read back differs", what);
  CHECK(ttdrv_buffer_free(b));
  free(in);
  free(out);
}

static void test_round_trips(ttdrv_device *dev) {
  round_trip(dev, "[50, 70] f32 DRAM interleaved", tiled(50, 70, TTDRV_DTYPE_FLOAT32, mc_interleaved(TTDRV_BUFFER_DRAM)));
  round_trip(dev, "[64, 64] f32 DRAM interleaved", tiled(64, 64, TTDRV_DTYPE_FLOAT32, mc_interleaved(TTDRV_BUFFER_DRAM)));
  /* [33, 100] pads to [64, 128]: 2 x 4 shards of one tile on cores (0,0)-(3,1). */
  ttdrv_memory_config block = mc_interleaved(TTDRV_BUFFER_L1);
  block.layout = TTDRV_LAYOUT_BLOCK_SHARDED;
  block.shard.core_x1 = 3, block.shard.core_y1 = 1;
  block.shard.shard_rows = 32, block.shard.shard_cols = 32;
  round_trip(dev, "[33, 100] bf16 L1 block-sharded", tiled(33, 100, TTDRV_DTYPE_BFLOAT16, block));
  /* [100, 40] pads to [128, 64]: height shards of one tile row over banks 0-3. */
  ttdrv_memory_config height = mc_dram_height(4, 128, 64);
  round_trip(dev, "[100, 40] f32 DRAM height-sharded", tiled(100, 40, TTDRV_DTYPE_FLOAT32, height));
}

static ttdrv_buffer *upload(ttdrv_device *dev, ttdrv_tensor_spec s, const float *v) {
  ttdrv_buffer *b = NULL;
  CHECK(ttdrv_buffer_from_host(dev, &s, 0, v, sizeof(float) * s.rows * s.cols, &b));
  return b;
}

static void test_compute(ttdrv_device *dev) {
  enum { M = 50, K = 40, N = 70 };
  static float a[M * K], b[K * N], got[M * N];
  uint32_t seed = 7;
  for (size_t i = 0; i < M * K; i++) a[i] = lcg_value(&seed, 1.0f);
  for (size_t i = 0; i < K * N; i++) b[i] = lcg_value(&seed, 1.0f);
  ttdrv_memory_config dram = mc_interleaved(TTDRV_BUFFER_DRAM), l1 = mc_interleaved(TTDRV_BUFFER_L1);
  ttdrv_buffer *ta = upload(dev, tiled(M, K, TTDRV_DTYPE_FLOAT32, dram), a);
  ttdrv_buffer *tb = upload(dev, tiled(K, N, TTDRV_DTYPE_FLOAT32, l1), b);
  ttdrv_buffer *tc = NULL;
  CHECK(ttdrv_matmul(ta, tb, 0, &l1, &tc));
  ttdrv_tensor_spec s;
  CHECK(ttdrv_buffer_get_spec(tc, &s));
  CHECK_THAT(s.tensor_layout == TTDRV_TENSOR_LAYOUT_TILE, "matmul output is not tiled like a");
  CHECK(ttdrv_buffer_read(tc, 0, true, got, sizeof got));
  for (size_t r = 0; r < M; r++) {
    for (size_t j = 0; j < N; j++) {
      double sum = 0, abs_sum = 0;
      for (size_t k = 0; k < K; k++) {
        double p = (double)a[r * K + k] * b[k * N + j];
        sum += p;
        abs_sum += fabs(p);
      }
      /* Any f32 summation order stays within K * eps * sum |a b| of the exact sum. */
      double tol = K * 1.1920929e-7 * abs_sum;
      CHECK_THAT(fabs(got[r * N + j] - sum) <= tol, "matmul [%zu, %zu] = %g, reference %g", r, j, got[r * N + j], sum);
    }
  }
  /* Untilize on the device, then add the tiled product and its row-major copy into a row-major output: exact. */
  ttdrv_buffer *rc = NULL, *sum = NULL;
  CHECK(ttdrv_to_layout(tc, 0, TTDRV_TENSOR_LAYOUT_ROW_MAJOR, &dram, &rc));
  CHECK(ttdrv_buffer_get_spec(rc, &s));
  CHECK_THAT(s.tensor_layout == TTDRV_TENSOR_LAYOUT_ROW_MAJOR, "to_layout row-major gave tensor_layout %u",
             s.tensor_layout);
  static float twice[M * N];
  CHECK(ttdrv_eltwise_binary(rc, tc, TTDRV_BINARY_ADD, 0, &l1, &sum));
  CHECK(ttdrv_buffer_read(sum, 0, true, twice, sizeof twice));
  for (size_t i = 0; i < M * N; i++) {
    CHECK_THAT(twice[i] == got[i] + got[i], "add of row-major and tiled: element %zu is %g, want %g", i, twice[i],
               got[i] + got[i]);
  }
  /* And tilize it back. */
  ttdrv_buffer *back = NULL;
  CHECK(ttdrv_to_layout(sum, 0, TTDRV_TENSOR_LAYOUT_TILE, &dram, &back));
  static float back_host[M * N];
  CHECK(ttdrv_buffer_read(back, 0, true, back_host, sizeof back_host));
  CHECK_THAT(memcmp(back_host, twice, sizeof twice) == 0, "tilize of the sum differs");
  ttdrv_buffer *bufs[] = {ta, tb, tc, rc, sum, back};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) CHECK(ttdrv_buffer_free(bufs[i]));
}

static void test_raw_bytes(ttdrv_device *dev) {
  enum { R = 33, C = 17, TILES = 2, TILE = 1024 };
  static float host[R * C], raw[TILES * TILE];
  for (uint32_t r = 0; r < R; r++)
    for (uint32_t c = 0; c < C; c++) host[r * C + c] = value(r, c);
  ttdrv_buffer *t = upload(dev, tiled(R, C, TTDRV_DTYPE_FLOAT32, mc_interleaved(TTDRV_BUFFER_DRAM)), host);

  /* The tiled buffer's accessor (contract §8.3): word 1 layout, 4 rows, 5 cols, 6 page stride, 11 tensor layout. */
  uint32_t acc[12];
  CHECK(ttdrv_buffer_accessor(t, acc, 12));
  CHECK_THAT(acc[11] == TTDRV_TENSOR_LAYOUT_TILE, "accessor word 11 is %u, not TTDRV_TENSOR_LAYOUT_TILE", acc[11]);
  CHECK_THAT(acc[1] == TTDRV_LAYOUT_INTERLEAVED && acc[6] >= TILE * 4, "accessor layout %u, page stride %u", acc[1],
             acc[6]);
  /* The same pages seen row-major: row t is page t, which is tile t. */
  uint32_t view[12];
  memcpy(view, acc, sizeof view);
  view[4] = TILES, view[5] = TILE, view[11] = TTDRV_TENSOR_LAYOUT_ROW_MAJOR;

  ttdrv_tensor_spec rs = spec_f32(TILES, TILE, mc_interleaved(TTDRV_BUFFER_DRAM));
  ttdrv_buffer *pages = NULL;
  CHECK(ttdrv_buffer_allocate(dev, &rs, &pages));
  uint32_t out[12];
  CHECK(ttdrv_buffer_accessor(pages, out, 12));

  ttdrv_program_desc d;
  CHECK(ttdrv_program_desc_init(&d));
  d.kernel_name = "ttdrv.copy";
  d.rt_words_per_core = 4 + 12 + 12;
  ttdrv_program *copy = NULL;
  CHECK(ttdrv_program_new(dev, &d, &copy));
  uint32_t rt[4 + 12 + 12] = {0, TILES, 0, TILE}; /* block: rows [0, 2), columns [0, 1024) */
  memcpy(rt + 4, view, sizeof view);
  memcpy(rt + 16, out, sizeof out);
  ttdrv_buffer *used[] = {t, pages};
  CHECK(ttdrv_program_run(copy, 0, rt, sizeof rt / sizeof rt[0], used, 2));
  CHECK(ttdrv_buffer_read(pages, 0, true, raw, sizeof raw));

  /* Element (y, x) of tile i is element face * 256 + (y % 16) * 16 + x % 16, face = 2 * (y / 16) + x / 16. */
  for (uint32_t i = 0; i < TILES; i++) {
    for (uint32_t y = 0; y < 32; y++) {
      for (uint32_t x = 0; x < 32; x++) {
        uint32_t r = i * 32 + y, c = x, face = 2 * (y / 16) + x / 16;
        float want = (r < R && c < C) ? value(r, c) : 0.0f;
        float got = raw[i * TILE + face * 256 + (y % 16) * 16 + x % 16];
        CHECK_THAT(got == want, "tile %u element (%u, %u) [face %u]: device holds %g, want %g%s", i, y, x, face, got,
                   want, (r < R && c < C) ? "" : " (padding)");
      }
    }
  }
  CHECK(ttdrv_program_free(copy));
  CHECK(ttdrv_buffer_free(pages));
  CHECK(ttdrv_buffer_free(t));
}

int main(void) {
  ttdrv_device *dev = NULL;
  CHECK(ttdrv_device_open("emu", NULL, &dev));
  ttdrv_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(ttdrv_device_get_info(dev, &info));
  CHECK_THAT(info.contract_major == 1 && info.contract_minor >= 1, "tiled tensors need contract 1.1, device has %u.%u",
             info.contract_major, info.contract_minor);
  test_round_trips(dev);
  test_compute(dev);
  test_raw_bytes(dev);
  CHECK(ttdrv_device_close(dev));
  printf("tiles: %u checks passed\n", n_checks);
  return 0;
}
