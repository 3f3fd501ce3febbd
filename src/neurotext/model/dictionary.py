"""Dictionaries: sparse autoencoders (SAELens format) whose features are units like neurons.

A dictionary on a site (``L3.ffn``: the FFN's post-activation values, what its output projection reads;
``L3.out``: the layer's output) encodes the site's activation ``a`` into features
``f = act(W_enc (a - b_dec) + b_enc)`` and decodes ``a ~ W_dec f + b_dec``. Feature ``i`` is named
``L3.ffn.f{i}`` and lives at the site ``ffn.f`` (:mod:`neurotext.model.names`).

The math is SAELens's own: the input goes through the SAE's ``process_sae_in`` (its input normalization and
decoder-bias subtraction), the pre-activation is ``sae_in @ W_enc + b_enc`` (times the decoder norms where the
SAE rescales by them), and the activation (TopK, JumpReLU or ReLU) is reproduced here once, in
:meth:`Dictionary.activate`, and checked against SAELens's ``encode`` in the tests. FT maximizes a feature's
pre-activation; its reported activation, and its value on real text, is the full encoding.

On disk a dictionary is a SAELens directory (``cfg.json``, ``sae_weights.safetensors``), loaded unchanged by
``SAE.load_from_disk``; one trained by neurotext has ``neurotext.json`` beside them (model, site, corpus,
settings, metrics). A folder of dictionaries holds one such directory per hook, as SAELens releases are laid
out. The hook names of TransformerLens map to neurotext's sites (:data:`HOOKS`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import NeurotextError

CFG = "cfg.json"  # SAELens's file names (sae_lens.constants)
WEIGHTS = "sae_weights.safetensors"
MANIFEST = "neurotext.json"  # neurotext's record beside a dictionary it trained

#: TransformerLens hook names that neurotext reads, and the site each is: (pattern, site, layer offset).
#: ``blocks.{L+1}.hook_resid_pre`` is the same point as ``blocks.{L}.hook_resid_post``.
HOOKS = (
    (re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$"), "ffn", 0),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_post$"), "out", 0),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_pre$"), "out", -1),
)
HOOK_HELP = "blocks.{L}.mlp.hook_post (L{L}.ffn), blocks.{L}.hook_resid_post and blocks.{L+1}.hook_resid_pre (L{L}.out)"

#: The SAE architectures whose encoding neurotext computes (SAELens's names). BatchTopK is saved as JumpReLU.
ARCHITECTURES = {
    "topk": "TopK: the k largest pre-activations, ReLU'd; every other feature is 0 (Gao et al. 2024)",
    "jumprelu": "JumpReLU: ReLU(pre) where pre > the feature's threshold, else 0 (Rajamanoharan et al. 2024; "
                "also what a BatchTopK dictionary becomes after training)",
    "standard": "ReLU(pre) (the L1-penalized SAE of Bricken et al. 2023)",
}


def hook_site(hook: str) -> tuple[int, str] | None:
    """(layer, site) of a TransformerLens hook name, or None where neurotext has no such site."""
    for pattern, site, offset in HOOKS:
        m = pattern.match(hook or "")
        if m:
            layer = int(m.group(1)) + offset
            return (layer, site) if layer >= 0 else None
    return None


def site_hook(layer: int, site: str) -> str:
    """The TransformerLens hook name of a neurotext site (what a dictionary trained here records)."""
    return f"blocks.{layer}.mlp.hook_post" if site == "ffn" else f"blocks.{layer}.hook_resid_post"


def is_dictionary_dir(path: Path) -> bool:
    return (path / CFG).is_file() and (path / WEIGHTS).is_file()


@dataclass(eq=False)
class Dictionary:
    """One SAE on one site of a model, ready to encode that site's activations.

    Attributes:
        sae: the SAELens SAE (inference class: ``TopKSAE``, ``JumpReLUSAE`` or ``StandardSAE``).
        layer, site: where it reads (``site`` is ``ffn`` or ``out``).
        path: the directory it was loaded from.
        manifest: ``neurotext.json`` when neurotext trained it, else None.
    """

    sae: object
    layer: int
    site: str
    path: Path | None = None
    manifest: dict | None = None
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self):
        for p in self.sae.parameters():
            p.requires_grad_(False)  # gradients flow to the FT vector only
        self.sae.eval()

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        """The site it reads, ``L3.ffn``."""
        return f"L{self.layer}.{self.site}"

    @property
    def width(self) -> int:
        return int(self.sae.cfg.d_sae)

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def architecture(self) -> str:
        return self.sae.cfg.architecture()

    @property
    def k(self) -> int | None:
        return int(self.sae.cfg.k) if self.architecture == "topk" else None

    @property
    def rescale(self) -> bool:
        """Pre-activations are multiplied by the decoder norms (SAELens's ``rescale_acts_by_decoder_norm``)."""
        return bool(getattr(self.sae.cfg, "rescale_acts_by_decoder_norm", False))

    def fingerprint(self) -> str:
        """A hash of the weights and the config: identifies the dictionary in stores and caches.

        The weights' float32 bytes are hashed; where they are the bytes of the dictionary's own weights file (a
        loaded dictionary's, which SAELens maps into memory and reads lazily), they are read from the file, so
        hashing never brings every weight into memory (an 8x dictionary of a 1,536-wide site: 151 MB, of which a
        pass needs only the encoder's half). Both ways give the same hash."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            cfg = {k: v for k, v in self.sae.cfg.to_dict().items() if k not in ("device", "metadata")}
            h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
            tensors = sorted(self.sae.state_dict().items())
            spans = _file_spans(self.path / WEIGHTS, dict(tensors)) if self.path is not None else None
            with (open(self.path / WEIGHTS, "rb") if spans else nullcontext()) as f:
                for name, t in tensors:
                    h.update(name.encode())
                    if spans:
                        _hash_span(h, f, *spans[name])
                    else:
                        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict:
        """What a store or a manifest records of the dictionary."""
        return {"site": self.name, "path": None if self.path is None else str(self.path),
                "fingerprint": self.fingerprint(), "width": self.width, "d_in": self.d_in,
                "architecture": self.architecture, "k": self.k,
                "hook": self.sae.cfg.metadata.hook_name or site_hook(self.layer, self.site)}

    def to(self, device) -> Dictionary:
        self.sae.to(device)
        return self

    # ------------------------------------------------------------------ the math
    def sae_in(self, a: torch.Tensor) -> torch.Tensor:
        """SAELens's own input processing of site activations a (..., d_in): normalization, minus b_dec."""
        return self.sae.process_sae_in(a)

    def pre(self, a: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-activations of site activations a (B, d_in): all features (B, F), or with ``idx`` (B, k) only
        those of each row (B, k), one dot product per requested feature."""
        sae = self.sae
        x = self.sae_in(a)  # (B, d_in)
        if idx is None:
            out = x @ sae.W_enc + sae.b_enc  # (B, F)
            return out * sae.W_dec.norm(dim=-1) if self.rescale else out
        w = sae.W_enc.T[idx]  # (B, k, d_in)
        out = torch.einsum("bkd,bd->bk", w, x) + sae.b_enc[idx]
        return out * sae.W_dec[idx].norm(dim=-1) if self.rescale else out

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The encoding from every feature's pre-activation (..., F): SAELens's activation function, reproduced
        here (TopK: the k largest, ReLU'd; JumpReLU: ReLU where pre > threshold; standard: ReLU)."""
        arch = self.architecture
        if arch == "topk":
            vals, idx = self._topk(pre)
            return torch.zeros_like(pre).scatter_(-1, idx, vals)
        if arch == "jumprelu":
            return pre.relu() * (pre > self.sae.threshold).to(pre.dtype)
        return pre.relu()

    def _topk(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TopK's values and features: the k largest pre-activations of each row, ReLU'd (SAELens's TopK)."""
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        return vals.relu(), idx

    def activate_sparse(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`activate` of pre-activations (N, F) as its non-zero values: (rows, features, values), rows
        ascending. TopK never builds the (N, F) encoding: its k values per row are the non-zero ones."""
        if self.architecture == "topk":
            vals, idx = self._topk(pre)
            keep = vals > 0
            rows = torch.arange(len(pre), device=pre.device).unsqueeze(1).expand_as(idx)
            return rows[keep], idx[keep], vals[keep]
        f = self.activate(pre)
        rows, cols = f.nonzero(as_tuple=True)
        return rows, cols, f[rows, cols]

    def encode(self, a: torch.Tensor) -> torch.Tensor:
        """Feature activations of site activations a (..., d_in): (..., F)."""
        shape = a.shape
        out = self.activate(self.pre(a.reshape(-1, shape[-1])))
        return out.reshape(*shape[:-1], out.shape[-1])

    def encode_sparse(self, a: torch.Tensor, chunk_bytes: int = 1 << 26):
        """The non-zero feature activations of site activations a (N, d_in): (rows, features, values), rows
        ascending; the same values as :meth:`encode`. Rows are encoded ``chunk_bytes`` of pre-activations at a
        time (64 MiB: 1,365 rows of a 12,288-feature dictionary), so memory does not grow with N."""
        step = max(1, chunk_bytes // (4 * self.width))
        rows, cols, vals = [], [], []
        for i in range(0, a.shape[0], step):
            r, c, v = self.activate_sparse(self.pre(a[i:i + step]))
            rows.append(r + i)
            cols.append(c)
            vals.append(v)
        if not rows:
            empty = torch.zeros(0, dtype=torch.int64, device=a.device)
            return empty, empty, torch.zeros(0, device=a.device)
        return torch.cat(rows), torch.cat(cols), torch.cat(vals)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """The reconstruction of feature activations f (..., F) in the site's space: SAELens's ``decode``."""
        return self.sae.decode(f)

    def decoder_directions(self) -> torch.Tensor:
        """What each feature writes into the site, (F, d_in): the decoder rows (unit norm where the SAE
        rescales by the decoder norms, as its decode then does)."""
        w = self.sae.W_dec.detach().float()
        return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12) if self.rescale else w

    def encoder_directions(self) -> torch.Tensor:
        """The encoder rows, (F, d_in): what each feature reads from the site (before normalization)."""
        return self.sae.W_enc.detach().float().T


def _file_spans(path: Path, tensors: dict) -> dict | None:
    """{name: (start, stop)} byte spans of ``tensors`` in a safetensors file, when each is that file's float32
    data as it is: the same name, dtype and shape, contiguous, and the tensor's memory is the file's own bytes
    mapped into memory, unchanged (:func:`_mapped_unchanged`); None otherwise (no such file, another
    layout, weights copied or changed after loading, no /proc), and the weights are hashed from memory."""
    try:
        maps = _file_maps(path)
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
            base = 8 + n
            spans = {}
            for name, t in tensors.items():
                e = header.get(name)
                if (not isinstance(e, dict) or e.get("dtype") != "F32" or t.dtype != torch.float32
                        or t.device.type != "cpu" or not t.is_contiguous()
                        or list(e.get("shape", ())) != list(t.shape)):
                    return None
                start, stop = (base + int(o) for o in e["data_offsets"])
                if stop - start != 4 * t.numel() or not _mapped_unchanged(maps, t, start):
                    return None
                spans[name] = (start, stop)
            return spans
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _file_maps(path: Path) -> list:
    """This process's mappings of the file at ``path``: [(start, end, file offset)] from /proc/self/maps."""
    real, maps = str(Path(path).resolve()), []
    with open("/proc/self/maps") as f:
        for line in f:
            head = line.split(maxsplit=5)
            if len(head) == 6 and head[5].strip() == real:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                maps.append((lo, hi, int(head[2], 16)))
    return maps


def _mapped_unchanged(maps: list, t: torch.Tensor, offset: int) -> bool:
    """Whether tensor ``t``'s memory is the mapped file's bytes from ``offset`` on, none of its pages written: each
    page is in memory as the file's page or not in memory at all (/proc/self/pagemap; a written page of a private
    mapping is a copy of its own, no longer the file's)."""
    addr, n = t.data_ptr(), 4 * t.numel()
    if not any(lo <= addr and addr + n <= hi and off + (addr - lo) == offset for lo, hi, off in maps):
        return False
    if n == 0:
        return True
    size = os.sysconf("SC_PAGE_SIZE")
    first, last = addr // size, (addr + n - 1) // size
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(8 * first)
        entries = np.frombuffer(f.read(8 * (last - first + 1)), dtype="<u8")
    present, swapped, file_page = (entries >> 63) & 1, (entries >> 62) & 1, (entries >> 61) & 1
    return bool((((present == 0) & (swapped == 0)) | ((present == 1) & (file_page == 1))).all())


def _hash_span(h, f, start: int, stop: int, step: int = 1 << 23) -> None:
    """Feed bytes [start, stop) of the open file ``f`` to the hash ``h``, 8 MiB at a time."""
    f.seek(start)
    while start < stop:
        chunk = f.read(min(step, stop - start))
        if not chunk:
            raise OSError("the weights file ended early")
        h.update(chunk)
        start += len(chunk)


# --------------------------------------------------------------------------- loading
def _read_cfg(path: Path) -> dict:
    try:
        cfg = json.loads((path / CFG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise NeurotextError(f"dictionary {path}: {CFG} is unreadable ({e})") from e
    if not isinstance(cfg, dict):
        raise NeurotextError(f"dictionary {path}: {CFG} is not a SAELens config")
    return cfg


def _architecture(cfg: dict, path: Path) -> str:
    arch = cfg.get("architecture", "standard")
    if arch not in ARCHITECTURES:
        raise NeurotextError(f"dictionary {path}: architecture {arch!r} is not one neurotext can compute; "
                             f"supported are {', '.join(ARCHITECTURES)}")
    if cfg.get("reshape_activations", "none") != "none":
        raise NeurotextError(f"dictionary {path}: reshaped activations ({cfg['reshape_activations']}) are not a "
                             f"site neurotext reads; supported hooks are {HOOK_HELP}")
    return arch


def _site(cfg: dict, manifest: dict | None, path: Path) -> tuple[int, str]:
    hook = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")
    if hook is None and manifest is not None:
        hook = manifest.get("hook")
    if hook is None:
        raise NeurotextError(f"dictionary {path}: its config names no hook (metadata.hook_name); supported hooks "
                             f"are {HOOK_HELP}")
    found = hook_site(hook)
    if found is None:
        raise NeurotextError(f"dictionary {path}: hook {hook!r} is not a site neurotext reads; supported hooks are "
                             f"{HOOK_HELP}")
    return found


def _same_model(a: str, b: str) -> bool:
    """Loose match of a SAELens model_name against a model's name or source (``gpt2-small`` and ``gpt2``)."""
    norm = [re.sub(r"[^a-z0-9]", "", s.lower().rsplit("/", 1)[-1]) for s in (a, b)]
    return bool(norm[0] and norm[1]) and (norm[0] in norm[1] or norm[1] in norm[0])


def load_dictionary(path, model=None, device=None) -> Dictionary:
    """Load one SAELens dictionary directory, checked against ``model`` when given.

    Raises:
        NeurotextError (one line): not a dictionary, a corrupt weights file, an architecture or hook neurotext
        cannot compute, a dictionary of another model (neurotext's manifest records the model's weight
        fingerprint; otherwise SAELens's ``model_name`` must match the model's name), a layer or width that does
        not fit the model.
    """
    path = Path(path)
    if not path.is_dir() or not is_dictionary_dir(path):
        raise NeurotextError(f"{path} is not a SAELens dictionary directory (no {CFG} and {WEIGHTS} in it)")
    cfg = _read_cfg(path)
    _architecture(cfg, path)
    manifest = None
    if (path / MANIFEST).is_file():
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise NeurotextError(f"dictionary {path}: {MANIFEST} is corrupt ({e})") from e
    layer, site = _site(cfg, manifest, path)
    if model is not None:
        _check_model(path, cfg, manifest, model, layer, site)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sae_lens import SAE

            sae = SAE.load_from_disk(str(path), device="cpu")
    except ImportError as e:
        raise NeurotextError("dictionaries need SAELens: pip install 'neurotext[dictionary]'") from e
    except Exception as e:  # noqa: BLE001 - a corrupt safetensors file or config is one line
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NeurotextError(f"dictionary {path} is unreadable: {why[:300]}") from e
    d = Dictionary(sae=sae, layer=layer, site=site, path=path.resolve(), manifest=manifest)
    if model is not None:
        d.to(device if device is not None else model.device)
    return d


def _check_model(path: Path, cfg: dict, manifest: dict | None, model, layer: int, site: str) -> None:
    if not 0 <= layer < model.n_layers:
        raise NeurotextError(f"dictionary {path} reads L{layer}.{site}, but {model.name} has layers "
                             f"0-{model.n_layers - 1}")
    d_in = cfg.get("d_in")
    if d_in != model.sizes[site]:
        raise NeurotextError(f"dictionary {path} reads {d_in} values at L{layer}.{site}, but {model.name}'s {site} "
                             f"site has {model.sizes[site]}: a dictionary of another model or site")
    if manifest is not None and manifest.get("model", {}).get("fingerprint"):
        if manifest["model"]["fingerprint"] != model.fingerprint():
            raise NeurotextError(f"dictionary {path} was trained on {manifest['model'].get('name')!r} (other weights "
                                 f"than {model.name}'s): a dictionary of another model")
        return
    name = (cfg.get("metadata") or {}).get("model_name") or cfg.get("model_name")
    if name and not (_same_model(name, model.name) or _same_model(name, model.source)):
        raise NeurotextError(f"dictionary {path} is for model {name!r}, not {model.name}: a dictionary of another "
                             "model")


def dictionary_dirs(path) -> list[Path]:
    """The dictionary directories of a ``--dictionary`` value: the directory itself, or its subfolders (one per
    hook, as SAELens releases are laid out)."""
    path = Path(path)
    if not path.exists():
        raise NeurotextError(f"dictionary {path} does not exist")
    if is_dictionary_dir(path):
        return [path]
    subs = sorted(p for p in path.iterdir() if p.is_dir() and is_dictionary_dir(p)) if path.is_dir() else []
    if not subs:
        raise NeurotextError(f"{path} is neither a SAELens dictionary ({CFG} and {WEIGHTS}) nor a folder of them")
    return subs


def load_dictionaries(paths, model, device=None) -> list[Dictionary]:
    """Every dictionary of one or more ``--dictionary`` values, checked against ``model``; two on one site is an
    error."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: dict[tuple[int, str], Dictionary] = {}
    for p in paths:
        for d in dictionary_dirs(p):
            dic = load_dictionary(d, model, device)
            key = (dic.layer, dic.site)
            if key in out:
                raise NeurotextError(f"two dictionaries on {dic.name}: {out[key].path} and {dic.path}; give one per "
                                     "site")
            out[key] = dic
    return [out[k] for k in sorted(out)]


# --------------------------------------------------------------------------- reading a feature's weights
def neuron_support(dictionary: Dictionary, features, top: int = 10, share: float = 0.9) -> list[dict]:
    """How many of the site's neurons carry each feature.

    For the encoder row (what the feature reads) and the decoder row (what it writes): the fewest
    largest-magnitude weights whose squares make ``share`` of the row's squared norm (``k90``), the participation
    ratio ``(sum w^2)^2 / sum w^4`` (the number of equally weighted neurons with the same spread: 1 for one
    neuron, d for a uniform row) and the ``top`` neurons by magnitude with their signed weights.

    Returns one dict per feature: ``{"encoder": {...}, "decoder": {...}, "d": site width}``.
    """
    idx = torch.as_tensor(list(features), dtype=torch.long)
    rows = {"encoder": dictionary.encoder_directions()[idx], "decoder": dictionary.decoder_directions()[idx]}
    out = [{"d": dictionary.d_in} for _ in range(len(idx))]
    for side, w in rows.items():  # (n, d)
        w = w.double().cpu()
        sq = w * w
        sorted_sq, order = sq.sort(dim=1, descending=True)
        total = sorted_sq.sum(1, keepdim=True).clamp_min(1e-300)
        k = (sorted_sq.cumsum(1) / total < share).sum(1) + 1  # fewest weights reaching the share
        pr = total[:, 0] ** 2 / (sq * sq).sum(1).clamp_min(1e-300)
        for i in range(len(idx)):
            tops = order[i, :top].tolist()
            out[i][side] = {"k90": int(k[i]), "participation_ratio": float(pr[i]),
                            "top_units": tops, "top_weights": [float(w[i, j]) for j in tops]}
    return out
