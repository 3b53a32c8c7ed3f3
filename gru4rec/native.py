"""Fused CPU loops for the elementwise and memory-bound parts of a training step, in C.

On CPU a chain of torch operations pays twice: a dispatch per operation (a few
microseconds, which is most of a small model's step) and a pass over memory per
operation with temporaries in between (a few MB per pass, as slow as a sizeable matmul).
One loop per stage fixes both:

    adagrad_momentum_dense_ / _rows_   the optimiser on the flat GRU weights / on distinct
                                       item rows (one read and one write of each tensor)
    sampled_loss_rows                  cross-entropy (+ logQ) or BPR-max (+ ELU, bpreg) and
                                       its gradient, per row in L1, summed per distinct item
    gru_gates / gru_output / *_backward  the GRU's gates and state update, forward and back
    distinct_rows                      the distinct items of a step, without sorting
    sample_inverse_cdf                 negatives by inverse CDF with a guide table
    dropout_mask                       dropout masks from a counter-based generator
    subnormals_flushed                 FTZ/DAZ on torch's CPU threads while training
    add_to_rows                        the input rows' gradients into the item rows'
    top_k_rows                         the k best of each row of a score block, one pass
                                       (recommendation's exact top-k)

The loops are plain C (no torch headers), compiled on first use with the system C
compiler in under a second, cached by content hash under $GRU4REC_CACHE (default: the
temp dir), and called through `ctypes`; with OpenMP they run on torch's own thread pool
(the libgomp torch has loaded). Each has a torch twin with the same arithmetic (the
losses in `gru4rec.losses`, the optimiser in `gru4rec.optim`, the GRU in `fast_step`);
those run where the loops cannot (GPU, float64, no compiler, GRU4REC_NATIVE=0), and
tests/test_native.py checks that both agree.

Example:
    >>> if native.available():
    ...     native.adagrad_momentum_dense_(param, grad, acc, velocity, lr=0.05, momentum=0.1,
    ...                                    eps=1e-6)
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
static inline int omp_thread(void) { return omp_get_thread_num(); }
#else
static inline int omp_thread(void) { return 0; }
#endif

/* ---------------------------------------------------------------- maths */

/* exp(x) in float, Cephes' range reduction and polynomial (about 1 ulp), written so
   that loops over it vectorise. NaN stays NaN; beyond +-88 it saturates. */
static inline float exp_f(float x) {
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    x = x < -87.3365447505531f ? -87.3365447505531f : x;
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale;
    scale.i = ((int32_t)n + 127) << 23;
    return y * scale.f;
}

static inline float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

static inline float tanh_f(float x) {
    const float e = exp_f(-2.0f * fabsf(x));
    const float t = (1.0f - e) / (1.0f + e);
    return x < 0.0f ? -t : t;
}

/* ELU with alpha (0: identity) and its derivative written from the output. */
static inline float elu_f(float x, float alpha) {
    return (alpha == 0.0f || x > 0.0f) ? x : alpha * (exp_f(x) - 1.0f);
}
static inline float elu_grad_f(float y, float alpha) {
    return (alpha == 0.0f || y > 0.0f) ? 1.0f : y + alpha;
}

/* ---------------------------------------------------------------- subnormals

   Set (on = 1) or clear (on = 0) flush-to-zero and denormals-are-zero on the calling
   thread and every thread of the OpenMP pool (the one torch's matmuls run on); returns
   whether the calling thread had them. Returns -1 where there is no such switch. */
#if defined(__x86_64__)
#include <xmmintrin.h>
static void set_mxcsr_ftz_daz(int on) {
    const unsigned int bits = 0x8040u;  /* FTZ | DAZ */
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(on ? (csr | bits) : (csr & ~bits));
}
int64_t flush_subnormals(int64_t on) {
    const int64_t previous = (_mm_getcsr() & 0x8040u) == 0x8040u;
    set_mxcsr_ftz_daz((int)on);
    #pragma omp parallel
    set_mxcsr_ftz_daz((int)on);
    return previous;
}
#else
int64_t flush_subnormals(int64_t on) { (void)on; return -1; }
#endif

/* ---------------------------------------------------------------- optimiser */

/* float -> bfloat16 bits, rounding to nearest even (as torch); NaN stays NaN. */
static inline uint16_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
}

static inline float bf16_value(uint16_t bits) {
    const uint32_t u = (uint32_t)bits << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Adagrad with momentum on n elements: acc += g^2; v = m v - lr g / sqrt(acc + eps); p += v.
   The gradient is fp32 (g) or bfloat16 (g16, the bf16 precision's matmul output). With a
   shadow, the new p also goes there in bfloat16 (the bf16 precision's matmul copy).
   With AVX-512, 1 / sqrt is the hardware estimate refined by a Newton step (within
   2 ulp; a division and a square root per element cost more than all the rest). */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline __m512 adagrad_step16(__m512 g, float* a, float* v, float* p, __m512 lr,
                                    __m512 m, __m512 eps) {
    const __m512 acc = _mm512_fmadd_ps(g, g, _mm512_loadu_ps(a));
    const __m512 x = _mm512_add_ps(acc, eps);
    __m512 r = _mm512_rsqrt14_ps(x);  /* r (1.5 - 0.5 x r^2): one Newton step */
    const __m512 half_x = _mm512_mul_ps(x, _mm512_set1_ps(0.5f));
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(_mm512_mul_ps(half_x, r), r, _mm512_set1_ps(1.5f)));
    const __m512 vel = _mm512_fmsub_ps(m, _mm512_loadu_ps(v), _mm512_mul_ps(_mm512_mul_ps(lr, g), r));
    _mm512_storeu_ps(a, acc);
    _mm512_storeu_ps(v, vel);
    _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), vel));
    return vel;
}
#endif

/* One element, exactly (a division and a square root). */
static inline void adagrad_one(float* p, float* a, float* v, float g, float lr, float m,
                               float eps) {
    const float acc = *a + g * g;
    const float vel = m * *v - lr * g / sqrtf(acc + eps);
    *a = acc;
    *v = vel;
    *p += vel;
}

static inline void adagrad_span(float* p, float* a, float* v, const float* g,
                                const uint16_t* g16, uint16_t* shadow, int64_t n, float lr,
                                float m, float eps) {
    int64_t j = 0;
#if defined(__AVX512F__)
    const __m512 lr16 = _mm512_set1_ps(lr), m16 = _mm512_set1_ps(m), eps16 = _mm512_set1_ps(eps);
    for (; j + 16 <= n; j += 16) {
        const __m512 gj = g ? _mm512_loadu_ps(g + j)
                            : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(
                                  _mm256_loadu_si256((const __m256i*)(g16 + j))), 16));
        adagrad_step16(gj, a + j, v + j, p + j, lr16, m16, eps16);
    }
#endif
    /* The rest (all of it without AVX-512), vectorised by the compiler. */
    if (g) {
        #pragma omp simd
        for (int64_t k = j; k < n; ++k) adagrad_one(p + k, a + k, v + k, g[k], lr, m, eps);
    } else {
        #pragma omp simd
        for (int64_t k = j; k < n; ++k)
            adagrad_one(p + k, a + k, v + k, bf16_value(g16[k]), lr, m, eps);
    }
    if (shadow) {
        #pragma omp simd
        for (int64_t k = 0; k < n; ++k) shadow[k] = bf16_bits(p[k]);
    }
}

void adagrad_dense(float* p, float* a, float* v, const void* g, int64_t grad_bf16,
                   uint16_t* shadow, int64_t n, float lr, float m, float eps) {
    const float* g32 = grad_bf16 ? 0 : (const float*)g;
    const uint16_t* g16 = grad_bf16 ? (const uint16_t*)g : 0;
    const int64_t chunk = 16384;
    #pragma omp parallel for schedule(static) if (n > 4 * chunk)
    for (int64_t start = 0; start < n; start += chunk) {
        const int64_t size = n - start < chunk ? n - start : chunk;
        adagrad_span(p + start, a + start, v + start, g32 ? g32 + start : 0,
                     g16 ? g16 + start : 0, shadow ? shadow + start : 0, size, lr, m, eps);
    }
}

/* The same on distinct rows of (N, d) tables; g holds one row per entry of rows.
   Each thread updates the rows in its own contiguous range of the table, the ranges cut
   where the list's rows are split evenly (a histogram of 1,024 buckets). Not a share of
   the list: the rows come in random order, and two cores writing neighbouring rows (whose
   edges may share a cache line, and whose lines the prefetchers pull in pairs) pass those
   lines back and forth, which made two threads slower than one; a range per thread also
   keeps a small table's rows in that core's cache from step to step. Not halves of the
   table: popular items cluster at low indices (they appear early). */
void adagrad_rows(float* p, float* a, float* v, const int64_t* rows, const void* g,
                  int64_t grad_bf16, uint16_t* shadow, int64_t n_rows, int64_t d,
                  int64_t n_table, float lr, float m, float eps) {
    const float* g32 = grad_bf16 ? 0 : (const float*)g;
    const uint16_t* g16 = grad_bf16 ? (const uint16_t*)g : 0;
    if (d == 1 && g32 && !shadow) {  /* a bias: one element a row, vectorised across rows */
        #pragma omp simd
        for (int64_t i = 0; i < n_rows; ++i)
            adagrad_one(p + rows[i], a + rows[i], v + rows[i], g32[i], lr, m, eps);
        return;
    }
    int team = 1;
#ifdef _OPENMP
    if (n_rows * d > 65536) team = omp_get_max_threads();
#endif
    if (team > 64) team = 64;
    int64_t bound[65];
    bound[0] = 0;
    if (team > 1) {
        int shift = 0;
        while ((n_table >> shift) >= 1024) ++shift;
        int64_t count[1024] = {0};
        for (int64_t i = 0; i < n_rows; ++i) ++count[rows[i] >> shift];
        int t = 1;
        int64_t seen = 0;
        for (int64_t b = 0; b < 1024 && t < team; ++b) {
            seen += count[b];
            while (t < team && seen * team >= (int64_t)t * n_rows) bound[t++] = (b + 1) << shift;
        }
        for (; t < team; ++t) bound[t] = n_table;
    }
    bound[team] = INT64_MAX;
    #pragma omp parallel num_threads(team) if (team > 1)
    {
        const int64_t low = bound[omp_thread()], high = bound[omp_thread() + 1];
        for (int64_t i = 0; i < n_rows; ++i) {
            if (rows[i] < low || rows[i] >= high) continue;
            const int64_t offset = rows[i] * d;
            adagrad_span(p + offset, a + offset, v + offset, g32 ? g32 + i * d : 0,
                         g16 ? g16 + i * d : 0, shadow ? shadow + offset : 0, d, lr, m, eps);
        }
    }
}

/* ---------------------------------------------------------------- sampling

   Inverse-CDF sampling, out[k] = the first i with cumulative[i] > uniform[k] (numpy's
   searchsorted side="right"), capped at n_items - 1. guide[g] (g < n_guide + 1) is that
   index for g / n_guide, so the search for u stays within guide[u n_guide] and the next. */
void sample_inverse_cdf(const double* cumulative, int64_t n_items, const int64_t* guide,
                        int64_t n_guide, const double* uniform, int64_t n, int64_t* out) {
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t k = 0; k < n; ++k) {
        const double u = uniform[k];
        int64_t g = (int64_t)(u * (double)n_guide);
        g = g < 0 ? 0 : (g > n_guide - 1 ? n_guide - 1 : g);
        int64_t lo = guide[g], hi = guide[g + 1] + 1;
        hi = hi > n_items ? n_items : hi;
        while (lo < hi) {  /* first index in [lo, hi) with cumulative > u */
            const int64_t mid = lo + (hi - lo) / 2;
            if (cumulative[mid] > u) hi = mid; else lo = mid + 1;
        }
        out[k] = lo < n_items - 1 ? lo : n_items - 1;
    }
}

/* Dropout masks from a counter-based generator: element e of a site with key k draws
   the e-th output of splitmix64 seeded with k; it is dropped (0) when the top 32 bits
   are below threshold, else kept (scale). `sampling.dropout_bits` is the same in NumPy. */
static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void dropout_mask(uint64_t key, uint64_t start, int64_t count, uint64_t threshold,
                  float scale, float* out) {
    #pragma omp parallel for simd schedule(static) if (count > 65536)
    for (int64_t j = 0; j < count; ++j) {
        const uint64_t bits = splitmix64(key + (start + (uint64_t)j + 1) * 0x9E3779B97F4A7C15ull);
        out[j] = (bits >> 32) < threshold ? 0.0f : scale;
    }
}

/* ---------------------------------------------------------------- rows of a step

   The distinct items of a step in order of first appearance: first those among the
   columns (the scored rows), then the inputs that are not. mark (n_items) must be all
   zero and is left so; slot_of (n_items) is scratch. counts = {U scored, U all}. With
   with_inputs == 0 the inputs are only looked up (slot -1 when not scored). */
void distinct_rows(const int64_t* columns, int64_t n_cols, const int64_t* inputs,
                   int64_t n_inputs, int64_t with_inputs, uint8_t* mark, int64_t* slot_of,
                   int64_t* rows, int64_t* column_slot, int64_t* input_slot, int64_t* counts) {
    int64_t n = 0;
    for (int64_t c = 0; c < n_cols; ++c) {
        const int64_t item = columns[c];
        if (!mark[item]) {
            mark[item] = 1;
            slot_of[item] = n;
            rows[n++] = item;
        }
        column_slot[c] = slot_of[item];
    }
    counts[0] = n;
    for (int64_t b = 0; b < n_inputs; ++b) {
        const int64_t item = inputs[b];
        if (!mark[item]) {
            if (!with_inputs) {
                input_slot[b] = -1;
                continue;
            }
            mark[item] = 1;
            slot_of[item] = n;
            rows[n++] = item;
        }
        input_slot[b] = slot_of[item];
    }
    counts[1] = n;
    for (int64_t k = 0; k < n; ++k) mark[rows[k]] = 0;
}

/* ---------------------------------------------------------------- losses

   Row i of the (B, C) score matrix is row_scores[i, slot[c]] + bias[slot[c]] over the
   columns c: the scores of the distinct items, spread out to the columns. Each loss writes the mean
   loss and d loss / d row_scores (B, U), the columns of an item summed. `work` holds
   3 C floats per thread; `index` U + C int64 (shared).

   (Keep transcendental maths and sums in separate loops: GCC vectorises a loop that
   mixes them with omp simd reductions several times slower.) */

/* first[u]: a column of slot u; extra: the other columns (duplicates). Returns their count. */
static int64_t slot_columns(const int64_t* slot, int64_t n_cols, int64_t n_slots,
                            int64_t* first, int64_t* extra) {
    for (int64_t u = 0; u < n_slots; ++u) first[u] = -1;
    int64_t n_extra = 0;
    for (int64_t c = 0; c < n_cols; ++c) {
        if (first[slot[c]] < 0) first[slot[c]] = c;
        else extra[n_extra++] = c;
    }
    return n_extra;
}

/* out_row[u] = sum of grad[c] over the columns c of slot u. */
static void sum_to_slots(float* out_row, const float* grad, const int64_t* slot,
                         const int64_t* first, const int64_t* extra, int64_t n_extra,
                         int64_t n_slots) {
    #pragma omp simd
    for (int64_t u = 0; u < n_slots; ++u) out_row[u] = first[u] >= 0 ? grad[first[u]] : 0.0f;
    for (int64_t k = 0; k < n_extra; ++k) out_row[slot[extra[k]]] += grad[extra[k]];
}

/* act[c] = elu(scores[slot[c]] + bias[slot[c]]) (bias may be NULL) */
static void gather_elu(float* act, const float* scores, const float* bias, const int64_t* slot,
                       int64_t n_cols, float alpha) {
    if (bias) {
        #pragma omp simd
        for (int64_t c = 0; c < n_cols; ++c) act[c] = scores[slot[c]] + bias[slot[c]];
    } else {
        #pragma omp simd
        for (int64_t c = 0; c < n_cols; ++c) act[c] = scores[slot[c]];
    }
    if (alpha != 0.0f) {
        #pragma omp simd
        for (int64_t c = 0; c < n_cols; ++c) {
            const float x = act[c];
            act[c] = x > 0.0f ? x : alpha * (exp_f(x) - 1.0f);
        }
    }
}

static float max_of(const float* x, int64_t n) {
    float top = -INFINITY;
    #pragma omp simd reduction(max : top)
    for (int64_t c = 0; c < n; ++c) top = x[c] > top ? x[c] : top;
    return top;
}

static float sum_of(const float* x, int64_t n) {
    float total = 0.0f;
    #pragma omp simd reduction(+ : total)
    for (int64_t c = 0; c < n; ++c) total += x[c];
    return total;
}

static void mean_loss(const double* row_loss, int64_t n_rows, float* loss) {
    double total = 0.0;
    for (int64_t i = 0; i < n_rows; ++i) total += row_loss[i];
    *loss = (float)(total / (double)n_rows);
}

void cross_entropy(const float* row_scores, const float* bias, const int64_t* slot,
                   const float* shift, float elu_alpha, int64_t n_rows, int64_t n_slots, int64_t n_cols,
                   float* grad_rows, float* loss, double* row_loss, float* work,
                   int64_t work_stride, int64_t* index, int64_t n_threads) {
    int64_t* first = index;
    int64_t* extra = index + n_slots;
    const int64_t n_extra = slot_columns(slot, n_cols, n_slots, first, extra);
    #pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t i = 0; i < n_rows; ++i) {
        float* act = work + (int64_t)omp_thread() * work_stride;
        float* prob = act + n_cols;
        gather_elu(act, row_scores + i * n_slots, bias, slot, n_cols, elu_alpha);
        if (shift) {
            #pragma omp simd
            for (int64_t c = 0; c < n_cols; ++c) prob[c] = act[c] - shift[c];
        } else {
            memcpy(prob, act, (size_t)n_cols * sizeof(float));
        }
        const float target = prob[i];  /* the target's logit */
        const float top = max_of(prob, n_cols);
        #pragma omp simd
        for (int64_t c = 0; c < n_cols; ++c) prob[c] = exp_f(prob[c] - top);
        const float total = sum_of(prob, n_cols);
        row_loss[i] = (double)top + log((double)total) - (double)target;
        /* d / d logit = softmax - one-hot, over B rows; times the ELU's derivative */
        const float scale = 1.0f / (total * (float)n_rows);
        #pragma omp simd
        for (int64_t c = 0; c < n_cols; ++c)
            prob[c] = prob[c] * scale * elu_grad_f(act[c], elu_alpha);
        prob[i] -= elu_grad_f(act[i], elu_alpha) / (float)n_rows;
        sum_to_slots(grad_rows + i * n_slots, prob, slot, first, extra, n_extra, n_slots);
    }
    mean_loss(row_loss, n_rows, loss);
}

/* With softmax weights w over the negatives, sigma_c = sigmoid(r_target - r_c),
   P = sum w sigma, S = sum w sigma^2, Q = sum w r^2: loss = -log(P + eps) + bpreg Q;
   d / d r_c = w_c ((P - sigma_c^2) / (P + eps) + bpreg (r_c^2 + 2 r_c - Q)) (negatives),
   d / d r_target = -(P - S) / (P + eps). */
void bpr_max(const float* row_scores, const float* bias, const int64_t* slot, float bpreg,
             float elu_alpha,
             int64_t n_rows, int64_t n_slots, int64_t n_cols, float* grad_rows, float* loss,
             double* row_loss, float* work, int64_t work_stride, int64_t* index,
             int64_t n_threads) {
    int64_t* first = index;
    int64_t* extra = index + n_slots;
    const int64_t n_extra = slot_columns(slot, n_cols, n_slots, first, extra);
    #pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int64_t i = 0; i < n_rows; ++i) {
        float* act = work + (int64_t)omp_thread() * work_stride;
        float* weight = act + n_cols;
        float* sigma = weight + n_cols;
        float* out_row = grad_rows + i * n_slots;
        if (n_cols < 2) {  /* no negatives: nothing to rank */
            row_loss[i] = 0.0;
            memset(out_row, 0, (size_t)n_slots * sizeof(float));
            continue;
        }
        gather_elu(act, row_scores + i * n_slots, bias, slot, n_cols, elu_alpha);
        const float target = act[i];
        act[i] = -INFINITY;  /* the softmax runs over the negatives only */
        const float top = max_of(act, n_cols);
        act[i] = target;
        #pragma omp simd
        for (int64_t c = 0; c < n_cols; ++c) {
            weight[c] = exp_f(act[c] - top);
            sigma[c] = 1.0f / (1.0f + exp_f(act[c] - target));
        }
        weight[i] = 0.0f;
        float total = 0.0f, hit = 0.0f, hit_sq = 0.0f, penalty = 0.0f;
        #pragma omp simd reduction(+ : total, hit, hit_sq, penalty)
        for (int64_t c = 0; c < n_cols; ++c) {
            const float w = weight[c], s = sigma[c], a = act[c];
            total += w;
            hit += w * s;
            hit_sq += w * s * s;
            penalty += w * a * a;
        }
        hit /= total;
        hit_sq /= total;
        penalty /= total;
        const float denom = hit + 1e-24f;
        row_loss[i] = -log((double)denom) + (double)bpreg * (double)penalty;
        const float inv_b = 1.0f / (float)n_rows;
        const float inv_total = 1.0f / total;
        #pragma omp simd
        for (int64_t c = 0; c < n_cols; ++c) {
            const float a = act[c], s = sigma[c];
            const float g = weight[c] * inv_total
                            * ((hit - s * s) / denom + bpreg * (a * a + 2.0f * a - penalty));
            weight[c] = g * inv_b * elu_grad_f(a, elu_alpha);
        }
        weight[i] = -(hit - hit_sq) / denom * inv_b * elu_grad_f(target, elu_alpha);
        sum_to_slots(out_row, weight, slot, first, extra, n_extra, n_slots);
    }
    mean_loss(row_loss, n_rows, loss);
}

/* ---------------------------------------------------------------- GRU elementwise

   rz: (B, 2H) the hidden state's part of the reset and update gates (h U_rz); with gx
   (B, 3H, the input's part x W) and bias (3H), each may be NULL, their first 2H columns are
   added, then sigmoid, in place; reset_hidden = r * h. Then candidate: (B, H) the hidden
   part (r h) U_c, plus gx[:, 2H:] and bias[2H:], made tanh in place; diff = c - h;
   new_hidden = h + z diff; output = new_hidden * mask (mask may be NULL). Adding the input
   part and the bias here, not in the matmuls, spares copying them into the matmul's output
   first (addmm's beta) in a separate pass. */

void gru_gates(float* rz, const float* gx, const float* bias, const float* h,
               float* reset_hidden, int64_t n_rows, int64_t size) {
    #pragma omp parallel for schedule(static) if (n_rows * size > 32768)
    for (int64_t b = 0; b < n_rows; ++b) {
        float* g = rz + b * 2 * size;
        const float* x = gx ? gx + b * 3 * size : 0;
        const float* hb = h + b * size;
        float* rh = reset_hidden + b * size;
        if (x) {
            #pragma omp simd
            for (int64_t j = 0; j < 2 * size; ++j) g[j] += x[j];
        }
        if (bias) {
            #pragma omp simd
            for (int64_t j = 0; j < 2 * size; ++j) g[j] += bias[j];
        }
        #pragma omp simd
        for (int64_t j = 0; j < 2 * size; ++j) g[j] = sigmoid_f(g[j]);
        #pragma omp simd
        for (int64_t j = 0; j < size; ++j) rh[j] = g[j] * hb[j];
    }
}

void gru_output(float* candidate, const float* gx, const float* bias, const float* h,
                const float* rz, float* diff, float* new_hidden, const float* mask,
                float* output, int64_t n_rows, int64_t size) {
    #pragma omp parallel for schedule(static) if (n_rows * size > 32768)
    for (int64_t b = 0; b < n_rows; ++b) {
        const int64_t o = b * size;
        const float* z = rz + b * 2 * size + size;
        float* cb = candidate + o;
        if (gx) {
            const float* x = gx + b * 3 * size + 2 * size;
            #pragma omp simd
            for (int64_t j = 0; j < size; ++j) cb[j] += x[j];
        }
        if (bias) {
            #pragma omp simd
            for (int64_t j = 0; j < size; ++j) cb[j] += bias[2 * size + j];
        }
        #pragma omp simd
        for (int64_t j = 0; j < size; ++j) {
            const float c = tanh_f(cb[j]);
            const float d = c - h[o + j];
            const float hn = h[o + j] + z[j] * d;
            cb[j] = c;
            diff[o + j] = d;
            new_hidden[o + j] = hn;
            if (mask) output[o + j] = hn * mask[o + j];
        }
    }
}

/* Backward of gru_output and the candidate's tanh: with dh' = grad_output * mask,
   d z (pre-sigmoid, into grad_gates[:, H:2H]) = dh' diff z (1 - z);
   d a_c (into grad_gates[:, 2H:]) = dh' z (1 - c^2). grad_gates is (B, 3H). */
void gru_output_backward(const float* grad_output, const float* mask, const float* diff,
                         const float* rz, const float* candidate, float* grad_gates,
                         int64_t n_rows, int64_t size) {
    #pragma omp parallel for schedule(static) if (n_rows * size > 32768)
    for (int64_t b = 0; b < n_rows; ++b) {
        const int64_t o = b * size;
        const float* z = rz + b * 2 * size + size;
        float* dz = grad_gates + b * 3 * size + size;
        float* dc = dz + size;
        #pragma omp simd
        for (int64_t j = 0; j < size; ++j) {
            const float dh = mask ? grad_output[o + j] * mask[o + j] : grad_output[o + j];
            const float c = candidate[o + j];
            dz[j] = dh * diff[o + j] * z[j] * (1.0f - z[j]);
            dc[j] = dh * z[j] * (1.0f - c * c);
        }
    }
}

/* d r (pre-sigmoid, into grad_gates[:, :H]) = d(r h) h r (1 - r). */
void gru_reset_backward(const float* grad_reset_hidden, const float* h, const float* rz,
                        float* grad_gates, int64_t n_rows, int64_t size) {
    #pragma omp parallel for schedule(static) if (n_rows * size > 32768)
    for (int64_t b = 0; b < n_rows; ++b) {
        const int64_t o = b * size;
        const float* r = rz + b * 2 * size;
        float* dr = grad_gates + b * 3 * size;
        #pragma omp simd
        for (int64_t j = 0; j < size; ++j)
            dr[j] = grad_reset_hidden[o + j] * h[o + j] * r[j] * (1.0f - r[j]);
    }
}

/* Rows [first, n_dst) of dst (n_dst, d) set to 0, then dst[slot[b]] += src[b] for each of
   the n_src rows of src: the input rows' gradients added to the item rows' (slots repeat,
   so one thread). */
void add_to_rows(float* dst, int64_t first, int64_t n_dst, const int64_t* slot,
                 const float* src, int64_t n_src, int64_t d) {
    memset(dst + first * d, 0, (size_t)((n_dst - first) * d) * sizeof(float));
    for (int64_t b = 0; b < n_src; ++b) {
        float* out = dst + slot[b] * d;
        const float* in = src + b * d;
        #pragma omp simd
        for (int64_t j = 0; j < d; ++j) out[j] += in[j];
    }
}

/* ---------------------------------------------------------------- top-k

   The k largest of each row of a score block (n_rows, n_cols) into values / indices
   (n_rows, k), best first; equal scores keep the lower column first; NaN is never chosen
   (a row with fewer than k other values ends with -inf / -1). With merge, the block's
   columns (numbered from offset) compete with the k already there (from earlier blocks
   of lower columns) instead of starting afresh. One pass per row: a block of 16 is looked
   at element by element only when its maximum beats the current k-th best, which after
   the first few blocks is rare, so the scan runs at the speed of reading the scores. */
static inline void top_k_insert(float* val, int64_t* idx, int64_t size, float x, int64_t j) {
    int64_t p = size - 1;  /* the last slot is dropped (or was empty) */
    while (p > 0 && val[p - 1] < x) {
        val[p] = val[p - 1];
        idx[p] = idx[p - 1];
        --p;
    }
    val[p] = x;
    idx[p] = j;
}

void top_k_rows(const float* scores, int64_t n_rows, int64_t n_cols, int64_t k,
                int64_t offset, int64_t merge, float* values, int64_t* indices) {
    #pragma omp parallel for schedule(static) if (n_rows * n_cols > 65536)
    for (int64_t i = 0; i < n_rows; ++i) {
        const float* row = scores + i * n_cols;
        float* val = values + i * k;
        int64_t* idx = indices + i * k;
        int64_t filled = 0, j = 0;
        if (merge) {
            while (filled < k && idx[filled] >= 0) ++filled;
        } else {
            for (int64_t t = 0; t < k; ++t) {
                val[t] = -INFINITY;
                idx[t] = -1;
            }
        }
        for (; j < n_cols && filled < k; ++j)  /* fill up with values that are not NaN */
            if (row[j] == row[j]) top_k_insert(val, idx, ++filled, row[j], offset + j);
        for (; j + 16 <= n_cols; j += 16) {
            float top = -INFINITY;
            #pragma omp simd reduction(max : top)
            for (int64_t t = 0; t < 16; ++t) top = row[j + t] > top ? row[j + t] : top;
            if (top > val[k - 1])
                for (int64_t t = 0; t < 16; ++t)
                    if (row[j + t] > val[k - 1])
                        top_k_insert(val, idx, k, row[j + t], offset + j + t);
        }
        for (; j < n_cols; ++j)
            if (row[j] > val[k - 1]) top_k_insert(val, idx, k, row[j], offset + j);
    }
}
"""

