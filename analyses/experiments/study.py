"""The study's claims, measured: per-model numbers, their spread over models, and verdicts.

`study(models, labels)` analyses a set of models of one configuration and returns a
`StudyResult` (JSON-ready numbers, the claims with their verdicts, and the analysis objects the
figures are drawn from). Where a claim of the study does not apply to the configuration (output
phases of a deeper model, Fourier structure over residues for `mul`, `a` and `b` phases when the
inputs are tied, ...) the claim says why instead of printing a number that means nothing.
Nothing here draws or writes: `analyses.pages.report` shows the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from analyses._common import (
    check_one_hot,
    fourier_structure,
    headline,
    mean_sd,
    phase_sign,
    wrap_angle,
)
from analyses.cosine_fit import NeuronFits, fit_cosines, fit_harmonics, fit_neurons
from analyses.fourier import FrequencyHistogram, frequency_histogram, neuron_signals
from analyses.replacement import ReplacementCurve, replacement_curve
from analyses.synthetic import SyntheticCurve, synthetic_curve
from hooked_mlp._moved import renamed
from hooked_mlp.config import MLPConfig
from hooked_mlp.family import ACTIVATIONS, OPERATIONS
from hooked_mlp.helpers import accuracy

__getattr__ = renamed(__name__)  # its old names: the rows of analyses/__init__.py

# replacement variants: label -> (form, parts, order, n_orders)
REPLACEMENT_VARIANTS = {
    "cosine fits, random order (the study's experiment)": ("separate", "both", "random", 10),
    "cosine fits, best-fitting neurons first": ("separate", "both", "best_first", 1),
    "cosine fits, worst-fitting neurons first": ("separate", "both", "worst_first", 1),
    "the study's form (shared k, s, o; φ_out = φ_a ± φ_b)": ("study", "both", "random", 5),
    "inputs only replaced": ("separate", "inputs", "random", 5),
    "outputs only replaced": ("separate", "outputs", "random", 5),
    "outputs fitted with 2 harmonics (k and 2k)": ("harmonic", "both", "random", 10),
}
MAIN_VARIANT = "cosine fits, random order (the study's experiment)"
HARMONIC_VARIANT = "outputs fitted with 2 harmonics (k and 2k)"
STUDY_VARIANT = "the study's form (shared k, s, o; φ_out = φ_a ± φ_b)"
CLAIMS = ("training", "inputs", "outputs", "replacement", "synthetic", "frequencies",
          "free_frequency")


def applicability(cfg: MLPConfig, trained: bool = True) -> dict[str, str | None]:
    """For each claim, None where it applies to models of `cfg`, else why it does not."""
    op = OPERATIONS[cfg.operation]
    fourier = fourier_structure(cfg)
    deep = None if cfg.n_layers == 1 else (
        f"not applicable to a {cfg.n_layers}-layer model: the output weights belong to the last "
        "layer's neurons, not to the neurons whose input weights are fitted")
    out: dict[str, str | None] = {
        "training": None if trained else "no training record (weights only)",
        "inputs": fourier or ("not applicable with tied inputs: a and b share one weight, so "
                              "they have the same frequency, scale, offset and phase by "
                              "construction" if cfg.tied_inputs else None),
        "outputs": fourier or deep or (
            "not applicable: with tied inputs the model is symmetric in a and b, so it cannot "
            "compute a - b" if cfg.tied_inputs and op.phase_sign == -1 else None),
        "replacement": fourier or deep,
        "synthetic": fourier,
        "frequencies": fourier,
        "free_frequency": fourier or deep,
    }
    return out


@dataclass
class ModelMeasurements:
    """Everything measured on one model (the objects the figures are drawn from included)."""

    label: str
    accuracy_all: float
    train_acc: float | None
    val_acc: float | None
    epochs: int | None
    hist: FrequencyHistogram | None
    fits: NeuronFits | None
    fit_summary: dict[str, Any]
    curves: dict[str, ReplacementCurve]
    harmonics: dict[str, float]

    def summary(self) -> dict[str, Any]:
        """Its accuracies and epochs, the fits' headline numbers and each replacement curve's
        ends."""
        return headline({"label": self.label, "accuracy_all": self.accuracy_all,
                         "train_acc": self.train_acc, "val_acc": self.val_acc,
                         "epochs": self.epochs, "fits": self.fit_summary,
                         "replacement": {k: c.summary() for k, c in self.curves.items()}})

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "accuracy_all": self.accuracy_all,
                "train_acc": self.train_acc, "val_acc": self.val_acc, "epochs": self.epochs,
                "fits": self.fit_summary,
                "frequencies": None if self.hist is None else self.hist.to_dict(),
                "output_harmonics": self.harmonics,
                "replacement": {k: c.to_dict() for k, c in self.curves.items()}}


def _output_harmonic_stats(model: Any, fits: NeuronFits) -> dict[str, float]:
    """Share of the output weights' variance at `k` and `2k`, and the phase of the `2k` term."""
    w_out = neuron_signals(model)["out"]
    h = fit_harmonics(w_out, fits.out.k, 2)
    var = (w_out.double() - w_out.double().mean(1, keepdim=True)).square().sum(1)
    ok = var > 0
    share = (h.scale.double().square() * model.cfg.p / 2)[ok] / var[ok][:, None]
    # how far the 2k term's phase is from 2(phi_a + s phi_b) + pi (0: exactly opposite sign)
    sign = fits.phase_sign or 1
    off_pi = wrap_angle(h.phase[:, 1] - 2 * (fits.a.phase + sign * fits.b.phase) - math.pi)
    return {
        "share_k_median": float(share[:, 0].median()),
        "share_2k_median": float(share[:, 1].median()),
        "r2_two_harmonics_median": float(h.r2[ok].median()),
        "phase_2k_vs_2phi_plus_pi_abs_median": float(off_pi.abs()[ok].median()),
    }


