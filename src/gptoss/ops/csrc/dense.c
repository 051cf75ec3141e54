/* Dense linear layers (bf16, int8 with a float32 scale per output row, or float32 weights),
 * RMSNorm, and the panel GEMM microkernel shared with the MXFP4 prefill path.
 *
 *   y[n, R] = x[n, K] . (W[R, K] * scale[R])^T + bias[R]
 *
 * Few tokens (n <= SMALL_N: decoding, also a continuous batch of several rows): every weight row is
 * read once as one sequential stream and multiplied into all tokens while it is in registers (up
 * to 4 rows share each load of x); this path is bound by memory bandwidth, and for a handful of
 * tokens it beats the panel path, whose conversion of the weights is paid back only over many. More tokens (prefill): PANEL rows are converted to float32 in a
 * k-major panel and an MR x PANEL outer-product kernel runs over every tile of MR tokens, so the
 * weights are read once per call and the FMA units stay busy.
 *
 * Accumulation is float32; bf16 products are exact in float32, so bf16 results differ from
 * torch's only in summation order. Each output is computed by one thread in a fixed order.
 */
#include "common.h"

#define SMALL_N 8

/* ---------------------------------------------------------------------------------------------
 * Portable scalar fallback. */
static float wval(const void *w, int wtype, int64_t i) {
    if (wtype == T_F32) return ((const float *)w)[i];
    if (wtype == T_BF16) return bf16_to_f32(((const uint16_t *)w)[i]);
    return (float)((const int8_t *)w)[i];
}

static void rows_scalar(const float *x, int64_t n, int64_t K, const void *w, int wtype, float *y, int64_t R,
                        int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = 0; t < n; t++) {
            float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int64_t k = 0;
            for (; k + 8 <= K; k += 8)
                for (int j = 0; j < 8; j++) part[j] += wval(w, wtype, r * K + k + j) * x[t * K + k + j];
            for (; k < K; k++) part[0] += wval(w, wtype, r * K + k) * x[t * K + k];
            y[t * R + r] = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        }
}

#ifdef GPTOSS_X86
INLINE __m256 wload8(const void *w, int wtype, int64_t i) {
    if (wtype == T_BF16) return load8_bf16((const uint16_t *)w + i);
    if (wtype == T_I8) return load8_i8((const int8_t *)w + i);
    return _mm256_loadu_ps((const float *)w + i);
}

/* RT rows x NT tokens, each weight row streamed once; the K % 8 tail in scalar code. */
INLINE void gemv_tile(const float *x, int64_t K, const void *w, int wtype, int64_t r, float *y, int64_t R,
                      const int RT, const int NT) {
    __m256 acc[4][SMALL_N];
    for (int i = 0; i < RT; i++)
        for (int t = 0; t < NT; t++) acc[i][t] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 xv[SMALL_N];
        for (int t = 0; t < NT; t++) xv[t] = _mm256_loadu_ps(x + t * K + k);
        for (int i = 0; i < RT; i++) {
            const __m256 wv = wload8(w, wtype, (r + i) * K + k);
            for (int t = 0; t < NT; t++) acc[i][t] = _mm256_fmadd_ps(wv, xv[t], acc[i][t]);
        }
    }
    for (int i = 0; i < RT; i++)
        for (int t = 0; t < NT; t++) {
            float s = hsum256(acc[i][t]);
            for (int64_t kk = k; kk < K; kk++) s += wval(w, wtype, (r + i) * K + kk) * x[t * K + kk];
            y[t * R + r + i] = s;
        }
}

