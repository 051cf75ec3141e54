/* Shared helpers for the gptoss CPU kernels (mxfp4_matmul.c, dense.c, attention.c).
 *
 * The object is compiled without -march so one cached build serves any x86-64 CPU: functions
 * that use AVX2 + FMA carry target attributes and are only called after have_avx2_fma() says the
 * CPU has them. Plain C, no Python or torch headers: loaded with ctypes (gptoss/ops/cpu.py).
 */
#ifndef GPTOSS_COMMON_H
#define GPTOSS_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#define GPTOSS_X86 1
#include <immintrin.h>
#define TARGET __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline, target("avx2,fma")))
#endif

#define IMPL_AUTO 0
#define IMPL_SCALAR 1
#define IMPL_AVX2 2

/* Element types shared with cpu.py. */
#define T_F32 0
#define T_BF16 1
#define T_I8 2

int gptoss_have_avx2_fma(void);

static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

/* Round to nearest even, as torch's float -> bfloat16 conversion (NaN stays NaN). */
static inline uint16_t f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = {f};
    if ((v.u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((v.u >> 16) | 0x40);
    return (uint16_t)((v.u + 0x7FFFu + ((v.u >> 16) & 1u)) >> 16);
}

/* Convert n values of type `type` at src to float32 at dst. */
static inline void to_f32(const void *src, int type, float *dst, int64_t n) {
    if (type == T_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
    } else if (type == T_BF16) {
        const uint16_t *s = (const uint16_t *)src;
        for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
    } else {
        const int8_t *s = (const int8_t *)src;
        for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
    }
}

/* Store n float32 values as `type` (T_F32 or T_BF16). */
static inline void from_f32(const float *src, int type, void *dst, int64_t n) {
    if (type == T_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
    } else {
        uint16_t *d = (uint16_t *)dst;
        for (int64_t i = 0; i < n; i++) d[i] = f32_to_bf16(src[i]);
    }
}

static inline int64_t elem_size(int type) { return type == T_F32 ? 4 : type == T_BF16 ? 2 : 1; }

#ifdef GPTOSS_X86
INLINE float hsum256(__m256 a) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* 8 consecutive bf16 values as float32. */
INLINE __m256 load8_bf16(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* 8 consecutive int8 values as float32. */
INLINE __m256 load8_i8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* 8x8 transpose of r[0..7] in place. */
INLINE void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#endif

/* ---------------------------------------------------------------------------------------------
 * Panel GEMM shared by the dense and the MXFP4 prefill paths.
 *
 * Weights are decoded, PANEL rows at a time, into a k-major panel P[k][PANEL] (float32); tokens
 * are packed once per call into tiles of MR tokens, X[tile][k][MR]. A register-blocked MR x PANEL
 * outer-product kernel then reads P from L1 (KC values of k at a time) and broadcasts X. Each
 * output is accumulated over k in one fixed order, whatever the tile, the batch or the thread.
 */
#define PANEL 16
#define MR 6
#define KC 256

/* Pack rows [0, n) of x [n, K] (float32, row stride K) into tiles X[n_tiles][K][MR], zero padded. */
void gptoss_pack_tokens(const float *x, int64_t n, int64_t K, float *X);
/* y[t, 0:nr] (row stride ldy) = X . P over all K for the n tokens of X's tiles (nr rows valid). */
void gptoss_panel_tiles(const float *P, const float *X, int64_t n, int64_t K, float *y, int64_t ldy, int nr);

#endif
