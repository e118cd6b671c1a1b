"""Every bad input gets a clear error that names the argument and what is allowed."""

import pytest
import torch

from analyses.activations import activation_grids
from analyses.cosine_fit import fit_cosines, fit_harmonics, fit_neurons
from analyses.fourier import fourier_basis, frequency_histogram
from analyses.replacement import replace_neurons, replacement_curve
from analyses.synthetic import random_cosine_model, synthetic_curve
from analyses.views import neuron_grid_view, top_inputs_view
from hooked_mlp import HookedMLP, MLPConfig, TrainConfig, load_pretrained, train
from hooked_mlp.cli import main

CASES = [
    # (what, call(model), exception, message)
    ("tokens not a tensor", lambda m: m([[1, 2]]), TypeError, "tokens must be a torch.Tensor"),
    ("float tokens", lambda m: m(torch.tensor([[1.0, 2.0]])), TypeError, "integer dtype"),
    ("bool tokens", lambda m: m(torch.tensor([[True, False]])), TypeError, "integer dtype"),
    ("1-D tokens", lambda m: m(torch.tensor([1, 2])), ValueError,
     "shape [batch, 2], got [2]"),
    ("3 columns", lambda m: m(torch.tensor([[1, 2, 3]])), ValueError,
     "shape [batch, 2], got [1, 3]"),
    ("token = p", lambda m: m(torch.tensor([[0, 113]])), ValueError,
     "tokens must lie in [0, 112] (p=113), got values in [0, 113]"),
    ("negative token", lambda m: m(torch.tensor([[-1, 4]])), ValueError,
     "tokens must lie in [0, 112]"),
    ("tokens on another device", lambda m: m(torch.tensor([[1, 2]], device="meta")), ValueError,
     "tokens are on meta but the model is on cpu"),
    ("cache with bad tokens", lambda m: m.run_with_cache(torch.tensor([[200, 1]])), ValueError,
     "tokens must lie in [0, 112]"),
    ("model config", lambda m: MLPConfig(d_hidden=0), ValueError,
     "MLPConfig.d_hidden must be an integer in [1,"),
    ("train config", lambda m: TrainConfig(train_frac=1.5), ValueError,
     "TrainConfig.train_frac must be a finite number in (0.0, 1.0]"),
    ("model of wrong type", lambda m: HookedMLP({"p": 5}), TypeError,
     "cfg must be an MLPConfig"),
    ("neuron too large", lambda m: activation_grids(m, [100]), ValueError,
     "neurons must lie in [0, 99] (d_hidden=100), got 100"),
    ("neuron negative", lambda m: fit_neurons(m, [-3]), ValueError,
     "neurons must lie in [0, 99]"),
    ("neuron not int", lambda m: replace_neurons(m, [1.5]), TypeError,
     "neurons must be integers in [0, 99]"),
    ("grid view neuron", lambda m: neuron_grid_view(m, 250), ValueError,
     "neuron must lie in [0, 99]"),
    ("top-k neurons", lambda m: top_inputs_view(m, [0, 101]), ValueError,
     "neurons must lie in [0, 99]"),
    ("frequency that does not exist", lambda m: fit_cosines(m.W_a.detach().t()[:2],
                                                            torch.tensor([3, 57])),
     ValueError, "k must hold 2 integer frequencies in [1, 56]"),
    ("harmonics count", lambda m: fit_harmonics(m.W_out.detach(), torch.ones(100).long(), 0),
     ValueError, "n_harmonics must be a positive integer"),
    ("histogram source", lambda m: frequency_histogram(m, "both"), ValueError,
     "source must be one of ['input', 'a', 'b', 'out']"),
    ("fourier p", lambda m: fourier_basis(0), ValueError, "p must be an integer >= 2"),
    ("replacement fraction", lambda m: replacement_curve(m, fractions=[-0.1]), ValueError,
     "fractions must be a non-empty list of numbers in [0, 1]"),
    ("replacement form", lambda m: replacement_curve(m, form="x"), ValueError,
     "form must be one of ['separate', 'joint', 'study', 'harmonic']"),
    ("synthetic neurons", lambda m: random_cosine_model(-4), ValueError,
     "n_neurons must be an integer >= 1"),
    ("synthetic seed", lambda m: random_cosine_model(4, seed=-1), ValueError,
     "seed must be an integer >= 0"),
    ("synthetic ns", lambda m: synthetic_curve(ns=[0]), ValueError, "ns must be an integer >= 1"),
    ("train device", lambda m: train(MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1),
                                     device="gpu0"), ValueError,
     "device must be 'cpu', 'cuda' or 'cuda:N'"),
    ("train threads", lambda m: train(MLPConfig(p=5, d_hidden=2), TrainConfig(epochs=1),
                                      threads=-1), ValueError,
     "threads must be an integer in [1, 256], got -1"),
    ("pretrained seed", lambda m: load_pretrained(99), ValueError,
     "seed must be one of the shipped seeds [0, 1, 2, 3, 4], got 99"),
]


@pytest.mark.parametrize(("what", "call", "exc", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(shipped, what, call, exc, message):
    with pytest.raises(exc) as e:
        call(shipped)
    assert message in str(e.value), str(e.value)


CLI_CASES = [
    (["train", "--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    (["train", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["train", "--seeds", "a-b"], "invalid seeds 'a-b'"),
    (["train", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["report", "--threads", "zero"], "expected a positive integer of at most 256 threads, "
     "got 'zero'"),
    (["info", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--backend", "fast"],
     "argument --backend: invalid choice: 'fast' (choose from 'auto', 'c', 'torch')"),
]


@pytest.mark.parametrize(("argv", "message"), CLI_CASES)
def test_cli_bad_flags_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
