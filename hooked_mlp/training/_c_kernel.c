/* The CPU training kernel: whole epochs of the seed recipe in C.
 *
 * An optional accelerator for one configuration family: a one-hidden-layer ReLU MLP with biases
 * and one-hot inputs (hooked_mlp/cpu_kernel.py says which configurations it accepts). Per sample
 * (a, b) with label y, p residues and H hidden neurons (x @ W orientation):
 *
 *     pre    = W_in[a] + W_in[p + b] + b_in        post = relu(pre)
 *     logits = post @ W_out + b_out                G = (softmax(logits) - onehot(y)) / bs
 *     dW_out = post^T @ G      db_out = sum_i G    dpre = (G @ W_out^T) * (pre > 0)
 *     dW_in  = rows a and p + b of dpre, added     db_in = sum_i dpre
 *
 * then one step of torch.optim.AdamW's formula (torch rounds two of its lines with a fused
 * multiply-add, this file rounds each operation, so the last bits can differ; AdamW's scalars
 * are computed in double and rounded once, as torch does). The three matrix products go to the
 * BLAS that SciPy ships (its `sgemm`, handed over as a function pointer by init()), held to one
 * thread per caller; the rest is plain loops the compiler vectorises.
 *
 * Interface. `Kernel(...)` is built once per trainer: it checks and keeps the static description
 * (p, H, batch size, where the four parameter blocks start, the AdamW recipe, and the pair
 * tables, copied in). Its methods take the per-call buffers through the buffer protocol (NumPy
 * arrays, or anything else that exports C-contiguous memory with a format), check each one's
 * item type, contiguity, writability and length, and raise ValueError naming the argument
 * rather than ever reading or writing outside it:
 *
 *     Kernel.train_epoch(params, exp_avg, exp_avg_sq, train_idx, prefixes, s_lo, s_hi, step0, out)
 *     Kernel.evaluate(params, pairs, s_lo, s_hi, out)
 *
 * (evaluate refuses zero pairs per seed, whose mean is undefined: the Python wrapper answers NaN
 * for them without calling in.)
 *
 * Threads. A call runs on the calling thread only, with the GIL released; the kernel keeps no
 * mutable state of its own (a Kernel is read-only once built), so Python runs several seeds in
 * parallel by calling it from several threads, each on its own block of seeds. Each call's
 * working memory follows the batch size and the number of pairs, never the number of seeds.
 *
 * Determinism. A seed's arithmetic depends on the recipe and its data alone: seeds are trained
 * one after another with the same scratch memory, so a seed trained alone, with others in one
 * call, or in another thread gives the same bits. Loss sums are kept in double and added in
 * sample order within a batch and batch order within the epoch. The batch order is computed
 * here too (see shuffle_order), equal to hooked_mlp.data.permutations.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *,
                         const float *, const float *, const int *, const float *, const int *,
                         const float *, float *, const int *);
typedef int (*threads_fn)(int);
typedef int (*get_threads_fn)(void);

/* The only static state: set once by init() (under the GIL, before any call), read afterwards. */
static sgemm_fn blas_sgemm = NULL;
/* OpenBLAS >= 0.3.27 sets its thread count per calling thread; older ones only globally. */
static threads_fn blas_threads_local = NULL;
static threads_fn blas_threads_global = NULL; /* returns nothing useful; see blas_one_thread */
static get_threads_fn blas_get_threads = NULL;
/* ... and, for the global setter only, how many of our calls are running (under the lock). */
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

/* OpenBLAS computes a product of at most 100^3 multiply-adds with its small-matrix kernels,
 * which skip copying the operands into packed panels: at this model's shapes (a batch of 128,
 * 100 neurons, 113 classes: 1.4 million each) cutting every product in two is ~1.3x faster.
 * So each product is cut along one dimension of its result, never the summed one (every sum is
 * the same, only fewer at a time), into blocks below that size, whole multiples of 16 (a
 * vector's width) unless the dimension is smaller. Other BLAS lose one call per block. */
#define SMALL_GEMM 1000000

/* C = A^T @ B^T (the only form used here), cut into blocks of rows of C (`by_rows`: rows i..
 * read A + i * lda and write C + i) or of columns (columns j.. read B + j, write C + j * ldc). */
static void gemm_tt(int by_rows, int m, int n, int k, const float *A, int lda, const float *B,
                    int ldb, float *C, int ldc) {
    const int dim = by_rows ? m : n;
    const size_t rest = (size_t)(by_rows ? n : m) * (size_t)k; /* multiply-adds per row/column */
    size_t block = rest ? SMALL_GEMM / rest / 16 * 16 : (size_t)dim;
    block = block < 16 ? 16 : block > (size_t)dim ? (size_t)dim : block;
    for (size_t i = 0; i < (size_t)dim; i += block) {
        const int w = (int)((size_t)dim - i < block ? (size_t)dim - i : block);
        if (by_rows)
            gemm('T', 'T', w, n, k, A + (size_t)i * lda, lda, B, ldb, C + i, ldc);
        else
            gemm('T', 'T', m, w, k, A, lda, B + i, ldb, C + (size_t)i * ldc, ldc);
    }
}

