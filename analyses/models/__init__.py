"""Hand-built models: networks whose weights are set by a formula, not learned.

- `analyses.models.cosine`: random cosine models (the study's synthetic networks);
- `analyses.models.constructions`: exact `quad` constructions (Gromov's, with phases that make it
  exact; a pure pizza; Gromov's as stated, with random phases).

Every one is an ordinary `HookedMLP`, so every probe, view and hook works on it; the analyses
that measure them (`analyses.synthetic.synthetic_curve`, `analyses.experiments.construction`)
live with the other computations.
"""
