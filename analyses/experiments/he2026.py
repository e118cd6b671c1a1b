"""He et al. 2026's analyses on a set of models (the report's models, e.g. the shipped seeds) and
on the checkpoint in their published layout that ships with the package, imported through
`hooked_mlp.import_mlp` (`analyses.experiments.published`): the activation swap, the
phase-symmetry moments, the frequency-subset losses and their stage detector beside the
toolkit's phase finder (`analyses.swap`), each set beside the paper's claim (`He2026.claims`).

    from analyses.experiments.he2026 import he2026
    result = he2026([load_pretrained(s) for s in range(5)], labels=["seed 0", ...])
    print(result.describe()); result.summary(); result.claims(); result.figures()

The claims, and when this module says one holds on a model:
- even activations (|x|, x^2, x^4) keep the accuracy: the worst of them within 5 points of the
  trained activation's accuracy;
- odd activations (x, x^3) lose it: the best of them below a quarter of it;
- a frequency's neurons have evenly spread phases: every moment |<cos m phi>|, |<sin m phi>|,
  m = 1..4, below what uniformly random phases give;
- the logits of the top-k frequencies alone approach the model's: their loss falls as k grows
  (never up by more than 1 %), and some k reaches 99 % accuracy;
- memorisation comes before generalisation: their stage 1 ends before stage 2 (from the
  accuracies, or from the losses when a history has no accuracies); a model without a training
  history gets "no history".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from analyses._common import headline, to_jsonable
from analyses.swap import (
    DEFAULT_SWAPS,
    SWAPS,
    activation_swap,
    compare_stages,
    frequency_subsets,
    phase_moments,
)

SUBSET_KS = (1, 2, 3, 5, 8, 12, 20)
KEEP_POINTS = 0.05  # even activations "keep" the accuracy: within 5 points of the trained one
LOSE_FRACTION = 0.25  # odd ones "lose" it: below a quarter of the trained accuracy
SUBSET_ACC = 0.99
HOLDS, FAILS, NO_HISTORY = "holds", "does not hold", "no history"

CLAIMS = (
    ("even", "even activations (|x|, x², x⁴) keep the accuracy"),
    ("odd", "odd activations (x, x³) lose it"),
    ("phases", "each frequency's neurons have evenly spread phases (moments below random)"),
    ("subsets", "the top-k frequencies alone approach the model as k grows"),
    ("stages", "memorisation (stage 1) ends before generalisation (stage 2)"),
)


@dataclass
class He2026:
    """Per model (in `labels` order): `trained` (accuracy with its own activation), `swap`
    ({activation: accuracy}), `moments` (`PhaseMoments.to_dict()`), `subsets`
    (`frequency_subsets`), `stages` (`compare_stages`, None for a model without a training
    history). `imported`: the same for the shipped published-layout checkpoint (`He2026`, its
    one label `published.LABEL`), with `checkpoint` (`ImportedPublished.to_dict()` and its
    `summary`), or None
    with `imported_error` saying why it could not be read."""

    labels: list[str]
    trained: list[float]
    swap: list[dict[str, float]]
    moments: list[dict[str, Any]]
    subsets: list[dict[str, Any]]
    stages: list[dict[str, Any] | None]
    imported: He2026 | None = None
    checkpoint: dict[str, Any] | None = None
    imported_error: str | None = None

    def columns(self) -> list[tuple[He2026, int]]:
        """(result, index) for every model, the imported checkpoint last."""
        own = [(self, i) for i in range(len(self.labels))]
        return own + ([(self.imported, 0)] if self.imported is not None else [])

    def verdicts(self, i: int) -> dict[str, tuple[str, str]]:
        """Model `i`'s `{claim: (measured, verdict)}` (see the module's docstring)."""
        swap, trained, m, s, st = (self.swap[i], self.trained[i], self.moments[i],
                                   self.subsets[i], self.stages[i])
        out = {}
        even = [swap[a] for a in swap if SWAPS[a][1] == "even"]
        odd = [swap[a] for a in swap if SWAPS[a][1] == "odd"]
        if even:
            out["even"] = (f"worst {min(even):.1%} (trained {trained:.1%})",
                           HOLDS if min(even) >= trained - KEEP_POINTS else FAILS)
        if odd:
            out["odd"] = (f"best {max(odd):.1%} (trained {trained:.1%})",
                          HOLDS if max(odd) < LOSE_FRACTION * trained else FAILS)
        low = max(*m["cos"][:4], *m["sin"][:4])
        out["phases"] = (f"largest m=1..4 {low:.2f}, random {m['null']:.2f}",
                         HOLDS if low < m["null"] else FAILS)
        k99 = next((k for k, a in zip(s["k"], s["acc"], strict=True) if a >= SUBSET_ACC), None)
        falls = all(b <= a * 1.01 for a, b in zip(s["loss"], s["loss"][1:], strict=False))
        reach = f"{SUBSET_ACC:.0%} at k = {k99}" if k99 else f"never {SUBSET_ACC:.0%}"
        out["subsets"] = (f"loss {s['loss'][0]:.3g} (k=1) to {s['loss'][-1]:.3g} "
                          f"(k={s['k'][-1]}); {reach} of {len(s['frequencies'])}",
                          HOLDS if falls and k99 else FAILS)
        if st is None:
            out["stages"] = ("no training history", NO_HISTORY)
        else:
            s1, s2 = st["he_memorisation_end"], st["he_generalisation"]
            out["stages"] = (f"epochs {s1} then {s2} ({st['he_how']})",
                             HOLDS if s1 is not None and s2 is not None and s1 < s2 else FAILS)
        return out

    def claims(self) -> tuple[list[str], list[list[str]]]:
        """A table: one row per claim, its words, then one cell per model (the imported
        checkpoint last): what was measured and whether the claim holds."""
        cols = self.columns()
        header = ["He et al.'s claim", *(r.labels[i] for r, i in cols)]
        verdicts = [r.verdicts(i) for r, i in cols]
        rows = [[words, *(f"{v[key][0]}: {v[key][1]}" if key in v else "n/a" for v in verdicts)]
                for key, words in CLAIMS]
        return header, rows

    def _headline(self, i: int) -> dict[str, Any]:
        """Model `i`'s numbers: the worst even and best odd swap, the phase moments m = 1..4,
        the fewest top frequencies reaching `SUBSET_ACC`, both stage detectors' epochs."""
        m, s, st = self.moments[i], self.subsets[i], self.stages[i]
        return {"trained": self.trained[i],
                "even_worst": min(self.swap[i][a] for a in self.swap[i]
                                  if SWAPS[a][1] == "even"),
                "odd_best": max(self.swap[i][a] for a in self.swap[i] if SWAPS[a][1] == "odd"),
                "moments_cos_1_4": list(m["cos"][:4]), "moments_null": m["null"],
                "k_99": next((k for k, a in zip(s["k"], s["acc"], strict=True)
                              if a >= SUBSET_ACC), None),
                "stages": None if st is None else {
                    k: st[k] for k in ("he_memorisation_end", "he_generalisation",
                                       "memorisation_end", "val_loss_half")}}

    def summary(self) -> dict[str, Any]:
        """Per model (the imported checkpoint last) its headline numbers and each claim's
        verdict; the checkpoint's own numbers, or why it could not be read."""
        return headline({
            "models": {r.labels[i]: {**r._headline(i), "verdicts": {
                claim: verdict for claim, (_, verdict) in r.verdicts(i).items()}}
                for r, i in self.columns()},
            "checkpoint": None if self.checkpoint is None else {
                k: v for k, v in self.checkpoint.items() if k != "summary"},
            "imported_error": self.imported_error})

    def describe(self) -> str:
        lines = []
        for r, i in self.columns():
            h, st = r._headline(i), r.stages[i]
            even, odd, k_full = h["even_worst"], h["odd_best"], h["k_99"]
            m = r.moments[i]
            low = ", ".join(f"{c:.2f}" for c in m["cos"][:4])
            line = (f"{r.labels[i]}: even activations keep >= {even:.1%} accuracy, odd ones <= "
                    f"{odd:.1%}; phase moments m=1..4 |cos| {low}"
                    f" (random phases: {m['null']:.2f}); the top {k_full} frequencies alone "
                    "reach 99 % accuracy")
            if st is not None:
                line += (f"; stages (He et al., {st['he_how']}) end at epochs "
                         f"{st['he_memorisation_end']} and {st['he_generalisation']}; ")
                line += (f"the phase finder's memorisation ends at {st['memorisation_end']}"
                         if st["memorisation_end"] is not None else
                         "the phase finder has no accuracies to end memorisation at; the "
                         f"validation loss is half-way down at epoch {st['val_loss_half']}")
            else:
                line += "; no training history: no stages"
            lines.append(line)
        if self.imported is not None:
            lines.append(self.checkpoint["summary"])
        elif self.imported_error:
            lines.append(f"the published-layout checkpoint could not be read: "
                         f"{self.imported_error}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "imported"}
        if self.imported is not None:
            out["imported"] = self.imported.to_dict()
        out["claims"] = dict(zip(["header", "rows"], self.claims(), strict=True))
        return to_jsonable(out)

    def figures(self) -> dict[str, Any]:
        """`{"swap": ..., "moments_subsets": ...}`, one bar group or line per model (the
        imported checkpoint last)."""
        from analyses.views import SEED_COLORS, new_figure

        cols = self.columns()
        figs = {}
        fig, axes = new_figure(10, 3)
        ax = axes[0, 0]
        names = list(self.swap[0])
        width = 0.8 / len(cols)
        for j, (r, i) in enumerate(cols):
            ax.bar([n + j * width for n in range(len(names))],
                   [r.swap[i].get(a, float("nan")) for a in names], width=width,
                   label=r.labels[i], color=SEED_COLORS[j % len(SEED_COLORS)])
        ax.set_xticks([n + 0.4 - width / 2 for n in range(len(names))],
                      [f"{a} ({SWAPS[a][1]})" for a in names], fontsize=8)
        ax.set_ylabel("accuracy")
        ax.set_title("activation swapped at test time")
        ax.legend(fontsize=7)
        figs["swap"] = fig
        fig, axes = new_figure(10, 3, 1, 2)
        for j, (r, i) in enumerate(cols):
            color = SEED_COLORS[j % len(SEED_COLORS)]
            m, s = r.moments[i], r.subsets[i]
            axes[0, 0].plot(m["m"], m["cos"], marker="o", color=color, label=r.labels[i])
            axes[0, 0].plot(m["m"], m["sin"], marker="x", ls=":", color=color)
            axes[0, 0].axhline(m["null"], color=color, lw=0.8, ls="--")
            axes[0, 1].plot(s["k"], s["loss"], marker="o", color=color, label=r.labels[i])
        axes[0, 0].set_xlabel("m (dashed: each model's random-phase level)")
        axes[0, 0].set_ylabel("|<cos m phi>| (o), |<sin m phi>| (x)")
        axes[0, 0].legend(fontsize=7)
        axes[0, 1].set_xlabel("top frequencies kept")
        axes[0, 1].set_ylabel("loss of the restricted logits")
        axes[0, 1].set_yscale("log")
        figs["moments_subsets"] = fig
        return figs


def he2026(models: Sequence[Any], labels: Sequence[str] | None = None,
           activations: Sequence[str] = DEFAULT_SWAPS,
           histories: Sequence[Mapping[str, Sequence[float]] | None] | None = None) -> He2026:
    """The four analyses on each of `models` (one hidden layer, one-hot inputs, add or sub).
    `histories`: each model's training curves for the stage detector (default: its
    `train_info.history`; None or no usable curves: no stages)."""
    from analyses.dynamics import find_phases
    from hooked_mlp.helpers import accuracy

    models = list(models)
    if not models:
        raise ValueError("models must hold at least one model")
    labels = [f"model {i}" for i in range(len(models))] if labels is None else list(labels)
    histories = list(histories) if histories is not None else [
        m.train_info.history if m.train_info is not None else None for m in models]
    for name, given in (("labels", labels), ("histories", histories)):
        if len(given) != len(models):
            raise ValueError(f"{name} must hold one entry for each of the {len(models)} "
                             f"models, got {len(given)}")
    trained, swap, moments, subsets, stages = [], [], [], [], []
    for model, h in zip(models, histories, strict=True):
        trained.append(accuracy(model))
        swap.append(activation_swap(model, activations))
        moments.append(phase_moments(model).to_dict())
        K = (model.cfg.p - 1) // 2
        subsets.append(frequency_subsets(model, ks=sorted({k for k in (*SUBSET_KS, K) if k <= K})))
        usable = h and ((h.get("train_acc") and h.get("val_acc"))
                        or (h.get("train_loss") and h.get("val_loss")))
        stages.append(compare_stages(h, find_phases(dict(h), [], {})) if usable else None)
    return He2026(labels, trained, swap, moments, subsets, stages)


def he2026_section(ctx: Any) -> He2026:
    """The report's section: `he2026` on `ctx.models` (labelled by `ctx.labels`), then on the
    shipped published-layout checkpoint, imported and checked (`imported_published`); a
    checkpoint that cannot be read is named in the result, the models' part kept."""
    from analyses.experiments.published import LABEL, imported_published
    from hooked_mlp.files.format import CheckpointError

    result = he2026(list(ctx.models), getattr(ctx, "labels", None) or None)
    try:
        published = imported_published()
    except (CheckpointError, OSError, ValueError) as e:
        result.imported_error = f"{type(e).__name__}: {e}"
        return result
    result.imported = he2026([published.model], [LABEL], histories=[published.history])
    result.checkpoint = {**published.to_dict(), "summary": published.describe()}
    return result
