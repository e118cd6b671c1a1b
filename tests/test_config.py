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
    ({"activation": "gelu"}, "MLPConfig.activation must be one of ['relu']"),
    ({"operation": "mul"}, "MLPConfig.operation must be one of ['add']"),
    ({"input_encoding": "binary"}, "MLPConfig.input_encoding must be one of ['one_hot']"),
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
    ({"train_frac": 1.0}, "TrainConfig.train_frac must be a finite number in (0.0, 1.0)"),
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
    t = TrainConfig(epochs=3, split_seed=9)
    assert TrainConfig.from_dict(t.to_dict()) == t
    with pytest.raises(ValueError, match="unknown fields \\['q'\\]"):
        MLPConfig.from_dict({"p": 5, "q": 1})
    with pytest.raises(ValueError, match="must be a JSON object"):
        TrainConfig.from_dict([1, 2])
