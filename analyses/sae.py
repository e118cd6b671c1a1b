"""Sparse dictionaries on the hidden layer: sparse autoencoders on `hook_post` and transcoders
from `hook_pre` to the logits, trained many at once, spliced into the model through a hook.

    sae = train_sae(model, "blocks.0.mlp.hook_post", d_sae=400)       # one dictionary
    with sae.spliced(model):                                          # every analysis sees it
        logits = model(all_pairs(p))
    sae.metrics(model)       # L0, explained variance, dead features, accuracy spliced / clean
    sae.feature_spectra(model)   # each feature's 2-D spectrum over (a, b): analyses.activation_fits
    many = train_dictionaries(model, "blocks.0.mlp.hook_post", d_sae=[50, 100, 400],
                              seeds=[0, 1])                           # six, in one stack

**What is trained.** A dictionary maps an input activation `x` `[d_in]` to features
`f = act(x @ W_enc + b_enc)` `[d_sae]` and back to `y_hat = f @ W_dec + b_dec` `[d_out]`. A sparse
autoencoder reconstructs its own input (`y = x`); a transcoder reads `hook_pre` of a layer and
predicts what follows it (here the logits, `hook_logits`, for the last layer). `act` is ReLU with
an L1 penalty `l1 * sum_f f * |W_dec[f]|` (Bricken et al. 2023's form, so that shrinking the
decoder cannot buy sparsity), or TopK (Gao et al. 2024: the `k` largest pre-activations kept,
ReLU'd, no penalty). The reconstruction loss is the mean squared error divided by the
variance of `y` (so 1.0 is "predicts the mean"), averaged over the batch. Training is Adam on
mini-batches of all `p^2` pairs (a seeded permutation per epoch). Dead features (no activation
on any pair over the last `resample_every` steps) are resampled: each takes the direction of one
of the worst-reconstructed pairs' residuals, in order of loss, and its optimiser state is reset.

**Many at once.** Dictionaries of several sizes and seeds train as one stack: parameters
`[R, d_in, D]` with `D` the largest size and a mask of each member's own features, so a member's
initialisation and numbers depend on its own seed and size only (a member trained alone agrees
to float32 rounding: `tests/test_sae.py`).

**What the features are.** A feature is a function on the `p x p` grid of pairs, like a neuron:
`feature_spectra` gives each feature's 2-D spectrum (its dominant frequency `k`, the share of
power on `a + b` terms, on `a`-or-`b`-alone terms, ...) by `analyses.activation_fits.grid_spectra`,
the same definition the neurons get. `frequency_map` counts live features per dominant
frequency beside the model's neurons per frequency (`analyses.groups.by_frequency`): one
feature per frequency, two (a cos/sin pair), or as many as neurons.

`save_saelens(folder)` writes SAELens's on-disk format (`cfg.json` and `sae_weights.safetensors`,
architecture `standard` or `topk`, `apply_b_dec_to_input` false, as `encode` computes). SAELens
itself cannot load it beside transformer-lens 4.x: sae-lens 6.54 pins transformer-lens < 4, and
6.51.1, which installs beside 4.3.0, fails on `import sae_lens` (it imports
`transformer_lens.HookedTransformer`, which 4.x removed); the test that loads a file back is
skipped with that reason where sae-lens does not import.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from analyses._common import check_model, headline
from hooked_mlp.data import all_pairs, dataset

KINDS = ("sae", "transcoder")
SPARSITIES = ("l1", "topk")


# ------------------------------------------------------------------------------ the dictionary
@dataclass
class SparseDictionary:
    """One trained dictionary: `W_enc` `[d_in, d_sae]`, `b_enc` `[d_sae]`, `W_dec`
    `[d_sae, d_out]`, `b_dec` `[d_out]`, read from `hook_in` and written at `hook_out`."""

    kind: str
    hook_in: str
    hook_out: str
    sparsity: str
    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    k: int | None = None
    l1: float = 0.0
    seed: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def encode(self, x: Tensor) -> Tensor:
        """Features `[batch, d_sae]` of inputs `[batch, d_in]`."""
        pre = x.to(self.W_enc.dtype) @ self.W_enc + self.b_enc
        return _activate(pre[None], self.sparsity, self.k)[0]

    def decode(self, f: Tensor) -> Tensor:
        """Outputs `[batch, d_out]` of features `[batch, d_sae]`."""
        return f @ self.W_dec + self.b_dec

    def __call__(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    @contextlib.contextmanager
    def spliced(self, model: Any) -> Iterator[Any]:
        """Replace `hook_out`'s value by the dictionary's reconstruction (of `hook_in`'s value)
        for every forward pass inside the block; the hooks go on exit, also after an error."""
        check_model(model)
        _check_hook(model, self.hook_in)
        _check_hook(model, self.hook_out)
        seen: dict[str, Tensor] = {}

        def read(value: Tensor, hook: Any) -> Tensor:
            seen["x"] = value
            return value

        def write(value: Tensor, hook: Any) -> Tensor:
            x = value if self.hook_in == self.hook_out else seen.pop("x")
            return self(x).to(value.dtype)

        hooks = [(self.hook_out, write)]
        if self.hook_in != self.hook_out:
            hooks.insert(0, (self.hook_in, read))
        with model.hooks(fwd_hooks=hooks):
            yield model

    @torch.no_grad()
    def metrics(self, model: Any) -> dict[str, Any]:
        """On all pairs: mean L0 (features active per pair), explained variance of `hook_out`,
        the count of dead features (never active), the normalised MSE, and the model's
        accuracy clean and with the dictionary spliced in."""
        _check_hook(model, self.hook_in)
        _check_hook(model, self.hook_out)
        x, y = _data(model, self.hook_in, self.hook_out)
        f = self.encode(x)
        y_hat = self.decode(f)
        var = (y - y.mean(0)).square().sum()
        err = (y - y_hat).square().sum()
        tokens, labels = dataset(model.cfg, model.device)
        clean = model(tokens)
        with self.spliced(model):
            spliced = model(tokens)
        fve = float(1 - err / var) if float(var) > 0 else float("nan")
        return {"d_sae": self.d_sae, "l0": float((f > 0).sum(1).double().mean()),
                "explained_variance": fve, "nmse": 1 - fve,
                "dead_features": int(((f > 0).sum(0) == 0).sum()),
                "accuracy_clean": float((clean.argmax(-1) == labels).double().mean()),
                "accuracy_spliced": float((spliced.argmax(-1) == labels).double().mean())}

    @torch.no_grad()
    def feature_grids(self, model: Any) -> Tensor:
        """Each feature over all pairs: `[d_sae, p, p]` (rows `a`, columns `b`)."""
        x, _ = _data(model, self.hook_in, self.hook_out)
        p = model.cfg.p
        return self.encode(x).t().reshape(-1, p, p).double()

    def feature_spectra(self, model: Any) -> Any:
        """`analyses.activation_fits.GridSpectra` of the features (dead ones: NaN shares)."""
        from analyses.activation_fits import grid_spectra

        return grid_spectra(self.feature_grids(model))

    def to_dict(self) -> dict[str, Any]:
        """The dictionary's description and weights as lists (JSON-ready)."""
        return {"kind": self.kind, "hook_in": self.hook_in, "hook_out": self.hook_out,
                "sparsity": self.sparsity, "k": self.k, "l1": self.l1, "seed": self.seed,
                "d_in": self.W_enc.shape[0], "d_sae": self.d_sae, "d_out": self.W_dec.shape[1],
                "W_enc": self.W_enc.tolist(), "b_enc": self.b_enc.tolist(),
                "W_dec": self.W_dec.tolist(), "b_dec": self.b_dec.tolist(),
                "history": self.history}

    def save_saelens(self, folder: str | Any, model_name: str = "hooked-mlp") -> None:
        """Write SAELens's on-disk format into `folder` (created if absent): `cfg.json`
        (architecture `standard`, or `topk` with `k`; a transcoder's `d_out` in its metadata)
        and `sae_weights.safetensors` (`W_enc`, `b_enc`, `W_dec`, `b_dec`), each atomically."""
        import json
        from pathlib import Path

        from safetensors.torch import save

        from hooked_mlp.files.format import atomic_write_bytes, atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cfg: dict[str, Any] = {
            "architecture": "standard" if self.sparsity == "l1" else "topk",
            "d_in": self.W_enc.shape[0], "d_sae": self.d_sae, "dtype": "float32",
            "device": "cpu", "apply_b_dec_to_input": False, "normalize_activations": "none",
            "reshape_activations": "none",
            "metadata": {"model_name": model_name, "hook_name": self.hook_in,
                         "hook_name_out": self.hook_out, "d_out": self.W_dec.shape[1],
                         "hooked_mlp_kind": self.kind, "l1": self.l1, "seed": self.seed}}
        if self.sparsity == "topk":
            cfg.update(k=self.k, rescale_acts_by_decoder_norm=False)
        weights = {name: getattr(self, name).detach().float().contiguous().cpu()
                   for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        atomic_write_bytes(folder / "sae_weights.safetensors", save(weights))
        atomic_write_text(folder / "cfg.json", json.dumps(cfg, indent=1))

    def summary(self) -> dict[str, Any]:
        """Its headline numbers: what it is (kind, hooks, sparsity, size) and the normalised
        MSE on all pairs at the end of training (None when it was not trained here)."""
        nmse = self.history.get("nmse")
        return headline({"kind": self.kind, "hook_in": self.hook_in, "hook_out": self.hook_out,
                         "sparsity": self.sparsity, "k": self.k, "l1": self.l1,
                         "d_sae": self.d_sae, "seed": self.seed,
                         "steps": len(nmse) if nmse else 0,
                         "final_nmse": float(nmse[-1]) if nmse else None})

    def describe(self) -> str:
        """What it is and the loss it reached, in one line."""
        s = self.summary()
        last = "not trained here" if s["final_nmse"] is None else \
            f"final normalised MSE {s['final_nmse']:.4f} after {s['steps']} steps"
        return (f"{self.kind} {self.hook_in} -> {self.hook_out}: {self.d_sae} features "
                f"({self.sparsity}{'' if self.k is None else f', k={self.k}'}), {last}")


def _activate(pre: Tensor, sparsity: str, k: int | None) -> Tensor:
    """ReLU, or ReLU of the `k` largest pre-activations per row (`pre` `[R, batch, D]`)."""
    if sparsity == "l1":
        return pre.relu()
    top = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())


# ------------------------------------------------------------------------------ data
@torch.no_grad()
def _data(model: Any, hook_in: str, hook_out: str) -> tuple[Tensor, Tensor]:
    """`hook_in`'s and `hook_out`'s values on all pairs, float32 `[p^2, d]` each."""
    tokens = all_pairs(model.cfg.p, model.device)
    _, cache = model.run_with_cache(tokens, names_filter=[hook_in, hook_out])
    return cache[hook_in].float().cpu(), cache[hook_out].float().cpu()


def default_hooks(model: Any, kind: str, hook: str | None) -> tuple[str, str]:
    """`(hook_in, hook_out)`: an SAE reads and writes `hook` (default the first layer's
    `hook_post`); a transcoder reads `hook` (default the last layer's `hook_pre`) and writes what
    follows its layer (the next layer's `hook_pre`, or the logits)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    n = model.cfg.n_layers
    if kind == "sae":
        hook = hook or "blocks.0.mlp.hook_post"
        _check_hook(model, hook)
        return hook, hook
    hook = hook or f"blocks.{n - 1}.mlp.hook_pre"
    _check_hook(model, hook)
    parts = hook.split(".")
    if len(parts) != 4 or parts[0] != "blocks" or parts[3] != "hook_pre":
        raise ValueError(f"a transcoder reads a layer's hook_pre (blocks.L.mlp.hook_pre), got "
                         f"{hook!r}")
    layer = int(parts[1])
    return hook, ("hook_logits" if layer == n - 1 else f"blocks.{layer + 1}.mlp.hook_pre")


def _check_hook(model: Any, hook: Any) -> None:
    if not isinstance(hook, str) or hook not in model.hook_dict:
        raise ValueError(f"hook must be one of the model's hook points {list(model.hook_dict)}, "
                         f"got {hook!r}")


# ------------------------------------------------------------------------------ training
def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def fit_dictionaries(x: Tensor, y: Tensor | None = None, d_sae: int | Sequence[int] = 64, *,
                     seeds: Sequence[int] = (0,), sparsity: str = "l1", l1: float = 1e-3,
                     k: int | None = None, steps: int = 2000, lr: float = 1e-3,
                     batch_size: int = 4096, resample_every: int = 500,
                     kind: str = "sae", hook_in: str = "", hook_out: str = "",
                     stop_at: float | None = None, check_every: int = 25
                     ) -> list[SparseDictionary]:
    """Train one dictionary per (size, seed) on inputs `x` `[N, d_in]` and targets `y`
    `[N, d_out]` (default `x`: an autoencoder), all in one stack; members in the order
    `[(size, seed) for size in sizes for seed in seeds]`. See the module's text.
    `stop_at`: stop early, at the first multiple of `check_every` steps where every member's
    normalised MSE on all of `x` is at most this (the history then ends there)."""
    sizes = [d_sae] if isinstance(d_sae, int) else list(d_sae)
    for s in sizes:
        _positive_int("d_sae", s)
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a list of non-negative integers, got {seeds!r}")
    if sparsity not in SPARSITIES:
        raise ValueError(f"sparsity must be one of {list(SPARSITIES)}, got {sparsity!r}")
    if sparsity == "topk":
        _positive_int("k", k)
        if k > min(sizes):
            raise ValueError(f"k must be at most the smallest d_sae ({min(sizes)}), got {k}")
    elif not (isinstance(l1, (int, float)) and not isinstance(l1, bool) and l1 >= 0
              and math.isfinite(l1)):
        raise ValueError(f"l1 must be a non-negative number, got {l1!r}")
    _positive_int("steps", steps)
    _positive_int("batch_size", batch_size)
    _positive_int("resample_every", resample_every)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if stop_at is not None and not (isinstance(stop_at, (int, float)) and stop_at > 0
                                    and math.isfinite(stop_at)):
        raise ValueError(f"stop_at must be a positive number or None, got {stop_at!r}")
    _positive_int("check_every", check_every)
    x = x.float()
    y = x if y is None else y.float()
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must be [N, d] with the same N, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("the activations hold NaN or infinite values: no dictionary to fit")
    members = [(s, seed) for s in sizes for seed in seeds]
    R, D, N = len(members), max(sizes), x.shape[0]
    d_in, d_out = x.shape[1], y.shape[1]
    mask = torch.zeros(R, D)
    W_enc, W_dec = torch.zeros(R, d_in, D), torch.zeros(R, D, d_out)
    for r, (size, seed) in enumerate(members):  # each member from its own seed and size only
        g = torch.Generator().manual_seed(seed * 1_000_003 + size)
        dec = torch.randn(size, d_out, generator=g)
        dec = dec / dec.norm(dim=1, keepdim=True)
        W_dec[r, :size] = dec
        W_enc[r, :, :size] = (dec.t() if kind == "sae" else
                              torch.randn(d_in, size, generator=g) / math.sqrt(d_in))
        mask[r, :size] = 1.0
    b_enc = torch.zeros(R, D)
    b_dec = y.mean(0).expand(R, d_out).clone()
    params = [p.requires_grad_() for p in (W_enc, b_enc, W_dec, b_dec)]
    opt = torch.optim.Adam(params, lr=lr)
    var = (y - y.mean(0)).square().sum(1).mean()  # per pair
    var = var if float(var) > 0 else torch.tensor(1.0)
    gens = [torch.Generator().manual_seed(seed * 1_000_003 + size + 1) for size, seed in members]
    losses, nmses = torch.zeros(steps, R), torch.zeros(steps, R)  # read once, at the end
    fired = torch.zeros(R, D, dtype=torch.bool)
    pad = (mask == 0) if bool((mask == 0).any()) else None  # None: every member has D features
    xs = ys = None
    pos, ran = N, steps
    for step in range(1, steps + 1):
        if pos >= N:  # a fresh permutation of the pairs per member (its own generator)
            order = torch.stack([torch.randperm(N, generator=gg) for gg in gens])  # [R, N]
            xs, ys, pos = x[order], (None if y is x else y[order]), 0  # [R, N, d], per epoch
        xb = xs[:, pos: pos + batch_size]  # [R, batch, d_in]: a slice, no gather per step
        yb = xb if ys is None else ys[:, pos: pos + batch_size]
        pos += batch_size
        if R == 1:  # one member: the same maths as 2-D matmuls
            y_hat, act, fired_now = _forward_one(xb[0], W_enc[0], b_enc[0], W_dec[0], b_dec[0],
                                                 sparsity, k)
            y_hat, fired_now = y_hat[None], fired_now[None]
        else:
            pre = torch.einsum("rbi,rif->rbf", xb, W_enc) + b_enc[:, None]
            f = _activate(pre if pad is None else pre.masked_fill(pad[:, None], -math.inf),
                          sparsity, k)
            y_hat = torch.einsum("rbf,rfo->rbo", f, W_dec) + b_dec[:, None]
            act, fired_now = f, (f > 0).any(1)
        nmse = (y_hat - yb).square().sum(-1).mean(-1) / var  # [R]: each member's own batch
        loss = nmse
        if sparsity == "l1" and l1 > 0:  # act is the dense features [R, batch, D] here
            act = act if R > 1 else act[None]
            loss = loss + l1 * (act * W_dec.norm(dim=-1)[:, None]).sum(-1).mean(-1)
        opt.zero_grad(set_to_none=False)
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            fired |= fired_now
            losses[step - 1], nmses[step - 1] = loss.detach(), nmse.detach()
            if step % resample_every == 0 and step < steps:
                _resample(x, y, W_enc, b_enc, W_dec, b_dec, mask, fired, opt, sparsity, k)
                fired.zero_()
            if stop_at is not None and step % check_every == 0 and step < steps and bool(
                    (_final_nmse(x, y, W_enc, b_enc, W_dec, b_dec, mask, sparsity, k, var)
                     <= stop_at).all()):
                ran = step
                break
    out = []
    with torch.no_grad():
        final = _final_nmse(x, y, W_enc, b_enc, W_dec, b_dec, mask, sparsity, k, var)
    for r, (size, seed) in enumerate(members):
        out.append(SparseDictionary(
            kind, hook_in, hook_out, sparsity, W_enc[r, :, :size].detach().clone(),
            b_enc[r, :size].detach().clone(), W_dec[r, :size].detach().clone(),
            b_dec[r].detach().clone(), k, float(l1), seed,
            {"loss": losses[:ran, r].tolist(),
             "nmse": [*nmses[:ran - 1, r].tolist(), float(final[r])]}))
    return out


def _forward_one(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor,
                 sparsity: str, k: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """One member's step on `x` `[batch, d_in]`: the reconstruction `[batch, d_out]`, the
    features (dense `[batch, D]`) and which features fired `[D]`: 2-D matmuls. (TopK once decoded
    only the `k` rows it picked with `embedding_bag`; at D = 400, k = 32 on 2 cores its backward
    made a step 1.4x slower than the dense decode, 6.9 against 4.9 ms.)"""
    f = _activate(torch.addmm(b_enc, x, W_enc)[None], sparsity, k)[0]
    return torch.addmm(b_dec, f, W_dec), f, (f > 0).any(0)


def _final_nmse(x: Tensor, y: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor,
                b_dec: Tensor, mask: Tensor, sparsity: str, k: int | None, var: Tensor
                ) -> Tensor:
    """Each member's normalised MSE on all of `x` (in chunks)."""
    total = torch.zeros(W_enc.shape[0])
    for i in range(0, x.shape[0], 4096):
        xb, yb = x[i: i + 4096], y[i: i + 4096]
        pre = torch.einsum("bi,rif->rbf", xb, W_enc) + b_enc[:, None]
        f = _activate(pre.masked_fill((mask == 0)[:, None], -math.inf), sparsity, k)
        y_hat = torch.einsum("rbf,rfo->rbo", f, W_dec) + b_dec[:, None]
        total += (y_hat - yb).square().sum(-1).sum(-1)
    return total / x.shape[0] / var


@torch.no_grad()
def _resample(x: Tensor, y: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor,
              mask: Tensor, fired: Tensor, opt: torch.optim.Optimizer, sparsity: str,
              k: int | None) -> None:
    """Give each dead feature of each member the residual direction of one of its
    worst-reconstructed pairs (in order of loss), and reset its optimiser state."""
    dead = (~fired) & (mask > 0)
    if not bool(dead.any()):
        return
    for r in torch.nonzero(dead.any(1)).flatten().tolist():
        pre = (x @ W_enc[r] + b_enc[r]).masked_fill(mask[r] == 0, -math.inf)
        f = _activate(pre[None], sparsity, k)[0]
        resid = y - (f @ W_dec[r] + b_dec[r])
        worst = resid.square().sum(1).argsort(descending=True)
        alive = (~dead[r]) & (mask[r] > 0)
        enc_norm = float(W_enc[r][:, alive].norm(dim=0).mean()) if bool(alive.any()) else 1.0
        for j, feat in enumerate(torch.nonzero(dead[r]).flatten().tolist()):
            i = int(worst[j % len(worst)])
            d = resid[i] / resid[i].norm().clamp_min(torch.finfo(resid.dtype).tiny)
            W_dec[r, feat] = d
            if W_enc.shape[1] == W_dec.shape[2]:  # an autoencoder: read along the same direction
                W_enc[r, :, feat] = d * 0.2 * enc_norm
            else:
                xi = x[i] - x.mean(0)
                W_enc[r, :, feat] = xi / xi.norm().clamp_min(torch.finfo(x.dtype).tiny) * (
                    0.2 * enc_norm)
            b_enc[r, feat] = 0.0
            for p_, sl in ((W_enc, (r, slice(None), feat)), (b_enc, (r, feat)),
                           (W_dec, (r, feat))):
                state = opt.state.get(p_)
                if state:
                    state["exp_avg"][sl] = 0.0
                    state["exp_avg_sq"][sl] = 0.0


def train_dictionaries(model: Any, hook: str | None = None, d_sae: int | Sequence[int] = 64,
                       *, kind: str = "sae", seeds: Sequence[int] = (0,),
                       **options: Any) -> list[SparseDictionary]:
    """Dictionaries of every size in `d_sae` and seed in `seeds` on `model`'s activations at
    `hook` over all pairs, in one stack (`fit_dictionaries`'s options)."""
    check_model(model)
    hook_in, hook_out = default_hooks(model, kind, hook)
    x, y = _data(model, hook_in, hook_out)
    return fit_dictionaries(x, None if kind == "sae" else y, d_sae, seeds=seeds, kind=kind,
                            hook_in=hook_in, hook_out=hook_out, **options)


def train_sae(model: Any, hook: str | None = None, d_sae: int = 64, *, seed: int = 0,
              **options: Any) -> SparseDictionary:
    """One sparse autoencoder (`kind="transcoder"`: a transcoder) of `d_sae` features on
    `model` at `hook`, from `seed` (`train_dictionaries` trains many seeds and sizes at once)."""
    if "seeds" in options:
        raise ValueError("train_sae trains one dictionary: pass seed=, or use "
                         "train_dictionaries(..., seeds=[...]) for a stack")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return train_dictionaries(model, hook, _positive_int("d_sae", d_sae), seeds=[seed],
                              **options)[0]


# ------------------------------------------------------------------------------ features
def frequency_map(dictionary: SparseDictionary, model: Any) -> dict[str, Any]:
    """Live features per dominant frequency beside the model's neurons per frequency, and the
    share of each feature's power on `a + b` terms (median): the answer to "one feature per
    frequency, per cos/sin pair, or something else?"."""
    from analyses.groups import by_frequency

    spectra = dictionary.feature_spectra(model)
    alive = spectra.alive
    feats: dict[int, int] = {}
    for kk in spectra.k[alive].tolist():
        feats[kk] = feats.get(kk, 0) + 1
    neurons = {kk: len(v) for kk, v in by_frequency(model, alive_only=True).items()}
    keys = sorted(set(feats) | set(neurons))
    per = [feats.get(kk, 0) for kk in keys if neurons.get(kk)]
    single = spectra.single_frequency[alive]
    return {"features_per_frequency": {kk: feats.get(kk, 0) for kk in keys},
            "neurons_per_frequency": {kk: neurons.get(kk, 0) for kk in keys},
            "n_live_features": int(alive.sum()),
            "median_features_per_neuron_frequency": float(torch.tensor(per).double().median())
            if per else None,
            "median_single_frequency_share": float(single.median()) if single.numel() else None,
            "median_sum_share": float(spectra.sum[alive].median()) if bool(alive.any())
            else None}


def load_saelens(folder: str | Any) -> SparseDictionary:
    """A dictionary written by `save_saelens` (or a SAELens `standard`/`topk` SAE whose
    `apply_b_dec_to_input` is false), read back through the project's safetensors reader."""
    import json
    from pathlib import Path

    from hooked_mlp.files.format import read_plain

    folder = Path(folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    arch = cfg.get("architecture")
    if arch not in ("standard", "topk") or cfg.get("apply_b_dec_to_input"):
        raise ValueError(f"{folder}: only SAELens's 'standard' and 'topk' architectures with "
                         f"apply_b_dec_to_input false are read, got {arch!r}")
    w, _ = read_plain(folder / "sae_weights.safetensors")
    meta = cfg.get("metadata", {})
    return SparseDictionary(
        meta.get("hooked_mlp_kind", "sae"), meta.get("hook_name", ""),
        meta.get("hook_name_out", meta.get("hook_name", "")),
        "l1" if arch == "standard" else "topk", w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"],
        cfg.get("k"), float(meta.get("l1", 0.0)), int(meta.get("seed", 0)))


__all__ = ["KINDS", "SPARSITIES", "SparseDictionary", "default_hooks", "fit_dictionaries",
           "frequency_map", "load_saelens", "train_dictionaries", "train_sae"]