#define DEFINE_GEMV(fmt, wt)                                                                               \
    TARGET __attribute__((noinline)) static void gemv_##fmt(const float *x, int64_t n, int64_t K, const void *w, \
                                                            float *y, int64_t R, int64_t r0, int64_t r1) {   \
        int64_t r = r0;                                                                                    \
        if (n == 1) {                                                                                      \
            for (; r + 4 <= r1; r += 4) gemv_tile(x, K, w, wt, r, y, R, 4, 1);                             \
            for (; r < r1; r++) gemv_tile(x, K, w, wt, r, y, R, 1, 1);                                     \
        } else if (n == 2) {                                                                               \
            for (; r + 2 <= r1; r += 2) gemv_tile(x, K, w, wt, r, y, R, 2, 2);                             \
            for (; r < r1; r++) gemv_tile(x, K, w, wt, r, y, R, 1, 2);                                     \
        } else if (n == 3) {                                                                               \
            for (; r + 2 <= r1; r += 2) gemv_tile(x, K, w, wt, r, y, R, 2, 3);                             \
            for (; r < r1; r++) gemv_tile(x, K, w, wt, r, y, R, 1, 3);                                     \
        } else if (n == 4) {                                                                               \
            for (; r + 2 <= r1; r += 2) gemv_tile(x, K, w, wt, r, y, R, 2, 4);                             \
            for (; r < r1; r++) gemv_tile(x, K, w, wt, r, y, R, 1, 4);                                     \
        } else if (n == 5) {                                                                               \
            for (; r < r1; r++) gemv_tile(x, K, w, wt, r, y, R, 1, 5);                                     \
        } else if (n == 6) {                                                                               \
            for (; r < r1; r++) gemv_tile(x, K, w, wt, r, y, R, 1, 6);                                     \
        } else if (n == 7) {                                                                               \
            for (; r < r1; r++) gemv_tile(x, K, w, wt, r, y, R, 1, 7);                                     \
        } else {                                                                                           \
            for (; r < r1; r++) gemv_tile(x, K, w, wt, r, y, R, 1, 8);                                     \
        }                                                                                                  \
    }
DEFINE_GEMV(f32, T_F32)
DEFINE_GEMV(bf16, T_BF16)
DEFINE_GEMV(i8, T_I8)

/* Rows [r, r + nr) of W (nr <= PANEL) into P[K][PANEL] float32, rows past nr zero. */
TARGET static void panel_dense(const void *w, int wtype, int64_t K, int64_t r, int nr, float *P) {
    for (int half = 0; half < PANEL / 8; half++) {
        const int base = half * 8;
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) {
            __m256 v[8];
            for (int i = 0; i < 8; i++)
                v[i] = base + i < nr ? wload8(w, wtype, (r + base + i) * K + k) : _mm256_setzero_ps();
            transpose8(v);
            for (int j = 0; j < 8; j++) _mm256_storeu_ps(P + (k + j) * PANEL + base, v[j]);
        }
        for (; k < K; k++)
            for (int i = 0; i < 8; i++)
                P[k * PANEL + base + i] = base + i < nr ? wval(w, wtype, (r + base + i) * K + k) : 0.0f;
    }
}

/* MR tokens x PANEL rows over all of K: 12 named accumulators (gcc keeps an array of them in
 * memory), P and X read sequentially. */
TARGET static void panel_tile_avx2(const float *P, const float *X, int64_t K, float *y, int64_t ldy, int nt, int nr,
                                   int accumulate) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < K; k++) {
        const __m256 b0 = _mm256_loadu_ps(P + k * PANEL), b1 = _mm256_loadu_ps(P + k * PANEL + 8);
        const float *xk = X + k * MR;
        __m256 a = _mm256_broadcast_ss(xk);
        c00 = _mm256_fmadd_ps(a, b0, c00);
        c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(xk + 1);
        c10 = _mm256_fmadd_ps(a, b0, c10);
        c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(xk + 2);
        c20 = _mm256_fmadd_ps(a, b0, c20);
        c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(xk + 3);
        c30 = _mm256_fmadd_ps(a, b0, c30);
        c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(xk + 4);
        c40 = _mm256_fmadd_ps(a, b0, c40);
        c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(xk + 5);
        c50 = _mm256_fmadd_ps(a, b0, c50);
        c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    __m256 c[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    float tmp[PANEL];
    for (int t = 0; t < nt; t++) {
        float *yt = y + t * ldy;
        if (nr == PANEL) {
            if (accumulate) {
                c[t][0] = _mm256_add_ps(_mm256_loadu_ps(yt), c[t][0]);
                c[t][1] = _mm256_add_ps(_mm256_loadu_ps(yt + 8), c[t][1]);
            }
            _mm256_storeu_ps(yt, c[t][0]);
            _mm256_storeu_ps(yt + 8, c[t][1]);
        } else {
            _mm256_storeu_ps(tmp, c[t][0]);
            _mm256_storeu_ps(tmp + 8, c[t][1]);
            for (int i = 0; i < nr; i++) yt[i] = accumulate ? yt[i] + tmp[i] : tmp[i];
        }
    }
}
#endif

static void panel_tile_scalar(const float *P, const float *X, int64_t K, float *y, int64_t ldy, int nt, int nr,
                              int accumulate) {
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < nr; i++) {
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++) s += P[k * PANEL + i] * X[k * MR + t];
            y[t * ldy + i] = accumulate ? y[t * ldy + i] + s : s;
        }
}

