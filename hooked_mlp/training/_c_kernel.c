/* The training step of the study's MLP in C: forward, loss, backward, AdamW.
 *
 * An accelerator for one family of models, a one-hidden-layer ReLU MLP with biases and one-hot
 * inputs (hooked_mlp/training/c_kernel.py derives which configurations from the config's field
 * roles). Per sample (a, b) with label y, p residues and H hidden neurons (x @ W orientation):
 *
 *     pre    = W_in[a] + W_in[p + b] + b_in        post = relu(pre)
 *     logits = post @ W_out + b_out                G = (softmax(logits) - onehot(y)) / bs
 *     dW_out = post^T @ G      db_out = sum_i G    dpre = (G @ W_out^T) * (pre > 0)
 *     dW_in  = rows a and p + b of dpre, added     db_in = sum_i dpre
 *
 * then one step of torch.optim.AdamW's formula (torch rounds two of its lines with a fused
 * multiply-add, this file rounds each operation, so the last bits can differ; AdamW's scalars
 * are computed in double and rounded once, as torch does).
 *
 * Nothing else is decided here. Python (hooked_mlp.training.c_kernel) hands over the batch
 * order (hooked_mlp.data.permutations), the layout of the buffers (one row of `stride` floats
 * per run, each parameter at its offset in the row: hooked_mlp.training.state), each run's
 * AdamW recipe, BLAS's sgemm (SciPy's, held to one thread by threadpoolctl), and it checks every
 * argument before calling. A call trains or measures consecutive runs on the calling thread
 * and keeps no state: Python spreads the runs of a stack over threads. A run's arithmetic
 * depends on its own data alone (runs are done one after another in the same scratch memory),
 * so its bits do not depend on which runs share its call or thread. Loss sums are kept in double
 * and added in sample order within a batch and batch order within the epoch.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *,
                         const float *, const float *, const int *, const float *, const int *,
                         const float *, float *, const int *);

/* One pair's W_in rows and label, all three fetched with one cache line. */
typedef struct {
    int32_t ra, rb, y; /* a, p + b, (a op b) mod p */
} Pair;

/* The model and the layout of its buffers (fixed for a trainer; see c_kernel.Model). */
typedef struct {
    sgemm_fn sgemm;
    int32_t p, H;      /* residues (= inputs per operand = classes), hidden neurons */
    int64_t stride;    /* floats per run in a parameter buffer */
    int64_t off[4];    /* where W_in [2p, H], b_in [H], W_out [H, p], b_out [p] start in a row */
    const Pair *pairs; /* pair index (a * p + b) -> rows and label */
    int64_t n_pairs;
} Model;

/* A run's AdamW recipe: hooked_mlp.training.state.RECIPE_FIELDS, in that order. */
typedef struct {
    double lr, beta1, beta2, weight_decay, eps;
} Recipe;

enum { OK = 0, NO_MEMORY = -1, BAD_INDEX = -2 };

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) && \
    defined(__GLIBC__)
/* one build per instruction set for the hot loops, picked at load time */
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif
#define INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------------ products */

/* OpenBLAS computes a product of at most 100^3 multiply-adds with its small-matrix kernels,
 * which skip packing the operands: at this model's shapes (a batch of 128, 100 neurons, 113
 * classes: 1.4 million each) cutting every product in two is ~1.3x faster. So a product is cut
 * along one dimension of its result, never the summed one (every sum is the same, only fewer at
 * a time), into blocks below that size, whole multiples of 16 unless the dimension is smaller. */
#define SMALL_GEMM 1000000

/* C = A^T @ B^T (column-major, the only form used here), in blocks of rows of C (`by_rows`:
 * rows i.. read A + i * lda and write C + i) or of columns (read B + j, write C + j * ldc). */