/* Hold the BLAS to one thread for the calling thread (the parallelism is across our callers,
 * one block of seeds each; the products are too small to split): per thread where OpenBLAS
 * can, else globally while any of our calls runs. */
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
        float *o = post + (size_t)i * ((size_t)H + 1);
        for (int h = 0; h < H; h++) {
            float v = (wa[h] + wb[h]) + b_in[h];
            o[h] = v < 0.0f ? 0.0f : v; /* NaN stays NaN, as in torch.relu */
        }
    }
}

/* The logits are held class-major, L[c * ld + i] for sample i: every loop below runs along
 * the samples, so each sample's max, sum and loss are accumulated in its own lane, in the same
 * order whatever the vector width. Adds b_out; adds each sample's loss -log p(y) (from the
 * logits, so it cannot underflow) to *loss_sum, and to *hits whether y is the sample's argmax
 * (the first class whose logit is the largest, as torch's argmax: a tie with an earlier class is
 * a miss, so a model whose logits are all equal is not counted right). With `scale` != 0, L
 * becomes the gradient (softmax - onehot(y)) * scale. NaN or inf in a sample's logits makes its
 * loss NaN. `work` holds 4 * ld floats. */
HOT static void softmax_cols(float *restrict L, int ld, const float *restrict b_out,
                             const int32_t *restrict y, int bs, int P, float scale,
                             float *restrict work, double *loss_sum, double *hits) {
    float *m = work, *s = work + ld, *ly = work + 2 * (size_t)ld, *k = work + 3 * (size_t)ld;
    /* each sample's max and argmax in one pass, the argmax into k for now (class indices below
     * 65536 are exact in a float): a strictly larger logit moves it, so the first class at
     * the maximum is what stays, as torch.argmax */
    for (int i = 0; i < bs; i++) {
        m[i] = -INFINITY;
        s[i] = 0.0f;
        k[i] = 0.0f;
    }
    for (int c = 0; c < P; c++) {
        float *row = L + (size_t)c * ld;
        const float bc = b_out[c], fc = (float)c;
        for (int i = 0; i < bs; i++) {
            float v = row[i] + bc;
            row[i] = v;
            const int larger = v > m[i];
            m[i] = larger ? v : m[i];
            k[i] = larger ? fc : k[i];
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
        hit += k[i] == (float)y[i];
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

/* AdamW on n values with gradient g: torch.optim.AdamW(weight_decay=wd)'s formula for one step. */
HOT static void adamw(float *restrict w, float *restrict m, float *restrict v,
                      const float *restrict g, size_t n, AdamScalars a) {
    for (size_t j = 0; j < n; j++) {
        float gj = g[j];
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
    gemm_tt(0, P, H1, bs, G, ld, post, H1, gW_out, P);
    /* dpost[i, h] = sum_c G[i, c] W_out[h, c]: column-major [H, bs] */
    gemm_tt(0, H, bs, P, W_out, P, G, ld, dpost, H);
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

/* ------------------------------------------------------------------------------ the kernel */

/* One pair's W_in rows and label, all three fetched with one cache line. */
typedef struct {
    int32_t ra, rb, y; /* a, p + b, (a op b) mod p */
} Pair;

/* The static description of a trainer's model and recipe, fixed when the Kernel is built. */
typedef struct {
    int p, H, B;            /* residues (= inputs per token = classes), neurons, batch size */
    Py_ssize_t off[4];      /* where W_in, b_in, W_out, b_out start in a parameter buffer */
    Py_ssize_t size[4];     /* one seed's values in each block: 2pH, H, Hp, p */
    Py_ssize_t n_seed;      /* their sum: one seed's values, and a gradient buffer's */
    double lr, b1, b2, wd, eps;
    Py_ssize_t n_pairs;     /* entries of `pairs`: the range of a pair index */
    Pair *pairs;
} Spec;

typedef struct {
    float *W_in, *b_in, *W_out, *b_out;
} Params;

/* Seed s's parameters in a buffer laid out as `off` says (the caller checked its length). */
static Params seed_view(const Spec *k, float *base, Py_ssize_t s) {
    Params q;
    q.W_in = base + k->off[0] + s * k->size[0];
    q.b_in = base + k->off[1] + s * k->size[1];
    q.W_out = base + k->off[2] + s * k->size[2];
    q.b_out = base + k->off[3] + s * k->size[3];
    return q;
}

/* ------------------------------------------------------------------------------ scratch */

/* a * b + c in size_t, or 0 on overflow (*ok cleared); every size below goes through it. */
static size_t mad(size_t a, size_t b, size_t c, int *ok) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r)) {
        *ok = 0;
        return 0;
    }
    return r;
}

/* One call's working memory, for up to `rows` samples at a time. */
typedef struct {
    float *mem, *L, *post, *dpost, *grad, *work;
    int32_t *ra, *rb, *y;
    int ld; /* stride of L: rows rounded up to 16 floats */
} Scratch;

/* Returns 0 when the sizes overflow or the memory is not to be had (the caller raises). */
static int scratch_alloc(Scratch *sc, const Spec *k, int rows, int with_grad) {
    int ok = 1;
    const size_t ld = ((size_t)rows + 15) / 16 * 16; /* rows <= INT_MAX - 15: see Kernel_new */
    const size_t n_L = mad((size_t)k->p, ld, 0, &ok);
    const size_t n_post = mad((size_t)rows, (size_t)k->H + 1, 0, &ok);
    const size_t n_dpost = with_grad ? mad((size_t)rows, (size_t)k->H, 0, &ok) : 0;
    const size_t n_grad = with_grad ? (size_t)k->n_seed : 0;
    const size_t n_work = 4 * ld, n_idx = 3 * (size_t)rows;
    size_t total = mad(1, n_L, n_post, &ok);
    total = mad(1, total, n_dpost, &ok);
    total = mad(1, total, n_grad, &ok);
    total = mad(1, total, n_work + n_idx + 15, &ok) / 16 * 16; /* whole 64-byte lines */
    total = mad(total, sizeof(float), 0, &ok);
    sc->mem = ok ? aligned_alloc(64, total) : NULL;
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
    for (int i = 0; i < rows; i++) sc->post[(size_t)i * ((size_t)k->H + 1) + k->H] = 1.0f;
    return 1;
}

/* The W_in rows and labels of pairs idx[0..bs). Returns 0 if an index is out of range: the
 * caller checked them all before starting, so that means another thread changed them since. */
static int gather_rows(const Spec *k, const int64_t *idx, int bs, Scratch *sc) {
    for (int i = 0; i < bs; i++) {
        const uint64_t j = (uint64_t)idx[i]; /* read once: checked and used */
        if (j >= (uint64_t)k->n_pairs) return 0;
        const Pair q = k->pairs[j];
        sc->ra[i] = q.ra;
        sc->rb[i] = q.rb;
        sc->y[i] = q.y;
    }
    return 1;
}

/* logits of bs gathered samples into sc->L (class-major, without b_out) */
static void forward(const Spec *k, const Params *w, Scratch *sc, int bs) {
    embed(w->W_in, w->b_in, sc->ra, sc->rb, bs, k->H, sc->post);
    /* L[c * ld + i] = sum_h post[i, h] W_out[h, c]: column-major [bs, P] */
    gemm_tt(1, bs, k->p, k->H, sc->post, k->H + 1, w->W_out, k->p, sc->L, sc->ld);
}

/* The position of the first of idx[0..count) outside [0, limit), or -1 when all are inside. */
static Py_ssize_t first_bad_index(const int64_t *idx, Py_ssize_t count, Py_ssize_t limit) {
    for (Py_ssize_t i = 0; i < count; i++)
        if ((uint64_t)idx[i] >= (uint64_t)limit) return i;
    return -1;
}

/* ------------------------------------------------------------------------------ training */

/* One train_epoch call, once its buffers have been checked. */
typedef struct {
    float *params, *mom, *vel;
    const int64_t *train_idx; /* [S, n] each seed's train pairs */
    const int64_t *prefixes;  /* [S] each seed's batch-order hash prefix, in [0, 2^32) */
    Py_ssize_t s_lo, s_hi;
    int n;
    long long step0;
    double *out; /* [S, 2] */
    /* working memory, allocated by the caller */
    Scratch sc;
    int64_t *order; /* [n] a seed's pair indices in batch order */
    int32_t *perm;  /* [n] */
    uint32_t *keys; /* [3n] */
} Epoch;

/* One epoch of every seed in [s_lo, s_hi): each step computes the gradient of the whole batch
 * into one buffer, then AdamW applies it. Returns 0, or -1 if a pair index went out of range
 * mid-call (see gather_rows). */
static int train_seeds(const Spec *k, Epoch *e) {
    Scratch *sc = &e->sc;
    const int n = e->n;
    for (Py_ssize_t s = e->s_lo; s < e->s_hi; s++) {
        Params w = seed_view(k, e->params, s), m = seed_view(k, e->mom, s),
               v = seed_view(k, e->vel, s);
        const int64_t *idx = e->train_idx + s * (Py_ssize_t)n;
        shuffle_order((uint32_t)e->prefixes[s], n, e->perm, e->keys);
        for (int i = 0; i < n; i++) e->order[i] = idx[e->perm[i]];
        double loss = 0.0, hits = 0.0;
        long long step = e->step0;
        for (Py_ssize_t lo = 0; lo < n; lo += k->B) { /* lo + B may pass INT_MAX */
            const int bs = n - lo < k->B ? (int)(n - lo) : k->B;
            if (!gather_rows(k, e->order + lo, bs, sc)) return -1;
            forward(k, &w, sc, bs);
            softmax_cols(sc->L, sc->ld, w.b_out, sc->y, bs, k->p, 1.0f / (float)bs, sc->work,
                         &loss, &hits);
            backward(w.W_out, sc->post, sc->L, sc->ld, sc->ra, sc->rb, bs, k->p, k->H, k->p,
                     sc->dpost, sc->grad);
            const AdamScalars a = adam_scalars(k->lr, k->b1, k->b2, k->wd, k->eps, ++step);
            /* the gradient buffer holds W_in, b_in, W_out, b_out one after another */
            float *wv[4] = {w.W_in, w.b_in, w.W_out, w.b_out};
            float *mv[4] = {m.W_in, m.b_in, m.W_out, m.b_out};
            float *vv[4] = {v.W_in, v.b_in, v.W_out, v.b_out};
            const float *g = sc->grad;
            for (int b = 0; b < 4; g += k->size[b], b++)
                adamw(wv[b], mv[b], vv[b], g, (size_t)k->size[b], a);
        }
        e->out[2 * s] = loss / n;
        e->out[2 * s + 1] = hits / n;
    }
    return 0;
}

/* ------------------------------------------------------------------------------ evaluation */

#define EVAL_CHUNK 512 /* samples a forward pass takes at a time: bounds the scratch memory */

/* Mean loss and accuracy of seeds [s_lo, s_hi) on their n pairs each (pairs [S, n]), into out
 * [S, 2]; chunk sums are added in order. Returns 0, or -1 as train_seeds does. */
static int evaluate_seeds(const Spec *k, float *params, const int64_t *pairs, int n,
                          Py_ssize_t s_lo, Py_ssize_t s_hi, Scratch *sc, double *out) {
    for (Py_ssize_t s = s_lo; s < s_hi; s++) {
        const Params w = seed_view(k, params, s);
        double loss = 0.0, hits = 0.0;
        for (int lo = 0; lo < n; lo += EVAL_CHUNK) {
            const int bs = n - lo < EVAL_CHUNK ? n - lo : EVAL_CHUNK;
            if (!gather_rows(k, pairs + s * (Py_ssize_t)n + lo, bs, sc)) return -1;
            forward(k, &w, sc, bs);
            softmax_cols(sc->L, sc->ld, w.b_out, sc->y, bs, k->p, 0.0f, sc->work, &loss, &hits);
        }
        out[2 * s] = loss / n;
        out[2 * s + 1] = hits / n;
    }
    return 0;
}

/* ------------------------------------------------------------------------------ arguments */

/* A Python integer in [lo, hi], or -1 with ValueError (TypeError if not an integer). Too large
 * for a long long is out of range too, not an OverflowError. */
static int int_arg(PyObject *obj, const char *name, long long lo, long long hi, long long *out) {
    PyObject *num = PyNumber_Index(obj);
    if (!num) {
        PyErr_Format(PyExc_TypeError, "%s must be an integer, got %.100s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(num, &overflow);
    Py_DECREF(num);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < lo || v > hi) {
        PyErr_Format(PyExc_ValueError, "%s must be an integer in [%lld, %lld], got %R", name, lo,
                     hi, obj);
        return -1;
    }
    *out = v;
    return 0;
}

/* A finite float >= 0, and < 1 if below_one (the limits torch.optim.AdamW puts on its
 * arguments). */
static int float_arg(PyObject *obj, const char *name, int below_one, double *out) {
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    if (!isfinite(v) || v < 0.0 || (below_one && v >= 1.0)) {
        PyErr_Format(PyExc_ValueError, "%s must be a finite number %s, got %R", name,
                     below_one ? "in [0, 1)" : ">= 0", obj);
        return -1;
    }
    *out = v;
    return 0;
}

/* The pending exception's value (a new reference; the error indicator is cleared). */
static PyObject *take_exception(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

typedef enum { F32, F64, I64 } Kind;

static const char *kind_name(Kind kind) {
    return kind == F32 ? "float32 ('f')" : kind == F64 ? "float64 ('d')" : "int64 ('q' or 'l')";
}

/* Whether a buffer's struct-module format and item size are those of `kind`: a single native
 * or little-endian standard code ('@', '=' and, on little-endian machines, '<' prefixes). */
static int format_is(const Py_buffer *view, Kind kind) {
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '='
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        || *f == '<'
#endif
    )
        f++;
    if (f[0] == '\0' || f[1] != '\0') return 0;
    switch (kind) {
        case F32: return f[0] == 'f' && view->itemsize == 4;
        case F64: return f[0] == 'd' && view->itemsize == 8;
        case I64: return (f[0] == 'q' || f[0] == 'l') && view->itemsize == 8;
    }
    return 0;
}

/* The buffers of one call, so that every exit path releases all of them. */
#define MAX_VIEWS 6
typedef struct {
    Py_buffer view[MAX_VIEWS];
    const char *name[MAX_VIEWS];
    int writable[MAX_VIEWS];
    int count;
} Views;

static void release_views(Views *v) {
    for (int i = 0; i < v->count; i++) PyBuffer_Release(&v->view[i]);
    v->count = 0;
}

/* Takes `obj`'s C-contiguous buffer of `kind` items (writable if asked) into v; returns it, or
 * NULL with TypeError (no buffer) or ValueError (not contiguous, read-only, wrong items). */
static Py_buffer *take_view(Views *v, PyObject *obj, const char *name, Kind kind, int writable) {
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "%s must export a buffer of %s items (e.g. a NumPy array), got %.100s", name,
                     kind_name(kind), Py_TYPE(obj)->tp_name);
        return NULL;
    }
    Py_buffer *view = &v->view[v->count];
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        /* the exporter says why (not contiguous, read-only): keep its words, name the argument */
        PyObject *why = take_exception();
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s buffer of %s items (%S)",
                     name, writable ? ", writable" : "", kind_name(kind), why ? why : Py_None);
        Py_XDECREF(why);
        return NULL;
    }
    v->name[v->count] = name;
    v->writable[v->count] = writable;
    v->count++;
    if (!format_is(view, kind)) {
        PyErr_Format(PyExc_ValueError, "%s must hold %s items, got format '%s' of itemsize %zd",
                     name, kind_name(kind), view->format ? view->format : "B", view->itemsize);
        return NULL;
    }
    return view;
}