def _input_fit_summary(model: Any) -> dict[str, Any]:
    """For a deeper model: cosine fits of the first layer's input weights only."""
    sig = neuron_signals(model)
    fa, fb = fit_cosines(sig["a"]), fit_cosines(sig["b"])
    ok = fa.r2.isfinite() & fb.r2.isfinite()
    return {"n_neurons": model.cfg.d_hidden, "n_constant": int((~ok).sum()),
            "frac_k_a_eq_b": float((fa.k == fb.k)[ok].float().mean()) if ok.any() else None,
            "r2_a_median": float(fa.r2[ok].median()) if ok.any() else None,
            "r2_b_median": float(fb.r2[ok].median()) if ok.any() else None}


def measure_study_model(model: Any, label: str, applies: dict[str, str | None],
                        n_orders_scale: float = 1.0) -> ModelMeasurements:
    """Every per-model measurement the claims that apply need."""
    info = model.train_info
    has_val = info is not None and "val_acc" in info.metrics
    fits, summary, curves, harmonics = None, {}, {}, {}
    if model.cfg.p < 3:  # no frequency to fit: every Fourier claim reads n/a (applicability)
        pass
    elif model.cfg.n_layers == 1:
        fits = fit_neurons(model)  # closed form: integer k, comparable phases
        summary = fits.summary()
        if applies["free_frequency"] is None:
            refined = fit_neurons(model, refine=True).summary()  # the study's curve_fit
            summary |= {k: v for k, v in refined.items()
                        if k.startswith(("free_freq", "frac_free_freq"))}
        if applies["replacement"] is None:
            for name, (form, parts, order, n_orders) in REPLACEMENT_VARIANTS.items():
                n = max(1, round(n_orders * n_orders_scale)) if order == "random" else 1
                curves[name] = replacement_curve(model, order=order, n_orders=n, form=form,
                                                 parts=parts, fits=fits, seed=0)
            harmonics = _output_harmonic_stats(model, fits)
    else:
        summary = _input_fit_summary(model)
    return ModelMeasurements(
        label=label, accuracy_all=accuracy(model),
        train_acc=accuracy(model, "train") if info else None,
        val_acc=accuracy(model, "val") if has_val else None,
        epochs=info.metrics.get("epochs", info.train_config.epochs) if info else None,
        hist=frequency_histogram(model) if model.cfg.p >= 3 else None, fits=fits,
        fit_summary=summary, curves=curves, harmonics=harmonics)