static void gemm_tt(const Model *m, int by_rows, int rows, int cols, int k, const float *A,
                    int lda, const float *B, int ldb, float *C, int ldc) {
    const float one = 1.0f, zero = 0.0f;
    const int dim = by_rows ? rows : cols;
    const size_t rest = (size_t)(by_rows ? cols : rows) * (size_t)k;
    size_t block = rest ? SMALL_GEMM / rest / 16 * 16 : (size_t)dim;
    block = block < 16 ? 16 : block > (size_t)dim ? (size_t)dim : block;
    for (size_t i = 0; i < (size_t)dim; i += block) {
        const int w = (int)((size_t)dim - i < block ? (size_t)dim - i : block);
        if (by_rows)
            m->sgemm("T", "T", &w, &cols, &k, &one, A + i * lda, &lda, B, &ldb, &zero, C + i,
                     &ldc);
        else
            m->sgemm("T", "T", &rows, &w, &k, &one, A, &lda, B + i, &ldb, &zero, C + i * ldc,
                     &ldc);
    }
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
 * a miss). With `scale` != 0, L becomes the gradient (softmax - onehot(y)) * scale. NaN or inf
 * in a sample's logits makes its loss NaN. `work` holds 4 * ld floats. */
HOT static void softmax_cols(float *restrict L, int ld, const float *restrict b_out,
                             const int32_t *restrict y, int bs, int P, float scale,
                             float *restrict work, double *loss_sum, double *hits) {
    float *mx = work, *s = work + ld, *ly = work + 2 * (size_t)ld, *k = work + 3 * (size_t)ld;
    /* each sample's max and argmax in one pass (class indices below 65536 are exact in a
     * float): only a strictly larger logit moves it, so the first class at the maximum stays */
    for (int i = 0; i < bs; i++) {
        mx[i] = -INFINITY;
        s[i] = 0.0f;
        k[i] = 0.0f;
    }
    for (int c = 0; c < P; c++) {
        float *row = L + (size_t)c * ld;
        const float bc = b_out[c], fc = (float)c;
        for (int i = 0; i < bs; i++) {
            float v = row[i] + bc;
            row[i] = v;
            const int larger = v > mx[i];
            mx[i] = larger ? v : mx[i];
            k[i] = larger ? fc : k[i];
        }
    }
    for (int i = 0; i < bs; i++) ly[i] = L[(size_t)y[i] * ld + i];
    for (int c = 0; c < P; c++) {
        float *row = L + (size_t)c * ld;
        for (int i = 0; i < bs; i++) {
            float e = exp_nonpositive(row[i] - mx[i]);
            row[i] = e;
            s[i] += e;
        }
    }
    double loss = 0.0, hit = 0.0;
    for (int i = 0; i < bs; i++) {
        loss += (mx[i] - ly[i]) + logf(s[i]); /* inf - inf and NaN both end up here as NaN */
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

INLINE void add_row(float *restrict dst, const float *restrict src, int w) {
    for (int c = 0; c < w; c++) dst[c] += src[c];
}

/* The backward pass of bs samples, once softmax_cols has turned L into the gradient G of the
 * logits. `grad` is laid out [W_in (2p, H); b_in (H); W_out (H, P); b_out (P)], so b_in is
 * W_in's row 2p and b_out is W_out's row H: post's constant column H makes the first product
 * write db_out too, and every sample's dpre is added to rows a, p + b and 2p. */
HOT static void backward(const Model *m, const float *W_out, const float *post, const float *G,
                         int ld, const int32_t *ra, const int32_t *rb, int bs, float *dpost,
                         float *grad) {
    const int p = m->p, H = m->H, H1 = m->H + 1;
    float *gW_in = grad, *gW_out = grad + (2 * (size_t)p + 1) * H;
    /* dW_out[h, c] = sum_i post[i, h] G[i, c] for h <= H: column-major [P, H + 1] */
    gemm_tt(m, 0, p, H1, bs, G, ld, post, H1, gW_out, p);
    /* dpost[i, h] = sum_c G[i, c] W_out[h, c]: column-major [H, bs] */
    gemm_tt(m, 0, H, bs, p, W_out, p, G, ld, dpost, H);
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

/* The scalars of one AdamW step, each computed in double and rounded once, as torch does
 * (1 - beta2 from a float beta2 would be off by 1e-5 of itself). */
typedef struct {
    float decay, b2, one_minus_b1, one_minus_b2, eps, step_size, bc2_sqrt;
} AdamScalars;

static AdamScalars adam_scalars(const Recipe *r, long long step) {
    AdamScalars a;
    a.decay = (float)(1.0 - r->lr * r->weight_decay);
    a.b2 = (float)r->beta2;
    a.one_minus_b1 = (float)(1.0 - r->beta1);
    a.one_minus_b2 = (float)(1.0 - r->beta2);
    a.eps = (float)r->eps;
    a.step_size = (float)(r->lr / (1.0 - pow(r->beta1, (double)step)));
    a.bc2_sqrt = (float)sqrt(1.0 - pow(r->beta2, (double)step));
    return a;
}

/* AdamW on n values with gradient g: torch.optim.AdamW's formula for one step. */
HOT static void adamw(float *restrict w, float *restrict mo, float *restrict v,
                      const float *restrict g, size_t n, AdamScalars a) {
    for (size_t j = 0; j < n; j++) {
        float gj = g[j];
        float mj = mo[j] + a.one_minus_b1 * (gj - mo[j]);
        float vj = a.b2 * v[j] + a.one_minus_b2 * gj * gj;
        mo[j] = mj;
        v[j] = vj;
        w[j] = w[j] * a.decay - a.step_size * mj / (sqrtf(vj) / a.bc2_sqrt + a.eps);
    }
}

/* ------------------------------------------------------------------------------ scratch */

/* One call's working memory, for up to `rows` samples at a time. */
typedef struct {
    float *mem, *L, *post, *dpost, *grad, *work;
    int32_t *ra, *rb, *y;
    int ld; /* stride of L: rows rounded up to 16 floats */
} Scratch;

/* a * b + c in size_t, or 0 with *ok cleared on overflow */
static size_t mad(size_t a, size_t b, size_t c, int *ok) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r)) {
        *ok = 0;
        return 0;
    }
    return r;
}