static Py_ssize_t items(const Py_buffer *view) { return view->len / view->itemsize; }

/* A writable buffer must not share memory with any other buffer of the call (or with the
 * call's checks: indices checked before a call must not be overwritten during it). */
static int check_disjoint(const Views *v) {
    for (int i = 0; i < v->count; i++)
        for (int j = i + 1; j < v->count; j++) {
            if (!v->writable[i] && !v->writable[j]) continue;
            const uintptr_t a = (uintptr_t)v->view[i].buf, b = (uintptr_t)v->view[j].buf;
            if (v->view[i].len && v->view[j].len && a < b + (uintptr_t)v->view[j].len &&
                b < a + (uintptr_t)v->view[i].len) {
                PyErr_Format(PyExc_ValueError, "%s and %s must not share memory", v->name[i],
                             v->name[j]);
                return -1;
            }
        }
    return 0;
}

/* A parameter buffer (float32) must hold seeds [0, s_hi) of every block. */
static int check_params(const Spec *k, const Py_buffer *view, const char *name, Py_ssize_t s_hi) {
    int ok = 1;
    size_t need = 0;
    for (int b = 0; b < 4; b++) {
        size_t end = mad((size_t)s_hi, (size_t)k->size[b], (size_t)k->off[b], &ok);
        need = end > need ? end : need;
    }
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s must hold the parameters of %zd seeds, more values "
                     "than can be addressed at these offsets", name, s_hi);
        return -1;
    }
    if (need > (size_t)items(view)) {
        PyErr_Format(PyExc_ValueError, "%s must hold the parameters of %zd seeds (%zu float32 "
                     "values at these offsets), got %zd values", name, s_hi, need, items(view));
        return -1;
    }
    return 0;
}