/* All tiles of n tokens against one decoded panel, K in chunks of KC so that the panel chunk and
 * the token chunk stay in L1; chunk sums are added in order (a fixed order for every output). */
void gptoss_panel_tiles(const float *P, const float *X, int64_t n, int64_t K, float *y, int64_t ldy, int nr) {
#ifdef GPTOSS_X86
    const int avx2 = gptoss_have_avx2_fma();
#endif
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int64_t kc = K - k0 < KC ? K - k0 : KC;
        for (int64_t t = 0; t < n; t += MR) {
            const int nt = n - t >= MR ? MR : (int)(n - t);
            const float *Pk = P + k0 * PANEL, *Xk = X + t * K + k0 * MR;
#ifdef GPTOSS_X86
            if (avx2) {
                panel_tile_avx2(Pk, Xk, kc, y + t * ldy, ldy, nt, nr, k0 > 0);
                continue;
            }
#endif
            panel_tile_scalar(Pk, Xk, kc, y + t * ldy, ldy, nt, nr, k0 > 0);
        }
    }
}

void gptoss_pack_tokens(const float *x, int64_t n, int64_t K, float *X) {
    const int64_t tiles = (n + MR - 1) / MR;
    for (int64_t i = 0; i < tiles; i++) {
        float *Xi = X + i * K * MR;
        for (int j = 0; j < MR; j++) {
            const int64_t t = i * MR + j;
            if (t < n) {
                const float *xt = x + t * K;
                for (int64_t k = 0; k < K; k++) Xi[k * MR + j] = xt[k];
            } else {
                for (int64_t k = 0; k < K; k++) Xi[k * MR + j] = 0.0f;
            }
        }
    }
}

static void panel_dense_scalar(const void *w, int wtype, int64_t K, int64_t r, int nr, float *P) {
    for (int64_t k = 0; k < K; k++)
        for (int i = 0; i < PANEL; i++) P[k * PANEL + i] = i < nr ? wval(w, wtype, (r + i) * K + k) : 0.0f;
}

