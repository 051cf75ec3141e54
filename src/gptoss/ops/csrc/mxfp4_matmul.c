/* Packed MXFP4 matrix products for gpt-oss expert weights on the CPU.
 *
 *   y[N, R] = x[N, K] . W[R, K]^T,   K = 32 G,
 *   W[r, 32g + 2b]     = FP4[blocks[r, g, b] & 0xF] * 2^(scales[r, g] - 127)
 *   W[r, 32g + 2b + 1] = FP4[blocks[r, g, b] >> 4]  * 2^(scales[r, g] - 127)
 *
 * W is decoded on the fly, 32 values at a time, and never materialised: at most PANEL decoded rows
 * exist at once, per thread. Every token of a group uses each decoded block, so the packed
 * weights of a selected expert are read once per call whatever the number of its tokens.
 *
 * Two implementations, chosen at run time so that one shared object serves any x86-64 CPU:
 * AVX2 + FMA (functions carry target attributes; the file is compiled without -march) and a
 * portable scalar loop. Work is split across OpenMP threads; each output element is computed by
 * exactly one thread in a fixed order, so results do not depend on the thread count.
 *
 * Scales decode as 2^(s - 127) in float32 like the reference: s = 255 (NaN in OCP MX) gives inf.
 */

#include "common.h"


static const float FP4[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                              -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/* SCALE[s] = 2^(s - 127) exactly, as the reference computes it in float32: SCALE[0] is subnormal
 * and SCALE[255] is +inf. Bit patterns, so the table needs no initialisation code. */
#define S4(s) (s) << 23, ((s) + 1) << 23, ((s) + 2) << 23, ((s) + 3) << 23
#define S16(s) S4(s), S4((s) + 4), S4((s) + 8), S4((s) + 12)
static const union { uint32_t u[256]; float f[256]; } SCALE_BITS = {{
    1u << 22, 1u << 23, 2u << 23, 3u << 23, S4(4u), S4(8u), S4(12u),
    S16(16u), S16(32u), S16(48u), S16(64u), S16(80u), S16(96u), S16(112u),
    S16(128u), S16(144u), S16(160u), S16(176u), S16(192u), S16(208u), S16(224u), S16(240u),
}};
#define SCALE (SCALE_BITS.f)

/* ---------------------------------------------------------------------------------------------
 * Portable scalar path: decode one row into a float buffer, then one dot product per token.
 * Eight partial sums keep the error of long rows small.
 */
static void rows_scalar(const float *x, int64_t n, const uint8_t *blocks, const uint8_t *scales,
                        float *y, int64_t r0, int64_t r1, int64_t R, int64_t G, float *wrow) {
    const int64_t K = G * 32;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = blocks + r * G * 16;
        const uint8_t *s = scales + r * G;
        for (int64_t g = 0; g < G; g++) {
            const float sc = SCALE[s[g]];
            float *w = wrow + g * 32;
            for (int i = 0; i < 16; i++) {
                const uint8_t byte = b[g * 16 + i];
                w[2 * i] = FP4[byte & 0xF] * sc;
                w[2 * i + 1] = FP4[byte >> 4] * sc;
            }
        }
        for (int64_t t = 0; t < n; t++) {
            const float *xt = x + t * K;
            float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t k = 0; k < K; k += 8)
                for (int j = 0; j < 8; j++) part[j] += wrow[k + j] * xt[k + j];
            y[t * R + r] = ((part[0] + part[1]) + (part[2] + part[3])) +
                           ((part[4] + part[5]) + (part[6] + part[7]));
        }
    }
}

#ifdef GPTOSS_X86
/* ---------------------------------------------------------------------------------------------
 * AVX2 + FMA path.
 *
 * decode16() turns a block's 16 bytes into 32 floats with shuffles and shifts only: the bytes go to
 * both 128-bit lanes, lane 1 is shifted right by 4 so the lanes hold the low / high nibbles (even /
 * odd elements), two byte shuffles look up the top two bytes of each value's float32 bit pattern,
 * interleaving them gives 16-bit halves, and a shift or a mask turns those into floats. The result
 * is in a fixed permuted order (PERM below); x is permuted the same way once per call, so the dot
 * products are unchanged. Scales are powers of two, so applying them is exact.
 *
 * Up to DIRECT_N tokens (decoding, and an expert's share of a continuous batch's rows): each row is
 * one sequential stream, each pair of blocks is decoded once into registers, and every token's
 * partial dot product q_g . x_g is multiplied by its scale and added to one of two accumulators
 * (even / odd pairs). More tokens (prefill): rows are decoded, scales applied, into a k-major panel
 * that an MR-token tile of plain FMAs then reads for every token. Either way each output element
 * is computed by one thread in a fixed order: results do not depend on the thread count, and a
 * token's result is the same in any batch of 1..DIRECT_N tokens and in any batch of more (the two
 * kernels round differently, by about one float32 ulp of the sum).
 */