/* pairs/train_idx int64 [S, n] with 1 <= n <= INT_MAX - EVAL_CHUNK: S and n into *S, *n. */
static int check_pair_table(const Py_buffer *view, const char *name, Py_ssize_t *S, int *n) {
    if (view->ndim != 2) {
        PyErr_Format(PyExc_ValueError, "%s must be 2-D [seeds, pairs], got %d dimensions", name,
                     view->ndim);
        return -1;
    }
    if (view->shape[1] < 1 || view->shape[1] > INT_MAX - EVAL_CHUNK) {
        PyErr_Format(PyExc_ValueError, "%s must hold 1 to %d pairs per seed, got %zd", name,
                     INT_MAX - EVAL_CHUNK, view->shape[1]);
        return -1;
    }
    *S = view->shape[0];
    *n = (int)view->shape[1];
    return 0;
}

/* out float64 [S, 2] */
static int check_out(const Py_buffer *view, Py_ssize_t S) {
    if (view->ndim != 2 || view->shape[0] != S || view->shape[1] != 2) {
        PyErr_Format(PyExc_ValueError, "out must be [%zd, 2] (one row per seed), got %d-D "
                     "with %zd values", S, view->ndim, items(view));
        return -1;
    }
    return 0;
}

/* s_lo, s_hi: 0 <= s_lo <= s_hi <= S */
static int seed_range(PyObject *lo_obj, PyObject *hi_obj, Py_ssize_t S, Py_ssize_t *lo,
                      Py_ssize_t *hi) {
    long long l, h;
    if (int_arg(hi_obj, "s_hi", 0, S, &h) < 0 || int_arg(lo_obj, "s_lo", 0, h, &l) < 0) return -1;
    *lo = (Py_ssize_t)l;
    *hi = (Py_ssize_t)h;
    return 0;
}

