/* The CPU training kernel: whole epochs of the seed recipe in C, one seed after another.
 *
 * Python (hooked_mlp/cpu_kernel.py) owns every buffer and the batch order; this file only runs
 * the arithmetic the torch fast path in hooked_mlp/training.py describes, step by step:
 *
 *     pre    = W_in[a] + W_in[p + b] + b_in        post = relu(pre)
 *     logits = post @ W_out + b_out                G = (softmax(logits) - onehot(y)) / bs
 *     dW_out = post^T @ G      db_out = sum_i G    dpre = (G @ W_out^T) * (pre > 0)
 *     dW_in  = rows a and p + b of dpre, added     db_in = sum_i dpre
 *
 * then one AdamW step exactly as torch.optim.AdamW defines it. The three matrix products go
 * to the BLAS that SciPy ships (its `sgemm`, handed over as a function pointer), held to one
 * thread; the rest is plain loops the compiler vectorises. Each seed is computed on its own,
 * in the same order whatever other seeds share the call, so a seed's numbers never depend on
 * its company. The GIL is released while a call runs, so Python threads can run seeds (or a
 * validation pass) side by side.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *,
                         const float *, const float *, const int *, const float *, const int *,
                         const float *, float *, const int *);
typedef int (*threads_local_fn)(int);

static sgemm_fn blas_sgemm = NULL;
static threads_local_fn blas_threads_local = NULL; /* OpenBLAS >= 0.3.27, per calling thread */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

/* C = op(A) @ op(B) in BLAS's column-major terms; row-major callers swap the operands. */
static void gemm(char ta, char tb, int m, int n, int k, const float *A, int lda, const float *B,
                 int ldb, float *C, int ldc) {
    const float one = 1.0f, zero = 0.0f;
    blas_sgemm(&ta, &tb, &m, &n, &k, &one, A, &lda, B, &ldb, &zero, C, &ldc);
}

/* exp(x) for x <= 0 (Cody-Waite reduction and Cephes' polynomial, ~1 ulp), written so that it
 * vectorises; NaN stays NaN, and below -87 it returns exp(-87) (the softmax ignores it). */
static inline __attribute__((always_inline)) float exp_nonpositive(float x) {
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
        int32_t i;
    } bits = {t};
    bits.i = (bits.i - 0x4B400000 + 127) << 23; /* t's low mantissa bits hold n: make 2^n */
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
 * order whatever the vector width. Adds b_out; per sample, the loss -log p(y) (from the logits,
 * so it cannot underflow) and whether y's logit is the largest. With `scale` != 0, L becomes
 * the gradient (softmax - onehot(y)) * scale. NaN or inf anywhere in a sample's logits makes
 * its loss NaN. `work` holds 4 * ld floats. */
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
    for (int i = 0; i < bs; i++) {
        *loss_sum += (m[i] - ly[i]) + logf(s[i]); /* inf - inf and NaN both end up here as NaN */
        *hits += ly[i] >= m[i];
        k[i] = scale / s[i];
    }
    if (scale == 0.0f) return;
    for (int c = 0; c < P; c++) {
        float *row = L + (size_t)c * ld;
        for (int i = 0; i < bs; i++) row[i] *= k[i];
    }
    for (int i = 0; i < bs; i++) L[(size_t)y[i] * ld + i] -= scale;
}

/* AdamW on n values, as torch.optim.AdamW(weight_decay=wd) defines one step. */
HOT static void adamw(float *restrict w, float *restrict m, float *restrict v,
                      const float *restrict g, size_t n, float lr, float b1, float b2, float wd,
                      float eps, float step_size, float bc2_sqrt) {
    const float decay = 1.0f - lr * wd;
    for (size_t j = 0; j < n; j++) {
        float gj = g[j];
        float mj = m[j] + (1.0f - b1) * (gj - m[j]);
        float vj = b2 * v[j] + (1.0f - b2) * gj * gj;
        m[j] = mj;
        v[j] = vj;
        w[j] = w[j] * decay - step_size * mj / (sqrtf(vj) / bc2_sqrt + eps);
    }
}