#define DIRECT_N 4

/* Top byte (sign + 7 exponent bits) and next byte of the float32 bit pattern of FP4[code]. */
#define LUT_HI 0x00, 0x3F, 0x3F, 0x3F, 0x40, 0x40, 0x40, 0x40, \
               0x80, 0xBF, 0xBF, 0xBF, 0xC0, 0xC0, 0xC0, 0xC0
#define LUT_LO 0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0, \
               0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0

INLINE void decode16(const uint8_t *b, __m256 q[4]) {
    const __m256i lut_hi = _mm256_setr_epi8(LUT_HI, LUT_HI);
    const __m256i lut_lo = _mm256_setr_epi8(LUT_LO, LUT_LO);
    const __m256i top = _mm256_set1_epi32((int)0xFFFF0000u);
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)b));
    v = _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
    const __m256i hi = _mm256_shuffle_epi8(lut_hi, v), lo = _mm256_shuffle_epi8(lut_lo, v);
    const __m256i w01 = _mm256_unpacklo_epi8(lo, hi), w23 = _mm256_unpackhi_epi8(lo, hi);
    q[0] = _mm256_castsi256_ps(_mm256_slli_epi32(w01, 16));
    q[1] = _mm256_castsi256_ps(_mm256_and_si256(w01, top));
    q[2] = _mm256_castsi256_ps(_mm256_slli_epi32(w23, 16));
    q[3] = _mm256_castsi256_ps(_mm256_and_si256(w23, top));
}

/* Element order of decode16's output within each block of 32: q[k] lane j = element PERM[8k + j]. */
static const uint8_t PERM[32] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                 16, 20, 24, 28, 17, 21, 25, 29, 18, 22, 26, 30, 19, 23, 27, 31};

INLINE float reduce(__m256 a) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* acc += s * (q . x) for one block: the one accumulation step every AVX2 kernel uses. */
INLINE __m256 block_step(const __m256 q[4], const float *x, __m256 s, __m256 acc) {
    __m256 t = _mm256_mul_ps(q[0], _mm256_loadu_ps(x));
    t = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(x + 8), t);
    t = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(x + 16), t);
    t = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(x + 24), t);
    return _mm256_fmadd_ps(t, s, acc);
}

/* Two blocks (32 bytes, one per 128-bit lane) decoded at once: low and high nibbles split with one
 * shift, the LUT shuffles and unpacks then build 8 float vectors whose lanes 0-3 come from block
 * g and lanes 4-7 from block g + 1, in the order PAIR_PERM (x is permuted to match once per call);
 * the two scales form one vector. About 10% fewer instructions per block than decode16. */
static const uint8_t PAIR_PERM[8][4] = {{0, 4, 8, 12}, {2, 6, 10, 14}, {16, 20, 24, 28}, {18, 22, 26, 30},
                                        {1, 5, 9, 13}, {3, 7, 11, 15}, {17, 21, 25, 29}, {19, 23, 27, 31}};

INLINE void pair_decode(const uint8_t *b, __m256 q[8]) {
    const __m256i lut_hi = _mm256_setr_epi8(LUT_HI, LUT_HI);
    const __m256i lut_lo = _mm256_setr_epi8(LUT_LO, LUT_LO);
    const __m256i top = _mm256_set1_epi32((int)0xFFFF0000u), m4 = _mm256_set1_epi8(0x0F);
    const __m256i v = _mm256_loadu_si256((const __m256i *)b);
    const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    const __m256i lh = _mm256_shuffle_epi8(lut_hi, lo), ll = _mm256_shuffle_epi8(lut_lo, lo);
    const __m256i hh = _mm256_shuffle_epi8(lut_hi, hi), hl = _mm256_shuffle_epi8(lut_lo, hi);
    const __m256i w[4] = {_mm256_unpacklo_epi8(ll, lh), _mm256_unpackhi_epi8(ll, lh),
                          _mm256_unpacklo_epi8(hl, hh), _mm256_unpackhi_epi8(hl, hh)};
    for (int i = 0; i < 4; i++) {
        q[2 * i] = _mm256_castsi256_ps(_mm256_slli_epi32(w[i], 16));
        q[2 * i + 1] = _mm256_castsi256_ps(_mm256_and_si256(w[i], top));
    }
}