static int check_indices(const Spec *k, const int64_t *idx, Py_ssize_t s_lo, Py_ssize_t s_hi,
                         int n, const char *name) {
    Py_ssize_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = first_bad_index(idx + s_lo * (Py_ssize_t)n, (s_hi - s_lo) * (Py_ssize_t)n, k->n_pairs);
    Py_END_ALLOW_THREADS
    if (bad < 0) return 0;
    Py_ssize_t at = s_lo * (Py_ssize_t)n + bad;
    PyErr_Format(PyExc_ValueError, "%s[%zd, %zd] = %lld: pair indices must be in [0, %zd)", name,
                 at / n, at % n, (long long)idx[at], k->n_pairs);
    return -1;
}

static PyObject *need_blas(void) {
    PyErr_SetString(PyExc_RuntimeError, "the CPU kernel has no BLAS: call init() first");
    return NULL;
}

/* ------------------------------------------------------------------------------ Kernel type */

typedef struct {
    PyObject_HEAD
    Spec spec;
} Kernel;

/* Kernel(p, d_hidden, batch_size, offsets, lr, beta1, beta2, weight_decay, eps, a_of, b_of,
 *        labels): a_of, b_of and labels are int64 [n_pairs] (pair index -> a, b, label), copied
 * in and checked to lie in [0, p); offsets are where the four blocks start. */
