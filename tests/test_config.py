import json

import pytest

from hooked_mlp import MLPConfig, TrainConfig


def test_defaults_are_the_source_study():
    m, t = MLPConfig(), TrainConfig()
    assert (m.p, m.d_hidden, m.activation, m.operation, m.input_encoding) == (
        113, 100, "relu", "add", "one_hot")
    assert (m.d_input, m.d_output) == (226, 113)
    assert m.n_params == 226 * 100 + 100 + 100 * 113 + 113
    assert (t.lr, t.weight_decay, t.batch_size, t.epochs, t.seed, t.train_frac) == (
        3e-3, 0.5, 128, 2000, 0, 0.8)
    assert (t.beta1, t.beta2, t.eps) == (0.9, 0.999, 1e-8)  # torch's AdamW defaults
    assert t.effective_split_seed == 0
    assert TrainConfig(seed=4).effective_split_seed == 4
    assert TrainConfig(seed=4, split_seed=1).effective_split_seed == 1


BAD_MODEL = [
    ({"p": 1}, "MLPConfig.p must be an integer in [2, 65535]"),
    ({"p": 7.0}, "MLPConfig.p must be an integer"),
    ({"p": True}, "MLPConfig.p must be an integer"),
    ({"d_hidden": 0}, "MLPConfig.d_hidden must be an integer in [1,"),
    ({"activation": "tanh"},
     "MLPConfig.activation must be one of ['relu', 'gelu', 'silu', 'quad', 'identity']"),
    ({"operation": "pow"},
     "MLPConfig.operation must be one of ['add', 'sub', 'mul', 'div', 'x2_xy_y2']"),
    ({"input_encoding": "fourier"},
     "MLPConfig.input_encoding must be one of ['one_hot', 'scalar', 'circle', 'binary']"),
    ({"operation": "div", "p": 12}, "MLPConfig.operation='div' needs a prime p"),
    ({"tied_inputs": 1}, "MLPConfig.tied_inputs must be True or False, got 1"),
    ({"bias": "no"}, "MLPConfig.bias must be True or False, got 'no'"),
    ({"n_layers": 0}, "MLPConfig.n_layers must be an integer in [1, 16]"),
    ({"init_scale": 0.0}, "MLPConfig.init_scale must be a finite number in (0.0, 1000000.0]"),
    ({"init_scale": float("inf")}, "MLPConfig.init_scale must be a finite number"),
    ({"p": 60_000, "d_hidden": 1_000_000}, "parameters; at most 2,147,483,647 are allowed"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_MODEL)
def test_bad_model_config_names_field_and_range(kwargs, message):
    with pytest.raises(ValueError) as e:
        MLPConfig(**kwargs)
    assert message in str(e.value)


BAD_TRAIN = [
    ({"epochs": 0}, "TrainConfig.epochs must be an integer in [1,"),
    ({"batch_size": -3}, "TrainConfig.batch_size must be an integer in [1,"),
    ({"lr": 0.0}, "TrainConfig.lr must be a finite number in (0.0, 10.0]"),
    ({"lr": float("nan")}, "TrainConfig.lr must be a finite number"),
    ({"weight_decay": -1.0}, "TrainConfig.weight_decay must be a finite number in [0.0,"),
    ({"beta1": 1.0}, "TrainConfig.beta1 must be a finite number in [0.0, 1.0)"),
    ({"beta2": "x"}, "TrainConfig.beta2 must be a finite number"),
    ({"eps": 0}, "TrainConfig.eps must be a finite number in (0.0, 1.0]"),
    ({"train_frac": 1.5}, "TrainConfig.train_frac must be a finite number in (0.0, 1.0]"),
    ({"train_frac": 0.0}, "TrainConfig.train_frac must be a finite number in (0.0, 1.0]"),
    ({"lr": 10**400}, "TrainConfig.lr must be a finite number in (0.0, 10.0], got an integer"),
    ({"seed": -1}, "TrainConfig.seed must be an integer in [0, 4294967295]"),
    ({"seed": 2**32}, "TrainConfig.seed must be an integer in [0, 4294967295]"),
    ({"split_seed": -2}, "TrainConfig.split_seed must be an integer in [0, 4294967295]"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_TRAIN)
def test_bad_train_config_names_field_and_range(kwargs, message):
    with pytest.raises(ValueError) as e:
        TrainConfig(**kwargs)
    assert message in str(e.value)


def test_round_trip_and_unknown_fields():
    m = MLPConfig(p=31, d_hidden=7)
    assert MLPConfig.from_dict(m.to_dict()) == m
    for member in (MLPConfig(p=23, activation="gelu", operation="div", tied_inputs=True,
                             bias=False, n_layers=3, init_scale=0.25),
                   MLPConfig(activation="quad", operation="x2_xy_y2")):
        assert MLPConfig.from_dict(member.to_dict()) == member
        assert MLPConfig.from_dict(json.loads(json.dumps(member.to_dict()))) == member
    # a config written before the family existed (hooked-mlp 0.1) reads as the study's
    old = {"p": 113, "d_hidden": 100, "activation": "relu", "operation": "add",
           "input_encoding": "one_hot"}
    assert MLPConfig.from_dict(old) == MLPConfig()
    with pytest.raises(ValueError, match="unknown fields \\['device'\\]"):
        MLPConfig.from_dict({**old, "device": "cuda"})  # where a model lives is not its config
    t = TrainConfig(epochs=3, split_seed=9)
    assert TrainConfig.from_dict(t.to_dict()) == t
    with pytest.raises(ValueError, match="unknown fields \\['q'\\]"):
        MLPConfig.from_dict({"p": 5, "q": 1})
    with pytest.raises(ValueError, match="must be a JSON object"):
        TrainConfig.from_dict([1, 2])


def test_transformer_lens_names_and_the_family_table():
    from hooked_mlp.family import ACTIVATIONS, OPERATIONS

    c = MLPConfig(p=31, d_hidden=48, activation="gelu", n_layers=2)
    assert (c.d_mlp, c.d_vocab, c.d_vocab_out, c.act_fn, c.n_layers) == (48, 31, 31, "gelu", 2)
    assert str(c.dtype) == "torch.float32" and c.device == "cpu"
    assert MLPConfig(device="cuda:0") == MLPConfig()  # where a model lives is not its identity
    assert c.d_input == 62 and MLPConfig(p=31, tied_inputs=True).d_input == 31
    # the parameter count follows the family: W_in, b_in, (L-1) hidden layers, W_out, b_out
    assert c.n_params == 62 * 48 + 48 + (48 * 48 + 48) + 48 * 31 + 31
    assert MLPConfig(p=31, d_hidden=48, tied_inputs=True, bias=False).n_params == 31 * 48 * 2
    # the config's choices are the tables' entries, one table each
    assert set(ACTIVATIONS) == {"relu", "gelu", "silu", "quad", "identity"}
    assert set(OPERATIONS) == {"add", "sub", "mul", "div", "x2_xy_y2"}
    for name in ACTIVATIONS:
        MLPConfig(activation=name)
    for name in OPERATIONS:
        MLPConfig(operation=name)
