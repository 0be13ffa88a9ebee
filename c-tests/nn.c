/* nn: the transformer operations (docs/device-interface.md §8.2, since contract 1.3) from C
 * (scripts/test.d/18-nn.sh).
 *
 *  1. One attention block and feed-forward of a tiny BERT encoder layer, op by op — embedding (word + position +
 *     type), layer norm, linear (bias), attention scores (ttdrv_bmm over heads read in place), masked softmax,
 *     attention context (heads merged in place), linear + residual layer norm, linear + GELU (erf form), mean pooling
 *     with L2 normalization — each checked against a plain C reference computed in double from the device's own
 *     inputs to that op, so an error does not propagate into the next check. Float32, row-major DRAM operands and a
 *     tiled L1 output mixed in.
 *  2. ttdrv_eltwise_unary with TTDRV_UNARY_GELU_ERF against erf() from libm.
 *  3. Invalid arguments: unknown views bits, transpose_b, activation, n_tables, mismatched shapes — each
 *     INVALID_ARGUMENT with the message naming the problem, and the output untouched.
 *
 * Exits 1 with the failing check on the first failure; prints "nn: N checks passed". */
#include "mlp_ref.h"
#include <math.h>
#include <stdint.h>

static unsigned n_checks;

#define CHECK_THAT(cond, ...)  \
  do {                         \
    EXPECT(cond, __VA_ARGS__); \
    n_checks++;                \
  } while (0)

enum { B = 2, S = 8, H = 2, D = 4, HID = H * D, FF = 16, VOCAB = 20 };

static ttdrv_device *dev;

static ttdrv_buffer *buf(uint32_t rows, uint32_t cols, int tiled_l1) {
  ttdrv_tensor_spec s = spec_f32(rows, cols, mc_interleaved(tiled_l1 ? TTDRV_BUFFER_L1 : TTDRV_BUFFER_DRAM));
  if (tiled_l1) s.tensor_layout = TTDRV_TENSOR_LAYOUT_TILE;
  ttdrv_buffer *b = NULL;
  CHECK(ttdrv_buffer_allocate(dev, &s, &b));
  return b;
}

static ttdrv_buffer *upload(const float *v, uint32_t rows, uint32_t cols) {
  ttdrv_buffer *b = buf(rows, cols, 0);
  CHECK(ttdrv_buffer_write(b, 0, (const uint8_t *)v, (size_t)rows * cols * 4, true));
  return b;
}

static void download(ttdrv_buffer *b, float *v, size_t n) { CHECK(ttdrv_buffer_read(b, 0, true, (uint8_t *)v, n * 4)); }

static void random_fill(float *v, size_t n, uint32_t seed, float scale) {
  for (size_t i = 0; i < n; i++) v[i] = lcg_value(&seed, scale);
}

/* got within 1e-5 absolute plus 1e-5 relative of want (a few float32 roundings on values of order 1). */
static void check_close(const char *what, const float *got, const double *want, size_t n) {
  for (size_t i = 0; i < n; i++) {
    double tol = 1e-5 + 1e-5 * fabs(want[i]);
    CHECK_THAT(fabs(got[i] - want[i]) <= tol, "%s: element %zu is %.9g, reference %.9g", what, i, got[i], want[i]);
  }
}

static void layer_norm_ref(const float *x, const float *res, const float *g, const float *b, double *out, int rows,
                           int cols) {
  for (int r = 0; r < rows; r++) {
    double v[64], mean = 0, var = 0;
    for (int c = 0; c < cols; c++) v[c] = x[r * cols + c] + (res ? res[r * cols + c] : 0.0), mean += v[c];
    mean /= cols;
    for (int c = 0; c < cols; c++) var += (v[c] - mean) * (v[c] - mean);
    var /= cols;
    for (int c = 0; c < cols; c++) out[r * cols + c] = (v[c] - mean) / sqrt(var + 1e-12) * g[c] + b[c];
  }
}

static void linear_ref(const float *a, const float *w, const float *bias, double *out, int m, int k, int n, int gelu) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double s = bias ? bias[j] : 0.0;
      for (int t = 0; t < k; t++) s += (double)a[i * k + t] * w[t * n + j];
      out[i * n + j] = gelu ? 0.5 * s * (1.0 + erf(s / sqrt(2.0))) : s;
    }
}