/* q . x for a decoded pair: two chains (even / odd vectors), then their sum. */
INLINE __m256 pair_dot(const __m256 q[8], const float *x) {
    __m256 t = _mm256_mul_ps(q[0], _mm256_loadu_ps(x));
    __m256 u = _mm256_mul_ps(q[1], _mm256_loadu_ps(x + 8));
    for (int i = 1; i < 4; i++) {
        t = _mm256_fmadd_ps(q[2 * i], _mm256_loadu_ps(x + 16 * i), t);
        u = _mm256_fmadd_ps(q[2 * i + 1], _mm256_loadu_ps(x + 16 * i + 8), u);
    }
    return _mm256_add_ps(t, u);
}

/* One row x NT tokens (NT <= DIRECT_N) over x in the direct order (PAIR_PERM per pair of blocks, PERM
 * for an odd last block): each pair of blocks is decoded once into registers and multiplied into
 * every token; the row's bytes are read as one sequential stream. A token's arithmetic is the same
 * whatever NT is, so its result does not depend on how many tokens share the row. */
INLINE void row_direct(const float *x, int64_t K, const uint8_t *b, const uint8_t *s, int64_t G, float *y,
                       int64_t R, const int NT) {
    __m256 even[DIRECT_N], odd[DIRECT_N], q[8];
    for (int t = 0; t < NT; t++) even[t] = odd[t] = _mm256_setzero_ps();
    int64_t g = 0;
    for (; g + 4 <= G; g += 4) {
        __m256 sc = _mm256_set_m128(_mm_broadcast_ss(&SCALE[s[g + 1]]), _mm_broadcast_ss(&SCALE[s[g]]));
        pair_decode(b + g * 16, q);
        for (int t = 0; t < NT; t++) even[t] = _mm256_fmadd_ps(pair_dot(q, x + t * K + g * 32), sc, even[t]);
        sc = _mm256_set_m128(_mm_broadcast_ss(&SCALE[s[g + 3]]), _mm_broadcast_ss(&SCALE[s[g + 2]]));
        pair_decode(b + g * 16 + 32, q);
        for (int t = 0; t < NT; t++) odd[t] = _mm256_fmadd_ps(pair_dot(q, x + t * K + g * 32 + 64), sc, odd[t]);
    }
    if (g + 2 <= G) {
        const __m256 sc = _mm256_set_m128(_mm_broadcast_ss(&SCALE[s[g + 1]]), _mm_broadcast_ss(&SCALE[s[g]]));
        pair_decode(b + g * 16, q);
        for (int t = 0; t < NT; t++) even[t] = _mm256_fmadd_ps(pair_dot(q, x + t * K + g * 32), sc, even[t]);
        g += 2;
    }
    if (g < G) {
        decode16(b + g * 16, q);
        const __m256 sc = _mm256_broadcast_ss(&SCALE[s[g]]);
        for (int t = 0; t < NT; t++) odd[t] = block_step(q, x + t * K + g * 32, sc, odd[t]);
    }
    for (int t = 0; t < NT; t++) y[t * R] = reduce(_mm256_add_ps(even[t], odd[t]));
}

TARGET static void rows_avx2_direct(const float *x, int64_t n, const uint8_t *blocks, const uint8_t *scales,
                                    float *y, int64_t r0, int64_t r1, int64_t R, int64_t G) {
    const int64_t K = G * 32;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = blocks + r * G * 16, *s = scales + r * G;
        switch (n) {  /* constant NT: the token loops unroll */
        case 1: row_direct(x, K, b, s, G, y + r, R, 1); break;
        case 2: row_direct(x, K, b, s, G, y + r, R, 2); break;
        case 3: row_direct(x, K, b, s, G, y + r, R, 3); break;
        default: row_direct(x, K, b, s, G, y + r, R, 4); break;
        }
    }
}

/* Rows [r, r + nr) (nr <= PANEL) decoded, scales applied, into the k-major panel P[K][PANEL] in
 * decode16's element order (PERM within each block); rows past nr are zero. */
