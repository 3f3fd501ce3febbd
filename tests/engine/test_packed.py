"""oneDNN's packed linear forwards (neurotext.engine.packed) against torch's own linear."""

import warnings

import pytest
import torch

from neurotext.engine import packed

pytestmark = pytest.mark.skipif(not packed.available(), reason="this PyTorch has no oneDNN packed linear")


def _linear(bias=True, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(24, 40, bias=bias)


@pytest.mark.parametrize("bias", [True, False])
def test_packed_forward_equals_the_linear_to_float32_rounding(bias):
    m = _linear(bias)
    fw = packed.PackedLinears().forwards([m])[m]
    x = torch.randn(3, 7, 24)  # a batch of contexts: (B, T, d)
    want = x @ m.weight.detach().T + (m.bias.detach() if bias else 0)  # computed without nn.Linear
    got = fw(x)
    assert got.shape == (3, 7, 40)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert fw(torch.randn(0, 24)).shape == (0, 40)


def test_one_callable_per_module_until_its_weight_changes():
    m = _linear()
    p = packed.PackedLinears()
    first = p.forwards([m])[m]
    assert p.forwards([m])[m] is first  # packed once, not per batch
    x = torch.randn(4, 24)
    with torch.no_grad():
        m.weight[0, 0] += 1.0  # an in-place edit: packed again, the new weight used
    again = p.forwards([m])[m]
    assert again is not first
    torch.testing.assert_close(again(x), torch.nn.functional.linear(x, m.weight, m.bias), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first(x), again(x))
    p.clear()
    assert p.forwards([m])[m] is not again


def test_only_plain_float32_linears_running_their_own_forward_are_packed():
    class Sub(torch.nn.Linear):
        pass

    plain, sub, half, own = _linear(), Sub(24, 40), _linear().to(torch.bfloat16), _linear()
    own.forward = lambda x: x  # as accelerate's hooks give a module its own forward
    got = packed.PackedLinears().forwards([plain, sub, half, own, torch.nn.ReLU()])
    assert list(got) == [plain]


def test_a_packed_forward_that_disagrees_is_not_used(monkeypatch):
    m = _linear()
    real = torch.ops.mkldnn._linear_pointwise

    class Ops:
        _reorder_linear_weight = torch.ops.mkldnn._reorder_linear_weight

        @staticmethod
        def _linear_pointwise(*a):
            return real(*a) + 1.0  # wrong values: the check before use catches them

    monkeypatch.setattr(packed.torch.ops, "mkldnn", Ops)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused by the check, not by an error
        assert packed.PackedLinears().forwards([m]) == {}


def test_no_onednn_packs_nothing(monkeypatch):
    monkeypatch.setattr(packed, "available", lambda: False)
    assert packed.PackedLinears().forwards([_linear()]) == {}