static PyObject *Kernel_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"p", "d_hidden", "batch_size", "offsets", "lr", "beta1", "beta2",
                            "weight_decay", "eps", "a_of", "b_of", "labels", NULL};
    PyObject *p_o, *H_o, *B_o, *off_o, *lr_o, *b1_o, *b2_o, *wd_o, *eps_o, *tables[3];
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOOOOOOO:Kernel", names, &p_o, &H_o,
                                     &B_o, &off_o, &lr_o, &b1_o, &b2_o, &wd_o, &eps_o, &tables[0],
                                     &tables[1], &tables[2]))
        return NULL;
    Spec k;
    memset(&k, 0, sizeof k);
    long long p, H, B;
    /* p < 2^16 keeps p * p pair indices and 2p rows well inside every type below; H + 1 and
     * the batch's rows rounded up to 16 are BLAS ints */
    if (int_arg(p_o, "p", 1, 65535, &p) < 0 || int_arg(H_o, "d_hidden", 1, INT_MAX - 1, &H) < 0 ||
        int_arg(B_o, "batch_size", 1, INT_MAX - 15, &B) < 0)
        return NULL;
    k.p = (int)p;
    k.H = (int)H;
    k.B = (int)B;
    PyObject *off = PySequence_Fast(off_o, "offsets must be a sequence of 4 integers");
    if (!off) return NULL;
    int bad = PySequence_Fast_GET_SIZE(off) != 4;
    if (bad) PyErr_SetString(PyExc_ValueError, "offsets must be a sequence of 4 integers");
    for (int b = 0; b < 4 && !bad; b++) {
        static const char *off_names[4] = {"offsets[0]", "offsets[1]", "offsets[2]",
                                           "offsets[3]"};
        long long o = 0;
        bad = int_arg(PySequence_Fast_GET_ITEM(off, b), off_names[b], 0, PY_SSIZE_T_MAX, &o) < 0;
        k.off[b] = (Py_ssize_t)o;
    }
    Py_DECREF(off);
    if (bad) return NULL;
    /* one seed's values per block, and in all: at most ~2^49 with the limits above */
    k.size[0] = 2 * (Py_ssize_t)k.p * k.H;
    k.size[1] = k.H;
    k.size[2] = (Py_ssize_t)k.H * k.p;
    k.size[3] = k.p;
    k.n_seed = k.size[0] + k.size[1] + k.size[2] + k.size[3];
    /* torch.optim.AdamW's own limits */
    if (float_arg(lr_o, "lr", 0, &k.lr) < 0 || float_arg(b1_o, "beta1", 1, &k.b1) < 0 ||
        float_arg(b2_o, "beta2", 1, &k.b2) < 0 ||
        float_arg(wd_o, "weight_decay", 0, &k.wd) < 0 || float_arg(eps_o, "eps", 0, &k.eps) < 0)
        return NULL;

    static const char *table_names[3] = {"a_of", "b_of", "labels"};
    Views v = {.count = 0};
    const int64_t *t[3];
    for (int i = 0; i < 3; i++) {
        Py_buffer *view = take_view(&v, tables[i], table_names[i], I64, 0);
        if (!view) goto fail;
        t[i] = view->buf;
        if (view->ndim != 1 || items(view) < 1 || items(view) != items(&v.view[0])) {
            PyErr_Format(PyExc_ValueError, "a_of, b_of and labels must be 1-D, of one length "
                         ">= 1, got %s with %zd values", table_names[i], items(view));
            goto fail;
        }
    }
    k.n_pairs = items(&v.view[0]);
    int ok = 1;
    size_t bytes = mad(sizeof(Pair), (size_t)k.n_pairs, 0, &ok);
    k.pairs = ok ? PyMem_RawMalloc(bytes) : NULL;
    if (!k.pairs) {
        PyErr_NoMemory();
        goto fail;
    }
    /* each value is read once, checked and copied: the copy is what the calls rely on */
    for (Py_ssize_t j = 0; j < k.n_pairs; j++) {
        int32_t q[3];
        for (int i = 0; i < 3; i++) {
            const int64_t x = t[i][j];
            if (x < 0 || x >= k.p) {
                PyErr_Format(PyExc_ValueError, "%s[%zd] = %lld: values must be in [0, p = %d)",
                             table_names[i], j, (long long)x, k.p);
                PyMem_RawFree(k.pairs);
                goto fail;
            }
            q[i] = (int32_t)x;
        }
        k.pairs[j] = (Pair){q[0], k.p + q[1], q[2]};
    }
    release_views(&v);

    Kernel *self = (Kernel *)type->tp_alloc(type, 0);
    if (!self) {
        PyMem_RawFree(k.pairs);
        return NULL;
    }
    self->spec = k;
    return (PyObject *)self;
fail:
    release_views(&v);
    return NULL;
}

static void Kernel_dealloc(PyObject *self) {
    PyMem_RawFree(((Kernel *)self)->spec.pairs);
    Py_TYPE(self)->tp_free(self);
}

/* train_epoch(params, exp_avg, exp_avg_sq, train_idx, prefixes, s_lo, s_hi, step0, out)
 * params, exp_avg, exp_avg_sq: float32 buffers laid out as the offsets say, holding at least
 * seeds [0, s_hi); train_idx int64 [S, n], each seed's train pairs in ascending order; prefixes
 * int64 [S], each seed's batch-order hash prefix this epoch (hooked_mlp.data.hash_prefix);
 * out float64 [S, 2]. Trains seeds s_lo..s_hi-1 for one epoch of ceil(n / batch_size) AdamW
 * steps after step step0, and writes each seed's mean train loss and accuracy (each sample
 * measured in its batch, before the batch's update) into its row of out. */