TARGET static void panel_mxfp4(const uint8_t *blocks, const uint8_t *scales, int64_t r, int nr, int64_t G,
                               float *P) {
    float S[8][32];
    for (int half = 0; half < PANEL / 8; half++) {
        const int base = half * 8;
        for (int64_t g = 0; g < G; g++) {
            for (int i = 0; i < 8; i++) {
                if (base + i < nr) {
                    const int64_t row = r + base + i;
                    __m256 q[4];
                    decode16(blocks + (row * G + g) * 16, q);
                    const __m256 sc = _mm256_broadcast_ss(&SCALE[scales[row * G + g]]);
                    for (int j = 0; j < 4; j++) _mm256_storeu_ps(S[i] + 8 * j, _mm256_mul_ps(q[j], sc));
                } else {
                    for (int j = 0; j < 4; j++) _mm256_storeu_ps(S[i] + 8 * j, _mm256_setzero_ps());
                }
            }
            for (int j = 0; j < 4; j++) {
                __m256 v[8];
                for (int i = 0; i < 8; i++) v[i] = _mm256_loadu_ps(S[i] + 8 * j);
                transpose8(v);
                float *Pk = P + (g * 32 + 8 * j) * PANEL + base;
                for (int l = 0; l < 8; l++) _mm256_storeu_ps(Pk + l * PANEL, v[l]);
            }
        }
    }
}

int gptoss_have_avx2_fma(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
}

/* x [n, K] -> the element order decode16 produces (PERM within each block of 32). */
/* One row of x (G blocks) -> the direct kernel's order: PAIR_PERM per pair, PERM for an odd last block. */
static void permute_x_direct(const float *x, float *xp, int64_t G) {
    int64_t g = 0;
    for (; g + 2 <= G; g += 2)
        for (int j = 0; j < 8; j++)
            for (int l = 0; l < 8; l++) xp[g * 32 + 8 * j + l] = x[(g + l / 4) * 32 + PAIR_PERM[j][l % 4]];
    if (g < G)
        for (int j = 0; j < 32; j++) xp[g * 32 + j] = x[g * 32 + PERM[j]];
}

static void permute_x(const float *x, float *xp, int64_t count) {
    for (int64_t i = 0; i < count; i += 32)
        for (int j = 0; j < 32; j++) xp[i + j] = x[i + PERM[j]];
}
#else
int gptoss_have_avx2_fma(void) { return 0; }
#endif

/* 1 if the AVX2 + FMA path can run on this CPU. */
int gptoss_mxfp4_has_avx2(void) { return gptoss_have_avx2_fma(); }

/* 1 if this object was built with OpenMP (so nthreads > 1 has an effect). */
int gptoss_mxfp4_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Grouped products for a mixture of experts: token rows grouped by expert, one call for all.
 *
 *   x [total, K] and y [total, R] hold groups of counts[i] consecutive rows (total = sum of counts);
 *   group i is multiplied by expert experts[i] of blocks [E, R, G, 16] and scales [E, R, G].
 *
 * All row-major and contiguous. Work is split into (group, row range) tasks over one thread team.
 * impl: 0 = best available, 1 = scalar, 2 = AVX2 (the scalar path where the CPU lacks it).
 * Returns the implementation used, or -1 if a buffer could not be allocated. */
