/* The CPU training kernel: whole epochs of the seed recipe in C.
 *
 * Python (hooked_mlp/cpu_kernel.py) owns every buffer; this file runs the arithmetic that the
 * torch backend in hooked_mlp/training.py describes, step by step:
 *
 *     pre    = W_in[a] + W_in[p + b] + b_in        post = relu(pre)
 *     logits = post @ W_out + b_out                G = (softmax(logits) - onehot(y)) / bs
 *     dW_out = post^T @ G      db_out = sum_i G    dpre = (G @ W_out^T) * (pre > 0)
 *     dW_in  = rows a and p + b of dpre, added     db_in = sum_i dpre
 *
 * then one step of torch.optim.AdamW's formula (torch rounds two of its lines with a fused
 * multiply-add, this file rounds each operation, so the last bits can differ; AdamW's scalars
 * are computed in double and rounded once, as torch does). The three matrix products go
 * to the BLAS that SciPy ships (its `sgemm`, handed over as a function pointer), held to one
 * thread per caller; the rest is plain loops the compiler vectorises.
 *
 * Determinism. Each step is computed as two half-batches (samples [0, h) and [h, bs) with
 * h = ceil(bs / 2)): each half's gradients go to their own buffer, and AdamW adds the two. So
 * a seed's arithmetic is fixed by the recipe alone: one thread computing both halves and two
 * threads computing one half each give the same bits, and so does any set of seeds sharing a
 * call (each seed is trained on its own, one after another). Loss sums are kept in double, per
 * half, and added in a fixed order. The batch order is computed here too (see shuffle_order),
 * equal to hooked_mlp.data.permutations.
 *
 * The GIL is released while a call runs, so Python threads can run other seeds, or a
 * validation pass, side by side.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__) && __has_include(<linux/futex.h>)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#define HAVE_FUTEX 1
#endif

typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *,
                         const float *, const float *, const int *, const float *, const int *,
                         const float *, float *, const int *);
typedef int (*threads_fn)(int);
typedef int (*get_threads_fn)(void);

static sgemm_fn blas_sgemm = NULL;
/* OpenBLAS >= 0.3.27 sets its thread count per calling thread; older ones only globally. */
static threads_fn blas_threads_local = NULL;
static threads_fn blas_threads_global = NULL; /* returns nothing useful; see blas_one_thread */
static get_threads_fn blas_get_threads = NULL;
static pthread_mutex_t blas_lock = PTHREAD_MUTEX_INITIALIZER;
static int blas_callers = 0, blas_saved = 0;

/* One build per instruction set for the hot loops, picked at load time (GCC >= 11 knows the
 * x86-64-v3/v4 names; the dispatch needs glibc's ifunc). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) && \
    defined(__GLIBC__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif
#define INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------------ BLAS */

/* C = op(A) @ op(B) in BLAS's column-major terms. */
static void gemm(char ta, char tb, int m, int n, int k, const float *A, int lda, const float *B,
                 int ldb, float *C, int ldc) {
    const float one = 1.0f, zero = 0.0f;
    blas_sgemm(&ta, &tb, &m, &n, &k, &one, A, &lda, B, &ldb, &zero, C, &ldc);
}

/* Hold the BLAS to one thread for the calling thread (each of ours runs its own products):
 * per thread where OpenBLAS can, else globally while any of our calls runs. */
static int blas_one_thread(void) {
    if (blas_threads_local) return blas_threads_local(1);
    if (blas_threads_global && blas_get_threads) {
        pthread_mutex_lock(&blas_lock);
        if (blas_callers++ == 0) {
            blas_saved = blas_get_threads();
            blas_threads_global(1);
        }
        pthread_mutex_unlock(&blas_lock);
    }
    return -1;
}
static void blas_restore(int before) {
    if (blas_threads_local) {
        if (before > 0) blas_threads_local(before);
        return;
    }
    if (blas_threads_global && blas_get_threads) {
        pthread_mutex_lock(&blas_lock);
        if (--blas_callers == 0 && blas_saved > 0) blas_threads_global(blas_saved);
        pthread_mutex_unlock(&blas_lock);
    }
}

/* ------------------------------------------------------------------------------ batch order */