static PyObject *Kernel_train_epoch(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"params", "exp_avg", "exp_avg_sq", "train_idx", "prefixes", "s_lo",
                            "s_hi", "step0", "out", NULL};
    PyObject *o[5], *lo_o, *hi_o, *step_o, *out_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOOOO:train_epoch", names, &o[0], &o[1],
                                     &o[2], &o[3], &o[4], &lo_o, &hi_o, &step_o, &out_o))
        return NULL;
    if (!blas_sgemm) return need_blas();
    const Spec *k = &((Kernel *)self)->spec;
    Views v = {.count = 0};
    Epoch e;
    memset(&e, 0, sizeof e);
    PyObject *result = NULL;
    Py_buffer *w, *m, *vel, *idx, *pre, *out;
    Py_ssize_t S;
    long long step0;
    if (!(w = take_view(&v, o[0], "params", F32, 1)) ||
        !(m = take_view(&v, o[1], "exp_avg", F32, 1)) ||
        !(vel = take_view(&v, o[2], "exp_avg_sq", F32, 1)) ||
        !(idx = take_view(&v, o[3], "train_idx", I64, 0)) ||
        !(pre = take_view(&v, o[4], "prefixes", I64, 0)) ||
        !(out = take_view(&v, out_o, "out", F64, 1)) || check_disjoint(&v) < 0 ||
        check_pair_table(idx, "train_idx", &S, &e.n) < 0 || check_out(out, S) < 0 ||
        seed_range(lo_o, hi_o, S, &e.s_lo, &e.s_hi) < 0 ||
        check_params(k, w, "params", e.s_hi) < 0 || check_params(k, m, "exp_avg", e.s_hi) < 0 ||
        check_params(k, vel, "exp_avg_sq", e.s_hi) < 0)
        goto done;
    if (pre->ndim != 1 || pre->shape[0] != S) {
        PyErr_Format(PyExc_ValueError, "prefixes must be [%zd] (one per seed), got %d-D with "
                     "%zd values", S, pre->ndim, items(pre));
        goto done;
    }
    const int steps = (e.n - 1) / k->B + 1;
    if (int_arg(step_o, "step0", 0, LLONG_MAX - steps, &step0) < 0) goto done;
    e.step0 = step0;
    e.params = w->buf;
    e.mom = m->buf;
    e.vel = vel->buf;
    e.train_idx = idx->buf;
    e.prefixes = pre->buf;
    e.out = out->buf;
    for (Py_ssize_t s = e.s_lo; s < e.s_hi; s++)
        if (e.prefixes[s] < 0 || e.prefixes[s] > (int64_t)UINT32_MAX) {
            PyErr_Format(PyExc_ValueError, "prefixes[%zd] = %lld: must be in [0, 2^32)", s,
                         (long long)e.prefixes[s]);
            goto done;
        }
    if (check_indices(k, e.train_idx, e.s_lo, e.s_hi, e.n, "train_idx") < 0) goto done;
    if (e.s_lo == e.s_hi) { /* nothing to train */
        result = Py_NewRef(Py_None);
        goto done;
    }

    const int rows = k->B < e.n ? k->B : e.n;
    e.order = malloc(sizeof(int64_t) * (size_t)e.n);
    e.perm = malloc(sizeof(int32_t) * (size_t)e.n);
    e.keys = malloc(sizeof(uint32_t) * 3 * (size_t)e.n);
    if (!e.order || !e.perm || !e.keys || !scratch_alloc(&e.sc, k, rows, 1)) {
        PyErr_NoMemory();
        goto done;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    int before = blas_one_thread();
    rc = train_seeds(k, &e);
    blas_restore(before);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        PyErr_SetString(PyExc_RuntimeError, "train_idx changed during train_epoch: a pair index "
                        "left [0, n_pairs); the parameters are partly updated");
    else
        result = Py_NewRef(Py_None);
done:
    free(e.sc.mem);
    free(e.order);
    free(e.perm);
    free(e.keys);
    release_views(&v);
    return result;
}

/* evaluate(params, pairs, s_lo, s_hi, out)
 * Mean cross-entropy and accuracy of seeds s_lo..s_hi-1 on their n >= 1 pairs each (pairs
 * int64 [S, n]; ValueError for n = 0, whose mean is undefined), into out float64 [S, 2]. */
