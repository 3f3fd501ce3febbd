"""A TopK training SAE whose decoder reads only the active features.

SAELens's ``TopKTrainingSAE`` decodes with a dense product: the (batch, F) activations, all but k per row zero,
times the (F, d_in) decoder, forward and twice backward, and the same again for the auxiliary loss on dead
features (k_aux = d_in / 2 per row). Its sparse option builds COO tensors that CPU autograd cannot take
(``aten::view`` on SparseCPU). :class:`SparseDecodeTopK` is the same SAE (same parameters, initialization, loss,
saved format) whose decoder sums the k chosen rows of ``W_dec`` per position with ``torch.nn.functional
.embedding_bag``, weighted by the activations (and, with ``rescale_acts_by_decoder_norm``, divided by the rows'
norms, as SAELens does). The auxiliary loss multiplies only the dead features' columns by their decoder rows,
and the input bias's gradient through the encoder is a vector product: of the nine dense (batch, d_in, F)
products of SAELens's step, two remain (the encoder forward and its weight gradient), plus the auxiliary
loss's three over the dead columns. The losses and gradients equal SAELens's own up to float rounding
(``tests/dictionaries/test_sparse.py`` compares them on the same weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sparse_decode_topk():
    """The class (SAELens is imported when training starts, so the subclass is made here)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _make()
    return _CLASS


_CLASS = None


def _make():
    from sae_lens import TopKTrainingSAE

    class SparseDecodeTopK(TopKTrainingSAE):
        """SAELens's TopK training SAE with the decoder applied to the active rows only (see the module)."""

        _active = None  # (dense activations, indices, values) of the last encode, for decode to recognize
        _norm = None  # the decoder rows' norms of the current step

        def _norms(self) -> torch.Tensor | None:
            """The decoder rows' norms, once per step (one backward pass over W_dec for every use)."""
            if not self.cfg.rescale_acts_by_decoder_norm:
                return None
            if self._norm is None:
                self._norm = self.W_dec.norm(dim=-1)
            return self._norm

        def encode_with_hidden_pre(self, x):
            self._norm = None
            x = self.run_time_activation_norm_fn_in(self.hook_sae_input(self.reshape_fn_in(x.to(self.dtype))))
            bias = self.b_dec * self.cfg.apply_b_dec_to_input  # process_sae_in's x - bias, with the product split:
            pre = x @ self.W_enc - bias @ self.W_enc  # the bias's gradient is then a vector times W_enc, not a
            hidden_pre = self.hook_sae_acts_pre(pre + self.b_enc)  # (batch, d_in) product
            if self.cfg.rescale_acts_by_decoder_norm:
                hidden_pre = hidden_pre * self._norms()
            vals, idx = torch.topk(hidden_pre, k=self.cfg.k, dim=-1, sorted=False)  # SAELens's TopK
            vals = vals.relu()
            acts = torch.zeros_like(hidden_pre).scatter(-1, idx, vals)
            acts = self.hook_sae_acts_post(acts)
            self._active = (acts, idx, vals) if hidden_pre.ndim == 2 else None
            return acts, hidden_pre

        def decode(self, feature_acts):
            active = self._active
            if active is None or feature_acts is not active[0]:
                return super().decode(feature_acts)
            self._active = None
            idx, vals = active[1], active[2]
            norm = self._norms()
            if norm is not None:
                vals = vals / norm[idx]
            rows = F.embedding_bag(idx, self.W_dec, per_sample_weights=vals, mode="sum")  # sum_j vals_j W_dec[idx_j]
            out = self.hook_sae_recons(rows + self.b_dec)
            out = self.run_time_activation_norm_fn_out(out)
            return self.reshape_fn_out(out, self.d_head)

        def calculate_topk_aux_loss(self, sae_in, sae_out, hidden_pre, dead_neuron_mask):
            # SAELens's auxiliary loss (Gao et al. 2024, appendix B.1) with the sparse decode of the top k_aux dead
            # features; its checks and scale unchanged
            num_dead = 0 if dead_neuron_mask is None else int(dead_neuron_mask.sum())
            if hidden_pre.ndim != 2 or num_dead == 0 or self.cfg.normalize_activations in ("constant_norm_rescale",
                                                                                         "layer_norm"):
                return super().calculate_topk_aux_loss(sae_in, sae_out, hidden_pre, dead_neuron_mask)  # or its error
            residual = (sae_in - sae_out).detach()
            k_aux = sae_in.shape[-1] // 2
            scale = min(num_dead / k_aux, 1.0)
            k_aux = min(k_aux, num_dead)
            dead = dead_neuron_mask.nonzero().squeeze(1)  # the dead features' own columns, decoded densely
            pre = hidden_pre[:, dead]
            top = pre.topk(k_aux, sorted=False)
            acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
            norm = self._norms()
            if norm is not None:
                acts = acts / norm[dead]
            recons = self.reshape_fn_out(acts @ self.W_dec[dead], self.d_head)
            loss = (recons - residual).pow(2).sum(dim=-1).mean()
            return self.cfg.aux_loss_coefficient * scale * loss

    return SparseDecodeTopK