int gptoss_mxfp4_matmul_grouped(const float *x, const uint8_t *blocks, const uint8_t *scales, float *y,
                                int64_t ngroups, const int64_t *experts, const int64_t *counts, int64_t R,
                                int64_t G, int nthreads, int impl) {
    const int use = impl != IMPL_SCALAR && gptoss_have_avx2_fma() ? IMPL_AVX2 : IMPL_SCALAR;
    int64_t total = 0, most = 0;
    for (int64_t i = 0; i < ngroups; i++) {
        total += counts[i];
        most = counts[i] > most ? counts[i] : most;
    }
    if (total <= 0 || R <= 0) return use;
    if (G <= 0) {
        memset(y, 0, (size_t)(total * R) * sizeof(float));
        return use;
    }
    const int64_t K = G * 32;
    /* offsets: first row of each group; tiles: first packed token tile of each group (prefill). */
    int64_t *offsets = (int64_t *)malloc((size_t)(2 * ngroups) * sizeof(int64_t));
    if (offsets == NULL) return -1;
    int64_t *tiles = offsets + ngroups, ntiles = 0;
    for (int64_t i = 0, off = 0; i < ngroups; off += counts[i], i++) {
        offsets[i] = off;
        tiles[i] = ntiles;
        if (counts[i] > DIRECT_N) ntiles += (counts[i] + MR - 1) / MR;
    }
    float *xp = NULL, *X = NULL;
#ifdef GPTOSS_X86
    if (use == IMPL_AVX2) {
        xp = (float *)malloc((size_t)(total * K) * sizeof(float));
        X = ntiles ? (float *)malloc((size_t)(ntiles * MR * K) * sizeof(float)) : NULL;
        if (xp == NULL || (ntiles && X == NULL)) {
            free(xp);
            free(X);
            free(offsets);
            return -1;
        }
        for (int64_t i = 0; i < ngroups; i++) {
            const float *xi = x + offsets[i] * K;
            float *pi = xp + offsets[i] * K;
            if (counts[i] > DIRECT_N) permute_x(xi, pi, counts[i] * K);  /* the panel kernel's order */
            else
                for (int64_t t = 0; t < counts[i]; t++) permute_x_direct(xi + t * K, pi + t * K, G);
        }
        x = xp;
        for (int64_t i = 0; i < ngroups; i++)
            if (counts[i] > DIRECT_N) gptoss_pack_tokens(x + offsets[i] * K, counts[i], K, X + tiles[i] * MR * K);
    }
#endif
    if (nthreads < 1) nthreads = 1;
    /* Several row ranges per thread and group, so threads stay balanced (also when another
     * process holds a core); a multiple of PANEL rows (whole panels and direct tiles). */
    int64_t rows_per_task = R * ngroups / ((int64_t)nthreads * 8);
    rows_per_task = rows_per_task < PANEL ? PANEL : rows_per_task - rows_per_task % PANEL;
    if (rows_per_task > R) rows_per_task = R;
    const int64_t per_group = (R + rows_per_task - 1) / rows_per_task;
    const int64_t tasks = per_group * ngroups;
    if (tasks < nthreads) nthreads = (int)tasks;
    const int needs_rows = use == IMPL_SCALAR || most > DIRECT_N;
    const size_t row_floats = use == IMPL_SCALAR ? (size_t)K : (size_t)K * PANEL;
    int failed = 0;

#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        float *w = needs_rows ? (float *)malloc(row_floats * sizeof(float)) : NULL;
        if (needs_rows && w == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; task++) {
            const int64_t i = task / per_group;
            const int64_t n = counts[i];
            if (n <= 0 || (w == NULL && (use == IMPL_SCALAR || n > DIRECT_N))) continue;
            const int64_t r0 = task % per_group * rows_per_task;
            const int64_t r1 = r0 + rows_per_task < R ? r0 + rows_per_task : R;
            const float *xi = x + offsets[i] * K;
            float *yi = y + offsets[i] * R;
            const uint8_t *bi = blocks + experts[i] * R * G * 16;
            const uint8_t *si = scales + experts[i] * R * G;
#ifdef GPTOSS_X86
            if (use == IMPL_AVX2) {
                if (n <= DIRECT_N) {
                    rows_avx2_direct(xi, n, bi, si, yi, r0, r1, R, G);
                } else {
                    const float *Xi = X + tiles[i] * MR * K;
                    for (int64_t r = r0; r < r1; r += PANEL) {
                        const int nr = r1 - r >= PANEL ? PANEL : (int)(r1 - r);
                        panel_mxfp4(bi, si, r, nr, G, w);
                        gptoss_panel_tiles(w, Xi, n, K, yi + r, R, nr);
                    }
                }
                continue;
            }
#endif
            rows_scalar(xi, n, bi, si, yi, r0, r1, R, G, w);
        }
        free(w);
    }
    free(X);
    free(xp);
    free(offsets);
    return failed ? -1 : use;
}

/* y[n, R] = x[n, 32 G] . W^T for one packed W (blocks [R, G, 16], scales [R, G]). */
int gptoss_mxfp4_matmul(const float *x, const uint8_t *blocks, const uint8_t *scales, float *y,
                        int64_t n, int64_t R, int64_t G, int nthreads, int impl) {
    const int64_t expert = 0;
    return gptoss_mxfp4_matmul_grouped(x, blocks, scales, y, 1, &expert, &n, R, G, nthreads, impl);
}
