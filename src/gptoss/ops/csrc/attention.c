/* Grouped-query attention with learned sinks and an optional causal band, reading the KV cache in
 * place (any row and slot strides: a ring buffer or a growing cache, no copy, no gather).
 *
 *   q   [B, T, Hkv, G, D] float32, contiguous; query head h = kv * G + g reads kv head kv
 *   k,v element (b, s, kv, d) at b * sb + s * ss + kv * D + d (float32 or bf16)
 *   kpos[b * psb + s]: absolute position of slot s (-1 = empty); qpos [B, T] contiguous
 *   out [B, T, Hkv * G * D] float32
 *
 * Key s is visible to a query at position p when 0 <= kpos <= p and, with a window, kpos > p - window.
 * Scores are float32; the softmax runs over the visible scores plus the head's sink logit, whose
 * probability is then dropped (rows may sum to less than one), exactly as ops.reference.attention.
 * One task per (row, query token, kv head); each computes its G heads in a fixed order.
 */
#include "common.h"

#ifdef GPTOSS_X86
/* exp(x) for float32 lanes: Cody-Waite range reduction and a degree-6 polynomial (about 1 ulp;
 * -inf gives 0). */
INLINE __m256 exp256(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-88.3762626647949f);
    const __m256 is_small = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(is_small, y);
}

INLINE __m256 kv_load8(const void *base, int type, int64_t i) {
    return type == T_BF16 ? load8_bf16((const uint16_t *)base + i) : _mm256_loadu_ps((const float *)base + i);
}

/* One (row, token, kv head): nvis visible slots idx[0..nvis), scores sc[G][nvis] scratch. */
TARGET static void head_avx2(const float *q, const void *k, const void *v, int type, int64_t ss, int64_t off,
                             const int32_t *idx, int64_t nvis, int64_t G, int64_t D, const float *sinks, float scale,
                             float *sc, float *out) {
    for (int64_t g = 0; g < G; g++) {
        const float *qg = q + g * D;
        float *s = sc + g * nvis;
        for (int64_t j = 0; j < nvis; j++) {
            const int64_t base = off + idx[j] * ss;
            __m256 a = _mm256_setzero_ps();
            for (int64_t d = 0; d < D; d += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(qg + d), kv_load8(k, type, base + d), a);
            s[j] = hsum256(a) * scale;
        }
        float m = sinks[g];
        for (int64_t j = 0; j < nvis; j++) m = s[j] > m ? s[j] : m;
        const __m256 mv = _mm256_set1_ps(m);
        __m256 sum = _mm256_setzero_ps();
        int64_t j = 0;
        for (; j + 8 <= nvis; j += 8) {
            const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), mv));
            _mm256_storeu_ps(s + j, e);
            sum = _mm256_add_ps(sum, e);
        }
        float total = hsum256(sum);
        for (; j < nvis; j++) {
            s[j] = expf(s[j] - m);
            total += s[j];
        }
        total += expf(sinks[g] - m);
        const float inv = 1.0f / total;
        __m256 acc[32];
        const int64_t nd = D / 8;
        for (int64_t d = 0; d < nd; d++) acc[d] = _mm256_setzero_ps();
        for (j = 0; j < nvis; j++) {
            const __m256 p = _mm256_set1_ps(s[j] * inv);
            const int64_t base = off + idx[j] * ss;
            for (int64_t d = 0; d < nd; d++) acc[d] = _mm256_fmadd_ps(p, kv_load8(v, type, base + 8 * d), acc[d]);
        }
        for (int64_t d = 0; d < nd; d++) _mm256_storeu_ps(out + g * D + 8 * d, acc[d]);
    }
}
#endif

static float kv_val(const void *base, int type, int64_t i) {
    return type == T_BF16 ? bf16_to_f32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

static void head_scalar(const float *q, const void *k, const void *v, int type, int64_t ss, int64_t off,
                        const int32_t *idx, int64_t nvis, int64_t G, int64_t D, const float *sinks, float scale,
                        float *sc, float *out) {
    for (int64_t g = 0; g < G; g++) {
        float *s = sc + g * nvis;
        float m = sinks[g];
        for (int64_t j = 0; j < nvis; j++) {
            float a = 0.0f;
            for (int64_t d = 0; d < D; d++) a += q[g * D + d] * kv_val(k, type, off + idx[j] * ss + d);
            s[j] = a * scale;
            m = s[j] > m ? s[j] : m;
        }
        float total = expf(sinks[g] - m);
        for (int64_t j = 0; j < nvis; j++) {
            s[j] = expf(s[j] - m);
            total += s[j];
        }
        for (int64_t d = 0; d < D; d++) out[g * D + d] = 0.0f;
        for (int64_t j = 0; j < nvis; j++) {
            const float p = s[j] / total;
            for (int64_t d = 0; d < D; d++) out[g * D + d] += p * kv_val(v, type, off + idx[j] * ss + d);
        }
    }
}

/* Returns 0, or -1 when a buffer could not be allocated. */
int gptoss_attention(const void *q, int qtype, int64_t B, int64_t T, int64_t Hkv, int64_t G, int64_t D,
                     const void *k, const void *v, int type, int64_t sb, int64_t ss, int64_t S, const int64_t *kpos,
                     int64_t psb, const int64_t *qpos, const float *sinks, int64_t window, float scale, void *out,
                     int nthreads, int impl) {
    const int avx2 = impl != IMPL_SCALAR && gptoss_have_avx2_fma() && D % 8 == 0 && D <= 256;
    const int64_t tasks = B * T * Hkv;
    if (tasks <= 0) return 0;
    if (nthreads < 1) nthreads = 1;
    if (tasks < nthreads) nthreads = (int)tasks;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        int32_t *idx = (int32_t *)malloc((size_t)(S > 0 ? S : 1) * sizeof(int32_t));
        float *sc = (float *)malloc((size_t)(S > 0 ? S : 1) * (size_t)G * sizeof(float));
        float *qf = (float *)malloc((size_t)(2 * G * D) * sizeof(float)); /* the query heads, then the output */
        if (idx == NULL || sc == NULL || qf == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; task++) {
            if (idx == NULL || sc == NULL || qf == NULL) continue;
            const int64_t b = task / (T * Hkv), t = task / Hkv % T, h = task % Hkv;
            const int64_t p = qpos[b * T + t];
            const int64_t at = ((b * T + t) * Hkv + h) * G * D;
            float *o = qf + G * D;
            int64_t nvis = 0;
            for (int64_t s = 0; s < S; s++) {
                const int64_t kp = kpos[b * psb + s];
                if (kp >= 0 && kp <= p && (window <= 0 || kp > p - window)) idx[nvis++] = (int32_t)s;
            }
            to_f32((const char *)q + at * elem_size(qtype), qtype, qf, G * D);
            const int64_t off = b * sb + h * D;
#ifdef GPTOSS_X86
            if (avx2)
                head_avx2(qf, k, v, type, ss, off, idx, nvis, G, D, sinks + h * G, scale, sc, o);
            else
#endif
                head_scalar(qf, k, v, type, ss, off, idx, nvis, G, D, sinks + h * G, scale, sc, o);
            from_f32(o, qtype, (char *)out + at * elem_size(qtype), G * D);
        }
        free(idx);
        free(sc);
        free(qf);
    }
    return failed ? -1 : 0;
}

