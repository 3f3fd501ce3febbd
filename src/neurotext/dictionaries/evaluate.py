"""How good a dictionary is, on held-out text: reconstruction, sparsity, and what the model's output loses.

Every figure is computed over the **test part** of a corpus (the documents ``neurotext examples`` holds out: the
same seeded hash split as training, which never reads them), at the text positions of each context (the template's
``[CLS]``/``[SEP]`` or BOS are not read and not replaced):

- ``fvu``: fraction of variance unexplained, sum ||a - a_hat||^2 / sum ||a - mean(a)||^2 over the positions, a the
  site's activation, a_hat the dictionary's reconstruction (SAELens's encode and decode, via
  :class:`neurotext.model.dictionary.Dictionary`), mean(a) over the same positions;
- ``l0``: features active (> 0) per position, on average;
- ``dead_share``: share of features never active on the held-out text; ``dense_share``: share active at more than
  :data:`DENSE_SHARE` of its positions;
- ``downstream``: the model run to its end with the site's activations replaced by the reconstruction, beside
  replaced by zeros (zero-ablation), both at the text positions only. Decoders: next-token cross-entropy of the
  predictions made at text positions (of the next text token), clean, spliced and zero-ablated, and the loss
  recovered (CE_zero - CE_recon) / (CE_zero - CE_clean) (Bricken et al. 2023). Encoders: the cosine between the
  final hidden states mean-pooled over the attention mask (a sentence-transformers embedding, what all-MiniLM-L6-v2
  is for) and the clean ones, mean over contexts, for the reconstruction and for zero-ablation.

The splices are scoped forward hooks (removed in ``finally``) at the module points the corpus pass reads: the
input of the FFN's output projection for ``ffn``, the layer's output for ``out``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..corpus import Corpus, open_corpus
from ..engine.contexts import PARTS, SplitConfig, Tokenize, batches, chunks
from ..engine.corpus_pass import CorpusPass, PassSettings, Probe
from ..errors import NeurotextError
from ..model.adapters import BUNDLED, _get, _hooks, resolve_model_path
from ..model.dictionary import MANIFEST, Dictionary, load_dictionary

DENSE_SHARE = 0.1  # a feature active at more than this share of the held-out positions is dense
DEFAULT_TOKENS = 32768  # held-out tokens read by default (a uniform sample of the test part's contexts)
CE_CHUNK = 1024  # positions per block of logits (decoders: a block is CE_CHUNK x vocabulary floats)
PROGRESS_EVERY = 30.0  # seconds between progress lines where stderr is not a terminal


class Progress:
    """A tqdm bar on a terminal (stderr); elsewhere, unless disabled (``enabled=False``), a plain line every
    PROGRESS_EVERY seconds, as the corpus pass logs long runs."""

    def __init__(self, what: str, total: int | None, enabled: bool | None):
        self.what, self.total, self.enabled = what, total, enabled
        self.done, self.t0 = 0, time.perf_counter()
        self._last = self.t0
        self.bar = None
        if enabled is not False and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=what, unit="tok", unit_scale=True, file=sys.stderr)

    def update(self, n: int, **postfix) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            return
        now = time.perf_counter()
        if self.enabled is not False and now - self._last >= PROGRESS_EVERY:
            self._last = now
            of = f"/{self.total} ({100 * self.done / self.total:.0f}%)" if self.total else ""
            extra = "".join(f", {k} {v:.4g}" for k, v in postfix.items())
            print(f"{self.what}: {self.done}{of} tokens, {self.done / max(now - self.t0, 1e-9):.0f} tokens/s{extra}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def read_manifest(path) -> dict | None:
    """A dictionary directory's ``neurotext.json`` (None where it has none: a dictionary trained elsewhere)."""
    f = Path(path) / MANIFEST
    if not f.is_file():
        return None
    try:
        manifest = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise NeurotextError(f"dictionary {path}: {MANIFEST} is corrupt ({e})") from e
    if not isinstance(manifest, dict):
        raise NeurotextError(f"dictionary {path}: {MANIFEST} is not a neurotext manifest")
    return manifest


def recorded_model(manifest: dict) -> str | None:
    """The ``--model`` value that loads the model a dictionary's manifest records: its name where that resolves
    to the recorded source (the bundled models, hub names), else the recorded source (a local directory)."""
    m = (manifest or {}).get("model") or {}
    name, source = m.get("name"), m.get("source")
    if name is None:
        return source
    try:
        if resolve_model_path(name)[1] == source:
            return None if name == BUNDLED else name
    except NeurotextError:
        pass
    return source or name


