"""--device values: one resolver for every command; CUDA asked for without CUDA is a named error."""

import pytest
import torch

from neurotext import NeurotextError, load_model
from neurotext.model.devices import describe, resolve_device

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
gpu = pytest.mark.gpu


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cpu:0", "auto:1", "", "cuda:-1"])
def test_malformed_values_name_the_valid_ones(bad):
    with pytest.raises(NeurotextError, match="device must be one of auto, cpu, cuda, cuda:N"):
        resolve_device(bad)


@needs_no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_refused(spec, tiny_models):
    with pytest.raises(NeurotextError, match=f"device '{spec}' was asked for, but .*use --device cpu or auto"):
        resolve_device(spec)
    with pytest.raises(NeurotextError, match="use --device cpu or auto"):
        load_model(str(tiny_models["bert"]), device=spec)


def test_describe_names_the_machine():
    d = describe("cpu", "bfloat16")
    assert d["type"] == "cpu" and d["index"] is None and d["dtype"] == "bfloat16"
    assert d["name"] is None or isinstance(d["name"], str)


@gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_model_matches_cpu(tiny_models):
    """The same neuron textualized on CUDA and on the CPU (float32, same starts) reaches the same activation."""
    from neurotext import FTConfig, Textualizer

    cfg = FTConfig(steps=20, restarts=2)
    on_cpu = Textualizer(load_model(str(tiny_models["bert"]), device="cpu"), cfg, cache_dir=False).run("L1.ffn.0-3")
    on_gpu = Textualizer(load_model(str(tiny_models["bert"]), device="cuda"), cfg, cache_dir=False).run("L1.ffn.0-3")
    assert resolve_device("cuda:0").type == "cuda"
    for a, b in zip(on_cpu, on_gpu):
        assert b.activation == pytest.approx(a.activation, rel=1e-3, abs=1e-4)
    with pytest.raises(NeurotextError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
