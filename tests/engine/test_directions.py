"""Any direction: e_u as a direction equals the neuron; direction files are validated in one line."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from neurotext import NeurotextError, load_model
from neurotext.cli import main
from neurotext.engine.directions import load_directions
from neurotext.engine.optimize import FTConfig
from neurotext.textualize import Textualizer


@pytest.mark.parametrize("arch, site, unit", [("llama", "out", 5), ("llama", "ffn", 9), ("gpt2", "ffn.pre", 3)])
def test_unit_vector_direction_equals_the_neuron(tiny_decoders, arch, site, unit):
    m = load_model(str(tiny_decoders[arch]))
    tx = Textualizer(m, FTConfig(steps=40, restarts=2, top=5), cache_dir=False)
    name = f"L1.{site.split('.')[0]}.{unit}"
    [neuron] = tx.run(name)
    e = np.zeros((1, m.sizes[site.split(".")[0]]), np.float32)
    e[0, unit] = 1
    [direction] = tx.run_directions(1, site, e, [name])  # same name: same starts (a gated unit: post = pre)
    np.testing.assert_allclose(direction.vector, neuron.vector, rtol=1e-3, atol=1e-4)
    assert direction.activation == pytest.approx(neuron.activation, rel=1e-4, abs=1e-5)
    assert [d["id"] for d in direction.nearest] == [d["id"] for d in neuron.nearest]
    assert [d["id"] for d in direction.promotes] == [d["id"] for d in neuron.promotes]
    # the direction's own vocabulary projection gives the neuron's best real tokens
    np.testing.assert_allclose([d["activation"] for d in direction.best_tokens],
                               [d["activation"] for d in neuron.best_tokens], rtol=1e-4, atol=1e-5)


def test_direction_projection_matches_an_independent_forward(tiny_decoders):
    m = load_model(str(tiny_decoders["llama"]))
    rng = np.random.default_rng(0)
    dirs = rng.standard_normal((3, 32)).astype(np.float32)
    tx = Textualizer(m, FTConfig(steps=10, restarts=1, top=3), cache_dir=False)
    results = tx.run_directions(2, "out", dirs, [f"d{i}" for i in range(3)])
    hidden = m.capture(torch.from_numpy(np.stack([r.vector for r in results])), [(2, "out")])[(2, "out")].all()
    np.testing.assert_allclose([r.activation for r in results], (hidden.numpy() * dirs).sum(1), rtol=1e-4, atol=1e-4)
    acts = m.capture(m.embeddings, [(2, "out")])[(2, "out")].all().numpy() @ dirs.T  # (V, 3) every token
    for i, r in enumerate(results):
        assert r.best_tokens[0]["id"] == int(acts[:, i].argmax())
        assert r.best_tokens[0]["activation"] == pytest.approx(float(acts[:, i].max()), rel=1e-4)


def test_ffn_direction_projects_post_activations(tiny_decoders):
    """At ffn a direction reads the post-activation values (what a dictionary on mlp.hook_post reads): FT maximizes
    their projection, which an independent GELU of the pre-activations reproduces; ffn.pre projects the
    pre-activations."""
    m = load_model(str(tiny_decoders["gpt2"]))
    rng = np.random.default_rng(1)
    dirs = rng.standard_normal((2, m.sizes["ffn"])).astype(np.float32)
    tx = Textualizer(m, FTConfig(steps=20, restarts=1, top=3), cache_dir=False)
    post = tx.run_directions(1, "ffn", dirs, ["a", "b"])
    pre_run = tx.run_directions(1, "ffn.pre", dirs, ["a", "b"])
    x = torch.from_numpy(np.stack([r.vector for r in post]))
    pre = m.capture(x, [(1, "ffn")])[(1, "ffn")].all()
    gelu = torch.nn.functional.gelu(pre, approximate="tanh").numpy()  # GPT-2's gelu_new
    np.testing.assert_allclose([r.pre_activation for r in post], (gelu * dirs).sum(1), rtol=1e-4, atol=1e-4)
    assert [r.activation for r in post] == [r.pre_activation for r in post]
    x2 = torch.from_numpy(np.stack([r.vector for r in pre_run]))
    pre2 = m.capture(x2, [(1, "ffn")])[(1, "ffn")].all().numpy()
    np.testing.assert_allclose([r.pre_activation for r in pre_run], (pre2 * dirs).sum(1), rtol=1e-4, atol=1e-4)


def test_direction_files(tmp_path):
    vec = np.arange(4, dtype=np.float32)
    np.save(tmp_path / "v.npy", vec)
    assert load_directions(tmp_path / "v.npy", 4).shape == (1, 4)
    save_file({"W_enc": np.ones((3, 4), np.float32)}, str(tmp_path / "m.safetensors"))
    assert load_directions(tmp_path / "m.safetensors", 4).shape == (3, 4)
    save_file({"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}, str(tmp_path / "two.safetensors"))
    (tmp_path / "bad.npy").write_bytes(b"not a numpy file")
    cases = [(tmp_path / "none.npy", "does not exist.*4 values"), (tmp_path / "v.npy", None),
             (tmp_path / "bad.npy", "unreadable"), (tmp_path / "two.safetensors", "exactly one"),
             (tmp_path / "v.txt", "unknown type")]
    (tmp_path / "v.txt").write_text("1 2 3")
    for path, message in cases:
        if message is None:
            with pytest.raises(NeurotextError, match=r"shape \(1, 4\).*one vector of 5 values or a matrix with 5 col"):
                load_directions(path, 5)
            continue
        with pytest.raises(NeurotextError, match=message):
            load_directions(path, 4)


def test_cli_direction(tiny_decoders, tmp_path, capsys):
    np.save(tmp_path / "probe.npy", np.ones((2, 32), np.float32))
    model = str(tiny_decoders["llama"])
    args = ["textualize", "--direction", str(tmp_path / "probe.npy"), "--model", model, "--steps", "5",
            "--restarts", "1", "--top", "3", "--json", "--no-vector"]
    assert main(args + ["--at", "L1.out"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["neuron"] for d in docs] == [f"L1.out@{tmp_path / 'probe.npy'}#{i}" for i in range(2)]
    assert all(len(d["promotes"]) == 3 and len(d["best_tokens"]) == 3 for d in docs)
    assert main(args + ["--at", "L1.ffn"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "shape (2, 32)" in err and "64 columns at L1.ffn" in err
    assert main(args + ["--at", "L9.out"]) == 2
    assert "layer 0-2 and site one of out, ffn, ffn.pre" in capsys.readouterr().err
    assert main(args[:-2] + ["--at", "L1.out", "--direction", str(tmp_path / "missing.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