# -fopenmp: the loops share torch's OpenMP runtime (libgomp.so.1, already loaded by torch)
# and so its thread count; without OpenMP they run on one thread.
_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno",
          "-fno-trapping-math", "-shared", "-fPIC"]  # fmt: skip
_OPENMP_FLAGS = ["-fopenmp"]
_SERIAL_FLAGS = ["-fopenmp-simd"]
_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float


def available() -> bool:
    """Whether the fused loops are compiled and loaded (compiling them on the first call)."""
    return _library() is not None


def usable(*tensors: Tensor) -> bool:
    """Whether `tensors` can go to the fused loops: contiguous CPU tensors of fp32 or int64
    (or bf16, which only gradients may be)."""
    return available() and all(
        t.device.type == "cpu" and t.is_contiguous() and t.dtype in _DTYPES for t in tensors
    )


_DTYPES = (torch.float32, torch.int64, torch.bfloat16)


def adagrad_momentum_dense_(
    param: Tensor, grad: Tensor, acc: Tensor, velocity: Tensor, *, lr: float, momentum: float,
    eps: float, shadow: Tensor | None = None,
) -> None:  # fmt: skip
    """`optim.adagrad_momentum_dense_` in one pass; all contiguous, same size, fp32 but the
    gradient (fp32 or bf16). shadow: optional bf16 tensor that gets the updated parameter.
    """
    library = _library()
    assert library is not None
    library.adagrad_dense(
        param.data_ptr(), acc.data_ptr(), velocity.data_ptr(), grad.data_ptr(),
        int(grad.dtype == torch.bfloat16), _pointer(shadow),
        param.numel(), lr, momentum, eps,
    )  # fmt: skip