static int scratch_alloc(Scratch *sc, const Model *m, int rows, int with_grad) {
    int ok = 1;
    const size_t ld = ((size_t)rows + 15) / 16 * 16, H = (size_t)m->H, p = (size_t)m->p;
    const size_t n_L = mad(p, ld, 0, &ok);
    const size_t n_post = mad((size_t)rows, H + 1, 0, &ok);
    const size_t n_dpost = with_grad ? mad((size_t)rows, H, 0, &ok) : 0;
    const size_t n_grad = with_grad ? mad(2 * p + 1, H, mad(H + 1, p, 0, &ok), &ok) : 0;
    const size_t n_work = 4 * ld, n_idx = 3 * (size_t)rows;
    size_t total = mad(1, n_L, n_post, &ok);
    total = mad(1, total, n_dpost, &ok);
    total = mad(1, total, n_grad, &ok);
    total = mad(1, total, n_work + n_idx + 15, &ok) / 16 * 16; /* whole 64-byte lines */
    total = mad(total, sizeof(float), 0, &ok);
    sc->mem = ok ? aligned_alloc(64, total) : NULL;
    if (!sc->mem) return NO_MEMORY;
    sc->ld = (int)ld;
    sc->L = sc->mem; /* first, so that it and each of its rows are 64-byte aligned */
    sc->post = sc->L + n_L;
    sc->dpost = sc->post + n_post;
    sc->grad = sc->dpost + n_dpost;
    sc->work = sc->grad + n_grad;
    sc->ra = (int32_t *)(sc->work + n_work);
    sc->rb = sc->ra + rows;
    sc->y = sc->rb + rows;
    for (int i = 0; i < rows; i++) sc->post[(size_t)i * (H + 1) + H] = 1.0f;
    return OK;
}

/* The W_in rows and labels of pairs idx[0..bs) (Python checked every index; this check keeps
 * memory safe if another thread changed one since). */
static int gather_rows(const Model *m, const int64_t *idx, int bs, Scratch *sc) {
    for (int i = 0; i < bs; i++) {
        const uint64_t j = (uint64_t)idx[i];
        if (j >= (uint64_t)m->n_pairs) return BAD_INDEX;
        const Pair q = m->pairs[j];
        sc->ra[i] = q.ra;
        sc->rb[i] = q.rb;
        sc->y[i] = q.y;
    }
    return OK;
}

/* The logits of bs gathered samples into sc->L (class-major, without b_out). */
static void forward(const Model *m, const float *row, Scratch *sc, int bs) {
    embed(row + m->off[0], row + m->off[1], sc->ra, sc->rb, bs, m->H, sc->post);
    /* L[c * ld + i] = sum_h post[i, h] W_out[h, c]: column-major [bs, P] */
    gemm_tt(m, 1, bs, m->p, m->H, sc->post, m->H + 1, row + m->off[2], m->p, sc->L, sc->ld);
}