INLINE uint32_t mix32(uint32_t x) { /* the 'lowbias32' mixer, as hooked_mlp.data._mix32 */
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* perm[0..n) sorts i by mix32(prefix ^ i): hooked_mlp.data.permutations for a seed whose draw
 * has this prefix (the keys there start with these 32 bits, which differ for every i). An LSD
 * radix sort, 8 bits a pass; `tmp` holds 3n words. */
static void shuffle_order(uint32_t prefix, int n, int32_t *perm, uint32_t *tmp) {
    uint32_t *key = tmp, *key2 = tmp + n;
    int32_t *idx2 = (int32_t *)(tmp + 2 * (size_t)n);
    for (int i = 0; i < n; i++) {
        key[i] = mix32(prefix ^ (uint32_t)i);
        perm[i] = i;
    }
    uint32_t *ks = key, *kd = key2;
    int32_t *is = perm, *id = idx2;
    for (int shift = 0; shift < 32; shift += 8) {
        int count[257] = {0};
        for (int i = 0; i < n; i++) count[((ks[i] >> shift) & 255) + 1]++;
        for (int d = 0; d < 256; d++) count[d + 1] += count[d];
        for (int i = 0; i < n; i++) {
            int at = count[(ks[i] >> shift) & 255]++;
            kd[at] = ks[i];
            id[at] = is[i];
        }
        uint32_t *kt = ks; ks = kd; kd = kt;
        int32_t *it = is; is = id; id = it;
    }
    /* four passes: the result is back in perm */
}

/* ------------------------------------------------------------------------------ arithmetic */

/* exp(x) for x <= 0 (Cody-Waite reduction and Cephes' polynomial, ~1 ulp), written so that it
 * vectorises; NaN stays NaN, and below -87 it returns exp(-87) < 2e-38 (a softmax ignores it). */
INLINE float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + shift;
    float n = t - shift;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float q = 1.9875691500e-4f;
    q = q * r + 1.3981999507e-3f;
    q = q * r + 8.3334519073e-3f;
    q = q * r + 4.1665795894e-2f;
    q = q * r + 1.6666665459e-1f;
    q = q * r + 5.0000001201e-1f;
    float y = q * r * r + r + 1.0f;
    union {
        float f;
        uint32_t i;
    } bits = {t};
    bits.i = (bits.i - 0x4B400000u + 127u) << 23; /* t's low mantissa bits hold n: make 2^n */
    return y * bits.f;
}

/* post[i, :H] = relu(W_in[ra[i]] + W_in[rb[i]] + b_in) for bs rows of stride H + 1 (column H
 * holds a constant 1, so that one product with the gradient also sums it: see backward). */
HOT static void embed(const float *W_in, const float *b_in, const int32_t *ra, const int32_t *rb,
                      int bs, int H, float *post) {
    for (int i = 0; i < bs; i++) {
        const float *wa = W_in + (size_t)ra[i] * H, *wb = W_in + (size_t)rb[i] * H;
        float *o = post + (size_t)i * (H + 1);
        for (int h = 0; h < H; h++) {
            float v = (wa[h] + wb[h]) + b_in[h];
            o[h] = v < 0.0f ? 0.0f : v; /* NaN stays NaN, as in torch.relu */
        }
    }
}

/* The logits are held class-major, L[c * ld + i] for sample i: every loop below runs along
 * the samples, so each sample's max, sum and loss are accumulated in its own lane, in the same
 * order whatever the vector width. Adds b_out; adds each sample's loss -log p(y) (from the
 * logits, so it cannot underflow) to *loss_sum and whether y's logit is the largest to *hits.
 * With `scale` != 0, L becomes the gradient (softmax - onehot(y)) * scale. NaN or inf in a
 * sample's logits makes its loss NaN. `work` holds 4 * ld floats. */
HOT static void softmax_cols(float *restrict L, int ld, const float *restrict b_out,
                             const int32_t *restrict y, int bs, int P, float scale,
                             float *restrict work, double *loss_sum, double *hits) {
    float *m = work, *s = work + ld, *ly = work + 2 * ld, *k = work + 3 * ld;
    for (int i = 0; i < bs; i++) {
        m[i] = -INFINITY;
        s[i] = 0.0f;
    }
    for (int c = 0; c < P; c++) {
        float *row = L + (size_t)c * ld;
        const float bc = b_out[c];
        for (int i = 0; i < bs; i++) {
            float v = row[i] + bc;
            row[i] = v;
            m[i] = v > m[i] ? v : m[i];
        }
    }
    for (int i = 0; i < bs; i++) ly[i] = L[(size_t)y[i] * ld + i];
    for (int c = 0; c < P; c++) {
        float *row = L + (size_t)c * ld;
        for (int i = 0; i < bs; i++) {
            float e = exp_nonpositive(row[i] - m[i]);
            row[i] = e;
            s[i] += e;
        }
    }
    double loss = 0.0, hit = 0.0;
    for (int i = 0; i < bs; i++) {
        loss += (m[i] - ly[i]) + logf(s[i]); /* inf - inf and NaN both end up here as NaN */
        hit += ly[i] >= m[i];
        k[i] = scale / s[i];
    }
    *loss_sum += loss;
    *hits += hit;
    if (scale == 0.0f) return;
    for (int c = 0; c < P; c++) {
        float *row = L + (size_t)c * ld;
        for (int i = 0; i < bs; i++) row[i] *= k[i];
    }
    for (int i = 0; i < bs; i++) L[(size_t)y[i] * ld + i] -= scale;
}