def recorded_corpus(manifest: dict) -> Corpus:
    """The corpus a dictionary's manifest says it was trained on (its held-out part is what evaluation reads)."""
    c = (manifest or {}).get("corpus") or {}
    return open_corpus(c.get("source"), text_column=c.get("text_column"), max_docs=c.get("max_docs"))


# --------------------------------------------------------------------------- the held-out contexts
def held_out_contexts(model, corpus: Corpus, max_length: int, split: SplitConfig, tokens: int | None):
    """The test part's contexts, or where it holds more than ``tokens`` text tokens a uniform sample of them: the
    contexts of smallest sampling key (bottom-k sampling, :mod:`neurotext.engine.contexts`) whose tokens add up to
    at most ``tokens``. Returns (an iterator factory over the chosen contexts in corpus order, their text tokens,
    the whole part's text tokens)."""
    tok = Tokenize(model.tokenizer, max_length, 0, split, vocab_size=int(model.embeddings.shape[0]))
    test = PARTS.index("test")
    keys, sizes = [], []
    for c in tok.contexts(corpus.documents()):
        if c.part == test:
            keys.append(c.key)
            sizes.append(len(c.ids))
    total = part = sum(sizes)
    below = None  # every context
    if tokens is not None and total > tokens:
        order = sorted(range(len(keys)), key=keys.__getitem__)
        kept = 0
        for i in order:
            if kept + sizes[i] > tokens:
                break
            kept += sizes[i]
            below = keys[i]
        total = kept
        if below is None:
            raise NeurotextError(f"--tokens {tokens} is smaller than the first held-out context ({sizes[order[0]]} "
                                 "tokens): give more")

    def contexts():
        for c in tok.contexts(corpus.documents()):
            if c.part == test and (below is None or c.key <= below):
                yield c

    return contexts, total, part


# --------------------------------------------------------------------------- the splice
def site_hooks(model, layer: int, site: str, text: torch.Tensor, found: list | None, replace: torch.Tensor | None):
    """Hook installer (for :func:`neurotext.model.adapters._hooks`) at the point the corpus pass reads: appends the
    site's activations at the text positions (N, d) to ``found``, and where ``replace`` (N, d) is given puts it
    there in their place (the template's positions keep their values)."""

    def edit(h):  # (B, T, d) -> (B, T, d) or None (unchanged)
        if found is not None:
            found.append(h[text].float())
        if replace is None:
            return None
        h = h.clone()
        h[text] = replace.to(h.dtype)
        return h

    if site == "ffn":
        module = _get(model.layers[layer], model.arch.ffn_out)

        def pre(mod, args):  # the FFN's output projection reads the post-activation values (B, T, d_ff)
            new = edit(args[0])
            return None if new is None else (new, *args[1:])

        return lambda: [module.register_forward_pre_hook(pre)]
    module = model.layers[layer]

    def post(mod, args, output):  # the layer's output (B, T, d), alone or first of a tuple
        tupled = isinstance(output, (tuple, list))
        new = edit(output[0] if tupled else output)
        if new is None:
            return None
        return (new, *output[1:]) if tupled else new

    return lambda: [module.register_forward_hook(post)]


def final_hidden(model, ids: torch.Tensor, attn: torch.Tensor, install) -> torch.Tensor:
    """The model's last hidden state (B, T, d) (decoders: after the final norm) with the hooks of ``install``."""
    extra = {"use_cache": False} if model.decoder else {}
    with _hooks(install):
        return model.base(input_ids=ids, attention_mask=attn, **extra).last_hidden_state


def next_token_ce(model, hidden: torch.Tensor, ids: torch.Tensor, text: torch.Tensor) -> tuple[float, int]:
    """(sum, count) of the cross-entropy of the next-token predictions made at text positions of the next text
    token, from the last hidden states (B, T, d) through the model's unembedding, CE_CHUNK positions at a time."""
    pred = text[:, :-1] & text[:, 1:]  # (B, T-1): position i predicts token i + 1
    h, y = hidden[:, :-1][pred], ids[:, 1:][pred]  # (n, d), (n,)
    head = model.hf.get_output_embeddings()
    total = 0.0
    for i in range(0, len(y), CE_CHUNK):
        logits = head(h[i:i + CE_CHUNK]).float()  # (c, V)
        total += float(F.cross_entropy(logits, y[i:i + CE_CHUNK], reduction="sum"))
    return total, len(y)