def adagrad_momentum_rows_(
    param: Tensor, rows: Tensor, grad: Tensor, acc: Tensor, velocity: Tensor, *, lr: float,
    momentum: float, eps: float, shadow: Tensor | None = None,
) -> None:  # fmt: skip
    """The update of `param[rows]` for distinct `rows` (U,); grad: (U, d), tables (N, d).

    shadow: optional bf16 copy of the table whose rows get the updated parameter.
    """
    library = _library()
    assert library is not None
    width = param[0].numel() if param.ndim > 1 else 1
    library.adagrad_rows(
        param.data_ptr(), acc.data_ptr(), velocity.data_ptr(), rows.data_ptr(),
        grad.data_ptr(), int(grad.dtype == torch.bfloat16),
        _pointer(shadow), rows.numel(), width,
        param.shape[0], lr, momentum, eps,
    )  # fmt: skip


def flush_subnormals(on: bool) -> bool:
    """Set (or clear) FTZ/DAZ, subnormal floats read and written as zero, on this thread
    and every thread of torch's CPU pool; returns whether this thread had it. Without
    the fused loops, torch's switch (this thread only) is used."""
    library = _library()
    if library is None:
        torch.set_flush_denormal(on)
        return False
    return bool(library.flush_subnormals(int(on)) == 1)