def aggregate(per: list[ModelMeasurements], synth: SyntheticCurve | None) -> dict[str, Any]:
    """Every headline number with its spread over the models."""
    keys = [k for k in per[0].fit_summary if k != "phase_sign"]
    fits = {k: mean_sd([m.fit_summary.get(k) for m in per]) for k in keys}
    hist_keys = ("n_distinct", "effective_number", "most_common_count", "top_fraction_median")
    freq = {k: mean_sd([getattr(m.hist, k) for m in per if m.hist is not None])
            for k in hist_keys}
    freq["n_available"] = None if per[0].hist is None else per[0].hist.n_available
    out: dict[str, Any] = {
        "epochs": sorted({m.epochs for m in per if m.epochs is not None}),
        "train_acc": mean_sd([m.train_acc for m in per]),
        "val_acc": mean_sd([m.val_acc for m in per]),
        "accuracy_all": mean_sd([m.accuracy_all for m in per]),
        "fits": fits,
        "frequencies": freq,
    }
    if per[0].curves:
        labels = list(per[0].curves)
        out["replacement"] = {
            label: {"fractions": per[0].curves[label].fractions,
                    "mean": [mean_sd([m.curves[label].mean[i] for m in per])["mean"]
                             for i in range(len(per[0].curves[label].fractions))]}
            for label in labels}
        out["replacement_at_90_by_variant"] = {
            label: mean_sd([m.curves[label].at(0.9) for m in per]) for label in labels}
        out["replacement_at_90"] = out["replacement_at_90_by_variant"][MAIN_VARIANT]
        out["replacement_harmonic_at_90"] = out["replacement_at_90_by_variant"][
            HARMONIC_VARIANT]
        out["output_harmonics"] = {k: mean_sd([m.harmonics[k] for m in per])
                                   for k in per[0].harmonics}
    if synth is not None:
        out["synthetic"] = {str(n): synth.at(n) | {"n": len(synth.seeds)} for n in synth.ns}
    return out


def _pct(s: dict[str, float], digits: int = 2) -> str:
    if s["n"] == 0:
        return "n/a"
    if s["n"] == 1:
        return f"{100 * s['mean']:.{digits}f} %"
    return (f"{100 * s['mean']:.{digits}f} % ± {100 * s['sd']:.{digits}f} "
            f"(min {100 * s['min']:.{digits}f}, n={s['n']})")


def _num(s: dict[str, float], digits: int = 3, unit: str = "") -> str:
    if s["n"] == 0:
        return "n/a"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}g}{unit}"
    return f"{s['mean']:.{digits}g}{unit} ± {s['sd']:.2g} (n={s['n']})"