def mean_pool(hidden: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states (B, T, d) over the attention mask: (B, d), sentence-transformers' pooling."""
    m = attn.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1)


# --------------------------------------------------------------------------- the evaluation
@torch.no_grad()
def evaluate_dictionary(model, dictionary, corpus=None, tokens: int | None = DEFAULT_TOKENS,
                        max_length: int | None = None, split: SplitConfig | None = None, batch_size: int = 64,
                        batch_tokens: int = 8192, downstream: bool = True, progress: bool | None = None) -> dict:
    """A dictionary's quality on the held-out (test) part of a corpus (see the module docstring for each figure).

    Args:
        model: the loaded :class:`neurotext.model.Model` the dictionary belongs to.
        dictionary: a :class:`neurotext.model.dictionary.Dictionary`, or its directory (checked against the model).
        corpus: an opened :class:`neurotext.corpus.Corpus` or a source; None: the corpus recorded in the
            dictionary's ``neurotext.json`` (the one it was trained on), else the default corpus.
        tokens: held-out text tokens to read at most: a uniform sample of the test part's contexts (bottom-k by
            sampling key); None: the whole test part.
        max_length, split: how documents become contexts and which are held out; None: the dictionary's training
            settings (``max_length`` 64, test share 0.2, split seed 0 without a manifest).
        downstream: also run the model to its end with the site replaced (three forward passes per batch instead
            of one).
        progress: None: a bar on a terminal, a line every 30 s elsewhere; False: nothing.

    Returns:
        ``{"site", "features", "tokens", "contexts", "fvu", "mse", "variance", "l0", "dead_share", "dense_share",
        "dense_threshold", "downstream", "corpus", "seconds"}``; ``downstream`` is ``{"kind": "ce_recovered",
        "ce_clean", "ce_recon", "ce_zero", "ce_recovered", "predictions"}`` for a decoder and ``{"kind":
        "embedding_cosine", "cosine_recon", "cosine_zero", "contexts"}`` for an encoder.
    """
    if not isinstance(dictionary, Dictionary):
        dictionary = load_dictionary(dictionary, model)
    dictionary.to(model.device)
    manifest = dictionary.manifest or {}
    settings = manifest.get("settings") or {}
    max_length = max_length or int(settings.get("max_length", 64))
    split = split or SplitConfig(settings.get("test_share", 0.2), settings.get("split_seed", 0))
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise NeurotextError(f"tokens must be a whole number >= 1, got {tokens!r}")
    if not isinstance(corpus, Corpus):
        corpus = open_corpus(corpus) if corpus is not None or not manifest.get("corpus") else recorded_corpus(manifest)
    layer, site = dictionary.layer, dictionary.site
    t0 = time.perf_counter()
    contexts, total, part_total = held_out_contexts(model, corpus, max_length, split, tokens)
    if total == 0:
        raise NeurotextError(f"{corpus.source}: the test part holds no text token for {model.name} (test share "
                             f"{split.test_share}, split seed {split.seed}): nothing to evaluate on")
    engine = CorpusPass(model, [Probe(layer, site, units=torch.arange(1))], PassSettings(max_length=max_length))
    dev = model.device
    d, width = dictionary.d_in, dictionary.width
    n = n_ctx = 0
    sum_a = torch.zeros(d, dtype=torch.float64, device=dev)
    sum_sq = err = active = 0.0
    fires = torch.zeros(width, dtype=torch.int64, device=dev)
    ce = {"clean": 0.0, "recon": 0.0, "zero": 0.0}
    cos = {"recon": 0.0, "zero": 0.0}
    predictions = 0
    bar = Progress(f"eval {dictionary.name}", total, progress)
    try:
        for _, chunk in chunks(contexts(), 1024):
            for group in batches(chunk, batch_size, batch_tokens):
                b = engine.prepare(group)
                ids, attn, text = b.ids.to(dev), b.attn.to(dev), b.text.to(dev)
                found: list = []
                clean = final_hidden(model, ids, attn, site_hooks(model, layer, site, text, found, None))
                a = found[0]  # (N, d)
                f = dictionary.encode(a)  # (N, F)
                a_hat = dictionary.decode(f).float()  # (N, d)
                n += len(a)
                n_ctx += len(group)
                sum_a += a.double().sum(0)
                sum_sq += float(a.double().pow(2).sum())
                err += float((a - a_hat).double().pow(2).sum())
                on = f > 0
                active += float(on.sum())
                fires += on.sum(0)
                if downstream:
                    runs = {"clean": clean}
                    for name, value in (("recon", a_hat), ("zero", torch.zeros_like(a))):
                        runs[name] = final_hidden(model, ids, attn, site_hooks(model, layer, site, text, None, value))
                    if model.decoder:
                        for name, hidden in runs.items():
                            s, c = next_token_ce(model, hidden, ids, text)
                            ce[name] += s
                        predictions += c
                    else:
                        pooled = mean_pool(clean.float(), attn)
                        for name in cos:
                            cos[name] += float(F.cosine_similarity(mean_pool(runs[name].float(), attn), pooled,
                                                                   dim=-1).double().sum())
                bar.update(len(a))
    finally:
        bar.close()
    mean = sum_a / n
    variance = sum_sq - n * float(mean.pow(2).sum())  # sum ||a - mean||^2 over the positions
    out = {
        "site": dictionary.name, "features": width, "part": "test", "tokens": n, "contexts": n_ctx,
        "fvu": err / variance if variance > 0 else None, "mse": err / n, "variance": variance / n,
        "l0": active / n, "dead_share": float((fires == 0).double().mean()),
        "dense_share": float((fires > DENSE_SHARE * n).double().mean()), "dense_threshold": DENSE_SHARE,
        "downstream": None,
    }
    if downstream and model.decoder:
        c = {k: v / predictions if predictions else None for k, v in ce.items()}
        gap = None if c["zero"] is None else c["zero"] - c["clean"]
        out["downstream"] = {"kind": "ce_recovered", "ce_clean": c["clean"], "ce_recon": c["recon"],
                             "ce_zero": c["zero"], "predictions": predictions,
                             "ce_recovered": (c["zero"] - c["recon"]) / gap if gap else None}
    elif downstream:
        out["downstream"] = {"kind": "embedding_cosine", "cosine_recon": cos["recon"] / n_ctx,
                             "cosine_zero": cos["zero"] / n_ctx, "contexts": n_ctx}
    described = corpus.describe()
    out["corpus"] = {**{k: described.get(k) for k in ("name", "source", "kind", "fingerprint", "text_column",
                                                      "max_docs")},
                     "part": "test", "split_seed": split.seed, "test_share": split.test_share,
                     "max_length": max_length, "part_tokens": part_total, "sampled": n < part_total,
                     "requested_tokens": tokens}
    out["seconds"] = time.perf_counter() - t0
    return finite(out)