static void test_encoder_layer(void) {
  /* Embedding: ids [B*S, 3] (word, position, type); sentence 1 has 5 real tokens, 3 padding. */
  float word[VOCAB * HID], pos[S * HID], typ[2 * HID], ids[B * S * 3], mask01[B * S], maskadd[B * S];
  random_fill(word, VOCAB * HID, 1, 1.0f);
  random_fill(pos, S * HID, 2, 1.0f);
  random_fill(typ, 2 * HID, 3, 1.0f);
  for (int r = 0; r < B * S; r++) {
    int s = r % S, real = r / S == 0 || s < 5;
    ids[3 * r] = (float)(real ? (r * 7) % VOCAB : 0), ids[3 * r + 1] = (float)s, ids[3 * r + 2] = 0.0f;
    mask01[r] = real ? 1.0f : 0.0f;
    maskadd[r] = real ? 0.0f : -10000.0f;
  }
  ttdrv_buffer *bids = upload(ids, B * S, 3), *tables[3] = {upload(word, VOCAB, HID), upload(pos, S, HID),
                                                            upload(typ, 2, HID)};
  ttdrv_buffer *emb = buf(B * S, HID, 0);
  CHECK(ttdrv_embedding(bids, tables, 3, 0, emb));
  float x[B * S * HID];
  double want[B * S * S * H];
  download(emb, x, B * S * HID);
  for (int r = 0; r < B * S; r++)
    for (int c = 0; c < HID; c++)
      want[r * HID + c] = (double)word[(int)ids[3 * r] * HID + c] + pos[(int)ids[3 * r + 1] * HID + c] + typ[c];
  check_close("embedding", x, want, B * S * HID);

  /* Layer norm of the embeddings. */
  float g[HID], be[HID];
  random_fill(g, HID, 4, 1.0f);
  random_fill(be, HID, 5, 0.5f);
  ttdrv_buffer *bg = upload(g, 1, HID), *bb = upload(be, 1, HID), *h0 = buf(B * S, HID, 0);
  CHECK(ttdrv_layer_norm(emb, NULL, bg, bb, 1e-12f, 0, h0));
  float h[B * S * HID];
  download(h0, h, B * S * HID);
  layer_norm_ref(x, NULL, g, be, want, B * S, HID);
  check_close("layer_norm", h, want, B * S * HID);

  /* Q, K, V projections with bias. */
  float wq[HID * HID], bq[HID], q[B * S * HID], k[B * S * HID], v[B * S * HID];
  random_fill(wq, HID * HID, 6, 0.5f);
  random_fill(bq, HID, 7, 0.5f);
  ttdrv_buffer *bwq = upload(wq, HID, HID), *bbq = upload(bq, 1, HID);
  ttdrv_buffer *Q = buf(B * S, HID, 0), *K = buf(B * S, HID, 0), *V = buf(B * S, HID, 0);
  CHECK(ttdrv_linear(h0, bwq, bbq, TTDRV_ACTIVATION_NONE, 0, Q));
  download(Q, q, B * S * HID);
  linear_ref(h, wq, bq, want, B * S, HID, HID, 0);
  check_close("linear (Q)", q, want, B * S * HID);
  /* K and V: other projections of the same input (no bias for K: the optional NULL). */
  CHECK(ttdrv_linear(emb, bwq, NULL, TTDRV_ACTIVATION_NONE, 0, K));
  CHECK(ttdrv_linear(h0, bwq, bbq, TTDRV_ACTIVATION_GELU_ERF, 0, V));
  download(K, k, B * S * HID);
  download(V, v, B * S * HID);
  linear_ref(x, wq, NULL, want, B * S, HID, HID, 0);
  check_close("linear (K, no bias)", k, want, B * S * HID);
  linear_ref(h, wq, bq, want, B * S, HID, HID, 1);
  check_close("linear (V, GELU erf)", v, want, B * S * HID);

  /* Scores: Q_z K_z^T / sqrt(D), heads read in place, stacked [B*H*S, S], tiled in L1. */
  ttdrv_buffer *sc = buf(B * H * S, S, 1), *mask = upload(maskadd, B, S), *pr = buf(B * H * S, S, 0);
  CHECK(ttdrv_bmm(Q, K, B, H, TTDRV_BMM_A_HEADS | TTDRV_BMM_B_HEADS, 1, 1.0f / sqrtf((float)D), 0, sc));
  float s[B * H * S * S], p[B * H * S * S];
  download(sc, s, B * H * S * S);
  for (int b = 0; b < B; b++)
    for (int hh = 0; hh < H; hh++)
      for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) {
          double d = 0;
          for (int t = 0; t < D; t++) d += (double)q[(b * S + i) * HID + hh * D + t] * k[(b * S + j) * HID + hh * D + t];
          want[((b * H + hh) * S + i) * S + j] = d / sqrt((double)D);
        }
  check_close("bmm (Q K^T)", s, want, B * H * S * S);

  /* Masked softmax: one mask row per sentence, over its H * S score rows. */
  CHECK(ttdrv_softmax(sc, mask, 1.0f, 0, pr));
  download(pr, p, B * H * S * S);
  for (int r = 0; r < B * H * S; r++) {
    double mx = -1e300, sum = 0, e[S];
    for (int j = 0; j < S; j++) mx = fmax(mx, (double)s[r * S + j] + maskadd[(r / (H * S)) * S + j]);
    for (int j = 0; j < S; j++) e[j] = exp((double)s[r * S + j] + maskadd[(r / (H * S)) * S + j] - mx), sum += e[j];
    for (int j = 0; j < S; j++) want[r * S + j] = e[j] / sum;
  }
  check_close("softmax (masked)", p, want, B * H * S * S);
  CHECK_THAT(p[(H * S) * S + 6] == 0.0f, "a padding token of sentence 1 got attention %g", p[(H * S) * S + 6]);

  /* Context: P_z V_z merged into heads in place, [B*S, HID]. */
  ttdrv_buffer *ctx = buf(B * S, HID, 0);
  CHECK(ttdrv_bmm(pr, V, B, H, TTDRV_BMM_B_HEADS | TTDRV_BMM_OUT_HEADS, 0, 1.0f, 0, ctx));
  float c[B * S * HID];
  download(ctx, c, B * S * HID);
  for (int b = 0; b < B; b++)
    for (int hh = 0; hh < H; hh++)
      for (int i = 0; i < S; i++)
        for (int t = 0; t < D; t++) {
          double d = 0;
          for (int j = 0; j < S; j++) d += (double)p[((b * H + hh) * S + i) * S + j] * v[(b * S + j) * HID + hh * D + t];
          want[(b * S + i) * HID + hh * D + t] = d;
        }
  check_close("bmm (P V)", c, want, B * S * HID);

  /* Residual layer norm: LN(ctx + h). */
  ttdrv_buffer *h1 = buf(B * S, HID, 1);
  CHECK(ttdrv_layer_norm(ctx, h0, bg, bb, 1e-12f, 0, h1));
  float h1v[B * S * HID];
  download(h1, h1v, B * S * HID);
  layer_norm_ref(c, h, g, be, want, B * S, HID);
  check_close("layer_norm (residual)", h1v, want, B * S * HID);

  /* Feed-forward up-projection with GELU (erf form). */
  float w1[HID * FF], b1[FF], f[B * S * FF];
  random_fill(w1, HID * FF, 8, 0.5f);
  random_fill(b1, FF, 9, 0.5f);
  ttdrv_buffer *bw1 = upload(w1, HID, FF), *bb1 = upload(b1, 1, FF), *ff = buf(B * S, FF, 0);
  CHECK(ttdrv_linear(h1, bw1, bb1, TTDRV_ACTIVATION_GELU_ERF, 0, ff));
  download(ff, f, B * S * FF);
  linear_ref(h1v, w1, b1, want, B * S, HID, FF, 1);
  check_close("linear (GELU erf)", f, want, B * S * FF);

  /* Mean pooling over the real tokens, L2 normalized. */
  ttdrv_buffer *m01 = upload(mask01, B, S), *pooled = buf(B, HID, 0);
  CHECK(ttdrv_mean_pool(h1, m01, true, 0, pooled));
  float e[B * HID];
  download(pooled, e, B * HID);
  for (int b = 0; b < B; b++) {
    double n = 0, cnt = 0;
    for (int i = 0; i < S; i++) cnt += mask01[b * S + i];
    for (int t = 0; t < HID; t++) {
      double a = 0;
      for (int i = 0; i < S; i++) a += mask01[b * S + i] * (double)h1v[(b * S + i) * HID + t];
      want[b * HID + t] = a / cnt;
      n += want[b * HID + t] * want[b * HID + t];
    }
    for (int t = 0; t < HID; t++) want[b * HID + t] /= sqrt(n);
  }
  check_close("mean_pool (normalized)", e, want, B * HID);

  /* Invalid arguments: nothing is enqueued, the output keeps its contents. */
  const struct {
    ttdrv_status st;
    const char *needle;
  } bad[] = {
      {ttdrv_bmm(Q, K, B, H, 8, 1, 1.0f, 0, sc), "views 0x8"},
      {ttdrv_bmm(Q, K, B, H, TTDRV_BMM_A_HEADS | TTDRV_BMM_B_HEADS, 2, 1.0f, 0, sc), "transpose_b is 2"},
      {ttdrv_bmm(Q, K, B, H, TTDRV_BMM_A_HEADS | TTDRV_BMM_B_HEADS, 0, 1.0f, 0, sc), "inner sizes"},
      {ttdrv_linear(h0, bwq, bbq, 7, 0, Q), "activation 7"},
      {ttdrv_linear(h0, bwq, bb1, TTDRV_ACTIVATION_NONE, 0, Q), "bias must be one row"},
      {ttdrv_embedding(bids, tables, 4, 0, emb), "n_tables is 4"},
      {ttdrv_layer_norm(emb, NULL, bg, bb, -1.0f, 0, h0), "epsilon -1"},
      {ttdrv_softmax(sc, bw1, 1.0f, 0, pr), "mask"},
      {ttdrv_mean_pool(h1, mask, true, 0, ff), "[B x S, D]"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_THAT(bad[i].st == TTDRV_STATUS_INVALID_ARGUMENT, "bad call %zu: status %s", i, ttdrv_status_name(bad[i].st));
  }
  /* The last message is the mean_pool one; each call sets its own (checked one at a time below). */
  CHECK_THAT(ttdrv_linear(h0, bwq, bbq, 7, 0, Q) == TTDRV_STATUS_INVALID_ARGUMENT && strstr(ttdrv_last_error(), "activation 7"),
             "message: %s", ttdrv_last_error());
  CHECK_THAT(ttdrv_bmm(Q, K, B, H, 8, 1, 1.0f, 0, sc) == TTDRV_STATUS_INVALID_ARGUMENT &&
                 strstr(ttdrv_last_error(), "TTDRV_BMM_A_HEADS"),
             "message: %s", ttdrv_last_error());
  float q2[B * S * HID];
  download(Q, q2, B * S * HID);
  CHECK_THAT(memcmp(q, q2, sizeof q) == 0, "a failed ttdrv_linear changed its output");

  ttdrv_buffer *all[] = {bids, tables[0], tables[1], tables[2], emb, bg, bb, h0, bwq, bbq, Q, K, V, sc, mask, pr,
                         ctx, h1, bw1, bb1, ff, m01, pooled};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) CHECK(ttdrv_buffer_free(all[i]));
}

