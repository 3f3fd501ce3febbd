"""The TopK training SAE with the sparse decoder against SAELens's own TopKTrainingSAE on the same weights."""

from __future__ import annotations

import warnings

import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

from neurotext.dictionaries.sparse import sparse_decode_topk
from neurotext.dictionaries.train import fuse_adam

D_IN, WIDTH, K, BATCH = 24, 96, 4, 40


def _pair(rescale: bool, seed: int = 0):
    cfg = TopKTrainingSAEConfig(d_in=D_IN, d_sae=WIDTH, k=K, dtype="float32", device="cpu",
                                normalize_activations="expected_average_only_in",
                                rescale_acts_by_decoder_norm=rescale)
    torch.manual_seed(seed)
    ours = sparse_decode_topk()(cfg)
    theirs = TopKTrainingSAE(cfg)
    with torch.no_grad():  # decoder rows of unequal norms and non-zero biases, so every term of the math matters
        ours.W_dec.mul_(torch.rand(WIDTH, 1) + 0.5)
        ours.b_dec.normal_()
        ours.b_enc.normal_(std=0.1)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _step(sae, x, dead):
    for p in sae.parameters():
        p.grad = None
    out = sae.training_forward_pass(TrainStepInput(sae_in=x, dead_neuron_mask=dead, coefficients={},
                                                   n_training_steps=0, is_logging_step=False))
    out.loss.backward()
    return out


@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize("dead_count", [None, 0, 5, 60])  # none tracked, none dead, fewer and more than k_aux = 12
def test_losses_outputs_and_gradients_equal_saelens(rescale, dead_count):
    ours, theirs = _pair(rescale)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, D_IN, generator=g) * 3
    dead = None
    if dead_count is not None:
        dead = torch.zeros(WIDTH, dtype=torch.bool)
        dead[torch.randperm(WIDTH, generator=g)[:dead_count]] = True
    a, b = _step(ours, x, dead), _step(theirs, x, dead)
    assert a.losses.keys() == b.losses.keys()
    for name in b.losses:
        torch.testing.assert_close(a.losses[name], b.losses[name], rtol=1e-5, atol=1e-5)
    if dead_count:
        assert float(b.losses["auxiliary_reconstruction_loss"].detach()) > 0  # the dead features' loss is compared
    torch.testing.assert_close(a.feature_acts, b.feature_acts, rtol=1e-5, atol=1e-6)
    assert int((a.feature_acts != 0).sum(-1).max()) <= K
    torch.testing.assert_close(a.sae_out, b.sae_out, rtol=1e-5, atol=1e-5)
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert q.grad is not None and float(q.grad.abs().max()) > 0, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_decode_of_other_activations_is_saelens_dense_decode():
    ours, theirs = _pair(True)
    acts = torch.relu(torch.randn(3, WIDTH))  # not from the last encode: the dense path
    with torch.no_grad():
        torch.testing.assert_close(ours.decode(acts), theirs.decode(acts))
        x = torch.randn(2, 5, D_IN)  # a batch with more dimensions goes through SAELens's own code
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_the_fused_adam_steps_like_saelens_adam():
    ours, theirs = _pair(True)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2, betas=(0.9, 0.999)) for m in (ours, theirs)]
    assert fuse_adam(opts[0], torch.device("cpu"))
    assert all(g["fused"] for g in opts[0].param_groups) and not opts[1].param_groups[0].get("fused")
    g = torch.Generator().manual_seed(2)
    dead = torch.zeros(WIDTH, dtype=torch.bool)
    dead[:30] = True
    for _ in range(5):
        x = torch.randn(BATCH, D_IN, generator=g)
        for m, opt in zip((ours, theirs), opts):
            _step(m, x, dead)
            opt.step()
    moved = float((theirs.W_enc - _pair(True)[1].W_enc).detach().abs().max())
    assert moved > 1e-3  # five steps changed the weights, the same way in both
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