/* y = x W^T (* scale) (+ bias), stored as ytype. Returns the implementation used, -1 when out of memory. */
int gptoss_linear(const void *x, int xtype, int64_t n, int64_t K, const void *w, int wtype, const float *wscale,
                  const void *bias, int btype, void *y, int ytype, int64_t R, int nthreads, int impl) {
    const int use = impl != IMPL_SCALAR && gptoss_have_avx2_fma() ? IMPL_AVX2 : IMPL_SCALAR;
    if (n <= 0 || R <= 0) return use;
    float *xf = NULL, *acc = NULL, *X = NULL;
    const float *xs = (const float *)x;
    if (xtype != T_F32) {
        xf = (float *)malloc((size_t)(n * K) * sizeof(float));
        if (xf == NULL) return -1;
        to_f32(x, xtype, xf, n * K);
        xs = xf;
    }
    /* Results are written in float32 first only when they must be converted or the panel path runs. */
    const int small = n <= SMALL_N;
    float *yf = ytype == T_F32 ? (float *)y : NULL;
    if (yf == NULL) {
        acc = (float *)malloc((size_t)(n * R) * sizeof(float));
        if (acc == NULL) {
            free(xf);
            return -1;
        }
        yf = acc;
    }
    if (!small) {
        const int64_t tiles = (n + MR - 1) / MR;
        X = (float *)malloc((size_t)(tiles * MR * K) * sizeof(float));
        if (X == NULL) {
            free(xf);
            free(acc);
            return -1;
        }
        gptoss_pack_tokens(xs, n, K, X);
    }
    if (nthreads < 1) nthreads = 1;
    int failed = 0;
    const int64_t unit = small ? 4 : PANEL;
    const int64_t units = (R + unit - 1) / unit;
    /* About 8 chunks per thread keeps threads balanced when another process holds a core. */
    int64_t per_chunk = units / ((int64_t)nthreads * 8);
    if (per_chunk < 1) per_chunk = 1;
    const int64_t chunks = (units + per_chunk - 1) / per_chunk;
    if (chunks < nthreads) nthreads = (int)chunks;

#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        float *P = small ? NULL : (float *)malloc((size_t)(K * PANEL) * sizeof(float));
        if (!small && P == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t c = 0; c < chunks; c++) {
            const int64_t r0 = c * per_chunk * unit;
            const int64_t r1 = r0 + per_chunk * unit < R ? r0 + per_chunk * unit : R;
            if (small) {
#ifdef GPTOSS_X86
                if (use == IMPL_AVX2) {
                    if (wtype == T_BF16) gemv_bf16(xs, n, K, w, yf, R, r0, r1);
                    else if (wtype == T_I8) gemv_i8(xs, n, K, w, yf, R, r0, r1);
                    else gemv_f32(xs, n, K, w, yf, R, r0, r1);
                } else
#endif
                    rows_scalar(xs, n, K, w, wtype, yf, R, r0, r1);
            } else if (P != NULL) {
                for (int64_t r = r0; r < r1; r += PANEL) {
                    const int nr = r1 - r >= PANEL ? PANEL : (int)(r1 - r);
#ifdef GPTOSS_X86
                    if (use == IMPL_AVX2) panel_dense(w, wtype, K, r, nr, P);
                    else
#endif
                        panel_dense_scalar(w, wtype, K, r, nr, P);
                    gptoss_panel_tiles(P, X, n, K, yf + r, R, nr);
                }
            }
            /* Epilogue for this chunk's rows: scale, bias, conversion. */
            for (int64_t t = 0; t < n; t++) {
                float *yt = yf + t * R;
                for (int64_t r = r0; r < r1; r++) {
                    float v = yt[r];
                    if (wscale != NULL) v *= wscale[r];
                    if (bias != NULL) v += btype == T_F32 ? ((const float *)bias)[r] : bf16_to_f32(((const uint16_t *)bias)[r]);
                    yt[r] = v;
                }
                if (ytype != T_F32) from_f32(yt + r0, ytype, (uint16_t *)y + t * R + r0, r1 - r0);
            }
        }
        free(P);
    }
    free(X);
    free(acc);
    free(xf);
    return failed ? -1 : use;
}

/* RMSNorm over rows of x [n, H]: out = x * rsqrt(mean(x^2) + eps) * scale, computed in float32
 * and stored in xtype (the reference's rounding point). */
void gptoss_rms_norm(const void *x, int xtype, const float *scale, float eps, void *out, int64_t n, int64_t H) {
    float *row = (float *)malloc((size_t)H * sizeof(float));
    if (row == NULL) return;
    for (int64_t t = 0; t < n; t++) {
        to_f32((const char *)x + t * H * elem_size(xtype), xtype, row, H);
        double ss = 0.0;
        for (int64_t i = 0; i < H; i++) ss += (double)row[i] * row[i];
        const float r = 1.0f / sqrtf((float)(ss / (double)H) + eps);
        for (int64_t i = 0; i < H; i++) row[i] = row[i] * r * scale[i];
        from_f32(row, xtype, (char *)out + t * H * elem_size(xtype), H);
    }
    free(row);
}
