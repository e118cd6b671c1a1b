"""Do sparse dictionaries on the hidden layer recover the frequency structure? (issue 21 §3)

On each model (e.g. the report's shipped seeds), small sparse autoencoders on
`blocks.0.mlp.hook_post` train in two stacks (L1 and TopK, `SIZES` features each, `analyses.sae`),
and transcoders from `blocks.0.mlp.hook_pre` to the logits (`hook_logits`: the whole MLP after
its first linear map) in one TopK stack (`TRANSCODERS`; one-layer models), and each is read the
way the neurons are read:

    from analyses.experiments.dictionaries import dictionaries
    result = dictionaries([load_pretrained(s) for s in range(5)], labels=["seed 0", ...])
    result.summary()["answer"]; result.summary()["transcoder_answer"]; result.figures()

**Per dictionary**: its metrics on all pairs (`SparseDictionary.metrics`: explained variance of
its target, L0, dead features, accuracy with it spliced in) and, per live feature, its 2-D
spectrum over (a, b) (`analyses.activation_fits.grid_spectra`, the neurons' own definition): its
dominant frequency `k` and the share of its power on that frequency's low harmonics (`single`: a
*single-frequency* feature has `single >= SINGLE`). How features map to neurons: each feature's
direction over the neurons (an SAE's decoder row; a transcoder's encoder column, the mix of
neurons' pre-activations it reads), the share of its squared norm on its largest neuron
(`top_neuron`; *neuron-like* when `>= NEURON_LIKE`) and on the neurons of its own frequency
(`own_frequency`, neurons grouped by `analyses.groups.by_frequency`). How features map to the
logits: each feature's direction over the logits (a transcoder's decoder row; an SAE's decoder
row through `W_out`, exact for a one-layer model; a neuron's own `W_out` row), its power spectrum
over `c` (`analyses.fourier.power_spectrum`) and the share on the feature's own `k`
(`logit_own`; the study's neurons write a cosine of their input frequency, so theirs is near 1).

**The answer, counted.** The model's *key frequencies* are those of its live neurons. Two
single-frequency features of the same `k` are a *cos/sin pair in quadrature* when their
first-order Fourier terms (`(k, 0)`, `(0, k)`, `(k, k)`, `(k, -k)`) have the same mix
(coherence `|<c1, c2>| / |c1||c2| >= COHERENT`) and differ in phase by pi/2 (within
`QUADRATURE_TOL`): `cos(w(a+b))` and `sin(w(a+b))` are such a pair. Each key frequency then
comes as `none` (no single-frequency feature), `one`, `pairs` (its features include a pair in
quadrature) or `several` (two or more, none in quadrature). The dictionary's answer is the most
common of those among the key frequencies it covers, reworded "per neuron-like direction" when
most of its features are neuron-like, or "not single-frequency" when fewer than half of its live
features are. The result's answer is that of the best-reconstructing SAE, and its transcoder
answer that of the best-reconstructing transcoder (their nmse are of different targets, so they
are not ranked together). Numbers over models go through `analyses._common.mean_sd`.

**Cost.** Each stack (three a model: L1 SAEs, TopK SAEs, TopK transcoders) trains `STEPS`
steps of `BATCH` pairs at learning rate `LR`, on one torch thread by default (`threads=`; two
threads are slower on a busy machine) and on the report's threads in the report's section; the
loss each dictionary reaches is in its metrics (`nmse`), and is far from converged for TopK: the
section says so. The transcoder stack adds about half to the SAEs' cost (4.9 s a shipped model
against 3.2 s without it, two threads).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from analyses._common import headline, mean_sd, to_jsonable

SIZES = (100, 200)
STEPS, BATCH, LR = 150, 1024, 1e-2
L1, TOPK = 1e-2, 32
TRANSCODERS = ("topk",)  # the report's transcoder stacks: TopK (an L1 one is one option away)
RESAMPLE_EVERY = 50
SINGLE = 0.5  # a single-frequency feature: this share of its power on one k's low harmonics
NEURON_LIKE = 0.5  # a neuron-like feature: this share of its decoder norm^2 on one neuron
COHERENT = 0.5
QUADRATURE_TOL = math.pi / 8
PATTERNS = ("none", "one", "pairs", "several")


# ------------------------------------------------------------------------------ one dictionary
def first_order_terms(grids: Tensor, k: Tensor) -> Tensor:
    """Each grid's Fourier coefficients `[n, 4]` (complex) at `(k, 0)`, `(0, k)`, `(k, k)`,
    `(k, -k)` of its own frequency `k` `[n]` (grids `[n, p, p]`, mean removed)."""
    p = grids.shape[-1]
    g = grids.double()
    G = torch.fft.fft2(g - g.mean(dim=(1, 2), keepdim=True))
    n = torch.arange(grids.shape[0])
    kk, zero = k.long() % p, torch.zeros_like(k.long())
    return torch.stack([G[n, kk, zero], G[n, zero, kk], G[n, kk, kk], G[n, kk, (-kk) % p]], 1)


def quadrature_pairs(terms: Tensor) -> list[tuple[int, int, float]]:
    """Disjoint pairs `(i, j, phase difference)` of rows of `terms` `[n, 4]` in quadrature
    (coherent, phase difference pi/2 within `QUADRATURE_TOL`), the closest to pi/2 first."""
    n = terms.shape[0]
    norm = terms.abs().square().sum(1).sqrt().clamp_min(1e-300)
    candidates = []
    for i in range(n):
        for j in range(i + 1, n):
            inner = (terms[i].conj() * terms[j]).sum()
            coherence = float(inner.abs() / (norm[i] * norm[j]))
            off = abs(abs(float(torch.angle(inner))) - math.pi / 2)
            if coherence >= COHERENT and off <= QUADRATURE_TOL:
                candidates.append((off, i, j, float(torch.angle(inner))))
    used: set[int] = set()
    pairs = []
    for _, i, j, angle in sorted(candidates):
        if i not in used and j not in used:
            used |= {i, j}
            pairs.append((i, j, angle))
    return pairs


def read_features(grids: Tensor, W_neurons: Tensor, neuron_k: Tensor,
                  W_logits: Tensor | None = None) -> dict[str, Any]:
    """What a dictionary's features are: grids `[d_sae, p, p]` (each feature over all pairs),
    `W_neurons` `[d_sae, d_hidden]` (each feature's direction over the neurons: an SAE's decoder
    rows, a transcoder's encoder columns) and each neuron's frequency `neuron_k` `[d_hidden]` (0:
    none, e.g. dead). Per live feature its `k`, `single`, `top_neuron`, `own_frequency`; per key
    frequency (those of `neuron_k`) its feature count, quadrature pairs and pattern; the counts
    and the answer (see the module's text). With `W_logits` `[d_sae, p]` (each feature's
    direction over the logits: a transcoder's decoder rows, an SAE's decoder through `W_out`), per
    live feature also `logit_k` (the logit direction's dominant frequency over `c`) and
    `logit_own` (the share of its power on the feature's own `k`), and the share of live features
    whose logits are on their own frequency (`logit_own >= SINGLE`)."""
    from analyses.activation_fits import grid_spectra
    from analyses.fourier import power_spectrum

    spectra = grid_spectra(grids)
    live = torch.nonzero(spectra.alive).flatten()
    k, single = spectra.k[live], spectra.single_frequency[live]
    logit: dict[str, Any] = {"logit_k": [], "logit_own": [], "fraction_logits_on_own_frequency":
                             None, "median_logit_own": None}
    if W_logits is not None:
        power = power_spectrum(W_logits[live].double())  # [n_live, (p-1)/2]: k = 1..
        share = power / power.sum(1, keepdim=True).clamp_min(1e-300)
        own_logit = share.gather(1, (k.long() - 1)[:, None])[:, 0]  # k is 1..(p-1)/2
        logit = {"logit_k": (share.argmax(1) + 1).tolist() if len(live) else [],
                 "logit_own": own_logit.tolist(),
                 "fraction_logits_on_own_frequency": float((own_logit >= SINGLE).double().mean())
                 if len(live) else None,
                 "median_logit_own": float(own_logit.median()) if len(live) else None}
    dec = W_neurons[live].double().square()
    dec = dec / dec.sum(1, keepdim=True).clamp_min(1e-300)
    top = dec.max(1).values if dec.shape[1] else torch.zeros(len(live), dtype=torch.float64)
    own = (dec * (neuron_k[None, :] == k[:, None])).sum(1)
    terms = first_order_terms(grids[live], k) if len(live) else torch.zeros(0, 4)
    keys = sorted({int(x) for x in neuron_k.tolist() if x > 0})
    is_single = single >= SINGLE
    per_key = {}
    for kk in keys:
        rows = torch.nonzero(is_single & (k == kk)).flatten().tolist()
        pairs = quadrature_pairs(terms[rows]) if len(rows) > 1 else []
        pattern = ("none", "one")[len(rows)] if len(rows) < 2 else (
            "pairs" if pairs else "several")
        per_key[kk] = {"features": len(rows), "neurons": int((neuron_k == kk).sum()),
                       "quadrature_pairs": len(pairs),
                       "phase_differences": [a for _, _, a in pairs], "pattern": pattern}
    counts = {pat: sum(v["pattern"] == pat for v in per_key.values()) for pat in PATTERNS}
    n_live = len(live)
    frac_single = float(is_single.double().mean()) if n_live else None
    frac_neuron = float((top >= NEURON_LIKE).double().mean()) if n_live else None
    in_key = [int(x) in per_key for x in k.tolist()]
    frac_in_key = float(torch.tensor(in_key, dtype=torch.float64).mean()) if n_live else None
    return {"n_live": n_live, "k": k.tolist(), "single": single.tolist(),
            "top_neuron": top.tolist(), "own_frequency": own.tolist(), "per_key": per_key,
            "patterns": counts, "fraction_single_frequency": frac_single,
            "fraction_neuron_like": frac_neuron, "fraction_on_key_frequencies": frac_in_key,
            "median_own_frequency": float(own.median()) if n_live else None, **logit,
            "answer": answer(counts, frac_single, frac_neuron)}


def answer(counts: dict[str, int], frac_single: float | None,
           frac_neuron: float | None) -> str:
    """The answer in words from the key frequencies' pattern counts and the feature shares."""
    if not frac_single or frac_single < 0.5:
        return "not single-frequency"
    covered = {pat: n for pat, n in counts.items() if pat != "none"}
    if not any(covered.values()):
        return "no key frequency covered"
    best = max(covered, key=lambda pat: (covered[pat], pat == "one"))
    if best == "one":
        return "one feature per frequency"
    if best == "pairs":
        return "cos/sin pairs in quadrature"
    return ("several per frequency, neuron-like" if frac_neuron and frac_neuron >= 0.5
            else "several per frequency, not in quadrature")


def _f(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`, or "n/a" when it is not defined (None)."""
    return "n/a" if value is None else format(value, spec)


# ------------------------------------------------------------------------------ the result
@dataclass
class Dictionaries:
    """Per model (in `labels` order) and per dictionary (`names`, e.g. `"l1 200"`): `metrics`
    (`SparseDictionary.metrics`) and `features` (`read_features`). `settings`: how they were
    trained. `neurons`: the reference, each model's own neurons read the same way (their
    activation grids, the identity as decoder) with their `l0` (neurons active per pair)."""

    labels: list[str]
    names: list[str]
    metrics: list[list[dict[str, Any]]]  # [model][dictionary]
    features: list[list[dict[str, Any]]]  # [model][dictionary]
    settings: dict[str, Any]
    neurons: list[dict[str, Any]]  # [model]: the neurons read as a dictionary, and their L0

    def answers(self) -> dict[str, dict[str, int]]:
        """Per dictionary, how many models gave each answer."""
        out: dict[str, dict[str, int]] = {}
        for j, name in enumerate(self.names):
            for per in self.features:
                word = per[j]["answer"]
                out.setdefault(name, {})[word] = out.get(name, {}).get(word, 0) + 1
        return out

    def kind(self, j: int) -> str:
        """`"transcoder"` or `"sae"`: what dictionary `names[j]` is."""
        return "transcoder" if self.names[j].startswith("transcoder") else "sae"

    def answer(self, kind: str = "sae") -> str | None:
        """The answer most models gave for the dictionary of `kind` that reconstructs best
        (lowest mean nmse; an SAE's and a transcoder's nmse are of different targets, so each
        kind has its own); None when there is none of that kind."""
        best = self.best(kind)
        if best is None:
            return None
        counts = self.answers()[self.names[best]]
        return max(counts, key=counts.get)

    def best(self, kind: str = "sae") -> int | None:
        """The index of the dictionary of `kind` with the lowest mean nmse over the models
        (None when there is none of that kind)."""
        if kind not in ("sae", "transcoder"):
            raise ValueError(f"kind must be 'sae' or 'transcoder', got {kind!r}")
        nmse = {j: mean_sd(m[j]["nmse"] for m in self.metrics)["mean"]
                for j in range(len(self.names)) if self.kind(j) == kind}
        if not nmse:
            return None
        def key(j: int) -> tuple[float, int]:  # an undefined nmse (None or NaN) comes last
            v = nmse[j]
            return (math.inf if v is None or math.isnan(v) else v, -j)

        return min(nmse, key=key)

    def summary(self) -> dict[str, Any]:
        """Per dictionary the mean over models (`mean_sd`) of its nmse, L0, dead features,
        spliced accuracy, single-frequency, neuron-like, logits-on-own-frequency and
        quadrature-pair counts; the answers per dictionary; the best SAE and its answer
        (`best`, `answer`) and the best transcoder and its answer (None without one)."""
        per = {}
        for j, name in enumerate(self.names):
            ms, fs = [m[j] for m in self.metrics], [f[j] for f in self.features]
            per[name] = {
                "kind": self.kind(j),
                "nmse": mean_sd(m["nmse"] for m in ms)["mean"],
                "l0": mean_sd(m["l0"] for m in ms)["mean"],
                "dead": mean_sd(m["dead_features"] for m in ms)["mean"],
                "accuracy_spliced": mean_sd(m["accuracy_spliced"] for m in ms)["mean"],
                **self._shares(fs)}
        nf = self.neurons
        neurons = {"l0": mean_sd(n["l0"] for n in nf)["mean"], **self._shares(nf)}
        best, tc = self.best("sae"), self.best("transcoder")
        return headline({"models": len(self.labels), "steps": self.settings["steps"],
                         "neurons": neurons, "dictionaries": per, "answers": self.answers(),
                         "best": None if best is None else self.names[best],
                         "answer": self.answer("sae"),
                         "transcoder_best": None if tc is None else self.names[tc],
                         "transcoder_answer": self.answer("transcoder")})

    @staticmethod
    def _shares(fs: list[dict[str, Any]]) -> dict[str, Any]:
        """The means over models of what `read_features` gave (`fs`: one per model)."""
        def mean(key: str) -> float | None:
            return mean_sd(f[key] for f in fs)["mean"]

        return {"fraction_single_frequency": mean("fraction_single_frequency"),
                "fraction_neuron_like": mean("fraction_neuron_like"),
                "fraction_logits_on_own_frequency": mean("fraction_logits_on_own_frequency"),
                "quadrature_pairs": mean_sd(
                    sum(v["quadrature_pairs"] for v in f["per_key"].values()) for f in fs)["mean"],
                "key_frequencies": mean_sd(len(f["per_key"]) for f in fs)["mean"],
                "patterns": {pat: mean_sd(f["patterns"][pat] for f in fs)["mean"]
                             for pat in PATTERNS}}

    def describe(self) -> str:
        s = self.summary()
        st = self.settings
        tcs = st.get("transcoders") or []
        lines = [f"{len(self.labels)} models, SAEs on {st['hook']}"
                 + (f" and {'/'.join(t.upper() if t == 'l1' else 'TopK' for t in tcs)} "
                    f"transcoders {' -> '.join(st['transcoder_hooks'])}" if tcs else "")
                 + f" trained {s['steps']} steps (batch {st['batch_size']}, lr {st['lr']:g}; L1 "
                 f"{st['l1']:g}, TopK k = {st['k']}); means over models:"]
        for name, d in s["dictionaries"].items():
            lines.append(f"{name}: nmse {_f(d['nmse'], '.3f')}, L0 {_f(d['l0'], '.1f')}, dead "
                         f"{_f(d['dead'], '.1f')}, accuracy spliced "
                         f"{_f(d['accuracy_spliced'], '.1%')}; " + self._words(d))
        n = s["neurons"]
        lines.append(f"the neurons themselves: L0 {_f(n['l0'], '.1f')}; " + self._words(n))
        lines.append(f"answer (the best-reconstructing SAE, {s['best']}): {s['answer']}")
        if s["transcoder_best"] is not None:
            lines.append(f"answer (the best-reconstructing transcoder, {s['transcoder_best']}): "
                         f"{s['transcoder_answer']}")
        return "\n".join(lines)

    @staticmethod
    def _words(d: dict[str, Any]) -> str:
        pats = ", ".join(f"{pat} {_f(d['patterns'][pat], '.1f')}" for pat in PATTERNS)
        return (f"single-frequency {_f(d['fraction_single_frequency'], '.0%')}, neuron-like "
                f"{_f(d['fraction_neuron_like'], '.0%')}, logits on own frequency "
                f"{_f(d['fraction_logits_on_own_frequency'], '.0%')}, quadrature pairs "
                f"{_f(d['quadrature_pairs'], '.1f')}; of {_f(d['key_frequencies'], '.1f')} key "
                f"frequencies: {pats}")

    def table(self) -> tuple[list[str], list[list[str]]]:
        """One row per dictionary, then the neurons: the means and the answers the models
        gave."""
        s = self.summary()
        header = ["dictionary", "nmse", "L0", "dead", "accuracy spliced", "single-frequency",
                  "neuron-like", "logits on own frequency", "quadrature pairs",
                  "answers (models)"]
        rows = []
        for name, d in s["dictionaries"].items():
            words = "; ".join(f"{w}: {n}" for w, n in s["answers"][name].items())
            rows.append([name, _f(d["nmse"], ".3f"), _f(d["l0"], ".1f"), _f(d["dead"], ".1f"),
                         _f(d["accuracy_spliced"], ".1%"), *self._cells(d), words])
        n = s["neurons"]
        rows.append(["the neurons", "", _f(n["l0"], ".1f"), "", "", *self._cells(n), ""])
        return header, rows

    @staticmethod
    def _cells(d: dict[str, Any]) -> list[str]:
        return [_f(d["fraction_single_frequency"], ".0%"), _f(d["fraction_neuron_like"], ".0%"),
                _f(d["fraction_logits_on_own_frequency"], ".0%"),
                _f(d["quadrature_pairs"], ".1f")]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({**self.__dict__, "summary": self.summary()})

    def figures(self) -> dict[str, Any]:
        """For the first model: `"frequencies"`, live single-frequency features per key
        frequency of each dictionary beside the neurons; `"features"`, each live feature's
        single-frequency share against its neuron-like share; `"logits"`, the histogram of the
        live features' (and the neurons') logit share on their own frequency."""
        from analyses.views import SEED_COLORS, new_figure

        figs = {}
        fig, axes = new_figure(10, 3)
        ax = axes[0, 0]
        per = self.features[0]
        keys = sorted({kk for f in per for kk in f["per_key"]})
        x = torch.arange(len(keys)).tolist()
        width = 0.8 / (len(per) + 1)
        ax.bar([i - 0.4 for i in x], [per[0]["per_key"][kk]["neurons"] for kk in keys],
               width=width, color="0.6", label="neurons", align="edge")
        for j, (name, f) in enumerate(zip(self.names, per, strict=True)):
            ax.bar([i - 0.4 + (j + 1) * width for i in x],
                   [f["per_key"][kk]["features"] for kk in keys], width=width, align="edge",
                   color=SEED_COLORS[j % len(SEED_COLORS)], label=name)
        ax.set_xticks(x, [str(kk) for kk in keys], fontsize=6)
        ax.set_xlabel(f"key frequency k ({self.labels[0]})")
        ax.set_ylabel("single-frequency features")
        ax.legend(fontsize=7, ncol=len(per) + 1)
        figs["frequencies"] = fig
        fig, axes = new_figure(10, 3, 1, len(per))
        for j, (name, f) in enumerate(zip(self.names, per, strict=True)):
            a = axes[0, j]
            a.scatter(f["top_neuron"], f["single"], s=6, color=SEED_COLORS[j % len(SEED_COLORS)])
            a.axvline(NEURON_LIKE, color="0.5", lw=0.8, ls="--")
            a.axhline(SINGLE, color="0.5", lw=0.8, ls="--")
            a.set_xlim(0, 1)
            a.set_ylim(0, 1)
            a.set_title(name, fontsize=8)
            a.set_xlabel("top neuron share", fontsize=7)
        axes[0, 0].set_ylabel("single-frequency share")
        figs["features"] = fig
        fig, axes = new_figure(10, 3)
        ax = axes[0, 0]
        bins = torch.linspace(0, 1, 21).tolist()
        ax.hist(self.neurons[0]["logit_own"], bins=bins, histtype="stepfilled", color="0.8",
                label="neurons")
        for j, (name, f) in enumerate(zip(self.names, per, strict=True)):
            if f["logit_own"]:
                ax.hist(f["logit_own"], bins=bins, histtype="step", lw=1.2, label=name,
                        color=SEED_COLORS[j % len(SEED_COLORS)])
        ax.axvline(SINGLE, color="0.5", lw=0.8, ls="--")
        ax.set_xlabel(f"share of a feature's logit direction on its own frequency "
                      f"({self.labels[0]})")
        ax.set_ylabel("live features")
        ax.legend(fontsize=7, ncol=2)
        figs["logits"] = fig
        return figs
# ------------------------------------------------------------------------------ computing it
def dictionaries(models: Sequence[Any], labels: Sequence[str] | None = None, *,
                 sizes: Sequence[int] = SIZES, steps: int = STEPS, batch_size: int = BATCH,
                 lr: float = LR, l1: float = L1, k: int = TOPK,
                 resample_every: int = RESAMPLE_EVERY, seed: int = 0,
                 transcoders: Sequence[str] = TRANSCODERS, threads: int = 1) -> Dictionaries:
    """On each of `models` (one-hot inputs, p >= 5): an L1 stack and a TopK stack of SAEs of
    `sizes` features on `blocks.0.mlp.hook_post`, and a stack of transcoders
    (`blocks.0.mlp.hook_pre` -> `hook_logits`) per sparsity in `transcoders` (`()`: none; one-layer
    models only) (`analyses.sae.train_dictionaries`, torch on `threads` threads), their metrics
    and what their features are (`read_features`)."""
    from analyses.activation_fits import layer_activations
    from analyses.groups import by_frequency
    from analyses.sae import SPARSITIES, default_hooks, train_dictionaries
    from hooked_mlp.checks import check_finite_logits
    from hooked_mlp.data import all_pairs
    from hooked_mlp.training.trainer import torch_threads

    models = list(models)
    if not models:
        raise ValueError("models must hold at least one model")
    labels = [f"model {i}" for i in range(len(models))] if labels is None else list(labels)
    if len(labels) != len(models):
        raise ValueError(f"labels must name each of the {len(models)} models, got {len(labels)}")
    sizes = sorted(set(sizes))
    if not sizes or k > sizes[0]:
        raise ValueError(f"sizes must be given and k at most the smallest ({sizes}), got k={k}")
    if isinstance(transcoders, str):
        raise ValueError(f"transcoders must be a sequence of sparsities from {list(SPARSITIES)} "
                         f"(e.g. ('topk',), or () for none), got the string {transcoders!r}")
    transcoders = list(dict.fromkeys(transcoders))
    if any(t not in SPARSITIES for t in transcoders):
        raise ValueError(f"transcoders must be sparsities from {list(SPARSITIES)} (or empty), "
                         f"got {transcoders!r}")
    deep = [(lab, m.cfg.n_layers) for lab, m in zip(labels, models, strict=True)
            if m.cfg.n_layers != 1]
    if transcoders and deep:
        raise ValueError(f"transcoders (hook_pre -> the logits, read against the first layer's "
                         f"neurons) need one-layer models; {deep[0][0]!r} has {deep[0][1]} "
                         f"layers: pass transcoders=()")
    names = ([f"{sp} {s}" for sp in ("l1", "topk") for s in sizes]
             + [f"transcoder {sp} {s}" for sp in transcoders for s in sizes])
    sparse = {"l1": dict(sparsity="l1", l1=l1), "topk": dict(sparsity="topk", k=k)}
    options = dict(steps=steps, batch_size=batch_size, lr=lr, seeds=[seed],
                   resample_every=resample_every)
    metrics, features, reference = [], [], []
    for model in models:
        p = model.cfg.p
        if p < 5:
            raise ValueError(f"sparse dictionaries need p >= 5 (a few frequencies and pairs), "
                             f"got p={p}")
        groups = by_frequency(model, alive_only=True)  # refuses what has no input frequencies
        with torch.no_grad():  # an overflowing model: no accuracy to splice against
            check_finite_logits(model(all_pairs(p, model.device)),
                                "the sparse dictionaries' spliced accuracies")
        neuron_k = torch.zeros(model.cfg.d_hidden, dtype=torch.long)
        for kk, neurons in groups.items():
            neuron_k[neurons] = kk
        # the logits are linear in a one-layer model's hook_post: W_out maps a direction over
        # its neurons to one over the logits (an SAE on a deeper model's first layer: none)
        W_out = model.W_out.detach().cpu().double() if model.cfg.n_layers == 1 else None
        with torch_threads(threads):
            saes = [d for sp in ("l1", "topk")
                    for d in train_dictionaries(model, None, sizes, **sparse[sp], **options)]
            tcs = [d for sp in transcoders
                   for d in train_dictionaries(model, None, sizes, kind="transcoder",
                                               **sparse[sp], **options)]
            metrics.append([d.metrics(model) for d in saes + tcs])
            features.append(
                [read_features(d.feature_grids(model), d.W_dec, neuron_k,
                               None if W_out is None else d.W_dec.double() @ W_out)
                 for d in saes]
                + [read_features(d.feature_grids(model), d.W_enc.t(), neuron_k, d.W_dec)
                   for d in tcs])
            grids = layer_activations(model)  # [d_hidden, p, p]: hook_post
            own = read_features(grids, torch.eye(grids.shape[0]), neuron_k, W_out)
            own["l0"] = float((grids > 0).flatten(1).sum(0).double().mean())
            reference.append(own)
    settings = {"sizes": sizes, "steps": steps, "batch_size": batch_size, "lr": lr, "l1": l1,
                "k": k, "resample_every": resample_every, "seed": seed,
                "hook": "blocks.0.mlp.hook_post", "transcoders": transcoders,
                "transcoder_hooks": list(default_hooks(models[0], "transcoder", None))
                if transcoders else []}
    return Dictionaries(labels, names, metrics, features, settings, reference)


# what a report may set (`ReportContext.dictionary_options`): `dictionaries`' own keywords
OPTIONS = tuple(name for name, par in inspect.signature(dictionaries).parameters.items()
                if par.kind is par.KEYWORD_ONLY and name != "threads")


def check_dictionary_options(options: Any) -> None:
    """Refuse report options that `dictionaries` does not take (`OPTIONS`), by name."""
    if not isinstance(options, dict):
        raise ValueError(f"dictionary_options must be a dict of {list(OPTIONS)}, got "
                         f"{type(options).__name__}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"dictionary_options takes {list(OPTIONS)}, got {unknown}")


def dictionaries_section(ctx: Any) -> Dictionaries:
    """The report's section: `dictionaries` on `ctx.models`, labelled by `ctx.labels`, with
    `ctx.dictionary_options` (default: the module's budget), on the report's torch threads
    (`run_report(threads=)`, 2 by default) like every other section: on two cores at load 1 that
    was 3.1 s a shipped model against 5.6 s on one thread (the SAEs alone)."""
    return dictionaries(list(ctx.models), getattr(ctx, "labels", None) or None,
                        threads=torch.get_num_threads(),
                        **getattr(ctx, "dictionary_options", {}))


__all__ = ["OPTIONS", "Dictionaries", "answer", "check_dictionary_options", "dictionaries",
           "dictionaries_section",
           "first_order_terms", "quadrature_pairs", "read_features"]
