"""Working the way a TransformerLens researcher works: gradients through the cache, attribution
patching, TL's cache helpers, the task's helpers, and probes as plugins."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from hooked_mlp import CheckpointError, HookedMLP, MLPConfig, helpers, load, save
from hooked_mlp.cli import main
from hooked_mlp.data import all_pairs, labels_of


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    return all_pairs(113)[torch.randperm(113 * 113, generator=gen)[:256]]


@torch.no_grad()
def test_forward_return_types(shipped, batch):
    logits = shipped(batch)
    loss = shipped(batch, return_type="loss")
    both = shipped(batch, return_type="both")
    assert torch.equal(both[0], logits) and torch.equal(both[1], loss)
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, labels_of(batch,
                                                                                shipped.cfg))))
    assert shipped(batch, return_type=None) is None
    other = torch.zeros(256, dtype=torch.int64)
    assert float(shipped(batch, return_type="loss", labels=other)) == pytest.approx(
        float(F.cross_entropy(logits, other)))
    with pytest.raises(ValueError, match="return_type must be one of"):
        shipped(batch, return_type="probs")


def test_incl_bwd_gradients_equal_autograd(shipped, batch):
    shipped.zero_grad()
    loss, cache = shipped.run_with_cache(batch, return_type="loss", incl_bwd=True)
    assert loss.ndim == 0
    assert {"blocks.0.mlp.hook_post_grad", "hook_logits_grad"} <= set(cache.keys())
    post = cache["post", 0].detach().clone().requires_grad_()
    logits = post @ shipped.W_out.detach() + shipped.b_out.detach()
    want, = torch.autograd.grad(F.cross_entropy(logits, labels_of(batch, shipped.cfg)), post)
    torch.testing.assert_close(cache["blocks.0.mlp.hook_post_grad"], want, rtol=1e-6,
                               atol=1e-9)
    assert float(want.abs().max()) > 0
    shipped.zero_grad()
    # a metric instead of the loss; and TL's other arguments
    metric = lambda logits: logits[:, 7].sum()  # noqa: E731
    _, cache = shipped.run_with_cache(batch, metric=metric, incl_bwd=True)
    torch.testing.assert_close(cache["hook_logits_grad"][:, 7], torch.ones(256))
    shipped.zero_grad()
    out, raw = shipped.run_with_cache(batch, return_cache_object=False)
    assert out.shape == (256, 113)
    assert isinstance(raw, dict) and "blocks.0.mlp.hook_post" in raw
    with pytest.raises(ValueError, match="pos_slice does not apply"):
        shipped.run_with_cache(batch, pos_slice=-1)
    with pytest.raises(ValueError, match="needs a scalar|must be a scalar"):
        shipped.run_with_cache(batch, incl_bwd=True)
    # TL's positional return_type; labels that are not residues
    loss2, _ = shipped.run_with_cache(batch, "loss", incl_bwd=True)
    shipped.zero_grad()
    assert float(loss2.detach()) == pytest.approx(float(loss.detach()))
    with pytest.raises(ValueError, match="labels must be residues in \\[0, 112\\]"):
        shipped(batch, return_type="loss", labels=torch.full((256,), 500))


def test_attribution_patching_on_hook_post_is_activation_patching(shipped, batch):
    """The logits are linear in hook_post, so for a metric linear in the logits attribution
    patching (gradient x activation difference) equals activation patching exactly."""
    corrupt = batch.clone()
    corrupt[:, 1] = (corrupt[:, 1] + 1) % 113
    labels = labels_of(batch, shipped.cfg)
    metric = lambda logits: logits.gather(1, labels[:, None]).sum()  # noqa: E731

    # the README's three lines
    clean_metric, clean = shipped.run_with_cache(batch, metric=metric, incl_bwd=True)
    _, corrupted = shipped.run_with_cache(corrupt)
    attribution = ((corrupted["post", 0] - clean["post", 0]) * clean["post_grad", 0]).sum(0)
    shipped.zero_grad()

    def patch(neuron):
        def hook(post, hook):
            post = post.clone()
            post[:, neuron] = corrupted["post", 0][:, neuron]
            return post
        return hook

    for neuron in (3, 40, 99):
        patched = shipped.run_with_hooks(batch, fwd_hooks=[("blocks.0.mlp.hook_post",
                                                            patch(neuron))], metric=metric)
        effect = float((patched - clean_metric).detach())
        assert float(attribution[neuron]) == pytest.approx(effect, rel=1e-4, abs=1e-3)
    assert float(attribution.abs().max()) > 1


def test_transformer_lens_cache_helpers(shipped, batch):
    logits, cache = shipped.run_with_cache(batch)
    results = cache.get_neuron_results(0)  # [batch, neurons, p]
    assert results.shape == (256, 100, 113)
    torch.testing.assert_close(results.sum(1) + shipped.b_out, logits, rtol=1e-5, atol=1e-4)
    stack, names = cache.stack_neuron_results(return_labels=True)
    assert stack.shape == (100, 256, 113) and names[:2] == ["L0N0", "L0N1"]
    labels = labels_of(batch, shipped.cfg)
    attrs = cache.logit_attrs(stack, labels)  # [neurons, batch]: each neuron's correct logit
    torch.testing.assert_close(attrs.sum(0) + shipped.b_out[labels],
                               logits.gather(1, labels[:, None])[:, 0], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="one per batch element \\(256\\), got 7"):
        cache.logit_attrs(stack, labels[:7])
    diff = cache.logit_attrs(stack, labels, incorrect_tokens=0)
    torch.testing.assert_close(diff, attrs - stack[..., 0])
    onto = torch.zeros(113)
    onto[5] = 1.0
    torch.testing.assert_close(cache.get_neuron_results(0, project_output_onto=onto),
                               results[..., 5])
    torch.testing.assert_close(cache.get_neuron_results(0, neuron_slice=[2, 7]),
                               results[:, [2, 7]])
    assert cache.stack_activation("post").shape == (1, 256, 100)
    assert torch.equal(cache["post", -1], cache["blocks.0.mlp.hook_post"])
    for name, what in (("accumulated_resid", "residual stream"),
                       ("decompose_resid", "residual stream"),
                       ("stack_head_results", "attention heads"),
                       ("apply_ln_to_stack", "layer norm"), ("logit_lens", "residual stream")):
        with pytest.raises(ValueError, match=f"does not apply to a HookedMLP: it has no {what}"):
            getattr(cache, name)()
    with pytest.raises(ValueError, match="pos_slice does not apply"):
        cache.get_neuron_results(0, pos_slice=0)
    with pytest.raises(ValueError, match="layer must be an integer in \\[-1, 0\\]"):
        cache.get_neuron_results(1)
    with pytest.raises(KeyError, match="'hook_post' is now 'blocks.0.mlp.hook_post'"):
        cache["hook_post"]


def test_neuron_results_of_a_deeper_model_write_the_next_layer():
    model = HookedMLP(MLPConfig(p=7, d_hidden=5, n_layers=2), seed=3)
    _, cache = model.run_with_cache(all_pairs(7))
    first = cache.get_neuron_results(0)  # [batch, 5, 5]: into layer 1's pre-activation
    torch.testing.assert_close(first.sum(1) + model.b_hidden[0], cache["pre", 1])
    with pytest.raises(ValueError, match="layer must be None, -1 or 2"):
        cache.stack_neuron_results(layer=1)


def test_task_helpers(shipped):
    tokens, labels = helpers.split_tokens(shipped, "val")
    assert tokens.shape == (2554, 2) and torch.equal(labels, tokens.sum(1) % 113)
    assert helpers.accuracy(shipped, "val") == pytest.approx(
        shipped.train_info.metrics["val_acc"], abs=1e-6)
    assert helpers.loss(shipped, "train") == pytest.approx(
        shipped.train_info.metrics["train_loss"], rel=1e-4)
    logits, cache = shipped.run_with_cache(all_pairs(113))
    grid = helpers.to_grid(logits)
    assert grid.shape == (113, 113, 113) and torch.equal(grid[4, 9], logits[4 * 113 + 9])
    assert helpers.to_grid(cache["post", 0]).shape == (113, 113, 100)
    with pytest.raises(ValueError, match="p\\*p"):
        helpers.to_grid(logits[:99])
    with pytest.raises(ValueError, match="needs a model with a training record"):
        helpers.split_tokens(HookedMLP(MLPConfig(p=5, d_hidden=2)), "train")


def test_fourier_change_of_basis():
    p = 13
    basis, names = helpers.fourier_basis(p)
    torch.testing.assert_close(basis @ basis.T, torch.eye(p), atol=1e-5, rtol=0)
    x = torch.arange(p, dtype=torch.float32)
    wave = torch.cos(2 * torch.pi * 3 * x / p + 0.4)  # one frequency over residues
    coef = helpers.fourier_1d(wave[:, None], 0)[:, 0]
    energy = coef.square()
    assert {names[i] for i in energy.topk(2).indices.tolist()} == {"cos 3", "sin 3"}
    assert float(energy[[names.index("cos 3"), names.index("sin 3")]].sum()) == pytest.approx(
        float(wave.square().sum()), rel=1e-5)
    grid = torch.cos(2 * torch.pi * 2 * (x[:, None] + x[None, :]) / p)  # cos(w (a + b))
    spec = helpers.fourier_2d(grid)
    names2 = helpers.fourier_names_2d(p)
    top = {names2[i // p][i % p] for i in spec.square().flatten().topk(2).indices.tolist()}
    assert top == {"cos 2 x cos 2", "sin 2 x sin 2"}
    # the change of basis is a rotation: it keeps the norm and inverts with the transpose
    assert float(spec.norm()) == pytest.approx(float(grid.norm()), rel=1e-5)
    torch.testing.assert_close(basis.T @ spec @ basis, grid, atol=1e-5, rtol=0)


def test_load_of_a_torch_file_names_the_importer(tmp_path):
    seq = torch.nn.Sequential(torch.nn.Linear(10, 4), torch.nn.ReLU(), torch.nn.Linear(4, 5))
    torch.save(seq.state_dict(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="hooked_mlp.import_mlp\\(path, activation=...\\)"):
        load(tmp_path / "model.pt")


# ------------------------------------------------------------------------------ plugins
PLUGIN = '''
"""A probe from another package."""
from analyses.probes import ProbeResult


def norm_probe(model):
    """Weight norms per parameter (a plugin's probe)."""
    norms = {name: float(value.norm()) for name, value in model.state_tensors().items()}
    return ProbeResult({"norms": norms}, text="W_in norm " + format(norms["W_in"], ".3f"))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A package `myprobes` installed into a folder on sys.path, with its entry point, as pip
    would install it (a dist-info folder holding entry_points.txt)."""
    site = tmp_path / "site"
    (site / "myprobes-0.1.dist-info").mkdir(parents=True)
    (site / "myprobes.py").write_text(PLUGIN)
    (site / "myprobes-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: myprobes\nVersion: 0.1\n")
    (site / "myprobes-0.1.dist-info" / "entry_points.txt").write_text(
        "[hooked_mlp.probes]\nweight_norms = myprobes:norm_probe\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_a_plugin_probe_is_found_and_run_by_the_cli(plugin, capsys, tmp_path):
    from analyses.probes import registered_probes

    probes = registered_probes()
    assert probes["weight_norms"].source == "myprobes"
    assert {"frequencies", "cosine_fits", "dead_neurons"} <= set(probes)  # built-ins alike
    assert main(["probe", "--list"]) == 0
    assert "weight_norms" in capsys.readouterr().out
    assert main(["probe", "weight_norms"]) == 0
    out = capsys.readouterr().out
    assert "weight_norms: Weight norms per parameter (a plugin's probe) (myprobes)" in out
    assert main(["probe", "weight_norms", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["norms"]) == {"W_in", "b_in", "W_out",
                                                                "b_out"}
    assert main(["probe", "frequencies", "--figures", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "frequencies-frequencies.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["probe", "nope"]) == 1 and "installed probes" in capsys.readouterr().err


def test_a_plugin_probe_gets_a_section_in_the_report(plugin, tmp_path):
    from analyses.pages.report import run_report

    path = tmp_path / "m.safetensors"
    model = __import__("hooked_mlp").train(MLPConfig(p=11, d_hidden=8, n_layers=2),
                                           __import__("hooked_mlp").TrainConfig(epochs=2),
                                           progress=False)[0]
    save(model, path)
    result = run_report(tmp_path / "rep", [path], progress=False, synthetic_seeds=[0],
                        n_orders_scale=0.1)
    html = result.html.read_text()
    assert 'id="probe-weight_norms"' in html and "from myprobes" in html
    probes = result.data["probes"]
    assert probes["weight_norms"]["per_model"][0]["data"]["norms"]["W_hidden"] > 0
    # a built-in probe that does not apply to this model says why, in its section
    assert "n_layers=2" in probes["cosine_fits"]["per_model"][0]["error"]
    assert "does not apply: fit_neurons reads each neuron" in html


def test_a_plugin_in_another_process_through_pythonpath(plugin):
    """The same plugin seen by a separate `hooked-mlp` process (as after `pip install`)."""
    env = {**__import__("os").environ, "PYTHONPATH": str(plugin)}
    r = subprocess.run([sys.executable, "-m", "hooked_mlp.cli", "probe", "weight_norms"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert textwrap.dedent(r.stdout).startswith("weight_norms: Weight norms")
