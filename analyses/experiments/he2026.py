"""He et al. 2026's analyses on a set of models (the report's shipped seeds, or imported
checkpoints): the activation swap, the phase-symmetry moments, the frequency-subset losses and
their stage detector beside the toolkit's phase finder (`analyses.swap`).

    from analyses.experiments.he2026 import he2026
    result = he2026([load_pretrained(s) for s in range(5)], labels=["seed 0", ...])
    print(result.summary()); result.figures()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from analyses._common import to_jsonable
from analyses.swap import (
    DEFAULT_SWAPS,
    SWAPS,
    activation_swap,
    compare_stages,
    frequency_subsets,
    phase_moments,
)

SUBSET_KS = (1, 2, 3, 5, 8, 12, 20)


@dataclass
class He2026:
    """Per model (in `labels` order): `swap` ({activation: accuracy}), `moments`
    (`PhaseMoments.to_dict()`), `subsets` (`frequency_subsets`), `stages`
    (`compare_stages`, None for a model without a training history)."""

    labels: list[str]
    swap: list[dict[str, float]]
    moments: list[dict[str, Any]]
    subsets: list[dict[str, Any]]
    stages: list[dict[str, Any] | None]

    def summary(self) -> str:
        lines = []
        for i, label in enumerate(self.labels):
            even = min(self.swap[i][a] for a in self.swap[i] if SWAPS[a][1] == "even")
            odd = max(self.swap[i][a] for a in self.swap[i] if SWAPS[a][1] == "odd")
            m = self.moments[i]
            s = self.subsets[i]
            k_full = next((k for k, a in zip(s["k"], s["acc"], strict=True) if a >= 0.99), None)
            low = ", ".join(f"{c:.2f}" for c in m["cos"][:4])
            line = (f"{label}: even activations keep >= {even:.1%} accuracy, odd ones <= "
                    f"{odd:.1%}; phase moments m=1..4 |cos| {low}"
                    f" (random phases: {m['null']:.2f}); the top {k_full} frequencies alone "
                    "reach 99 % accuracy")
            st = self.stages[i]
            if st is not None:
                line += (f"; stages (He et al.) end at epochs {st['he_memorisation_end']} and "
                         f"{st['he_generalisation']}, the phase finder's memorisation ends at "
                         f"{st['memorisation_end']}")
            lines.append(line)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dict(self.__dict__))

    def figures(self) -> dict[str, Any]:
        """`{"swap": ..., "moments": ..., "subsets": ...}`, one line or group per model."""
        from analyses.views import SEED_COLORS, new_figure

        figs = {}
        fig, axes = new_figure(10, 3)
        ax = axes[0, 0]
        names = list(self.swap[0])
        width = 0.8 / len(self.labels)
        for i, label in enumerate(self.labels):
            ax.bar([j + i * width for j in range(len(names))], [self.swap[i][n] for n in names],
                   width=width, label=label, color=SEED_COLORS[i % len(SEED_COLORS)])
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))],
                      [f"{n} ({SWAPS[n][1]})" for n in names], fontsize=8)
        ax.set_ylabel("accuracy")
        ax.set_title("activation swapped at test time")
        ax.legend(fontsize=7)
        figs["swap"] = fig
        fig, axes = new_figure(10, 3, 1, 2)
        for i, label in enumerate(self.labels):
            color = SEED_COLORS[i % len(SEED_COLORS)]
            m = self.moments[i]
            axes[0, 0].plot(m["m"], m["cos"], marker="o", color=color, label=label)
            axes[0, 0].plot(m["m"], m["sin"], marker="x", ls=":", color=color)
            s = self.subsets[i]
            axes[0, 1].plot(s["k"], s["loss"], marker="o", color=color, label=label)
        axes[0, 0].axhline(self.moments[0]["null"], color="k", lw=0.8, ls="--",
                           label="random phases")
        axes[0, 0].set_xlabel("m")
        axes[0, 0].set_ylabel("|<cos m phi>| (o), |<sin m phi>| (x)")
        axes[0, 0].legend(fontsize=7)
        axes[0, 1].set_xlabel("top frequencies kept")
        axes[0, 1].set_ylabel("loss of the restricted logits")
        axes[0, 1].set_yscale("log")
        figs["moments_subsets"] = fig
        return figs


def he2026(models: Sequence[Any], labels: Sequence[str] | None = None,
           activations: Sequence[str] = DEFAULT_SWAPS) -> He2026:
    """The four analyses on each of `models` (one hidden layer, one-hot inputs, add or sub)."""
    from analyses.dynamics import find_phases

    models = list(models)
    if not models:
        raise ValueError("models must hold at least one model")
    labels = list(labels) if labels is not None else [f"model {i}" for i in range(len(models))]
    if len(labels) != len(models):
        raise ValueError(f"labels must name each of the {len(models)} models, got {len(labels)}")
    swap, moments, subsets, stages = [], [], [], []
    for model in models:
        swap.append(activation_swap(model, activations))
        moments.append(phase_moments(model).to_dict())
        K = (model.cfg.p - 1) // 2
        subsets.append(frequency_subsets(model, ks=sorted({k for k in (*SUBSET_KS, K) if k <= K})))
        h = model.train_info.history if model.train_info is not None else {}
        stages.append(compare_stages(h, find_phases(h, [], {}))
                      if h.get("train_acc") and h.get("val_acc") else None)
    return He2026(labels, swap, moments, subsets, stages)


def he2026_section(ctx: Any) -> He2026:
    """The report's section: `he2026` on `ctx.models` (labelled by `ctx.labels`)."""
    models = list(ctx.models)
    return he2026(models, getattr(ctx, "labels", None) or None)