def claims(agg: dict[str, Any], cfg: MLPConfig, applies: dict[str, str | None]
           ) -> list[dict[str, str]]:
    """The study's claims, this project's measurement, and a verdict from fixed thresholds
    (`holds`, `partly`, `differs`, or `n/a` with the reason as the measurement)."""
    rows: list[dict[str, str]] = []
    sign = phase_sign(cfg)
    rel = "φ_a − φ_b" if sign == -1 else "φ_a + φ_b"
    if cfg.tied_inputs:
        rel = "2φ" if sign == 1 else rel

    chance = _near_chance(agg, cfg)

    def row(key: str, claim: str, study_says: str, measured: Any, ok: Any,
            partly: Any = lambda: False, basis: Sequence[dict[str, Any]] = ()) -> None:
        why = applies[key]
        if why is not None:
            rows.append({"claim": claim, "study": study_says, "measured": why, "verdict": "n/a"})
            return
        text = measured()
        no_signal = (chance if key in ABOUT_THE_COMPUTATION else None) or (
            "nothing to measure: every number it rests on is n/a (dead or constant neurons)"
            if basis and all(b.get("n", 0) == 0 for b in basis) else None)
        if no_signal is not None:
            rows.append({"claim": claim, "study": study_says, "measured": f"{text} — no "
                         f"verdict: {no_signal}", "verdict": "no verdict"})
            return
        good, part = ok(), partly()
        rows.append({"claim": claim, "study": study_says, "measured": text,
                     "verdict": "holds" if good else ("partly" if part else "differs")})

    tr, va = agg["train_acc"], agg["val_acc"]
    epochs = ", ".join(str(e) for e in agg["epochs"]) or "?"
    row("training", "1. Training reaches near-perfect accuracy",
        "near-perfect train and validation accuracy after 2000 epochs",
        lambda: f"after {epochs} epochs: train {_pct(tr)}; validation "
                + (_pct(va) if va["n"] else "none (trained on every pair)"),
        lambda: tr["min"] >= 0.99 and (va["n"] == 0 or va["min"] >= 0.99),
        lambda: va["n"] > 0 and va["mean"] >= 0.95)
    f = agg["fits"]
    row("inputs", "2. Inputs from a and b share frequency, scale and offset; phases differ",
        "same k, s, o; different φ",
        lambda: f"same k: {_pct(f['frac_k_a_eq_b'], 1)} of neurons; |s_a − s_b| / s: median "
                f"{_num(f['scale_rel_diff_median'], 2)}, within 10 %: "
                f"{_pct(f['frac_scale_within_10pct'], 1)}; |o_a − o_b| / s: median "
                f"{_num(f['offset_diff_over_scale_median'], 2)}; |φ_a − φ_b|: median "
                f"{_num(f['phase_a_minus_b_abs_median'], 2, ' rad')}"
        if "scale_rel_diff_median" in f else
        f"first layer: same k: {_pct(f['frac_k_a_eq_b'], 1)} of neurons; R² of a: median "
        f"{_num(f['r2_a_median'], 3)}, of b: {_num(f['r2_b_median'], 3)}",
        lambda: f["frac_k_a_eq_b"]["mean"] >= 0.9 and (
            "scale_rel_diff_median" not in f or (f["scale_rel_diff_median"]["mean"] < 0.1
                                                 and f["phase_a_minus_b_abs_median"]["mean"]
                                                 > 0.3)),
        lambda: f["frac_k_a_eq_b"]["mean"] >= 0.9, basis=[f.get("frac_k_a_eq_b", {})])
    row("outputs", f"3. Output weights: same frequency, φ_out ≈ {rel}",
        "same k; φ_out = φ_a + φ_b",
        lambda: f"same k (a, b, out): {_pct(f['frac_k_all_equal'], 1)}; "
                f"|φ_out − ({rel})|: median {_num(f['phase_error_abs_median'], 2, ' rad')}, "
                f"< π/8 for {_pct(f['frac_phase_error_below_pi_8'], 1)}",
        lambda: f["frac_k_all_equal"]["mean"] >= 0.9 and f["phase_error_abs_median"]["mean"]
        < 0.3, basis=[f.get("frac_k_all_equal", {})])
    row("replacement", "4. Replacing > 90 % of neurons by cosine fits keeps > 80 % accuracy",
        "> 80 % with > 90 % replaced",
        lambda: f"90 % replaced: {_pct(agg['replacement_at_90'], 1)} (single-cosine fits, "
                f"random orders); with a second output harmonic: "
                f"{_pct(agg['replacement_harmonic_at_90'], 1)}",
        lambda: agg["replacement_at_90"]["mean"] > 0.8 and agg["replacement_at_90"]["min"] > 0.8,
        lambda: agg["replacement_at_90"]["mean"] > 0.8)
    syn = agg.get("synthetic", {})
    row("synthetic", "5. Random cosine neurons compute the operation modulo p",
        "> 95 % at N = 256, 100 % at N = 512 (for a + b, p = 113)",
        lambda: f"ReLU random cosine models computing {OPERATIONS[cfg.operation].symbol} mod "
                f"{cfg.p}: N = 256: {_pct(syn['256'])}; N = 512: {_pct(syn['512'], 3)}",
        lambda: syn["256"]["mean"] > 0.95 and syn["512"]["min"] >= 0.999,
        lambda: syn["256"]["mean"] > 0.9)
    h = agg["frequencies"]
    row("frequencies", "6. The MLP uses a broad range of frequencies",
        "broad range (unlike the transformer's few key frequencies)",
        lambda: f"{_num(h['n_distinct'], 3)} distinct input frequencies of {h['n_available']} "
                f"per model (effective number {_num(h['effective_number'], 3)}); at most "
                f"{_num(h['most_common_count'], 2)} of {cfg.d_hidden} neurons share one; a "
                f"neuron's own frequency holds a median {_pct(h['top_fraction_median'], 0)} of "
                "its input weights' variance",
        # broad, and real: an untrained model's neurons spread over every frequency too, but
        # none of them has one (their variance is spread over all of them)
        lambda: h["n_distinct"]["mean"] >= min(20, h["n_available"] * 0.35)
        and h["top_fraction_median"]["mean"] >= 0.5,
        lambda: h["n_distinct"]["mean"] >= min(20, h["n_available"] * 0.35)
        and h["top_fraction_median"]["mean"] >= 0.25, basis=[h.get("top_fraction_median", {})])
    row("free_frequency", "Fits with a free frequency land on integers",
        "(the study fitted a continuous frequency)",
        lambda: f"|f − k| < 0.05 for {_pct(f['frac_free_freq_within_0_05'], 1)} of fits; "
                f"median |f − k| {_num(f['free_freq_abs_dev_median'], 2)}",
        lambda: f["frac_free_freq_within_0_05"]["mean"] >= 0.9,
        basis=[f.get("frac_free_freq_within_0_05", {})])
    return rows


