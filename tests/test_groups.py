"""Issue 21: `analyses.groups`, neurons grouped by frequency, by form, dead or alive."""

import torch

from analyses.fourier import power_spectrum
from analyses.groups import by_form, by_frequency, dead_or_alive
from hooked_mlp import HookedMLP, MLPConfig


def test_by_frequency_reads_each_neurons_input_spectrum(shipped):
    groups = by_frequency(shipped)
    # by hand: the frequency with the most power in W_a and W_b together
    power = power_spectrum(shipped.W_a.detach().T) + power_spectrum(shipped.W_b.detach().T)
    want = power.argmax(dim=1) + 1
    assert sorted(n for v in groups.values() for n in v) == list(range(100))
    for k, neurons in groups.items():
        assert all(int(want[n]) == k for n in neurons)
    assert list(groups) == sorted(groups) and len(groups) == 44  # the study model's spread
    assert by_frequency(shipped, alive_only=True) == groups  # no dead neuron in it


def test_dead_neurons_and_constant_weights_are_told_apart():
    model = HookedMLP(MLPConfig(p=13, d_hidden=6), seed=1)
    with torch.no_grad():
        model.W_in[:, 2] = 0.0          # constant input weights: no frequency
        model.b_in[2] = -1.0            # and never active
        model.W_in[:, 4] -= 10.0        # input weights with a frequency, never active
    assert dead_or_alive(model) == {"alive": [0, 1, 3, 5], "dead": [2, 4]}
    groups = by_frequency(model)
    assert 2 not in {n for v in groups.values() for n in v}
    assert 4 in {n for v in groups.values() for n in v}
    assert 4 not in {n for v in by_frequency(model, alive_only=True).values() for n in v}


def test_by_form_partitions_the_neurons(shipped):
    groups = by_form(shipped)
    assert sorted(n for v in groups.values() for n in v) == list(range(100))
    assert set(groups) <= {"cosine", "harmonics", "square", "clipped", "two_freq", "constant"}
    assert len(groups["harmonics"]) > 50  # ReLU neurons of the study are not pure cosines