/* The scalars of one AdamW step, each computed in double and then rounded once, as torch
 * does (1 - beta2 from a float beta2 would be off by 1e-5 of itself). */
typedef struct {
    float decay, b2, one_minus_b1, one_minus_b2, eps, step_size, bc2_sqrt;
} AdamScalars;

static AdamScalars adam_scalars(double lr, double b1, double b2, double wd, double eps,
                                long long step) {
    AdamScalars a;
    a.decay = (float)(1.0 - lr * wd);
    a.b2 = (float)b2;
    a.one_minus_b1 = (float)(1.0 - b1);
    a.one_minus_b2 = (float)(1.0 - b2);
    a.eps = (float)eps;
    a.step_size = (float)(lr / (1.0 - pow(b1, (double)step)));
    a.bc2_sqrt = (float)sqrt(1.0 - pow(b2, (double)step));
    return a;
}

/* AdamW on n values, torch.optim.AdamW(weight_decay=wd)'s formula for one step, for the gradient
 * g1 + g2 (the two half-batches). */
HOT static void adamw(float *restrict w, float *restrict m, float *restrict v,
                      const float *restrict g1, const float *restrict g2, size_t n,
                      AdamScalars a) {
    for (size_t j = 0; j < n; j++) {
        float gj = g1[j] + g2[j];
        float mj = m[j] + a.one_minus_b1 * (gj - m[j]);
        float vj = a.b2 * v[j] + a.one_minus_b2 * gj * gj;
        m[j] = mj;
        v[j] = vj;
        w[j] = w[j] * a.decay - a.step_size * mj / (sqrtf(vj) / a.bc2_sqrt + a.eps);
    }
}

INLINE void add_row(float *restrict dst, const float *restrict src, int w) {
    for (int c = 0; c < w; c++) dst[c] += src[c];
}

/* The backward pass of bs samples, once softmax_cols has turned L into the gradient G of the
 * logits. `grad` is laid out [W_in (2p, H); b_in (H); W_out (H, P); b_out (P)], so b_in is
 * W_in's row 2p and b_out is W_out's row H: post's constant column H makes the first product
 * write db_out too, and every sample's dpre is added to rows a, p + b and 2p. */
HOT static void backward(const float *W_out, const float *post, const float *G, int ld,
                         const int32_t *ra, const int32_t *rb, int bs, int p, int H, int P,
                         float *dpost, float *grad) {
    const int H1 = H + 1;
    float *gW_in = grad, *gW_out = grad + (2 * (size_t)p + 1) * H;
    /* dW_out[h, c] = sum_i post[i, h] G[i, c] for h <= H: column-major [P, H + 1] */
    gemm('T', 'T', P, H1, bs, G, ld, post, H1, gW_out, P);
    /* dpost[i, h] = sum_c G[i, c] W_out[h, c]: column-major [H, bs] */
    gemm('T', 'T', H, bs, P, W_out, P, G, ld, dpost, H);
    memset(gW_in, 0, sizeof(float) * (2 * (size_t)p + 1) * H);
    float *gb_in = gW_in + 2 * (size_t)p * H;
    for (int i = 0; i < bs; i++) {
        float *d = dpost + (size_t)i * H;
        const float *o = post + (size_t)i * H1;
        for (int h = 0; h < H; h++) d[h] = o[h] > 0.0f ? d[h] : 0.0f;
        add_row(gW_in + (size_t)ra[i] * H, d, H);
        add_row(gW_in + (size_t)rb[i] * H, d, H);
        add_row(gb_in, d, H);
    }
}

/* ------------------------------------------------------------------------------ buffers */

typedef struct {
    float *W_in, *b_in, *W_out, *b_out;
} Params;

