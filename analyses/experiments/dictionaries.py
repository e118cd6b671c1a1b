"""Do sparse dictionaries on the hidden layer recover the frequency structure? (issue 21 §3)

On each model (e.g. the report's shipped seeds), small sparse autoencoders on
`blocks.0.mlp.hook_post` train in two stacks (L1 and TopK, `SIZES` features each, `analyses.sae`),
and each is read the way the neurons are read:

    from analyses.experiments.dictionaries import dictionaries
    result = dictionaries([load_pretrained(s) for s in range(5)], labels=["seed 0", ...])
    result.summary()["answer"]; print(result.describe()); result.figures()

**Per dictionary**: its metrics on all pairs (`SparseDictionary.metrics`: explained variance,
L0, dead features, accuracy with it spliced in) and, per live feature, its 2-D spectrum over
(a, b) (`analyses.activation_fits.grid_spectra`, the neurons' own definition): its dominant
frequency `k` and the share of its power on that frequency's low harmonics (`single`: a
*single-frequency* feature has `single >= SINGLE`). How features map to neurons: the share of
its decoder direction's squared norm on its largest neuron (`top_neuron`; *neuron-like* when
`>= NEURON_LIKE`) and on the neurons of its own frequency (`own_frequency`, neurons grouped by
`analyses.groups.by_frequency`).

**The answer, counted.** The model's *key frequencies* are those of its live neurons. Two
single-frequency features of the same `k` are a *cos/sin pair in quadrature* when their
first-order Fourier terms (`(k, 0)`, `(0, k)`, `(k, k)`, `(k, -k)`) have the same mix
(coherence `|<c1, c2>| / |c1||c2| >= COHERENT`) and differ in phase by pi/2 (within
`QUADRATURE_TOL`): `cos(w(a+b))` and `sin(w(a+b))` are such a pair. Each key frequency then
comes as `none` (no single-frequency feature), `one`, `pairs` (its features include a pair in
quadrature) or `several` (two or more, none in quadrature). The dictionary's answer is the most
common of those among the key frequencies it covers, reworded "per neuron-like direction" when
most of its features are neuron-like, or "not single-frequency" when fewer than half of its live
features are. Numbers over models go through `analyses._common.mean_sd`.

**Cost.** Each stack trains `STEPS` steps of `BATCH` pairs at learning rate `LR`, on one torch
thread by default (`threads=`; two threads are slower on a busy machine) and on the report's
threads in the report's section; the loss each dictionary
reaches is in its metrics (`nmse`), and is far from converged for TopK: the section says so.
"""

from __future__ import annotations

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