@contextlib.contextmanager
def subnormals_flushed() -> Iterator[None]:
    """`flush_subnormals(True)` for the block, restored on exit.

    Gradients of far-off softmax columns underflow towards subnormals (below 1.2e-38),
    and x86 matmuls and loops over them run several times slower (3-4x on the rsc15
    preset's backward matmuls); flushed to 0, no float32 update can tell the difference.
    """
    previous = flush_subnormals(True)
    try:
        yield
    finally:
        flush_subnormals(previous)


def sample_inverse_cdf(cumulative: Tensor, guide: Tensor, uniform: Tensor, out: Tensor) -> Tensor:
    """out = searchsorted(cumulative, uniform, right=True) capped at n_items - 1, using the
    guide table `guide` (n_guide + 1,) = that search for arange(n_guide + 1) / n_guide.

    cumulative, uniform: float64; guide, out: int64; all contiguous CPU tensors.
    """
    library = _library()
    assert library is not None
    library.sample_inverse_cdf(
        cumulative.data_ptr(), cumulative.numel(), guide.data_ptr(), guide.numel() - 1,
        uniform.data_ptr(), uniform.numel(), out.data_ptr(),
    )  # fmt: skip
    return out


def dropout_mask(key: int, start: int, threshold: int, scale: float, out: Tensor) -> Tensor:
    """out (contiguous fp32 CPU) = the masks of elements start.. of a site (see the C)."""
    library = _library()
    assert library is not None
    library.dropout_mask(key, start, out.numel(), threshold, scale, out.data_ptr())
    return out


