"""Input encodings (one_hot, scalar, circle, binary): the features, the dense first layer, the
hooks, the trainer, checkpoints, the importer, and the analyses that must refuse them."""

from __future__ import annotations

import math

import pytest
import torch

from hooked_mlp import HookedMLP, MLPConfig, TrainConfig, import_mlp, load, save
from hooked_mlp.config import INPUT_ENCODINGS
from hooked_mlp.data import all_pairs
from hooked_mlp.family import INPUT_ENCODINGS as ENCODING_TABLE
from hooked_mlp.reference import one_hot_input, reference_train

ENCODINGS = list(INPUT_ENCODINGS)


def test_the_encodings_and_their_features():
    assert ENCODINGS == ["one_hot", "scalar", "circle", "binary"]
    x = torch.arange(13)
    scalar = ENCODING_TABLE["scalar"].features(x, 13)
    torch.testing.assert_close(scalar[:, 0], x.float() / 13)
    circle = ENCODING_TABLE["circle"].features(x, 13)
    torch.testing.assert_close(circle, torch.stack([torch.cos(2 * math.pi * x / 13),
                                                    torch.sin(2 * math.pi * x / 13)], 1).float())
    bits = ENCODING_TABLE["binary"].features(x, 13)
    assert bits.shape == (13, 4)  # ceil(log2 13) = 4
    assert torch.equal((bits * torch.tensor([1.0, 2, 4, 8])).sum(1).long(), x)
    assert [MLPConfig(p=113, input_encoding=e).d_input for e in ENCODINGS] == [226, 2, 4, 14]
    assert MLPConfig(p=113, input_encoding="binary", tied_inputs=True).d_input == 7
    assert MLPConfig(p=2, input_encoding="binary").d_operand == 1


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_dense_first_layer_equals_the_sequential_model_and_hooks_split_it(encoding, tied):
    cfg = MLPConfig(p=11, d_hidden=8, input_encoding=encoding, tied_inputs=tied, n_layers=2)
    model = HookedMLP(cfg, seed=3)
    tokens = all_pairs(11)
    logits, cache = model.run_with_cache(tokens)
    seq_logits = model.to_sequential()(one_hot_input(tokens, cfg))
    torch.testing.assert_close(logits, seq_logits, rtol=1e-5, atol=1e-5)
    enc = ENCODING_TABLE[encoding].features
    torch.testing.assert_close(cache["hook_embed_a"], enc(tokens[:, 0], 11) @ model.W_a)
    torch.testing.assert_close(cache["hook_embed_b"], enc(tokens[:, 1], 11) @ model.W_b)
    torch.testing.assert_close(cache["hook_embed_a"] + cache["hook_embed_b"] + model.b_in,
                               cache["blocks.0.mlp.hook_pre"])
    table = model.input_table()
    assert table.shape == (11 if tied else 22, 8)
    torch.testing.assert_close(table[tokens[:, 0]], cache["hook_embed_a"])


@pytest.mark.parametrize("encoding", ENCODINGS[1:])
def test_checkpoints_of_every_encoding_round_trip(encoding, tmp_path):
    cfg = MLPConfig(p=7, d_hidden=6, input_encoding=encoding)
    model = HookedMLP(cfg, seed=1)
    save(model, tmp_path / "m.safetensors")
    back = load(tmp_path / "m.safetensors")
    assert back.cfg == cfg and back.cfg.input_encoding == encoding
    tokens = all_pairs(7)
    torch.testing.assert_close(back(tokens), model(tokens))
    imported = import_mlp(model.to_linear_state_dict(), activation="relu",
                          input_encoding=encoding)
    assert imported.cfg == cfg
    torch.testing.assert_close(imported(tokens), model(tokens))
    # a hooked-mlp checkpoint records its encoding: a contradicting argument is refused
    with pytest.raises(ValueError, match="input_encoding='one_hot' was passed"):
        import_mlp(tmp_path / "m.safetensors", input_encoding="one_hot")
    # without the encoding, a dense first layer is refused with a hint
    with pytest.raises(ValueError, match="for a dense first layer pass input_encoding="):
        import_mlp(model.to_linear_state_dict(), activation="relu")
    # the first layer must fit the encoding named
    with pytest.raises(ValueError, match="input_encoding='scalar' with p = 7"):
        import_mlp(HookedMLP(MLPConfig(p=7, d_hidden=6, input_encoding="binary"))
                   .to_linear_state_dict(), activation="relu", input_encoding="scalar")


