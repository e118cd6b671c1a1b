"""Analyses of a `HookedMLP`, grouped by kind.

- computations (this folder): plain functions over a model, its cache or a series of snapshots,
  each returning a small result object that serialises to JSON (`to_dict()`), says what it
  found in a few lines (`summary()`) and may draw itself (`figures()`);
- `analyses.experiments`: the study, the forms comparison, how the circuit formed and the open
  questions, composed from the computations, returning result objects;
- `analyses.pages`: the report and the other HTML pages, rendered from those results.

Imports point one way: `hooked_mlp` <- computations <- experiments <- pages <- the CLI.
"""

from hooked_mlp._moved import RENAMED as _RENAMED
from hooked_mlp._moved import register as _register

_register({
    "analyses.report": ("analyses.pages.report",),
    "analyses.dynamics_page": ("analyses.pages.dynamics",),
    "analyses.questions_page": ("analyses.pages.questions",),
    "analyses.forms_report": ("analyses.pages.forms",),
    "analyses.study": ("analyses.experiments.study",),
    "analyses.questions": ("analyses.experiments.questions",),
    "analyses.construction": ("analyses.experiments.construction",),
})

# names that said too little (three pairs collided), each old name -> its new name
_RENAMED.update({
    "analyses._common.accuracy": "hooked_mlp.helpers.accuracy",
    "analyses.fourier.frequency_power": "analyses.fourier.power_spectrum",
    "analyses.dynamics.frequency_power": "analyses.frequency_losses.logit_frequency_power",
    "analyses.dynamics.measure": "analyses.dynamics.snapshot_measures",
    "analyses.experiments.study.measure": "analyses.experiments.study.measure_study_model",
    # a page, so it moved up to the pages layer (a computation module may not import a page)
    "analyses.views.views_page": "analyses.pages.views.views_page",
    "analyses.views.save_views_page": "analyses.pages.views.save_views_page",
})