/* ------------------------------------------------------------------------------ entry points */

/* One epoch of `runs` consecutive runs, from the row at `params` (and the same rows of
 * `exp_avg`, `exp_avg_sq`): run r takes its n pairs in the order order[r * n ..] in
 * ceil(n / batch) steps, each the gradient of the batch's mean loss and one AdamW step of its
 * recipe recipes[r] (steps step0 + 1, ...). Writes run r's mean loss and accuracy over the epoch
 * (each sample measured in its batch, before the batch's update) to out[2r], out[2r + 1].
 * Returns OK, NO_MEMORY or BAD_INDEX (then the parameters are partly updated). */
int hm_train_epoch(const Model *m, int64_t runs, float *params, float *exp_avg,
                   float *exp_avg_sq, const int64_t *order, int32_t n, int32_t batch,
                   const Recipe *recipes, int64_t step0, double *out) {
    Scratch sc;
    if (scratch_alloc(&sc, m, batch < n ? batch : n, 1) != OK) return NO_MEMORY;
    const size_t size[4] = {2 * (size_t)m->p * m->H, (size_t)m->H, (size_t)m->H * m->p,
                            (size_t)m->p};
    int rc = OK;
    for (int64_t r = 0; r < runs && rc == OK; r++) {
        float *w = params + r * m->stride, *mo = exp_avg + r * m->stride,
              *v = exp_avg_sq + r * m->stride;
        const int64_t *idx = order + r * (int64_t)n;
        double loss = 0.0, hits = 0.0;
        long long step = step0;
        for (int64_t lo = 0; lo < n; lo += batch) {
            const int bs = n - lo < batch ? (int)(n - lo) : batch;
            if ((rc = gather_rows(m, idx + lo, bs, &sc)) != OK) break;
            forward(m, w, &sc, bs);
            softmax_cols(sc.L, sc.ld, w + m->off[3], sc.y, bs, m->p, 1.0f / (float)bs, sc.work,
                         &loss, &hits);
            backward(m, w + m->off[2], sc.post, sc.L, sc.ld, sc.ra, sc.rb, bs, sc.dpost,
                     sc.grad);
            const AdamScalars a = adam_scalars(&recipes[r], ++step);
            const float *g = sc.grad; /* W_in, b_in, W_out, b_out one after another */
            for (int b = 0; b < 4; g += size[b], b++)
                adamw(w + m->off[b], mo + m->off[b], v + m->off[b], g, size[b], a);
        }
        out[2 * r] = loss / n;
        out[2 * r + 1] = hits / n;
    }
    free(sc.mem);
    return rc;
}

#define EVAL_CHUNK 512 /* samples a forward pass takes at a time: bounds the scratch memory */

/* Mean cross-entropy and accuracy of `runs` consecutive runs from the row at `params`, run r on
 * its n pairs pairs[r * n ..], into out[2r], out[2r + 1]; chunk sums are added in order.
 * Returns OK, NO_MEMORY or BAD_INDEX. */
int hm_evaluate(const Model *m, int64_t runs, const float *params, const int64_t *pairs,
                int32_t n, double *out) {
    Scratch sc;
    if (scratch_alloc(&sc, m, n < EVAL_CHUNK ? n : EVAL_CHUNK, 0) != OK) return NO_MEMORY;
    int rc = OK;
    for (int64_t r = 0; r < runs && rc == OK; r++) {
        const float *w = params + r * m->stride;
        double loss = 0.0, hits = 0.0;
        for (int lo = 0; lo < n; lo += EVAL_CHUNK) {
            const int bs = n - lo < EVAL_CHUNK ? n - lo : EVAL_CHUNK;
            if ((rc = gather_rows(m, pairs + r * (int64_t)n + lo, bs, &sc)) != OK) break;
            forward(m, w, &sc, bs);
            softmax_cols(sc.L, sc.ld, w + m->off[3], sc.y, bs, m->p, 0.0f, sc.work, &loss,
                         &hits);
        }
        out[2 * r] = loss / n;
        out[2 * r + 1] = hits / n;
    }
    free(sc.mem);
    return rc;
}