static PyObject *Kernel_evaluate(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"params", "pairs", "s_lo", "s_hi", "out", NULL};
    PyObject *w_o, *pairs_o, *lo_o, *hi_o, *out_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO:evaluate", names, &w_o, &pairs_o,
                                     &lo_o, &hi_o, &out_o))
        return NULL;
    if (!blas_sgemm) return need_blas();
    const Spec *k = &((Kernel *)self)->spec;
    Views v = {.count = 0};
    Scratch sc = {0};
    PyObject *result = NULL;
    Py_buffer *w, *pairs, *out;
    Py_ssize_t S, s_lo, s_hi;
    int n;
    if (!(w = take_view(&v, w_o, "params", F32, 0)) ||
        !(pairs = take_view(&v, pairs_o, "pairs", I64, 0)) ||
        !(out = take_view(&v, out_o, "out", F64, 1)) || check_disjoint(&v) < 0 ||
        check_pair_table(pairs, "pairs", &S, &n) < 0 || check_out(out, S) < 0 ||
        seed_range(lo_o, hi_o, S, &s_lo, &s_hi) < 0 || check_params(k, w, "params", s_hi) < 0 ||
        check_indices(k, pairs->buf, s_lo, s_hi, n, "pairs") < 0)
        goto done;
    if (s_lo == s_hi) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (!scratch_alloc(&sc, k, n < EVAL_CHUNK ? n : EVAL_CHUNK, 0)) {
        PyErr_NoMemory();
        goto done;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    int before = blas_one_thread();
    rc = evaluate_seeds(k, w->buf, pairs->buf, n, s_lo, s_hi, &sc, out->buf);
    blas_restore(before);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        PyErr_SetString(PyExc_RuntimeError,
                        "pairs changed during evaluate: a pair index left [0, n_pairs)");
    else
        result = Py_NewRef(Py_None);
done:
    free(sc.mem);
    release_views(&v);
    return result;
}

static PyMethodDef Kernel_methods[] = {
    {"train_epoch", (PyCFunction)(void (*)(void))Kernel_train_epoch,
     METH_VARARGS | METH_KEYWORDS,
     "train_epoch(params, exp_avg, exp_avg_sq, train_idx, prefixes, s_lo, s_hi, step0, out)\n"
     "One epoch of AdamW steps for seeds s_lo..s_hi-1 (see hooked_mlp/training/_c_kernel.c)."},
    {"evaluate", (PyCFunction)(void (*)(void))Kernel_evaluate, METH_VARARGS | METH_KEYWORDS,
     "evaluate(params, pairs, s_lo, s_hi, out)\n"
     "Mean loss and accuracy of seeds s_lo..s_hi-1 on their pairs."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject KernelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hooked_mlp.training._c_kernel.Kernel",
    .tp_basicsize = sizeof(Kernel),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Kernel(p, d_hidden, batch_size, offsets, lr, beta1, beta2, weight_decay, eps, "
              "a_of, b_of, labels)\n"
              "A trainer's model and recipe, checked once; its methods train and evaluate.",
    .tp_new = Kernel_new,
    .tp_dealloc = Kernel_dealloc,
    .tp_methods = Kernel_methods,
};

/* ------------------------------------------------------------------------------ module */

/* shuffle(prefix, out): out int64 [n] = the batch order of a draw with this hash prefix (for
 * tests: it must equal hooked_mlp.data.permutations). */
static PyObject *shuffle(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *prefix_o, *out_o;
    long long prefix;
    if (!PyArg_ParseTuple(args, "OO:shuffle", &prefix_o, &out_o) ||
        int_arg(prefix_o, "prefix", 0, UINT32_MAX, &prefix) < 0)
        return NULL;
    Views v = {.count = 0};
    Py_buffer *out = take_view(&v, out_o, "out", I64, 1);
    if (!out) goto fail;
    if (items(out) > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "out must hold at most %d values", INT_MAX);
        goto fail;
    }
    const int n = (int)items(out);
    int32_t *perm = malloc(sizeof(int32_t) * ((size_t)n + 1));
    uint32_t *tmp = malloc(sizeof(uint32_t) * (3 * (size_t)n + 1));
    if (!perm || !tmp) {
        free(perm);
        free(tmp);
        PyErr_NoMemory();
        goto fail;
    }
    int64_t *dst = out->buf;
    Py_BEGIN_ALLOW_THREADS
    shuffle_order((uint32_t)prefix, n, perm, tmp);
    for (int i = 0; i < n; i++) dst[i] = perm[i];
    Py_END_ALLOW_THREADS
    free(perm);
    free(tmp);
    release_views(&v);
    Py_RETURN_NONE;
fail:
    release_views(&v);
    return NULL;
}

/* init(sgemm_capsule): take BLAS's sgemm from SciPy's cython_blas capsule, and OpenBLAS's
 * thread-count setters from the same library when it has them. Returns how the BLAS will be
 * held to one thread per caller: "local" (per thread), "global" (while a call runs) or
 * "none" (not an OpenBLAS: then its own threading applies). */
static PyObject *init(PyObject *self, PyObject *capsule) {
    (void)self;
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
    return PyUnicode_FromString(blas_threads_local ? "local"
                                : (blas_threads_global && blas_get_threads) ? "global"
                                                                              : "none");
}

static PyMethodDef methods[] = {
    {"init", init, METH_O, "Hand the kernel SciPy's sgemm capsule."},
    {"shuffle", shuffle, METH_VARARGS, "shuffle(prefix, out): the batch order of a draw."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_c_kernel",
    "The C training kernel for CPUs (see hooked_mlp/cpu_kernel.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__c_kernel(void) {
    if (PyType_Ready(&KernelType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&module);
    if (!mod) return NULL;
    if (PyModule_AddObjectRef(mod, "Kernel", (PyObject *)&KernelType) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