static void test_gelu_erf(void) {
  enum { N = 256 };
  float x[N], y[N];
  for (int i = 0; i < N; i++) x[i] = -6.0f + 12.0f * (float)i / N;
  ttdrv_buffer *bx = upload(x, 8, N / 8), *by = NULL;
  ttdrv_memory_config mem = mc_interleaved(TTDRV_BUFFER_DRAM);
  CHECK(ttdrv_eltwise_unary(bx, TTDRV_UNARY_GELU_ERF, 0.0f, 0, &mem, &by));
  download(by, y, N);
  double want[N];
  for (int i = 0; i < N; i++) want[i] = 0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0)));
  check_close("gelu (erf form)", y, want, N);
  CHECK(ttdrv_buffer_free(bx));
  CHECK(ttdrv_buffer_free(by));
}

int main(void) {
  CHECK(ttdrv_device_open("emu", NULL, &dev));
  ttdrv_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(ttdrv_device_get_info(dev, &info));
  CHECK_THAT(info.contract_major == 1 && info.contract_minor >= 3, "the transformer ops need contract 1.3, device has %u.%u",
             info.contract_major, info.contract_minor);
  test_encoder_layer();
  test_gelu_erf();
  CHECK(ttdrv_device_close(dev));
  printf("nn: %u checks passed\n", n_checks);
  return 0;
}