static Params seed_view(float *base, const Py_ssize_t off[4], int s, int p, int H, int P) {
    Params q;
    q.W_in = base + off[0] + (size_t)s * 2 * p * H;
    q.b_in = base + off[1] + (size_t)s * H;
    q.W_out = base + off[2] + (size_t)s * H * P;
    q.b_out = base + off[3] + (size_t)s * P;
    return q;
}

/* Values in one seed's parameters, and in a gradient buffer: W_in, b_in, W_out, b_out. */
static size_t n_params(int p, int H, int P) {
    return (2 * (size_t)p + 1) * H + ((size_t)H + 1) * P;
}

/* One thread's buffers, for up to `rows` samples at a time. */
typedef struct {
    float *mem, *post, *L, *dpost, *grad, *work;
    int32_t *ra, *rb, *y;
    int ld; /* stride of L: rows rounded up to 16 floats */
} Scratch;

static int scratch_alloc(Scratch *sc, int rows, int p, int H, int P, int with_grad) {
    const size_t ld = ((size_t)rows + 15) / 16 * 16;
    const size_t n_post = (size_t)rows * (H + 1), n_L = (size_t)P * ld;
    const size_t n_dpost = with_grad ? (size_t)rows * H : 0;
    const size_t n_grad = with_grad ? n_params(p, H, P) : 0;
    const size_t n_work = 4 * ld, n_idx = 3 * (size_t)rows;
    size_t total = (n_L + n_post + n_dpost + n_grad + n_work + n_idx + 15) / 16 * 16;
    sc->mem = aligned_alloc(64, sizeof(float) * total);
    if (!sc->mem) return 0;
    sc->ld = (int)ld;
    sc->L = sc->mem; /* first, so that it is 64-byte aligned, and so is each of its rows */
    sc->post = sc->L + n_L;
    sc->dpost = sc->post + n_post;
    sc->grad = sc->dpost + n_dpost;
    sc->work = sc->grad + n_grad;
    sc->ra = (int32_t *)(sc->work + n_work);
    sc->rb = sc->ra + rows;
    sc->y = sc->rb + rows;
    for (int i = 0; i < rows; i++) sc->post[(size_t)i * (H + 1) + H] = 1.0f;
    return 1;
}

/* The rows of W_in and the labels of samples order[0..bs). */
static void gather_rows(Scratch *sc, const int64_t *order, int bs, int p, const int64_t *a_of,
                        const int64_t *b_of, const int64_t *lab) {
    for (int i = 0; i < bs; i++) {
        int64_t k = order[i];
        sc->ra[i] = (int32_t)a_of[k];
        sc->rb[i] = (int32_t)(p + b_of[k]);
        sc->y[i] = (int32_t)lab[k];
    }
}

/* logits of bs samples into sc->L (class-major, without b_out) */
static void forward(const Params *w, Scratch *sc, int bs, int H, int P) {
    embed(w->W_in, w->b_in, sc->ra, sc->rb, bs, H, sc->post);
    /* L[c * ld + i] = sum_h post[i, h] W_out[h, c]: column-major [bs, P] */
    gemm('T', 'T', bs, P, H, sc->post, H + 1, w->W_out, P, sc->L, sc->ld);
}

/* ------------------------------------------------------------------------------ two threads */

typedef struct {
    atomic_int count, phase, sleepers;
} Barrier;

#ifdef HAVE_FUTEX
static void sleep_while(atomic_int *addr, int value) {
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}
static void wake_all(atomic_int *addr) {
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}
#else
static void sleep_while(atomic_int *addr, int value) { sched_yield(); }
static void wake_all(atomic_int *addr) {}
#endif

/* Wait until n threads have arrived. A waiter spins briefly (the other half of a step is
 * usually microseconds away), then sleeps, so that a busy machine's scheduler can give its
 * core to the thread being waited for. */