def finite(doc):
    """``doc`` with every NaN or infinite float replaced by None (a diverged training still writes strict JSON)."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: finite(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [finite(v) for v in doc]
    return doc


def summary(metrics: dict) -> str:
    """A few lines for a person: FVU, L0, dead and dense shares, the downstream check."""
    def f(v, digits: int = 4, scale: float = 1.0) -> str:
        return "n/a" if v is None else f"{scale * v:.{digits}f}"

    m = metrics
    lines = [f"held-out {m['site']} ({m['tokens']} tokens, {m['contexts']} contexts of the test part): FVU "
             f"{f(m['fvu'])}",
             f"  L0 {f(m['l0'], 1)} of {m['features']} features; dead {f(m['dead_share'], 1, 100)}%, dense (> "
             f"{100 * m['dense_threshold']:.0f}% of positions) {f(m['dense_share'], 1, 100)}%"]
    ds = m.get("downstream")
    if ds and ds["kind"] == "ce_recovered":
        lines.append(f"  next-token CE: clean {f(ds['ce_clean'])}, reconstruction {f(ds['ce_recon'])}, zero-ablation "
                     f"{f(ds['ce_zero'])}; loss recovered {f(ds['ce_recovered'], 3)}")
    elif ds:
        lines.append(f"  sentence embedding (mean-pooled last layer) cosine to clean: reconstruction "
                     f"{f(ds['cosine_recon'])}, zero-ablation {f(ds['cosine_zero'])}")
    return "\n".join(lines)