def test_import_refuses_an_unknown_encoding():
    with pytest.raises(ValueError, match="input_encoding must be one of"):
        import_mlp({"W_in": torch.zeros(2, 3)}, activation="relu", input_encoding="fourier")


@pytest.mark.parametrize("encoding", ENCODINGS[1:])
def test_trainer_equals_the_plain_loop_and_auto_falls_back_to_torch(encoding):
    from hooked_mlp import train
    from hooked_mlp.training import c_kernel
    from hooked_mlp.training.backends import resolve_backend

    cfg = MLPConfig(p=7, d_hidden=6, input_encoding=encoding)
    assert f"input_encoding={encoding!r}" in c_kernel.supports(cfg)
    assert resolve_backend("auto", torch.device("cpu"), cfg) == "torch"
    with pytest.raises(ValueError, match="backend='c' was asked for"):
        resolve_backend("c", torch.device("cpu"), cfg)
    tcfg = TrainConfig(epochs=3, seed=2)
    model, _ = train(cfg, tcfg, progress=False)
    ref = reference_train(cfg, tcfg)
    for name, value in ref.items():
        torch.testing.assert_close(model.state_tensors()[name], value, rtol=1e-5, atol=1e-6)


# The accuracy each encoding reaches on the small problem that `hooked-mlp questions` also trains
# and reports (`analyses.experiments.questions.SMALL_P_MODEL` / `SMALL_P_RECIPE`, seed 0), measured
# with this
# code (deterministic on the CPU): train / val one_hot 1.000 / 0.000, scalar 0.234 / 0.103,
# circle 1.000 / 0.914, binary 0.939 / 0.259. At this p circle inputs generalise best, scalar
# inputs barely fit the training pairs and one-hot memorises without generalising; at the page's
# p = 113 (200 epochs) the order differs (binary 85 %, 99 % with weight decay 0.05; circle 17 %,
# 50 %; scalar 2 %, 15 %), which takes minutes to train, beyond this file's budget.
MEASURED = {"one_hot": (1.000, 0.000), "scalar": (0.234, 0.103), "circle": (1.000, 0.914),
            "binary": (0.939, 0.259)}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_encoding_trains_on_a_small_p_to_the_accuracy_the_page_reports(encoding):
    from analyses.experiments.questions import small_p_run

    got = small_p_run(encoding)
    want_train, want_val = MEASURED[encoding]
    assert got["train_acc"] == pytest.approx(want_train, abs=0.02)
    assert got["val_acc"] == pytest.approx(want_val, abs=0.02)


def test_weight_analyses_refuse_a_dense_first_layer():
    from analyses.clock_pizza import gradient_symmetricity
    from analyses.cosine_fit import fit_neurons
    from analyses.dynamics import lottery, neuron_measures
    from analyses.experiments.construction import compare_quad
    from analyses.experiments.study import study
    from analyses.forms import compare_forms, form_replacement
    from analyses.fourier import neuron_spectra
    from analyses.replacement import replacement_curve

    model = HookedMLP(MLPConfig(p=11, d_hidden=8, input_encoding="circle"))
    for call in (lambda: fit_neurons(model), lambda: neuron_spectra(model),
                 lambda: replacement_curve(model), lambda: study([model], ["m"]),
                 lambda: neuron_measures(model), lambda: lottery(model, model),
                 lambda: compare_forms(model), lambda: form_replacement(model),
                 lambda: gradient_symmetricity(model), lambda: compare_quad(model)):
        with pytest.raises(ValueError, match="input_encoding='circle'.*analyses.activation_fits"):
            call()


def test_dynamics_and_the_cli_on_a_dense_model(tmp_path, capsys):
    """The dynamics of a circle-input run skip the residue-indexed neuron measures; the
    commands that read weights by residue refuse it in one line."""
    from analyses.dynamics import dynamics
    from hooked_mlp.cli import main
    from hooked_mlp.files.series import load_snapshots

    out = tmp_path / "run"
    assert main(["train", "--p", "11", "--d-hidden", "8", "--input-encoding", "circle",
                 "--epochs", "6", "--snapshots", "every:3", "--out", str(out),
                 "--no-progress"]) == 0
    d = dynamics(load_snapshots(out))
    assert d.lottery is None and "train_acc" in d.measures and len(d.epochs) >= 2
    capsys.readouterr()
    for argv in (["report", "--model", str(out / "seed-0.safetensors"), "--out",
                  str(tmp_path / "rep")],
                 ["probe", "frequencies", "--model", str(out / "seed-0.safetensors")]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "input_encoding='circle'" in err[0]