static void barrier_wait(Barrier *b, int n) {
    if (n == 1) return;
    int phase = atomic_load(&b->phase);
    if (atomic_fetch_add(&b->count, 1) == n - 1) {
        atomic_store(&b->count, 0);
        atomic_store(&b->phase, phase + 1);
        if (atomic_load(&b->sleepers) > 0) wake_all(&b->phase);
        return;
    }
    for (int spins = 0; spins < 4000; spins++) {
        if (atomic_load_explicit(&b->phase, memory_order_acquire) != phase) return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    atomic_fetch_add(&b->sleepers, 1);
    while (atomic_load(&b->phase) == phase) sleep_while(&b->phase, phase);
    atomic_fetch_sub(&b->sleepers, 1);
}

/* ------------------------------------------------------------------------------ training */

typedef struct {
    /* the call */
    int p, H, P, B, n, s_lo, s_hi, nthreads;
    Py_ssize_t off[4];
    float *flat, *mom, *vel;
    const int64_t *train_idx, *prefixes, *a_of, *b_of, *lab;
    long long step0;
    double lr, b1, b2, wd, eps;
    double *out;
    /* shared between the threads */
    Scratch half[2];
    int64_t *order;  /* [n] this seed's pair indices in batch order */
    int32_t *perm;   /* [n] */
    uint32_t *keys;  /* [3n] */
    double loss[2], hits[2];
    Barrier bar;
} Train;

/* Samples [lo, lo + bs) of the epoch as two halves; this thread's share of the step. */
static void half_step(Train *t, const Params *w, int h, int lo, int bs) {
    const int first = (bs + 1) / 2, start = h ? first : 0, rows = h ? bs - first : first;
    Scratch *sc = &t->half[h];
    t->loss[h] = t->hits[h] = 0.0;
    if (rows == 0) { /* a batch of one sample: the second half is empty */
        memset(sc->grad, 0, sizeof(float) * n_params(t->p, t->H, t->P));
        return;
    }
    gather_rows(sc, t->order + lo + start, rows, t->p, t->a_of, t->b_of, t->lab);
    forward(w, sc, rows, t->H, t->P);
    softmax_cols(sc->L, sc->ld, w->b_out, sc->y, rows, t->P, 1.0f / (float)bs, sc->work,
                 &t->loss[h], &t->hits[h]);
    backward(w->W_out, sc->post, sc->L, sc->ld, sc->ra, sc->rb, rows, t->p, t->H, t->P,
             sc->dpost, sc->grad);
}

/* AdamW on the values [lo, hi) of the seed's parameters, taken as W_in, b_in, W_out, b_out
 * one after another (the layout of the gradient buffers). */
static void adamw_span(Train *t, Params *w, Params *m, Params *v, size_t lo, size_t hi,
                       AdamScalars adam) {
    const size_t sizes[4] = {2 * (size_t)t->p * t->H, (size_t)t->H, (size_t)t->H * t->P,
                             (size_t)t->P};
    float *wv[4] = {w->W_in, w->b_in, w->W_out, w->b_out};
    float *mv[4] = {m->W_in, m->b_in, m->W_out, m->b_out};
    float *vv[4] = {v->W_in, v->b_in, v->W_out, v->b_out};
    size_t start = 0;
    for (int k = 0; k < 4; start += sizes[k], k++) {
        if (hi <= start || lo >= start + sizes[k]) continue;
        size_t a = lo > start ? lo - start : 0, b = hi < start + sizes[k] ? hi - start : sizes[k];
        adamw(wv[k] + a, mv[k] + a, vv[k] + a, t->half[0].grad + start + a,
              t->half[1].grad + start + a, b - a, adam);
    }
}

/* The whole call, run by thread `tid` of t->nthreads (1 or 2) in lock-step. */
static void train_seeds(Train *t, int tid) {
    const int T = t->nthreads, n = t->n;
    const size_t total = n_params(t->p, t->H, t->P);
    const size_t cut = T == 1 ? total : (total / 2 + 15) / 16 * 16;
    int before = blas_one_thread();
    for (int s = t->s_lo; s < t->s_hi; s++) {
        Params w = seed_view(t->flat, t->off, s, t->p, t->H, t->P);
        Params m = seed_view(t->mom, t->off, s, t->p, t->H, t->P);
        Params v = seed_view(t->vel, t->off, s, t->p, t->H, t->P);
        if (tid == 0) {
            const int64_t *idx = t->train_idx + (size_t)s * n;
            shuffle_order((uint32_t)t->prefixes[s], n, t->perm, t->keys);
            for (int i = 0; i < n; i++) t->order[i] = idx[t->perm[i]];
        }
        barrier_wait(&t->bar, T);
        double loss_sum = 0.0, hits = 0.0;
        long long step = t->step0;
        for (int lo = 0; lo < n; lo += t->B) {
            const int bs = n - lo < t->B ? n - lo : t->B;
            for (int h = 0; h < 2; h++)
                if (T == 1 || h == tid) half_step(t, &w, h, lo, bs);
            barrier_wait(&t->bar, T);
            if (tid == 0) {
                loss_sum += t->loss[0];
                loss_sum += t->loss[1];
                hits += t->hits[0] + t->hits[1];
            }
            step++;
            adamw_span(t, &w, &m, &v, tid == 0 ? 0 : cut, tid == 0 ? cut : total,
                       adam_scalars(t->lr, t->b1, t->b2, t->wd, t->eps, step));
            barrier_wait(&t->bar, T);
        }
        if (tid == 0) {
            t->out[2 * (size_t)s] = loss_sum / n;
            t->out[2 * (size_t)s + 1] = hits / n;
        }
    }
    blas_restore(before);
}

static void *train_worker(void *arg) {
    train_seeds((Train *)arg, 1);
    return NULL;
}

static int parse_offsets(PyObject *obj, Py_ssize_t off[4]) {
    return PyArg_ParseTuple(obj, "nnnn", &off[0], &off[1], &off[2], &off[3]);
}

static int check_call(int ok, const char *what) {
    if (!blas_sgemm) {
        PyErr_SetString(PyExc_RuntimeError, "the CPU kernel has no BLAS: call init() first");
        return 0;
    }
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: sizes out of range", what);
        return 0;
    }
    return 1;
}