# the claims about what a model computes: no verdict on models at chance
ABOUT_THE_COMPUTATION = ("inputs", "outputs", "replacement", "frequencies", "free_frequency")


def _near_chance(agg: dict[str, Any], cfg: MLPConfig) -> str | None:
    """Why the models carry no computation to describe (the best of them is below twice the
    chance accuracy 1/p over every pair), or None."""
    acc = agg["accuracy_all"]
    if acc["n"] and acc["max"] < 2 / cfg.p:
        return (f"the models are at chance (best accuracy over every pair "
                f"{100 * acc['max']:.2f} %, chance 1/p = {100 / cfg.p:.2f} %): there is no "
                "computation for this claim to describe")
    return None


@dataclass
class StudyResult:
    """The measurements of a set of models of one configuration, and the claims' verdicts."""

    cfg: MLPConfig
    labels: list[str]
    per_model: list[ModelMeasurements]
    synthetic: SyntheticCurve | None
    aggregate: dict[str, Any]
    applies: dict[str, str | None]
    claims: list[dict[str, str]]

    def summary(self) -> dict[str, Any]:
        """The models, each claim's verdict, and the accuracies and replacement at 90 % as
        means over the models."""
        agg = self.aggregate
        return headline({
            "models": list(self.labels),
            "verdicts": {c["claim"]: c["verdict"] for c in self.claims},
            **{k: agg[k]["mean"] for k in ("accuracy_all", "train_acc", "val_acc")},
            "replacement_at_90": (agg["replacement_at_90"]["mean"]
                                  if "replacement_at_90" in agg else None)})

    def describe(self) -> str:
        """One line per claim: its verdict and what was measured."""
        return "\n".join(f"{c['verdict']}: {c['claim']} (measured: {c['measured']})"
                         for c in self.claims)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "models": self.labels,
                "activation": ACTIVATIONS[self.cfg.activation].description,
                "operation": OPERATIONS[self.cfg.operation].symbol,
                "applicability": self.applies, "claims": self.claims,
                "aggregate": self.aggregate,
                "per_model": [m.to_dict() for m in self.per_model],
                "synthetic": None if self.synthetic is None else self.synthetic.to_dict()}


def study(models: Sequence[Any], labels: Sequence[str],
          synthetic_seeds: Sequence[int] = range(5),
          n_orders_scale: float = 1.0) -> StudyResult:
    """Measure the study's claims on `models` (one configuration, several seeds)."""
    if not models:
        raise ValueError("models must hold at least one model")
    cfg = models[0].cfg
    different = sorted({str(m.cfg) for m in models if m.cfg != cfg})
    if different:
        raise ValueError(f"the models of one study must share their configuration; got {cfg} "
                         f"and {different[0]}")
    check_one_hot(cfg, "study")
    applies = applicability(cfg, trained=all(m.train_info is not None for m in models))
    per = [measure_study_model(m, label, applies, n_orders_scale)
           for m, label in zip(models, labels, strict=True)]
    synth = None
    if applies["synthetic"] is None and cfg.p >= 3:
        synth = synthetic_curve(seeds=synthetic_seeds, p=cfg.p, operation=cfg.operation)
        if "256" not in {str(n) for n in synth.ns}:  # pragma: no cover - the default ns hold it
            synth = None
    if synth is None:
        applies["synthetic"] = applies["synthetic"] or "not measured"
    agg = aggregate(per, synth)
    return StudyResult(cfg, list(labels), per, synth, agg, applies, claims(agg, cfg, applies))


__all__ = ["CLAIMS", "REPLACEMENT_VARIANTS", "StudyResult", "applicability", "study"]
