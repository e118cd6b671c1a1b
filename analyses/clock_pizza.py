"""Clock or pizza: the two diagnostics of Zhong et al. 2023 ("The Clock and the Pizza"),
adapted to one-hot MLPs.

A *clock* multiplies the two inputs' angles (`cos(w a) cos(w b)` terms make `cos(w (a + b))`),
so its correct logit does not depend on `a - b`, and its two inputs enter through different
weights. A *pizza* adds the two inputs' vectors first (`cos(w a + phi) + cos(w b + phi) =
2 cos(w (a + b) / 2 + phi) cos(w (a - b) / 2)`), so the two inputs enter symmetrically and its
correct logit varies with `a - b`.

- **Gradient symmetricity** (their Def. 4.1): the mean, over random triples `(a, b, c)`, of the
  cosine similarity between the gradients of the logit `Q_abc` with respect to the embedding of
  `a` and that of `b`. Here the embedding of a token is its one-hot vector `e_a` in R^p (the
  model's first layer `W_a`, `W_b` plays the transformer's role of mixing), so the two gradients
  are `W_a dQ/dpre` and `W_b dQ/dpre`, both indexed by residue and directly comparable. (The
  hidden rows `W_a[a]`, `W_b[b]` would not do: their gradients are identical in every model of
  this family, since `pre = W_a[a] + W_b[b] + b_in`.) They are read through the model's forward
  and hooks (`hook_embed_a`, `hook_embed_b`), so the definition holds for every activation.
- **Distance irrelevance** (Def. 4.2): with the correct-logit matrix `L[a, b] = Q_{a, b, a+b}`,
  `q = mean_d std_a(L[a, a + d]) / std(L)` over all pairs: near 1 when the correct logit ignores
  the distance `d = b - a` (clock), near 0 when it is a function of `d` (pizza). A correct logit
  that is constant (an exact construction) ignores `d` entirely: `q = 1`.

Thresholds (Zhong et al.'s, as their figures draw them; the paper itself could not be read from
this project's machines, so they come from two public re-implementations, which agree on 0.98
for symmetricity and differ on distance irrelevance, 0.6 or 0.4): `pizza` when the gradient
symmetricity is >= 0.98 and the distance irrelevance < 0.6; `clock` when the symmetricity is
< 0.98 and the distance irrelevance >= 0.6; `neither` otherwise. For `a - b` the roles of the
sum and the difference swap (`b -> -b` turns it into addition): the distance is `a + b` and the
gradient of `b` is compared at residue `-r` with that of `a` at `r`.

**No verdict without a signal.** The two diagnostics describe *how* a model computes the answer,
so they say nothing about a model that does not compute it: an all-zero or dead network, random
weights, a model whose float32 logits underflow to zero (weights x 1e-30) or overflow to inf
(x 1e30) still give numbers (a zero gradient has cosine 0, a constant logit has distance
irrelevance 1), and those numbers read as `clock`. `diagnose` therefore gives the verdict
`no verdict`, with the reason in `ClockPizza.no_verdict_reason`, when
- the logits over all pairs are not finite (overflow), or
- the model's accuracy over all pairs is below `MIN_ACCURACY` (0.5; `1.5 / p` where that is
  larger, so it stays above chance for tiny p): the correct logit is then not the model's answer
  on most pairs, or
- no sampled triple has a nonzero gradient for both inputs (the gradient symmetricity is then
  undefined, NaN, rather than the 0.0 a floored cosine would give).
Triples where one of the two gradients is exactly zero have no cosine and are left out of the
mean (`n_triples_defined` counts the rest). The diagnostics are scale-invariant: a model and the
same model with its last layer scaled by any finite nonzero factor get the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from analyses._common import (
    Summary,
    check_all_pairs_memory,
    check_count,
    check_model,
    check_one_hot,
    check_seed,
    headline,
    to_jsonable,
)

GS_THRESHOLD = 0.98
DI_THRESHOLD = 0.6
MIN_ACCURACY = 0.5  # below it (or below 1.5 / p) the model gets no verdict
NO_VERDICT = "no verdict"
VERDICTS = ("clock", "pizza", "neither", NO_VERDICT)


@dataclass
class ClockPizza:
    """The two diagnostics of one model and the verdict they give."""

    gradient_symmetricity: float  # NaN when no triple has two nonzero gradients
    distance_irrelevance: float  # NaN when the logits are not finite
    verdict: str  # one of VERDICTS
    n_triples: int
    gs_threshold: float = GS_THRESHOLD
    di_threshold: float = DI_THRESHOLD
    accuracy: float = float("nan")  # over all pairs, through the model's forward
    n_triples_defined: int = -1  # triples whose two gradients are both nonzero
    no_verdict_reason: str | None = None  # why the verdict is "no verdict" (None otherwise)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)

    def summary(self) -> Summary:
        return headline(self.__dict__)  # every field is one number or word


def _check_operation(model: Any) -> int:
    """+1 for `a + b`, -1 for `a - b`; other operations have no clock or pizza story."""
    op = model.cfg.operation
    if op not in ("add", "sub"):
        raise ValueError(f"clock and pizza are algorithms for modular addition (or subtraction); "
                         f"this model computes {op!r}")
    return 1 if op == "add" else -1


def gradient_symmetricity(model: Any, n_triples: int = 4096, seed: int = 0) -> float:
    """Mean cosine similarity of `dQ_abc/de_a` and `dQ_abc/de_b` (`[p]` each) over `n_triples`
    random triples `(a, b, c)` (drawn from `seed`; `c` uniform, not only the right answer).
    Triples where either gradient is zero (or not finite) have no cosine and are left out; NaN
    when none is left."""
    cos = _gradient_cosines(model, n_triples, seed)
    ok = cos.isfinite()
    return float(cos[ok].mean()) if bool(ok.any()) else float("nan")


def _gradient_cosines(model: Any, n_triples: int, seed: int) -> Tensor:
    """The cosine of the two gradients per triple `[n_triples]` (NaN where one is zero)."""
    check_model(model)
    check_one_hot(model, "gradient_symmetricity")
    sign = _check_operation(model)
    check_count("n_triples", n_triples)
    check_seed(seed)
    p = model.cfg.p
    gen = torch.Generator().manual_seed(seed)
    abc = torch.randint(0, p, (n_triples, 3), generator=gen)
    tokens, c = abc[:, :2].to(model.device), abc[:, 2].to(model.device)
    grads: dict[str, Tensor] = {}

    def capture(value: Tensor, hook: Any) -> Tensor:
        leaf = value.detach().requires_grad_(True)  # [N, d_hidden]
        grads[hook.name] = leaf
        return leaf

    with torch.enable_grad():
        logits = model.run_with_hooks(
            tokens, fwd_hooks=[("hook_embed_a", capture), ("hook_embed_b", capture)])
        q = logits.gather(1, c[:, None]).sum()
        g_a, g_b = torch.autograd.grad(q, [grads["hook_embed_a"], grads["hook_embed_b"]])
    W_a, W_b = model.W_a.detach(), model.W_b.detach()  # [p, d_hidden]
    d_a = (g_a.double() @ W_a.double().t())  # [N, p]: dQ / de_a
    d_b = (g_b.double() @ W_b.double().t())
    if sign == -1:  # a - b is a + (-b): compare b's gradient at -r with a's at r
        d_b = d_b[:, (-torch.arange(p, device=d_b.device)) % p]
    # eps=0, no floor on the norms: a floor would make the cosine of tiny gradients depend on
    # their scale (0 for every triple of the model x 1e-30); a zero gradient gives NaN here
    cos = torch.nn.functional.cosine_similarity(d_a, d_b, dim=1, eps=0.0)
    zero = (d_a.norm(dim=1) == 0) | (d_b.norm(dim=1) == 0)
    return cos.masked_fill(zero, float("nan"))


def _all_logits(model: Any) -> tuple[Tensor, Tensor]:
    """The logits of every pair `[p*p, p]` and the right answers `[p*p]`."""
    from hooked_mlp.data import all_pairs, apply_operation

    check_model(model)
    _check_operation(model)
    check_all_pairs_memory(model.cfg, 3 * max(model.cfg.d_hidden, model.cfg.p),
                           "distance_irrelevance")
    p = model.cfg.p
    tokens = all_pairs(p, model.device)
    labels = apply_operation(tokens, p, model.cfg.operation)
    with torch.no_grad():
        logits = model(tokens)
    return logits, labels


def correct_logits(model: Any) -> Tensor:
    """`L[a, b]`, the logit of the right answer for every pair: `[p, p]` (float64)."""
    logits, labels = _all_logits(model)
    p = model.cfg.p
    return logits.gather(1, labels[:, None]).double().cpu().reshape(p, p)


def distance_irrelevance(model: Any) -> float:
    """`mean_d std_a L[a, a + d] / std L` (`d = b - a`; for `a - b`, `d = a + b`); 1.0 when the
    correct logit is constant."""
    check_model(model)
    _check_operation(model)
    return _distance_irrelevance(model, correct_logits(model))


def _distance_irrelevance(model: Any, L: Tensor) -> float:
    sign = _check_operation(model)
    if not bool(L.isfinite().all()):
        return float("nan")
    p = L.shape[0]
    a = torch.arange(p)
    d = torch.arange(p)
    b = (a[None, :] + d[:, None]) % p if sign == 1 else (d[:, None] - a[None, :]) % p
    by_distance = L[a[None, :].expand(p, -1), b]  # [d, a]: the pairs at distance d
    total = float(L.std(unbiased=False))
    scale = float(L.abs().mean())  # no floor: the test is scale-invariant (0 <= 0 when L is 0)
    if total <= 1e-6 * scale:
        return 1.0
    return float(by_distance.std(dim=1, unbiased=False).mean()) / total


def verdict(gs: float, di: float) -> str:
    """`clock`, `pizza` or `neither` from the two diagnostics (see the module's text)."""
    if gs >= GS_THRESHOLD and di < DI_THRESHOLD:
        return "pizza"
    if gs < GS_THRESHOLD and di >= DI_THRESHOLD:
        return "clock"
    return "neither"


def no_signal_reason(accuracy: float, p: int, finite: bool = True,
                     gs: float = 0.0) -> str | None:
    """Why a model gets no clock-or-pizza verdict (None when it gets one): logits not finite,
    accuracy over all pairs below `max(MIN_ACCURACY, 1.5 / p)`, or no gradient signal."""
    if not finite:
        return ("the logits over all pairs are not finite (they overflowed float32): the "
                "diagnostics would read infinities")
    floor = max(MIN_ACCURACY, 1.5 / p)
    if not accuracy >= floor:
        return (f"the model gets {accuracy:.1%} of all pairs right (chance is {1 / p:.1%}); a "
                f"verdict needs at least {floor:.0%}: a model that does not compute the task "
                f"has no algorithm to call clock or pizza")
    if gs != gs:
        return ("no sampled triple has a nonzero gradient of its logit for both inputs: the "
                "gradient symmetricity is undefined")
    return None


def diagnose(model: Any, n_triples: int = 4096, seed: int = 0) -> ClockPizza:
    """Gradient symmetricity, distance irrelevance and the verdict `clock`, `pizza`,
    `neither`, or `no verdict` (reason in `no_verdict_reason`) for a model of `a + b` (or
    `a - b`); see the module's text for when a model gets no verdict."""
    check_count("n_triples", n_triples)
    check_seed(seed)
    logits, labels = _all_logits(model)
    p = model.cfg.p
    finite = bool(logits.isfinite().all())
    acc = float((logits.argmax(-1) == labels).double().mean()) if finite else float("nan")
    L = logits.gather(1, labels[:, None]).double().cpu().reshape(p, p)
    di = _distance_irrelevance(model, L)
    cos = _gradient_cosines(model, n_triples, seed)
    ok = cos.isfinite()
    gs = float(cos[ok].mean()) if bool(ok.any()) else float("nan")
    reason = no_signal_reason(acc, p, finite, gs)
    return ClockPizza(gs, di, NO_VERDICT if reason else verdict(gs, di), n_triples,
                      accuracy=acc, n_triples_defined=int(ok.sum()), no_verdict_reason=reason)


__all__ = ["DI_THRESHOLD", "GS_THRESHOLD", "MIN_ACCURACY", "NO_VERDICT", "VERDICTS",
           "ClockPizza", "correct_logits", "diagnose", "distance_irrelevance",
           "gradient_symmetricity", "no_signal_reason", "verdict"]
