/* The whole mixture-of-experts block for x [n, H] in one call, so that decoding a token costs
 * two grouped MXFP4 products and no per-op Python dispatch:
 *
 *   router logits (x . Wr^T + br, rounded to x's type) -> top-k, softmax over the k (float32)
 *   -> (token, slot) pairs grouped by expert (tokens ascending within an expert)
 *   -> u = x W1[e]^T + b1[e] (rounded) -> clamped interleaved SwiGLU (rounded after every
 *      elementwise op when x is bf16, as torch's bf16 ops round)
 *   -> y = a W2[e]^T + b2[e] (rounded) -> out[token] = sum over its experts, ascending expert
 *      order, of weight * y, in float32, then rounded to x's type.
 *
 * This is ops.reference.moe step for step; only summation orders inside the products differ.
 */
#include "common.h"

int gptoss_linear(const void *x, int xtype, int64_t n, int64_t K, const void *w, int wtype, const float *wscale,
                  const void *bias, int btype, void *y, int ytype, int64_t R, int nthreads, int impl);
int gptoss_mxfp4_matmul_grouped(const float *x, const uint8_t *blocks, const uint8_t *scales, float *y,
                                int64_t ngroups, const int64_t *experts, const int64_t *counts, int64_t R,
                                int64_t G, int nthreads, int impl);

/* Round v to xtype's precision (a no-op for float32). */
static inline float rnd(float v, int xtype) { return xtype == T_BF16 ? bf16_to_f32(f32_to_bf16(v)) : v; }

static inline float tval(const void *p, int type, int64_t i) {
    return type == T_F32 ? ((const float *)p)[i] : bf16_to_f32(((const uint16_t *)p)[i]);
}

/* Returns 0, -1 when out of memory, -2 for bad arguments. */
int gptoss_moe(const void *x, int xtype, int64_t n, int64_t H, const void *router_w, const void *router_b, int wtype,
               int64_t E, int64_t top_k, const uint8_t *blocks1, const uint8_t *scales1, const void *b1,
               const uint8_t *blocks2, const uint8_t *scales2, const void *b2, int btype, int64_t I, float limit,
               float alpha, void *out, int nthreads, int impl) {
    if (n <= 0) return 0;
    if (top_k < 1 || top_k > E || top_k > 64 || H % 32 || I % 32) return -2;
    const int64_t P = n * top_k, I2 = 2 * I;
    float *logits = (float *)malloc((size_t)(n * E) * sizeof(float));
    float *wts = (float *)malloc((size_t)P * sizeof(float));
    int64_t *eid = (int64_t *)malloc((size_t)P * sizeof(int64_t));
    int64_t *order = (int64_t *)malloc((size_t)P * sizeof(int64_t));
    int64_t *experts = (int64_t *)malloc((size_t)E * sizeof(int64_t));
    int64_t *counts = (int64_t *)calloc((size_t)E, sizeof(int64_t));
    int64_t *start = (int64_t *)malloc((size_t)(E + 1) * sizeof(int64_t));
    float *h = (float *)malloc((size_t)(P * H) * sizeof(float));
    float *u = (float *)malloc((size_t)(P * I2) * sizeof(float));
    float *a = (float *)malloc((size_t)(P * I) * sizeof(float));
    float *y = (float *)malloc((size_t)(P * H) * sizeof(float));
    float *acc = (float *)malloc((size_t)(n * H) * sizeof(float));
    int rc = 0;
    if (!logits || !wts || !eid || !order || !experts || !counts || !start || !h || !u || !a || !y || !acc) {
        rc = -1;
        goto done;
    }
    /* Router: logits rounded to x's type, like F.linear in that type. */
    if (gptoss_linear(x, xtype, n, H, router_w, wtype, NULL, router_b, wtype, logits, T_F32, E, 1, impl) < 0) {
        rc = -1;
        goto done;
    }
    for (int64_t t = 0; t < n; t++) {
        float *l = logits + t * E;
        for (int64_t e = 0; e < E; e++) l[e] = rnd(l[e], xtype);
        /* Top-k by selection: largest first, the lower expert index first among equals. */
        int64_t *sel = eid + t * top_k;
        for (int64_t j = 0; j < top_k; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++) {
                int taken = 0;
                for (int64_t q = 0; q < j; q++) taken |= sel[q] == e;
                if (!taken && (best < 0 || l[e] > l[best])) best = e;
            }
            sel[j] = best;
        }
        const float m = l[sel[0]];
        float sum = 0.0f;
        for (int64_t j = 0; j < top_k; j++) sum += (wts[t * top_k + j] = expf(l[sel[j]] - m));
        for (int64_t j = 0; j < top_k; j++) wts[t * top_k + j] /= sum;
    }
    /* Stable counting sort of the pairs by expert (pair p = token p / k, slot p % k). */
    for (int64_t p = 0; p < P; p++) counts[eid[p]]++;
    int64_t ng = 0;
    start[0] = 0;
    for (int64_t e = 0; e < E; e++) start[e + 1] = start[e] + counts[e];
    {
        int64_t *fill = experts; /* reuse as a cursor array before compacting */
        for (int64_t e = 0; e < E; e++) fill[e] = start[e];
        for (int64_t p = 0; p < P; p++) order[fill[eid[p]]++] = p;
    }
    for (int64_t e = 0; e < E; e++)
        if (counts[e]) {
            experts[ng] = e;
            counts[ng] = counts[e];
            ng++;
        }
    if (nthreads < 1) nthreads = 1;
    const int par = P >= 16 ? nthreads : 1; /* the elementwise steps below are parallel for prefill */
