"""Automated discovery of a weight vector's closed form, without being told the family.

`discover(w)` takes one weight vector over Z_p (`[p]`) and returns the shortest description it
finds that the data support, from two searches:

- `"library"`: every form of `analyses.forms` (cosine, harmonics, square, clipped, two_freq)
  fitted by least squares, the best by BIC. Exact, fast (milliseconds), but it can only name a
  form it knows.
- `"symbolic"`: genetic-programming symbolic regression (gplearn, the optional extra
  `pip install 'hooked-mlp[symbolic]'`) over the grammar `+`, `×`, `cos`, `sin`, `sign`,
  `clip(u, c) = clip(u, -|c|, |c|)`, numeric constants and three terminals: the residue `x` and
  the angles `θ₁ = 2π k₁ x / p`, `θ₂ = 2π k₂ x / p` of the two frequencies with the most power.
  The angles are the coordinates of Z_p in its Fourier basis (a frequency is an integer, which
  an evolutionary search over real constants would have to hit to within 1/p² otherwise); the
  search is told nothing about the shape. Fitness is the correlation (scale and offset are
  fitted afterwards by least squares, "linear scaling"), with a parsimony pressure; it runs
  for `max_generations` generations (8 by default) or until the correlation reaches 0.9995
  (`budget_s`, seconds, is an optional upper bound on top, off by default: a search stopped by
  it depends on the machine's speed, and its candidate says so),
  and the best program's numeric constants are then refined by Nelder-Mead (gplearn evolves
  constants but never fits them).

The two are compared by BIC over the `p` residues (a symbolic expression is charged one
parameter per numeric constant, one per frequency it uses, and two for its scale and offset),
and the result names the library form nearest to what was found (the form that fits the found
curve best by BIC), so one can read whether the search rediscovered a cosine, a square wave, or
something else.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from analyses._common import Summary, Vector, headline, to_jsonable
from analyses.forms import FORMS, fit_forms, score_fit, select_forms
from analyses.fourier import power_spectrum

METHODS = ("auto", "library", "symbolic")
DEFAULT_GENERATIONS = 8
MISSING_GPLEARN = ("symbolic regression needs gplearn, an optional extra: "
                   "pip install 'hooked-mlp[symbolic]' (or pip install gplearn)")


@dataclass
class Discovery:
    """The closed form found for one weight vector.

    `expression` is text in the residue `x`; `frequency` the integer frequency with the most
    power in the found curve; `form` the library form nearest to it; `method` the search that
    found it (`"library"` or `"symbolic"`); `values` `[p]` the found curve. `candidates` holds
    every search's best (method, expression, r2, bic, n_params, seconds); `note` says why a
    search did not run.
    """

    expression: str
    frequency: int
    form: str
    method: str
    r2: float
    bic: float
    n_params: int
    values: Tensor
    candidates: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({k: getattr(self, k) for k in
                            ("expression", "frequency", "form", "method", "r2", "bic",
                             "n_params", "candidates", "seconds", "note")})

    def summary(self) -> Summary:
        return headline({k: getattr(self, k) for k in
                         ("expression", "frequency", "form", "method", "r2", "bic", "n_params")})


def _check_vector(w: Any) -> Tensor:
    import numpy as np

    if isinstance(w, np.ndarray):
        w = torch.from_numpy(w)
    if not isinstance(w, Tensor) or not w.is_floating_point():
        raise TypeError(f"w must be a 1-D float tensor (or numpy array) [p], got "
                        f"{getattr(w, 'dtype', type(w).__name__)}")
    if w.ndim != 1:
        raise ValueError(f"w must be a 1-D float tensor [p] (one weight vector), got shape "
                         f"{list(w.shape)}")
    if w.shape[0] < 5:
        raise ValueError(f"w must have p >= 5 entries, got {w.shape[0]}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w holds NaN or infinite values: no form of it would mean anything")
    if float(w.double().var()) == 0.0:
        raise ValueError("w is constant: it has no form to discover")
    return w.detach().double().cpu()


def _bic(w: Tensor, values: Tensor, n_params: int) -> tuple[float, float]:
    """R² and BIC of `values` against `w` (`[p]` each), scored as `analyses.forms` scores."""
    _, r2, bic = score_fit(w[None], values.double()[None], n_params)
    return float(r2[0]), float(bic[0])


def _dominant_frequency(values: Tensor) -> int:
    return int(power_spectrum(values).argmax()) + 1


def _library(w: Tensor) -> dict[str, Any]:
    start = time.perf_counter()
    fits = fit_forms(w[None])
    form = select_forms(fits)[0]
    fit = fits[form]
    return {"method": "library", "expression": fit.formula(0), "form": form,
            "values": fit.values[0], "r2": float(fit.r2[0]), "bic": float(fit.bic[0]),
            "n_params": fit.n_params, "seconds": time.perf_counter() - start}


# --------------------------------------------------------------------------- symbolic search
def _gplearn() -> Any:
    try:
        from gplearn.functions import make_function
        from gplearn.genetic import SymbolicRegressor
    except ImportError as e:
        raise ImportError(MISSING_GPLEARN) from e
    return SymbolicRegressor, make_function


def _protected_clip(u: Any, c: Any) -> Any:
    import numpy as np

    c = np.abs(c)
    return np.clip(u, -c, c)


def _render(program: list[Any], names: list[str]) -> tuple[str, int]:
    """A gplearn program (prefix list) as infix text, constant subtrees folded; and the count
    of numeric constants left in it."""
    import numpy as np

    pos = 0

    def walk() -> tuple[str, float | None, int]:
        nonlocal pos
        node = program[pos]
        pos += 1
        if isinstance(node, (int, np.integer)):
            return names[int(node)], None, 0
        if isinstance(node, (float, np.floating)):
            return f"{float(node):.3g}", float(node), 1
        args = [walk() for _ in range(node.arity)]
        n_const = sum(a[2] for a in args)
        if all(a[1] is not None for a in args):  # a constant subtree: fold it
            value = float(node.function(*[np.array([a[1]]) for a in args])[0])
            return f"{value:.3g}", value, 1
        text = [a[0] for a in args]
        if node.name == "add":
            first, second = (text[1], text[0]) if args[0][1] is not None else text
            joined = (f"{first} - {second[1:]}" if second.startswith("-")
                      else f"{first} + {second}")
            return f"({joined})", None, n_const
        if node.name == "mul":
            return f"{text[0]}·{text[1]}", None, n_const
        bare = [t[1:-1] if t.startswith("(") and t.endswith(")") and _balanced(t[1:-1])
                else t for t in text]
        return f"{node.name}({', '.join(bare)})", None, n_const

    text, _, n_const = walk()
    return text, n_const


def _refine_constants(program: Any, X: Any, y: Any) -> Any:
    """The program with its numeric constants refined by Nelder-Mead on the squared error
    after linear scaling (gplearn evolves constants but never fits them); the original when
    that does not lower the error."""
    import copy

    import numpy as np
    from scipy.optimize import minimize

    where = [i for i, n in enumerate(program.program) if isinstance(n, float)]
    if not where:
        return program
    yc = y - y.mean()

    def sse(consts: Any) -> float:
        trial = copy.copy(program)
        trial.program = list(program.program)
        for i, c in zip(where, consts, strict=True):
            trial.program[i] = float(c)
        g = np.nan_to_num(trial.execute(X))
        gc = g - g.mean()
        gg = float(gc @ gc)
        return float(yc @ yc) - (float(gc @ yc) ** 2 / gg if gg > 1e-300 else 0.0)

    start = np.array([program.program[i] for i in where], dtype=np.float64)
    res = minimize(sse, start, method="Nelder-Mead",
                   options={"maxfev": 200 * len(where) + 200, "xatol": 1e-5, "fatol": 1e-12})
    if not res.fun < sse(start):
        return program
    refined = copy.copy(program)
    refined.program = list(program.program)
    for i, c in zip(where, res.x, strict=True):
        refined.program[i] = float(c)
    return refined


def _balanced(text: str) -> bool:
    """Whether the parentheses of `text` pair up without closing below zero."""
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0


def _symbolic(w: Tensor, deadline: float | None, seed: int, population: int,
              max_generations: int | None) -> dict[str, Any]:
    import warnings

    import numpy as np

    start = time.perf_counter()
    SymbolicRegressor, make_function = _gplearn()
    p = w.shape[0]
    k1, k2 = (int(i) + 1 for i in power_spectrum(w).topk(2).indices)
    x = np.arange(p, dtype=np.float64)
    X = np.stack([x, (2 * np.pi * k1 * x / p) % (2 * np.pi),
                  (2 * np.pi * k2 * x / p) % (2 * np.pi)], axis=1)
    y = w.numpy()
    sign = make_function(function=np.sign, name="sign", arity=1)
    clip = make_function(function=_protected_clip, name="clip", arity=2)
    est = SymbolicRegressor(
        population_size=population, generations=1, tournament_size=20,
        function_set=("add", "mul", "cos", "sin", sign, clip), metric="pearson",
        parsimony_coefficient=0.002, const_range=(-math.pi, math.pi), init_depth=(2, 4),
        p_crossover=0.7, p_subtree_mutation=0.1, p_hoist_mutation=0.05, p_point_mutation=0.1,
        warm_start=True, random_state=seed, n_jobs=1, verbose=0)
    generations, last, stopped = 0, start, ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gplearn's warm-start notices
        while not stopped:
            generations += 1
            est.set_params(generations=generations)
            est.fit(X, y)
            now = time.perf_counter()
            if est._program.raw_fitness_ >= 0.9995:
                stopped = "fit"
            elif generations == max_generations:
                stopped = "generations"
            # the optional time bound: stop when the next generation (taking as long as the
            # last, or longer) would overrun it
            elif deadline is not None and now + 1.5 * (now - last) > deadline:
                stopped = "time"
            last = now
    program = _refine_constants(est._program, X, y)
    shape = torch.from_numpy(np.nan_to_num(program.execute(X))).double()
    design = torch.stack([shape, torch.ones_like(shape)], dim=1)
    (alpha, beta) = torch.linalg.lstsq(design, w[:, None]).solution[:, 0].tolist()
    values = alpha * shape + beta
    names = ["x", "θ₁", "θ₂"]
    body, n_const = _render(program.program, names)
    features = {int(n) for n in program.program if isinstance(n, (int, np.integer))}
    used = [i for i in (1, 2) if i in features]
    where = ", ".join(f"{names[i]} = 2π·{(k1, k2)[i - 1]}x/{p}" for i in used)
    n_params = n_const + len(used) + 2
    r2, bic = _bic(w, values, n_params)
    expression = f"{alpha:.3g}·{body} {'-' if beta < 0 else '+'} {abs(beta):.3g}"
    if where:
        expression += f"   where {where}"
    return {"method": "symbolic", "expression": expression, "values": values, "r2": r2,
            "bic": bic, "n_params": n_params, "seconds": time.perf_counter() - start,
            "generations": generations, "stopped_by": stopped, "program": str(program)}


def discover(w: Vector, budget_s: float | None = None, method: str = "auto", seed: int = 0,
             population: int = 500, max_generations: int | None = DEFAULT_GENERATIONS
             ) -> Discovery:
    """Search for a short closed form of one weight vector `w` `[p]` (see the module's text).

    `method`: `"library"` (the forms of `analyses.forms` only), `"symbolic"` (gplearn; an
    ImportError naming the extra when it is missing), or `"auto"` (both when gplearn is
    installed, else the library with a note saying so). The symbolic search's work is
    `population` programs for `max_generations` generations (it stops earlier once the
    correlation reaches 0.9995), driven by `seed`: the same arguments give the same expression
    on any machine. `budget_s` (seconds, default None) adds an upper bound on the wall time (it
    stops before a generation that would pass it); a search it stopped is marked
    `stopped_by: "time"` and the note says that its result depends on the machine's speed.
    `max_generations=None` leaves only `budget_s`, which must then be given.
    """
    start = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if budget_s is not None and (isinstance(budget_s, bool) or not isinstance(
            budget_s, (int, float)) or not 0 < budget_s <= 3600):
        raise ValueError(f"budget_s must be None or a number of seconds in (0, 3600], got "
                         f"{budget_s!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if isinstance(population, bool) or not isinstance(population, int) or population < 10:
        raise ValueError(f"population must be an integer >= 10, got {population!r}")
    if max_generations is not None and (isinstance(max_generations, bool) or not isinstance(
            max_generations, int) or max_generations < 1):
        raise ValueError(f"max_generations must be None or an integer >= 1, got "
                         f"{max_generations!r}")
    if max_generations is None and budget_s is None:
        raise ValueError("give max_generations (the search's work) or budget_s (seconds): with "
                         "neither the symbolic search would never stop")
    w = _check_vector(w)
    candidates, note = [], ""
    if method in ("auto", "library"):
        candidates.append(_library(w))
    if method in ("auto", "symbolic"):
        try:
            deadline = None if budget_s is None else start + float(budget_s)
            candidates.append(_symbolic(w, deadline, seed, population, max_generations))
            if candidates[-1]["stopped_by"] == "time":
                note = (f"the symbolic search was stopped by the time bound ({budget_s:g} s) "
                        f"after {candidates[-1]['generations']} generations: its result "
                        "depends on this machine's speed")
        except ImportError:
            if method == "symbolic":
                raise
            note = MISSING_GPLEARN.replace("symbolic regression needs", "symbolic search "
                                           "skipped: it needs")
    best = min(candidates, key=lambda c: c["bic"])
    form = best.get("form") or select_forms(fit_forms(best["values"][None]))[0]
    for c in candidates:
        c.setdefault("form", select_forms(fit_forms(c["values"][None]))[0])
        c["frequency"] = _dominant_frequency(c["values"])
    return Discovery(
        expression=best["expression"], frequency=_dominant_frequency(best["values"]), form=form,
        method=best["method"], r2=best["r2"], bic=best["bic"], n_params=best["n_params"],
        values=best["values"].float(),
        candidates=[{k: v for k, v in c.items() if k != "values"} for c in candidates],
        seconds=time.perf_counter() - start, note=note)


__all__ = ["FORMS", "METHODS", "Discovery", "discover"]