def work_floats(n_cols: int) -> int:
    """Scratch floats per thread that the loss loops need for C columns."""
    return 3 * n_cols


def distinct_rows(
    columns: Tensor, inputs: Tensor, with_inputs: bool, mark: Tensor, slot_of: Tensor,
    rows: Tensor, column_slot: Tensor, input_slot: Tensor, counts: Tensor,
) -> tuple[int, int]:  # fmt: skip
    """Distinct items of `columns` (C,), then of `inputs` (B,) if `with_inputs`, in order of
    first appearance, into `rows`; each column's and input's position in it into
    `column_slot`, `input_slot`. mark: (n_items,) uint8 zeros; slot_of: (n_items,) int64.
    Returns (U scored, U all)."""
    library = _library()
    assert library is not None
    library.distinct_rows(
        columns.data_ptr(), columns.numel(), inputs.data_ptr(), inputs.numel(), int(with_inputs),
        mark.data_ptr(), slot_of.data_ptr(), rows.data_ptr(), column_slot.data_ptr(),
        input_slot.data_ptr(), counts.data_ptr(),
    )  # fmt: skip
    n_scored, n_all = counts.tolist()
    return n_scored, n_all


def sampled_loss_rows(
    row_scores: Tensor,
    column_slot: Tensor,
    *,
    row_bias: Tensor | None = None,
    loss: str,
    logq_shift: Tensor | None,
    bpreg: float,
    elu_param: float,
    grad_rows: Tensor,
    loss_out: Tensor,
    row_loss: Tensor,
    work: Tensor,
    index: Tensor,
) -> Tensor:
    """`losses.sampled_loss_and_grad` of `(row_scores + row_bias)[:, column_slot]`, with the
    gradient's columns of each item summed into `grad_rows` (B, U), in one pass per row.

    row_scores, grad_rows: (B, U) fp32; row_bias: (U,) or None; column_slot: (C,) int64;
    logq_shift: (C,) or None;
    loss_out: () fp32, gets the mean loss; row_loss: (>= B,) float64, work:
    (>= threads * work_floats(C),) fp32 and index: (>= U + C,) int64 are scratch.
    Returns loss_out.
    """
    library = _library()
    assert library is not None
    n_rows, n_slots = row_scores.shape
    n_cols = column_slot.numel()
    stride = work_floats(n_cols)
    n_threads = max(1, min(torch.get_num_threads(), work.numel() // stride))
    if loss == "cross-entropy":
        library.cross_entropy(
            row_scores.data_ptr(), _pointer(row_bias),
            column_slot.data_ptr(),
            _pointer(logq_shift), elu_param, n_rows,
            n_slots, n_cols, grad_rows.data_ptr(), loss_out.data_ptr(), row_loss.data_ptr(),
            work.data_ptr(), stride, index.data_ptr(), n_threads,
        )  # fmt: skip
    else:
        library.bpr_max(
            row_scores.data_ptr(), _pointer(row_bias),
            column_slot.data_ptr(), bpreg, elu_param, n_rows, n_slots,
            n_cols, grad_rows.data_ptr(), loss_out.data_ptr(), row_loss.data_ptr(),
            work.data_ptr(), stride, index.data_ptr(), n_threads,
        )  # fmt: skip
    return loss_out


def gru_gates(
    gates_rz: Tensor, hidden: Tensor, reset_hidden: Tensor, *, gates_x: Tensor | None = None,
    bias: Tensor | None = None,
) -> None:  # fmt: skip
    """In place: gates_rz (B, 2H) = sigmoid(gates_rz + gates_x[:, :2H] + bias[:2H]) (the
    optional terms skipped when None); reset_hidden (B, H) = r * hidden. gates_x (B, 3H)."""
    library = _library()
    assert library is not None
    n_rows, size = hidden.shape
    library.gru_gates(
        gates_rz.data_ptr(), _pointer(gates_x), _pointer(bias), hidden.data_ptr(),
        reset_hidden.data_ptr(), n_rows, size,
    )  # fmt: skip


def gru_output(
    candidate: Tensor, hidden: Tensor, gates_rz: Tensor, diff: Tensor, new_hidden: Tensor,
    mask: Tensor | None, output: Tensor, *, gates_x: Tensor | None = None,
    bias: Tensor | None = None,
) -> None:  # fmt: skip
    """candidate = tanh(candidate + gates_x[:, 2H:] + bias[2H:]) in place (the optional terms
    skipped when None); diff = c - h; new_hidden = h + z diff; output = new_hidden * mask
    (skipped without a mask). All (B, H) but gates_rz (B, 2H) and gates_x (B, 3H)."""
    library = _library()
    assert library is not None
    n_rows, size = hidden.shape
    library.gru_output(
        candidate.data_ptr(), _pointer(gates_x), _pointer(bias), hidden.data_ptr(),
        gates_rz.data_ptr(), diff.data_ptr(), new_hidden.data_ptr(), _pointer(mask),
        output.data_ptr(), n_rows, size,
    )  # fmt: skip


def _pointer(tensor: Tensor | None) -> int | None:
    """The address of an optional tensor (NULL for None)."""
    return tensor.data_ptr() if tensor is not None else None


def gru_output_backward(
    grad_output: Tensor, mask: Tensor | None, diff: Tensor, gates_rz: Tensor,
    candidate: Tensor, grad_gates: Tensor,
) -> None:  # fmt: skip
    """grad_gates[:, H:] (B, 3H) = d pre-activations of z and of the candidate."""
    library = _library()
    assert library is not None
    n_rows, size = diff.shape
    library.gru_output_backward(
        grad_output.data_ptr(), _pointer(mask),
        diff.data_ptr(), gates_rz.data_ptr(), candidate.data_ptr(), grad_gates.data_ptr(),
        n_rows, size,
    )  # fmt: skip


def gru_reset_backward(
    grad_reset_hidden: Tensor, hidden: Tensor, gates_rz: Tensor, grad_gates: Tensor
) -> None:
    """grad_gates[:, :H] = d pre-activation of r, from d (r h) (B, H)."""
    library = _library()
    assert library is not None
    n_rows, size = hidden.shape
    library.gru_reset_backward(grad_reset_hidden.data_ptr(), hidden.data_ptr(),
                               gates_rz.data_ptr(), grad_gates.data_ptr(), n_rows, size)  # fmt: skip


def add_to_rows(dst: Tensor, first: int, slot: Tensor, src: Tensor) -> None:
    """dst[first:] = 0, then dst[slot[b]] += src[b] for every row b of src: as
    `dst[first:].zero_(); dst.index_add_(0, slot, src)`. dst (N, d), src (B, d) contiguous
    fp32; slot (B,) int64 with values < N."""
    library = _library()
    assert library is not None
    n_dst, width = dst.shape
    library.add_to_rows(
        dst.data_ptr(), first, n_dst, slot.data_ptr(), src.data_ptr(), src.shape[0], width
    )  # fmt: skip


def top_k_rows(
    scores: Tensor, k: int, values: Tensor, indices: Tensor, *, offset: int = 0,
    merge: bool = False,
) -> None:  # fmt: skip
    """The k best of each row of `scores` (R, N) fp32 into `values` (R, k) fp32 and
    `indices` (R, k) int64, best first, ties to the lower column, NaN never chosen (its
    places stay -inf / -1): `torch.topk` up to the order of ties. All contiguous CPU tensors.

    To go through the columns in blocks: each block's columns are numbered from `offset`,
    and `merge` keeps the top k of the earlier blocks (lower columns) in the competition.
    """
    library = _library()
    assert library is not None
    n_rows, n_cols = scores.shape
    library.top_k_rows(
        scores.data_ptr(), n_rows, n_cols, k, offset, int(merge), values.data_ptr(),
        indices.data_ptr(),
    )  # fmt: skip


@cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("GRU4REC_NATIVE", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    try:
        library = ctypes.CDLL(str(_build()))
    except OSError as error:
        logger.warning(
            "fused CPU loops unavailable (%s); training uses the slower torch versions. "
            "Install a C compiler (cc) to get them.", error,
        )  # fmt: skip
        return None
    library.adagrad_dense.argtypes = [_P, _P, _P, _P, _I, _P, _I, _F, _F, _F]
    library.adagrad_rows.argtypes = [_P, _P, _P, _P, _P, _I, _P, _I, _I, _I, _F, _F, _F]
    library.flush_subnormals.argtypes = [_I]
    library.flush_subnormals.restype = ctypes.c_int64
    library.sample_inverse_cdf.argtypes = [_P, _I, _P, _I, _P, _I, _P]
    library.dropout_mask.argtypes = [ctypes.c_uint64, ctypes.c_uint64, _I, ctypes.c_uint64, _F, _P]
    library.distinct_rows.argtypes = [_P, _I, _P, _I, _I, _P, _P, _P, _P, _P, _P]
    library.cross_entropy.argtypes = [_P, _P, _P, _P, _F, _I, _I, _I, _P, _P, _P, _P, _I, _P, _I]
    library.bpr_max.argtypes = [_P, _P, _P, _F, _F, _I, _I, _I, _P, _P, _P, _P, _I, _P, _I]
    library.gru_gates.argtypes = [_P, _P, _P, _P, _P, _I, _I]
    library.gru_output.argtypes = [_P, _P, _P, _P, _P, _P, _P, _P, _P, _I, _I]
    library.gru_output_backward.argtypes = [_P, _P, _P, _P, _P, _P, _I, _I]
    library.gru_reset_backward.argtypes = [_P, _P, _P, _P, _I, _I]
    library.top_k_rows.argtypes = [_P, _I, _I, _I, _I, _I, _P, _P]
    library.add_to_rows.argtypes = [_P, _I, _I, _P, _P, _I, _I]
    return library


def _build() -> Path:
    """Compile the loops once per source, flags and CPU; return the shared library's path."""
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    compiler = compiler.split()[0]
    if shutil.which(compiler) is None:
        compiler = "cc"
    if shutil.which(compiler) is None:
        raise OSError("no C compiler found")
    key = hashlib.sha256(
        "\0".join([_SOURCE, compiler, *_FLAGS, *_OPENMP_FLAGS, _cpu_flags()]).encode()
    ).hexdigest()[:16]
    cache_dir = Path(
        os.environ.get("GRU4REC_CACHE", Path(tempfile.gettempdir()) / f"gru4rec-{os.getuid()}")
    )
    target = cache_dir / f"native-{key}.so"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as work:
        source = Path(work) / "native.c"
        source.write_text(_SOURCE)
        built = Path(work) / "native.so"
        for extra in (_OPENMP_FLAGS, _SERIAL_FLAGS):
            done = subprocess.run(
                [compiler, *_FLAGS, *extra, str(source), "-o", str(built), "-lm"],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                break
        else:
            raise OSError(f"{compiler} failed: {done.stderr.strip()[:500]}")
        os.replace(built, target)  # atomic: concurrent builders agree on the result
    logger.debug("compiled fused CPU loops into %s", target)
    return target


def _cpu_flags() -> str:
    """The CPU's feature flags (the build uses -march=native)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""