def read_features(grids: Tensor, W_dec: Tensor, neuron_k: Tensor) -> dict[str, Any]:
    """What a dictionary's features are: grids `[d_sae, p, p]` (each feature over all pairs),
    decoder rows `W_dec` `[d_sae, d_hidden]` (directions over the neurons) and each neuron's
    frequency `neuron_k` `[d_hidden]` (0: none, e.g. dead). Per live feature its `k`, `single`,
    `top_neuron`, `own_frequency`; per key frequency (those of `neuron_k`) its feature count,
    quadrature pairs and pattern; the counts and the answer (see the module's text)."""
    from analyses.activation_fits import grid_spectra

    spectra = grid_spectra(grids)
    live = torch.nonzero(spectra.alive).flatten()
    k, single = spectra.k[live], spectra.single_frequency[live]
    dec = W_dec[live].double().square()
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
            "median_own_frequency": float(own.median()) if n_live else None,
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

    def answer(self) -> str:
        """The answer most models gave for the dictionary with the most features that
        reconstructs best (lowest mean nmse)."""
        best = self.best()
        counts = self.answers()[self.names[best]]
        return max(counts, key=counts.get)

    def best(self) -> int:
        """The index of the dictionary with the lowest mean nmse over the models."""
        nmse = [mean_sd(m[j]["nmse"] for m in self.metrics)["mean"]
                for j in range(len(self.names))]
        return min(range(len(nmse)), key=lambda j: (nmse[j], -j))

    def summary(self) -> dict[str, Any]:
        """Per dictionary the mean over models (`mean_sd`) of its nmse, L0, dead features,
        spliced accuracy, single-frequency, neuron-like and quadrature-pair counts; the
        answers per dictionary and the answer."""
        per = {}
        for j, name in enumerate(self.names):
            ms, fs = [m[j] for m in self.metrics], [f[j] for f in self.features]
            per[name] = {
                "nmse": mean_sd(m["nmse"] for m in ms)["mean"],
                "l0": mean_sd(m["l0"] for m in ms)["mean"],
                "dead": mean_sd(m["dead_features"] for m in ms)["mean"],
                "accuracy_spliced": mean_sd(m["accuracy_spliced"] for m in ms)["mean"],
                "fraction_single_frequency": mean_sd(
                    f["fraction_single_frequency"] for f in fs)["mean"],
                "fraction_neuron_like": mean_sd(f["fraction_neuron_like"] for f in fs)["mean"],
                "quadrature_pairs": mean_sd(
                    sum(v["quadrature_pairs"] for v in f["per_key"].values()) for f in fs)["mean"],
                "key_frequencies": mean_sd(len(f["per_key"]) for f in fs)["mean"],
                "patterns": {pat: mean_sd(f["patterns"][pat] for f in fs)["mean"]
                             for pat in PATTERNS}}
        nf = self.neurons
        neurons = {"l0": mean_sd(n["l0"] for n in nf)["mean"],
                   "fraction_single_frequency": mean_sd(
                       n["fraction_single_frequency"] for n in nf)["mean"],
                   "quadrature_pairs": mean_sd(
                       sum(v["quadrature_pairs"] for v in n["per_key"].values())
                       for n in nf)["mean"],
                   "patterns": {pat: mean_sd(n["patterns"][pat] for n in nf)["mean"]
                                for pat in PATTERNS}}
        return headline({"models": len(self.labels), "steps": self.settings["steps"],
                         "neurons": neurons, "dictionaries": per, "answers": self.answers(),
                         "best": self.names[self.best()], "answer": self.answer()})

    def describe(self) -> str:
        s = self.summary()
        lines = [f"{len(self.labels)} models, SAEs on hook_post trained {s['steps']} steps "
                 f"(batch {self.settings['batch_size']}, lr {self.settings['lr']:g}; L1 "
                 f"{self.settings['l1']:g}, TopK k = {self.settings['k']}); means over models:"]
        for name, d in s["dictionaries"].items():
            pats = ", ".join(f"{pat} {_f(d['patterns'][pat], '.1f')}" for pat in PATTERNS)
            lines.append(
                f"{name}: nmse {_f(d['nmse'], '.3f')}, L0 {_f(d['l0'], '.1f')}, dead "
                f"{_f(d['dead'], '.1f')}, accuracy spliced {_f(d['accuracy_spliced'], '.1%')}; "
                f"single-frequency {_f(d['fraction_single_frequency'], '.0%')}, neuron-like "
                f"{_f(d['fraction_neuron_like'], '.0%')}, quadrature pairs "
                f"{_f(d['quadrature_pairs'], '.1f')}; of {_f(d['key_frequencies'], '.1f')} key "
                f"frequencies: {pats}")
        n = s["neurons"]
        lines.append(f"the neurons themselves: L0 {_f(n['l0'], '.1f')}, single-frequency "
                     f"{_f(n['fraction_single_frequency'], '.0%')}, quadrature pairs "
                     f"{_f(n['quadrature_pairs'], '.1f')}; key frequencies: " + ", ".join(
                         f"{pat} {_f(n['patterns'][pat], '.1f')}" for pat in PATTERNS))
        lines.append(f"answer (the best-reconstructing dictionary, {s['best']}): {s['answer']}")
        return "\n".join(lines)

    def table(self) -> tuple[list[str], list[list[str]]]:
        """One row per dictionary: its means and the answers the models gave."""
        s = self.summary()
        header = ["dictionary", "nmse", "L0", "dead", "accuracy spliced", "single-frequency",
                  "neuron-like", "quadrature pairs", "answers (models)"]
        rows = []
        for name, d in s["dictionaries"].items():
            words = "; ".join(f"{w}: {n}" for w, n in s["answers"][name].items())
            rows.append([name, _f(d["nmse"], ".3f"), _f(d["l0"], ".1f"), _f(d["dead"], ".1f"),
                         _f(d["accuracy_spliced"], ".1%"),
                         _f(d["fraction_single_frequency"], ".0%"),
                         _f(d["fraction_neuron_like"], ".0%"), _f(d["quadrature_pairs"], ".1f"),
                         words])
        return header, rows

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({**self.__dict__, "summary": self.summary()})

    def figures(self) -> dict[str, Any]:
        """`{"frequencies": ...}`: for the first model, live single-frequency features per key
        frequency of each dictionary beside the neurons; `{"features": ...}`: each live
        feature's single-frequency share against its neuron-like share (first model)."""
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
        return figs


