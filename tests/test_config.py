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


# ---------------------------------------------------------------- a new field reaches every place
# One value other than the default for every field of the model and of the recipe. A new field
# fails `test_every_field_has_a_value_here` until it is given one, and then every test below
# checks that it reaches each place a field must reach: its command-line flag, the words a model
# is described in (describe, repr, hooked-mlp info), the checkpoint, `info --json`, and what the
# C accelerator accepts.
MODEL_BASE = {"p": 11, "d_hidden": 6}
MODEL_VALUES = {"p": 7, "d_hidden": 5, "activation": "gelu", "operation": "sub",
                "input_encoding": "binary", "tied_inputs": True, "bias": False, "n_layers": 2,
                "init_scale": 0.5}
TRAIN_VALUES = {"epochs": 3, "batch_size": 16, "lr": 0.01, "weight_decay": 0.1, "beta1": 0.8,
                "beta2": 0.99, "eps": 1e-6, "train_frac": 0.5, "seed": 4, "split_seed": 2}


def test_every_field_has_a_value_here():
    from hooked_mlp.config import ROLES, fields_of

    assert set(MODEL_VALUES) == {f.name for f in fields_of(MLPConfig)}
    assert set(TRAIN_VALUES) == {f.name for f in fields_of(TrainConfig)}
    for cls, values in ((MLPConfig, MODEL_VALUES), (TrainConfig, TRAIN_VALUES)):
        for f in fields_of(cls):
            assert f.metadata["role"] in ROLES and f.metadata["help"], f.name
            assert values[f.name] != f.default, f.name  # a value that shows
            with pytest.raises(ValueError, match=f"{cls.__name__}.{f.name} must be"):
                cls(**{f.name: object()})  # each field checks its value


def _flag(name):
    return "--" + name.replace("_", "-")


def _cli_value(value):
    return str(value).lower() if isinstance(value, bool) else str(value)


def _model_cfg(name):
    return MLPConfig(**{**MODEL_BASE, name: MODEL_VALUES[name]})


@pytest.mark.parametrize("name", sorted(MODEL_VALUES))
def test_a_model_field_reaches_every_place(name, tmp_path, capsys):
    import dataclasses

    from hooked_mlp import HookedMLP, load, save
    from hooked_mlp.cli import _recipe, build_parser, main
    from hooked_mlp.config import describe

    cfg = _model_cfg(name)
    value = MODEL_VALUES[name]
    # the command line: `--<name> value` sets it
    args = build_parser().parse_args(["train", *[a for k, v in MODEL_BASE.items() if k != name
                                                 for a in (_flag(k), str(v))],
                                      _flag(name), _cli_value(value), "--out", "x"])
    assert _recipe(args)[0] == cfg
    # the words: describe() (the report's header) changes with it; repr names it
    before = MODEL_BASE.get(name, getattr(MLPConfig(), name))
    assert describe(cfg) != describe(dataclasses.replace(cfg, **{name: before}))
    assert f"{name}={value!r}" in repr(HookedMLP(cfg))
    # the checkpoint, and hooked-mlp info (text and JSON)
    path = tmp_path / "m.safetensors"
    save(HookedMLP(cfg, seed=1), path)
    assert load(path).cfg == cfg
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["config"][name] == value
    assert main(["info", str(path)]) == 0
    assert f"{name}={value}" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(MODEL_VALUES))
def test_the_c_kernel_refuses_a_structure_field_it_does_not_know(name):
    from dataclasses import fields

    from hooked_mlp.training.c_kernel import supports

    role = {f.name: f.metadata["role"] for f in fields(MLPConfig)}[name]
    verdict = supports(_model_cfg(name))
    if role == "structure":
        assert verdict is not None and name in verdict  # refused, naming the field
    elif name not in ("p", "d_hidden"):
        assert verdict is None  # a size or a label changes nothing the kernel computes


@pytest.mark.parametrize("name", sorted(TRAIN_VALUES))
def test_a_recipe_field_reaches_every_place(name, tmp_path, capsys):
    from hooked_mlp import HookedMLP, load, save
    from hooked_mlp.cli import _recipe, build_parser, main
    from hooked_mlp.config import settings
    from hooked_mlp.data import split_mask
    from hooked_mlp.train_info import TrainInfo

    value = TRAIN_VALUES[name]
    tcfg = TrainConfig(**{name: value})
    args = build_parser().parse_args(["train", _flag(name), _cli_value(value), "--out", "x"])
    assert _recipe(args)[1] == tcfg
    assert (name, value) in settings(tcfg, always=())
    model = HookedMLP(MLPConfig(**MODEL_BASE))
    model.train_info = TrainInfo(tcfg, split_mask(model.cfg, tcfg.train_frac,
                                                  tcfg.effective_split_seed))
    path = tmp_path / "m.safetensors"
    save(model, path)
    assert load(path).train_info.train_config == tcfg
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["train_config"][name] == value
    assert main(["info", str(path)]) == 0
    shown = capsys.readouterr().out
    words = {"split_seed": f"split seed {value}"}.get(name, f"{name}={value}")
    assert words in shown


def test_presets_and_recipe():
    from hooked_mlp.config import PRESETS, recipe

    assert recipe() == (MLPConfig(), TrainConfig())
    cfg, tcfg = recipe("grokking", d_hidden=64, seed=3)
    assert (cfg.p, cfg.d_hidden, tcfg.epochs, tcfg.weight_decay, tcfg.seed) == (47, 64, 5000,
                                                                                2.0, 3)
    assert tcfg == TrainConfig.grokking(seed=3)
    assert MLPConfig(**TrainConfig.grokking_model()) == recipe("grokking")[0]
    assert set(PRESETS) == {"study", "grokking"}
    with pytest.raises(ValueError, match="unknown field 'widht': a recipe sets the fields of "):
        recipe(widht=3)
    with pytest.raises(ValueError, match="preset must be one of \\['study', 'grokking'\\]"):
        recipe("grok")
    with pytest.raises(ValueError, match="TrainConfig.lr must be"):
        recipe("grokking", lr=-1.0)