/* train_epoch(flat, exp_avg, exp_avg_sq, offsets, s_lo, s_hi, p, H, P, B, n, train_idx,
 *             prefixes, a_of, b_of, labels, step0, lr, beta1, beta2, weight_decay, eps,
 *             threads, out)
 * Pointers are addresses of contiguous tensors: float32 buffers laid out as BatchedTrainer's
 * flat buffer (offsets: where W_in, b_in, W_out, b_out start, each block holding all seeds);
 * train_idx int64 [S, n], each seed's train pairs in ascending order; prefixes int64 [S], the
 * hash prefix of each seed's batch order this epoch (hooked_mlp.data.hash_prefix); a_of, b_of,
 * labels int64 [p*p]. Trains seeds s_lo..s_hi-1, one after another, each with `threads` (1 or
 * 2) threads, for one epoch of ceil(n/B) steps after AdamW step step0, and writes each seed's
 * mean train loss and accuracy to out float64 [S, 2]. */
static PyObject *train_epoch(PyObject *self, PyObject *args) {
    unsigned long long flat_p, m_p, v_p, idx_p, pre_p, a_p, b_p, y_p, out_p;
    PyObject *offsets;
    Train t;
    memset(&t, 0, sizeof t);
    if (!PyArg_ParseTuple(args, "KKKOiiiiiiiKKKKKLdddddiK", &flat_p, &m_p, &v_p, &offsets,
                          &t.s_lo, &t.s_hi, &t.p, &t.H, &t.P, &t.B, &t.n, &idx_p, &pre_p, &a_p,
                          &b_p, &y_p, &t.step0, &t.lr, &t.b1, &t.b2, &t.wd, &t.eps, &t.nthreads,
                          &out_p) ||
        !parse_offsets(offsets, t.off) ||
        !check_call(t.p > 0 && t.H > 0 && t.P > 0 && t.B > 0 && t.n > 0 && t.s_lo >= 0 &&
                        t.s_hi >= t.s_lo && t.step0 >= 0 && (t.nthreads == 1 || t.nthreads == 2),
                    "train_epoch"))
        return NULL;
    const int bmax = t.B < t.n ? t.B : t.n, rows = (bmax + 1) / 2;
    int ok = scratch_alloc(&t.half[0], rows, t.p, t.H, t.P, 1);
    ok = scratch_alloc(&t.half[1], rows, t.p, t.H, t.P, 1) && ok;
    t.order = malloc(sizeof(int64_t) * (size_t)t.n);
    t.perm = malloc(sizeof(int32_t) * (size_t)t.n);
    t.keys = malloc(sizeof(uint32_t) * 3 * (size_t)t.n);
    if (!ok || !t.order || !t.perm || !t.keys) {
        free(t.half[0].mem);
        free(t.half[1].mem);
        free(t.order);
        free(t.perm);
        free(t.keys);
        return PyErr_NoMemory();
    }
    t.flat = (float *)(uintptr_t)flat_p;
    t.mom = (float *)(uintptr_t)m_p;
    t.vel = (float *)(uintptr_t)v_p;
    t.train_idx = (const int64_t *)(uintptr_t)idx_p;
    t.prefixes = (const int64_t *)(uintptr_t)pre_p;
    t.a_of = (const int64_t *)(uintptr_t)a_p;
    t.b_of = (const int64_t *)(uintptr_t)b_p;
    t.lab = (const int64_t *)(uintptr_t)y_p;
    t.out = (double *)(uintptr_t)out_p;

    Py_BEGIN_ALLOW_THREADS
    pthread_t worker;
    if (t.nthreads == 2 && pthread_create(&worker, NULL, train_worker, &t) != 0)
        t.nthreads = 1; /* no second thread to be had: the same numbers on one */
    train_seeds(&t, 0);
    if (t.nthreads == 2) pthread_join(worker, NULL);
    Py_END_ALLOW_THREADS

    free(t.half[0].mem);
    free(t.half[1].mem);
    free(t.order);
    free(t.perm);
    free(t.keys);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------ evaluation */

#define EVAL_CHUNK 512

typedef struct {
    int p, H, P, n, s_lo, s_hi, nthreads, n_chunks;
    Py_ssize_t off[4];
    float *flat;
    const int64_t *pairs, *a_of, *b_of, *lab;
    double *sums; /* [S, n_chunks, 2]: each chunk's loss and hits */
    int failed;
} Eval;

typedef struct {
    Eval *e;
    int tid;
} EvalArg;

/* Thread `tid` evaluates chunks tid, tid + T, ... of every seed. */
static void *eval_chunks(void *arg) {
    Eval *e = ((EvalArg *)arg)->e;
    const int tid = ((EvalArg *)arg)->tid;
    Scratch sc;
    if (!scratch_alloc(&sc, EVAL_CHUNK, e->p, e->H, e->P, 0)) {
        e->failed = 1;
        return NULL;
    }
    int before = blas_one_thread();
    for (int s = e->s_lo; s < e->s_hi; s++) {
        Params w = seed_view(e->flat, e->off, s, e->p, e->H, e->P);
        for (int c = tid; c < e->n_chunks; c += e->nthreads) {
            const int lo = c * EVAL_CHUNK, bs = e->n - lo < EVAL_CHUNK ? e->n - lo : EVAL_CHUNK;
            double *out = e->sums + ((size_t)s * e->n_chunks + c) * 2;
            out[0] = out[1] = 0.0;
            gather_rows(&sc, e->pairs + (size_t)s * e->n + lo, bs, e->p, e->a_of, e->b_of,
                        e->lab);
            forward(&w, &sc, bs, e->H, e->P);
            softmax_cols(sc.L, sc.ld, w.b_out, sc.y, bs, e->P, 0.0f, sc.work, &out[0], &out[1]);
        }
    }
    blas_restore(before);
    free(sc.mem);
    return NULL;
}

/* evaluate(flat, offsets, s_lo, s_hi, p, H, P, n, pairs, a_of, b_of, labels, threads, out)
 * Mean cross-entropy and accuracy of seeds s_lo..s_hi-1 on n pairs each (pairs int64 [S, n]),
 * into out float64 [S, 2]. The pairs are cut into chunks of 512 whose sums are added in chunk
 * order, so the thread count (1 or 2) does not change the result. */
static PyObject *evaluate(PyObject *self, PyObject *args) {
    unsigned long long flat_p, pairs_p, a_p, b_p, y_p, out_p;
    PyObject *offsets;
    Eval e;
    memset(&e, 0, sizeof e);
    if (!PyArg_ParseTuple(args, "KOiiiiiiKKKKiK", &flat_p, &offsets, &e.s_lo, &e.s_hi, &e.p,
                          &e.H, &e.P, &e.n, &pairs_p, &a_p, &b_p, &y_p, &e.nthreads, &out_p) ||
        !parse_offsets(offsets, e.off) ||
        !check_call(e.p > 0 && e.H > 0 && e.P > 0 && e.n > 0 && e.s_lo >= 0 &&
                        e.s_hi >= e.s_lo && (e.nthreads == 1 || e.nthreads == 2),
                    "evaluate"))
        return NULL;
    e.n_chunks = (e.n + EVAL_CHUNK - 1) / EVAL_CHUNK;
    e.sums = malloc(sizeof(double) * 2 * ((size_t)e.s_hi * e.n_chunks + 1));
    if (!e.sums) return PyErr_NoMemory();
    e.flat = (float *)(uintptr_t)flat_p;
    e.pairs = (const int64_t *)(uintptr_t)pairs_p;
    e.a_of = (const int64_t *)(uintptr_t)a_p;
    e.b_of = (const int64_t *)(uintptr_t)b_p;
    e.lab = (const int64_t *)(uintptr_t)y_p;
    double *out = (double *)(uintptr_t)out_p;

    Py_BEGIN_ALLOW_THREADS
    EvalArg args2[2] = {{&e, 0}, {&e, 1}};
    pthread_t worker;
    int two = e.nthreads == 2 && e.n_chunks > 1 &&
              pthread_create(&worker, NULL, eval_chunks, &args2[1]) == 0;
    if (!two) e.nthreads = 1;
    eval_chunks(&args2[0]);
    if (two) pthread_join(worker, NULL);
    for (int s = e.s_lo; s < e.s_hi && !e.failed; s++) {
        double loss = 0.0, hits = 0.0;
        for (int c = 0; c < e.n_chunks; c++) {
            loss += e.sums[((size_t)s * e.n_chunks + c) * 2];
            hits += e.sums[((size_t)s * e.n_chunks + c) * 2 + 1];
        }
        out[2 * (size_t)s] = loss / e.n;
        out[2 * (size_t)s + 1] = hits / e.n;
    }
    Py_END_ALLOW_THREADS

    free(e.sums);
    if (e.failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* shuffle(prefix, n, out): out int64 [n] = the batch order of a draw with this prefix (for
 * tests: it must equal hooked_mlp.data.permutations). */
static PyObject *shuffle(PyObject *self, PyObject *args) {
    unsigned long long prefix, out_p;
    int n;
    if (!PyArg_ParseTuple(args, "KiK", &prefix, &n, &out_p)) return NULL;
    if (n <= 0 || prefix > 0xFFFFFFFFull) {
        PyErr_SetString(PyExc_ValueError, "shuffle: n must be positive, prefix 32-bit");
        return NULL;
    }
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)n);
    uint32_t *tmp = malloc(sizeof(uint32_t) * 3 * (size_t)n);
    if (!perm || !tmp) {
        free(perm);
        free(tmp);
        return PyErr_NoMemory();
    }
    shuffle_order((uint32_t)prefix, n, perm, tmp);
    int64_t *out = (int64_t *)(uintptr_t)out_p;
    for (int i = 0; i < n; i++) out[i] = perm[i];
    free(perm);
    free(tmp);
    Py_RETURN_NONE;
}

/* init(sgemm_capsule): take BLAS's sgemm from SciPy's cython_blas capsule, and OpenBLAS's
 * thread-count setters from the same library when it has them. Returns how the BLAS will be
 * held to one thread per caller: "local" (per thread), "global" (while a call runs) or
 * "none" (not an OpenBLAS: then its own threading applies). */
static PyObject *init(PyObject *self, PyObject *capsule) {
    if (!PyCapsule_CheckExact(capsule)) {
        PyErr_SetString(PyExc_TypeError, "init() takes scipy.linalg.cython_blas's sgemm capsule");
        return NULL;
    }
    void *fn = PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule));
    if (!fn) return NULL;
    blas_sgemm = (sgemm_fn)fn;
    blas_threads_local = blas_threads_global = NULL;
    blas_get_threads = NULL;
    Dl_info info;
    if (dladdr(fn, &info) && info.dli_fname) {
        void *lib = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
        if (lib) {
            /* OpenBLAS's names, bare or with the prefix SciPy's build gives them */
            static const char *prefixes[] = {"", "scipy_"};
            for (int i = 0; i < 2 && !blas_threads_local && !blas_get_threads; i++) {
                char name[64];
                snprintf(name, sizeof name, "%sopenblas_set_num_threads_local", prefixes[i]);
                blas_threads_local = (threads_fn)dlsym(lib, name);
                snprintf(name, sizeof name, "%sopenblas_set_num_threads", prefixes[i]);
                blas_threads_global = (threads_fn)dlsym(lib, name);
                snprintf(name, sizeof name, "%sopenblas_get_num_threads", prefixes[i]);
                blas_get_threads = (get_threads_fn)dlsym(lib, name);
            }
            dlclose(lib);
        }
    }
    /* "local", "global" or "none": how the BLAS is held to one thread per caller */
    return PyUnicode_FromString(blas_threads_local ? "local"
                                : (blas_threads_global && blas_get_threads) ? "global"
                                                                              : "none");
}

static PyMethodDef methods[] = {
    {"init", init, METH_O, "Hand the kernel SciPy's sgemm capsule."},
    {"train_epoch", train_epoch, METH_VARARGS, "Train seeds for one epoch (see the source)."},
    {"evaluate", evaluate, METH_VARARGS, "Loss and accuracy of seeds on a split."},
    {"shuffle", shuffle, METH_VARARGS, "The batch order of a draw (for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_kernel",
                                    "The C training kernel for CPUs (see hooked_mlp/cpu_kernel.py).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__cpu_kernel(void) { return PyModule_Create(&module); }
