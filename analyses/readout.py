"""The neuron-by-neuron readout: the logits as one term per neuron of the last hidden layer.

The logits of a `HookedMLP` are `b_out + sum_n post[:, n] W_out[n]` (`post` the last hidden
layer's activations). Replacing a neuron's input or output weights changes only its own term,
so an accuracy curve over a growing set of replaced neurons (`analyses.replacement`: cosine fits;
`analyses.predict_out`: predicted output rows; `analyses.forms`: competing forms) updates the
logits block of neurons by block of neurons instead of running the model again. This module
holds that update once: `readout_logits` is the sum itself (tested equal to the model's forward)
and `accuracy_as_terms_change` the curve.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from hooked_mlp.helpers import fraction_right
from hooked_mlp.shapes import Hidden, Labels, Logits

OutputWeights = Float[Tensor, "d_hidden p"]

__all__ = ["accuracy_as_terms_change", "readout_logits"]


def readout_logits(post: Hidden, W_out: OutputWeights, b_out: Tensor | None = None) -> Logits:
    """`b_out + post @ W_out`: the logits `[batch, p]` from the last hidden layer's activations
    `[batch, d_hidden]` and output weights `[d_hidden, p]` (`b_out` `[p]`, None without
    biases)."""
    return post @ W_out if b_out is None else torch.addmm(b_out, post, W_out)


@torch.no_grad()
def accuracy_as_terms_change(
    base: Logits, labels: Labels, post: Hidden, W_out: OutputWeights,
    orders: Sequence[Sequence[int]], counts: Sequence[int], new_W_out: OutputWeights,
    new_post: Hidden | None = None,
    what: str = "the accuracy",
) -> list[list[float]]:
    """The accuracy after the terms of the first `n` neurons of each order are replaced, for
    each `n` of `counts`: `[len(orders)][len(counts)]`.

    `base` are the untouched logits `[batch, p]` (`readout_logits(post, W_out, b_out)`), `post`
    `[batch, d_hidden]` and `W_out` `[d_hidden, p]` the terms they are made of; a replaced neuron
    `n` contributes `new_post[:, n] new_W_out[n]` instead (`new_post` None: its activation is
    kept and only its output row changes, added as the one difference `post_n (new - old)_n`).
    Each accuracy is `hooked_mlp.helpers.fraction_right` (the arithmetic of `accuracy`, so no
    neuron replaced gives the model's accuracy exactly); logits that overflow are refused
    (`LogitsOverflowError`), naming `what`.
    """
    curves = []
    delta = new_W_out - W_out if new_post is None else None
    for order in orders:
        logits, done, acc_at = base.clone(), 0, {}
        for n in sorted(set(counts)):
            if n > done:
                idx = torch.as_tensor(list(order[done:n]), dtype=torch.int64)
                if delta is not None:
                    logits.addmm_(post[:, idx], delta[idx])
                else:
                    logits.addmm_(new_post[:, idx], new_W_out[idx])
                    logits.addmm_(post[:, idx], W_out[idx], alpha=-1.0)
                done = n
            acc_at[n] = fraction_right(logits, labels, f"{what} ({n} neurons replaced)")
        curves.append([acc_at[n] for n in counts])
    return curves