/* Rotary embedding in place on the first `heads` heads of each row of x [n, ld] (xtype):
 * for each head, dims i and i + D/2 rotate by the row's angle i (cos/sin [n, D/2] float32,
 * concentration already applied), in float32, rounded back to xtype as the reference does. */
void gptoss_rope(void *x, int xtype, int64_t n, int64_t ld, int64_t heads, int64_t D, const float *cos,
                 const float *sin) {
    const int64_t half = D / 2;
    for (int64_t t = 0; t < n; t++) {
        const float *c = cos + t * half, *s = sin + t * half;
        for (int64_t h = 0; h < heads; h++) {
            const int64_t base = t * ld + h * D;
            for (int64_t i = 0; i < half; i++) {
                float a, b;
                if (xtype == T_F32) {
                    a = ((float *)x)[base + i];
                    b = ((float *)x)[base + i + half];
                } else {
                    a = bf16_to_f32(((uint16_t *)x)[base + i]);
                    b = bf16_to_f32(((uint16_t *)x)[base + i + half]);
                }
                const float ra = a * c[i] - b * s[i], rb = b * c[i] + a * s[i];
                if (xtype == T_F32) {
                    ((float *)x)[base + i] = ra;
                    ((float *)x)[base + i + half] = rb;
                } else {
                    ((uint16_t *)x)[base + i] = f32_to_bf16(ra);
                    ((uint16_t *)x)[base + i + half] = f32_to_bf16(rb);
                }
            }
        }
    }
}

/* Append new tokens to a KV cache in place (ops.kv_write): caches kc, vc [B, S1, E] (E = Hkv * D, element
 * size esize, S1 = capacity + 1 scratch slot), slot positions pc [B, S1]; new keys / values at
 * k + (b * ksb + t * kst) * esize (E contiguous elements each), positions pos[b * psb + t] (-1 = padding,
 * never written). Row b's valid tokens go to slots lengths[b], lengths[b] + 1, ... (modulo the capacity
 * for a ring, where only the newest `capacity` of them are written: older ones would collide);
 * new_lengths[b] = lengths[b] + its valid tokens. Returns the largest new length; a growing cache
 * (ring == 0) whose capacity that exceeds is left untouched, for the caller to grow and call again. */
int64_t gptoss_kv_write(void *kc, void *vc, int64_t *pc, int64_t B, int64_t S1, int64_t E, int64_t esize,
                        const int64_t *lengths, int64_t *new_lengths, const void *k, int64_t ksb, int64_t kst,
                        const void *v, int64_t vsb, int64_t vst, const int64_t *pos, int64_t psb, int64_t pst,
                        int64_t T, int64_t ring) {
    const int64_t cap = S1 - 1;
    int64_t most = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t n = 0;
        for (int64_t t = 0; t < T; t++) n += pos[b * psb + t * pst] >= 0;
        new_lengths[b] = lengths[b] + n;
        most = new_lengths[b] > most ? new_lengths[b] : most;
    }
    if (!ring && most > cap) return most;
    const size_t bytes = (size_t)(E * esize);
    for (int64_t b = 0; b < B; b++) {
        const int64_t n = new_lengths[b] - lengths[b];
        int64_t r = 0;
        for (int64_t t = 0; t < T; t++) {
            const int64_t p = pos[b * psb + t * pst];
            if (p < 0) continue;
            if (!ring || r >= n - cap) {
                const int64_t i = lengths[b] + r, slot = ring ? i % cap : i;
                const int64_t at = b * S1 + slot;
                memcpy((char *)kc + at * (int64_t)bytes, (const char *)k + (b * ksb + t * kst) * esize, bytes);
                memcpy((char *)vc + at * (int64_t)bytes, (const char *)v + (b * vsb + t * vst) * esize, bytes);
                pc[at] = p;
            }
            r++;
        }
    }
    return most;
}