#pragma omp parallel for num_threads(par) if (par > 1) schedule(static)
    for (int64_t i = 0; i < P; i++) to_f32((const char *)x + (order[i] / top_k) * H * elem_size(xtype), xtype, h + i * H, H);
    if (gptoss_mxfp4_matmul_grouped(h, blocks1, scales1, u, ng, experts, counts, I2, H / 32, nthreads, impl) < 0) {
        rc = -1;
        goto done;
    }
#pragma omp parallel for num_threads(par) if (par > 1) schedule(static)
    for (int64_t i = 0; i < P; i++) {
        const int64_t e = eid[order[i]];
        const float *ui = u + i * I2;
        float *ai = a + i * I;
        for (int64_t c = 0; c < I; c++) {
            float g = rnd(ui[2 * c] + tval(b1, btype, e * I2 + 2 * c), xtype);
            float lin = rnd(ui[2 * c + 1] + tval(b1, btype, e * I2 + 2 * c + 1), xtype);
            g = g < limit ? g : limit;
            lin = lin < -limit ? -limit : lin > limit ? limit : lin;
            const float z = rnd(alpha * g, xtype);
            const float s = rnd(1.0f / (1.0f + expf(-z)), xtype);
            ai[c] = rnd(rnd(g * s, xtype) * rnd(lin + 1.0f, xtype), xtype);
        }
    }
    if (gptoss_mxfp4_matmul_grouped(a, blocks2, scales2, y, ng, experts, counts, H, I / 32, nthreads, impl) < 0) {
        rc = -1;
        goto done;
    }
    /* inv[p]: where pair p sits in expert order. */
    int64_t *inv = (int64_t *)h; /* h is no longer needed: P * H floats >= P int64 */
    for (int64_t i = 0; i < P; i++) inv[order[i]] = i;
#pragma omp parallel for num_threads(par) if (par > 1) schedule(static)
    for (int64_t t = 0; t < n; t++) {
        /* This token's pairs in ascending expert order (top_k is small: insertion sort). */
        int64_t js[64];
        const int64_t kk = top_k < 64 ? top_k : 64;
        for (int64_t j = 0; j < kk; j++) {
            int64_t q = j;
            while (q > 0 && eid[t * top_k + js[q - 1]] > eid[t * top_k + j]) {
                js[q] = js[q - 1];
                q--;
            }
            js[q] = j;
        }
        float *o = acc + t * H;
        for (int64_t c = 0; c < H; c++) o[c] = 0.0f;
        for (int64_t q = 0; q < kk; q++) {
            const int64_t p = t * top_k + js[q], e = eid[p];
            const float w = wts[p];
            const float *yi = y + inv[p] * H;
            for (int64_t c = 0; c < H; c++) o[c] += rnd(yi[c] + tval(b2, btype, e * H + c), xtype) * w;
        }
        from_f32(o, xtype, (char *)out + t * H * elem_size(xtype), H);
    }
done:
    free(logits);
    free(wts);
    free(eid);
    free(order);
    free(experts);
    free(counts);
    free(start);
    free(h);
    free(u);
    free(a);
    free(y);
    free(acc);
    return rc;
}