static inline void add_row(float *restrict dst, const float *restrict src, int w) {
    for (int c = 0; c < w; c++) dst[c] += src[c];
}

/* The backward pass, once softmax_cols has turned L into the gradient G of the logits. `grad`
 * is laid out [W_in (2p, H); b_in (H); W_out (H, P); b_out (P)], so b_in is W_in's row 2p and
 * b_out is W_out's row H: post's constant column H makes the first product write db_out too,
 * and every sample's dpre is added to rows a, p + b and 2p. */
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

/* Buffers of one call, for batches of up to bmax samples. */
typedef struct {
    float *mem, *post, *L, *dpost, *grad, *work;
    int32_t *ra, *rb, *y;
    int ld; /* stride of L: bmax rounded up to 16 floats */
} Scratch;

static int scratch_alloc(Scratch *sc, int bmax, int p, int H, int P, int with_grad) {
    const size_t ld = ((size_t)bmax + 15) / 16 * 16;
    const size_t n_post = (size_t)bmax * (H + 1), n_L = (size_t)P * ld;
    const size_t n_dpost = with_grad ? (size_t)bmax * H : 0;
    const size_t n_grad = with_grad ? (2 * (size_t)p + 1) * H + ((size_t)H + 1) * P : 0;
    const size_t n_work = 4 * ld, n_idx = 3 * (size_t)bmax;
    size_t total = n_post + n_L + n_dpost + n_grad + n_work + n_idx;
    total = (total + 15) / 16 * 16;
    sc->mem = aligned_alloc(64, sizeof(float) * total);
    if (!sc->mem) return 0;
    sc->ld = (int)ld;
    sc->L = sc->mem; /* L first: 64-byte aligned, and each row of 16k floats stays aligned */
    sc->post = sc->L + n_L;
    sc->dpost = sc->post + n_post;
    sc->grad = sc->dpost + n_dpost;
    sc->work = sc->grad + n_grad;
    sc->ra = (int32_t *)(sc->work + n_work);
    sc->rb = sc->ra + bmax;
    sc->y = sc->rb + bmax;
    for (int i = 0; i < bmax; i++) sc->post[(size_t)i * (H + 1) + H] = 1.0f;
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

/* logits of bs samples into L (class-major, without b_out) */
static void forward(const Params *w, Scratch *sc, int bs, int H, int P) {
    embed(w->W_in, w->b_in, sc->ra, sc->rb, bs, H, sc->post);
    /* L[c * ld + i] = sum_h post[i, h] W_out[h, c]: column-major [bs, P] */
    gemm('T', 'T', bs, P, H, sc->post, H + 1, w->W_out, P, sc->L, sc->ld);
}

static int parse_offsets(PyObject *obj, Py_ssize_t off[4]) {
    return PyArg_ParseTuple(obj, "nnnn", &off[0], &off[1], &off[2], &off[3]);
}

static int threads_begin(void) { return blas_threads_local ? blas_threads_local(1) : -1; }
static void threads_end(int before) {
    if (blas_threads_local && before > 0) blas_threads_local(before);
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

/* train_epoch(flat, exp_avg, exp_avg_sq, offsets, s_lo, s_hi, p, H, P, B, n, pairs, a_of, b_of,
 *             labels, step0, lr, beta1, beta2, weight_decay, eps, out)
 * Pointers are addresses of contiguous tensors: float32 buffers laid out as BatchedTrainer's
 * flat buffer (offsets: where W_in, b_in, W_out, b_out start); pairs int64 [S, n], the pair
 * index of each sample in batch order; a_of, b_of, labels int64 [p*p]. Trains seeds
 * s_lo..s_hi-1 for one epoch of ceil(n/B) steps starting after AdamW step step0, and writes
 * each seed's mean train loss and accuracy to out float64 [S, 2]. */
static PyObject *train_epoch(PyObject *self, PyObject *args) {
    unsigned long long flat_p, m_p, v_p, pairs_p, a_p, b_p, y_p, out_p;
    PyObject *offsets;
    int s_lo, s_hi, p, H, P, B, n;
    long long step0;
    double lr, b1, b2, wd, eps;
    Py_ssize_t off[4];
    if (!PyArg_ParseTuple(args, "KKKOiiiiiiiKKKKLdddddK", &flat_p, &m_p, &v_p, &offsets, &s_lo,
                          &s_hi, &p, &H, &P, &B, &n, &pairs_p, &a_p, &b_p, &y_p, &step0, &lr,
                          &b1, &b2, &wd, &eps, &out_p) ||
        !parse_offsets(offsets, off) ||
        !check_call(p > 0 && H > 0 && P > 0 && B > 0 && n > 0 && s_lo >= 0 && s_hi >= s_lo &&
                        step0 >= 0, "train_epoch"))
        return NULL;
    const int bmax = B < n ? B : n;
    Scratch sc;
    if (!scratch_alloc(&sc, bmax, p, H, P, 1)) return PyErr_NoMemory();
    float *flat = (float *)(uintptr_t)flat_p, *mom = (float *)(uintptr_t)m_p,
          *vel = (float *)(uintptr_t)v_p;
    const int64_t *pairs = (const int64_t *)(uintptr_t)pairs_p;
    const int64_t *a_of = (const int64_t *)(uintptr_t)a_p, *b_of = (const int64_t *)(uintptr_t)b_p,
                  *lab = (const int64_t *)(uintptr_t)y_p;
    double *out = (double *)(uintptr_t)out_p;
    /* grad is laid out [W_in; b_in; W_out; b_out] */
    const size_t sizes[4] = {2 * (size_t)p * H, (size_t)H, (size_t)H * P, (size_t)P};
    float *gv[4] = {sc.grad, sc.grad + sizes[0], sc.grad + sizes[0] + sizes[1],
                    sc.grad + sizes[0] + sizes[1] + sizes[2]};

    Py_BEGIN_ALLOW_THREADS
    int before = threads_begin();
    for (int s = s_lo; s < s_hi; s++) {
        Params w = seed_view(flat, off, s, p, H, P), m = seed_view(mom, off, s, p, H, P),
               v = seed_view(vel, off, s, p, H, P);
        float *wv[4] = {w.W_in, w.b_in, w.W_out, w.b_out};
        float *mv[4] = {m.W_in, m.b_in, m.W_out, m.b_out};
        float *vv[4] = {v.W_in, v.b_in, v.W_out, v.b_out};
        double loss_sum = 0.0, hits = 0.0;
        long long step = step0;
        for (int lo = 0; lo < n; lo += B) {
            const int bs = n - lo < B ? n - lo : B;
            gather_rows(&sc, pairs + (size_t)s * n + lo, bs, p, a_of, b_of, lab);
            forward(&w, &sc, bs, H, P);
            softmax_cols(sc.L, sc.ld, w.b_out, sc.y, bs, P, 1.0f / (float)bs, sc.work, &loss_sum,
                         &hits);
            backward(w.W_out, sc.post, sc.L, sc.ld, sc.ra, sc.rb, bs, p, H, P, sc.dpost, sc.grad);
            step++;
            /* torch computes the bias corrections in double, then uses them as float */
            const double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
            const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
            for (int k = 0; k < 4; k++)
                adamw(wv[k], mv[k], vv[k], gv[k], sizes[k], (float)lr, (float)b1, (float)b2,
                      (float)wd, (float)eps, step_size, bc2_sqrt);
        }
        out[2 * (size_t)s] = loss_sum / n;
        out[2 * (size_t)s + 1] = hits / n;
    }
    threads_end(before);
    Py_END_ALLOW_THREADS

    free(sc.mem);
    Py_RETURN_NONE;
}

/* evaluate(flat, offsets, s_lo, s_hi, p, H, P, n, pairs, a_of, b_of, labels, out)
 * Mean cross-entropy and accuracy of seeds s_lo..s_hi-1 on n pairs each (pairs int64 [S, n]),
 * into out float64 [S, 2]. */
static PyObject *evaluate(PyObject *self, PyObject *args) {
    unsigned long long flat_p, pairs_p, a_p, b_p, y_p, out_p;
    PyObject *offsets;
    int s_lo, s_hi, p, H, P, n;
    Py_ssize_t off[4];
    if (!PyArg_ParseTuple(args, "KOiiiiiiKKKKK", &flat_p, &offsets, &s_lo, &s_hi, &p, &H, &P, &n,
                          &pairs_p, &a_p, &b_p, &y_p, &out_p) ||
        !parse_offsets(offsets, off) ||
        !check_call(p > 0 && H > 0 && P > 0 && n > 0 && s_lo >= 0 && s_hi >= s_lo, "evaluate"))
        return NULL;
    const int chunk = n < 512 ? n : 512;
    Scratch sc;
    if (!scratch_alloc(&sc, chunk, p, H, P, 0)) return PyErr_NoMemory();
    float *flat = (float *)(uintptr_t)flat_p;
    const int64_t *pairs = (const int64_t *)(uintptr_t)pairs_p;
    const int64_t *a_of = (const int64_t *)(uintptr_t)a_p, *b_of = (const int64_t *)(uintptr_t)b_p,
                  *lab = (const int64_t *)(uintptr_t)y_p;
    double *out = (double *)(uintptr_t)out_p;

    Py_BEGIN_ALLOW_THREADS
    int before = threads_begin();
    for (int s = s_lo; s < s_hi; s++) {
        Params w = seed_view(flat, off, s, p, H, P);
        double loss_sum = 0.0, hits = 0.0;
        for (int lo = 0; lo < n; lo += chunk) {
            const int bs = n - lo < chunk ? n - lo : chunk;
            gather_rows(&sc, pairs + (size_t)s * n + lo, bs, p, a_of, b_of, lab);
            forward(&w, &sc, bs, H, P);
            softmax_cols(sc.L, sc.ld, w.b_out, sc.y, bs, P, 0.0f, sc.work, &loss_sum, &hits);
        }
        out[2 * (size_t)s] = loss_sum / n;
        out[2 * (size_t)s + 1] = hits / n;
    }
    threads_end(before);
    Py_END_ALLOW_THREADS

    free(sc.mem);
    Py_RETURN_NONE;
}

/* init(sgemm_capsule): take BLAS's sgemm from SciPy's cython_blas capsule, and OpenBLAS's
 * per-thread thread count from the same library when it has one. Returns whether it has. */
static PyObject *init(PyObject *self, PyObject *capsule) {
    if (!PyCapsule_CheckExact(capsule)) {
        PyErr_SetString(PyExc_TypeError, "init() takes scipy.linalg.cython_blas's sgemm capsule");
        return NULL;
    }
    void *fn = PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule));
    if (!fn) return NULL;
    blas_sgemm = (sgemm_fn)fn;
    blas_threads_local = NULL;
    Dl_info info;
    if (dladdr(fn, &info) && info.dli_fname) {
        void *lib = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
        if (lib) {
            blas_threads_local = (threads_local_fn)dlsym(lib, "openblas_set_num_threads_local");
            dlclose(lib);
        }
    }
    return PyBool_FromLong(blas_threads_local != NULL);
}

static PyMethodDef methods[] = {
    {"init", init, METH_O, "Hand the kernel SciPy's sgemm capsule."},
    {"train_epoch", train_epoch, METH_VARARGS, "Train seeds for one epoch (see the source)."},
    {"evaluate", evaluate, METH_VARARGS, "Loss and accuracy of seeds on a split."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_kernel",
                                    "The C training kernel for CPUs (see hooked_mlp/cpu_kernel.py).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__cpu_kernel(void) { return PyModule_Create(&module); }