# ------------------------------------------------------------------------------ computing it
def dictionaries(models: Sequence[Any], labels: Sequence[str] | None = None, *,
                 sizes: Sequence[int] = SIZES, steps: int = STEPS, batch_size: int = BATCH,
                 lr: float = LR, l1: float = L1, k: int = TOPK,
                 resample_every: int = RESAMPLE_EVERY, seed: int = 0,
                 threads: int = 1) -> Dictionaries:
    """On each of `models` (one-hot inputs, p >= 5): an L1 stack and a TopK stack of SAEs of
    `sizes` features on `blocks.0.mlp.hook_post` (`analyses.sae.train_dictionaries`, torch on
    `threads` threads), their metrics and what their features are (`read_features`)."""
    from analyses.activation_fits import layer_activations
    from analyses.groups import by_frequency
    from analyses.sae import train_dictionaries
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
    names = [f"{sp} {s}" for sp in ("l1", "topk") for s in sizes]
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
        options = dict(steps=steps, batch_size=batch_size, lr=lr, seeds=[seed],
                       resample_every=resample_every)
        with torch_threads(threads):
            trained = (train_dictionaries(model, None, sizes, sparsity="l1", l1=l1, **options)
                       + train_dictionaries(model, None, sizes, sparsity="topk", k=k, **options))
            metrics.append([d.metrics(model) for d in trained])
            features.append([read_features(d.feature_grids(model), d.W_dec, neuron_k)
                             for d in trained])
            grids = layer_activations(model)  # [d_hidden, p, p]: hook_post
            own = read_features(grids, torch.eye(grids.shape[0]), neuron_k)
            own["l0"] = float((grids > 0).flatten(1).sum(0).double().mean())
            reference.append(own)
    settings = {"sizes": sizes, "steps": steps, "batch_size": batch_size, "lr": lr, "l1": l1,
                "k": k, "resample_every": resample_every, "seed": seed,
                "hook": "blocks.0.mlp.hook_post"}
    return Dictionaries(labels, names, metrics, features, settings, reference)


def dictionaries_section(ctx: Any) -> Dictionaries:
    """The report's section: `dictionaries` on `ctx.models`, labelled by `ctx.labels`, on the
    report's torch threads (`run_report(threads=)`, 2 by default) like every other section: on
    two cores at load 1 that was 3.1 s a shipped model against 5.6 s on one thread."""
    return dictionaries(list(ctx.models), getattr(ctx, "labels", None) or None,
                        threads=torch.get_num_threads())


__all__ = ["Dictionaries", "answer", "dictionaries", "dictionaries_section",
           "first_order_terms", "quadrature_pairs", "read_features"]
