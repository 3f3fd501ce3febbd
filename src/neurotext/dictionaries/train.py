"""Train a dictionary: a SAELens sparse autoencoder on one site of a model, over the train part of a corpus.

The activations are neurotext's own (:func:`neurotext.engine.activations.stream_sites`: the corpus pass's
tokenization, document split and forward pass, the site's values at the text positions only); no
TransformerLens model is involved. They reach SAELens's trainer through SAELens's shuffling buffer
(``mixing_buffer``), seeded, and the SAE is one of SAELens's training classes (:data:`TRAINABLE`; TopK's with
the sparse decoder of :mod:`neurotext.dictionaries.sparse`), stepped by SAELens's trainer with torch's fused
Adam. The train part is read again as further epochs when more tokens are asked for than it holds (``tokens``
may count passes: ``"2x"``); the test part never reaches the SAE.

The directory written is SAELens's (``cfg.json`` and ``sae_weights.safetensors`` from ``save_inference_model``,
which turns BatchTopK into JumpReLU), with ``metadata.hook_name`` the site's TransformerLens hook
(:func:`neurotext.model.dictionary.site_hook`) and ``metadata.model_name`` the model's name, plus neurotext's
manifest ``neurotext.json``: the model's identity, site, corpus and split, tokens seen, settings, timing and
the held-out evaluation (:func:`neurotext.dictionaries.evaluate.evaluate_dictionary`). It is written into a
temporary sibling directory and renamed at the end, so an interrupted training (Ctrl-C, SIGKILL, an exception)
leaves nothing at ``out`` that loads as a dictionary.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import __version__
from ..corpus import Corpus, open_corpus
from ..engine.activations import stream_sites
from ..engine.contexts import PARTS, SplitConfig, Tokenize
from ..errors import NeurotextError
from ..files import replace_dir
from ..model.adapters import Model, load_model
from ..model.devices import describe
from ..model.dictionary import MANIFEST, load_dictionary, site_hook
from ..model.names import SITES
from .evaluate import DEFAULT_TOKENS, Progress, evaluate_dictionary, finite
from .sparse import sparse_decode_topk

FORMAT = "neurotext-dictionary/1"  # the manifest's format
LOSS_SMOOTHING = 0.05  # weight of the newest step in the running loss shown by the progress bar
FEED_PARTS = 4  # the shuffling buffer takes activations in blocks of a quarter of its size (see grouped)
NORM_TOKENS = 8192  # activations the input scaling factor is estimated from (SAELens's expected_average_only_in)


@dataclass(frozen=True)
class Trainable:
    """One SAE architecture neurotext trains: SAELens's training class and config class (by name, imported when
    training starts), the architecture its saved directory has, and the config fields it takes from
    :class:`DictionaryConfig`."""

    sae: str  # sae_lens training class
    config: str  # its config class
    saved_as: str  # the architecture of the saved (inference) dictionary
    about: str  # one line, for --help and docs
    options: Callable[[DictionaryConfig], dict]  # the architecture's own config fields
    sparse_decode: bool = False  # train with :mod:`neurotext.dictionaries.sparse`'s subclass (same SAE, faster)


#: The architectures ``neurotext dictionary train --architecture`` offers; everything else derives from here.
TRAINABLE: dict[str, Trainable] = {
    "topk": Trainable("TopKTrainingSAE", "TopKTrainingSAEConfig", "topk",
                      "the k largest pre-activations of each position, ReLU'd (Gao et al. 2024)",
                      lambda c: {"k": c.k}, sparse_decode=True),
    "batchtopk": Trainable("BatchTopKTrainingSAE", "BatchTopKTrainingSAEConfig", "jumprelu",
                           "the k x batch largest pre-activations of a batch, k per position on average (Bussmann et "
                           "al. 2024); saved as JumpReLU with the threshold learned in training",
                           lambda c: {"k": float(c.k)}),
    "jumprelu": Trainable("JumpReLUTrainingSAE", "JumpReLUTrainingSAEConfig", "jumprelu",
                          "ReLU above a learned per-feature threshold, with an L0 penalty (Rajamanoharan et al. "
                          "2024): --sparsity, --threshold",
                          lambda c: {"l0_coefficient": c.sparsity, "jumprelu_init_threshold": c.threshold}),
    "standard": Trainable("StandardTrainingSAE", "StandardTrainingSAEConfig", "standard",
                          "ReLU with an L1 penalty on the activations (Bricken et al. 2023): --l1",
                          lambda c: {"l1_coefficient": c.l1}),
}

_WIDTH = re.compile(r"^\s*(?:(?P<mult>\d+(?:\.\d+)?)\s*x|(?P<count>\d+))\s*$")


def _whole(name: str, v, minimum: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise NeurotextError(f"{name} must be a whole number >= {minimum}, got {v!r}")


def _positive(name: str, v, zero: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v >= 0 if zero else v > 0)
    if not ok:
        raise NeurotextError(f"{name} must be a number {'>= 0' if zero else '> 0'}, got {v!r}")


def parse_tokens(tokens, part: int | None = None) -> int | None:
    """Training tokens from ``tokens``: a count (``500000``), passes over a train part of ``part`` tokens
    (``"2x"``: twice its tokens), or None (one pass). Returns None where the count needs ``part`` and it is not
    given (the form is checked only). Raises NeurotextError (one line) for anything else."""
    if tokens is None:
        return part
    if isinstance(tokens, str):
        m = _WIDTH.match(tokens)  # the form of a width: a multiple ("2x") or a count
        if m is None:
            raise NeurotextError(f"tokens must be a count such as 500000 or passes over the train part such as 2x, "
                                 f"got {tokens!r}")
        if m["count"] is not None:
            return parse_tokens(int(m["count"]), part)
        if float(m["mult"]) <= 0:
            raise NeurotextError(f"tokens {tokens!r}: the passes must be above 0")
        return None if part is None else round(float(m["mult"]) * part)
    _whole("tokens", tokens)
    return tokens


def parse_width(width, d_in: int | None = None) -> int | None:
    """Features of a dictionary from a width: ``"4x"`` (4 times the site width ``d_in``) or a count (``6144``).

    Returns the count (None for a multiple when ``d_in`` is not given: the form is checked only).
    Raises NeurotextError (one line) for anything else, and for a width below 1 feature.
    """
    m = _WIDTH.match(str(width)) if not isinstance(width, bool) else None
    if m is None:
        raise NeurotextError(f"width must be a multiple of the site width such as 4x, or a number of features such "
                             f"as 6144, got {width!r}")
    if m["count"] is not None:
        n = int(m["count"])
    elif d_in is None:
        n = None if float(m["mult"]) > 0 else 0
    else:
        n = round(float(m["mult"]) * d_in)
    if n is not None and n < 1:
        raise NeurotextError(f"width {width!r} gives {n} features: a dictionary needs at least 1")
    return n


@dataclass
class DictionaryConfig:
    """Settings of a dictionary's training; written to its ``neurotext.json``.

    The defaults train a 4x-wide TopK dictionary (k = 32) in one pass over the train part of the corpus: on the
    bundled model's FFN sites and the default corpus (about 457,000 train tokens) that is about 890 steps of 512
    activations, hence the large learning rate, chosen by short runs on L3.ffn (docs/cli/dictionary.md).
    """

    architecture: str = "topk"  # one of TRAINABLE
    width: str | int = "4x"  # features: a multiple of the site width ("4x"), or a count (6144)
    k: int = 32  # active features per position (topk; batchtopk: on average)
    tokens: int | str | None = None  # training tokens (text positions), or passes over the train part ("2x"); None:
    #                                  one pass; more than the train part holds: it is read again (epochs)
    lr: float = 2e-3  # Adam's learning rate (SAELens's trainer) on inputs scaled to mean norm sqrt(d_in); high,
    #                   for the several hundred steps of one pass over a small corpus (docs/cli/dictionary.md)
    batch_size: int = 512  # activations per training step (more steps per pass beat larger batches here)
    seed: int = 0  # the SAE's initialization and the shuffling buffer's draws
    max_length: int = 64  # text tokens per context at most (as neurotext examples cuts documents)
    split_seed: int = 0  # which documents are held out (the split of neurotext examples)
    test_share: float = 0.2  # share of documents held out as the test part; never trained on
    l1: float = 5.0  # standard: the L1 coefficient (on decoder-norm-weighted activations of scaled inputs)
    sparsity: float = 1.0  # jumprelu: the L0 coefficient
    threshold: float = 0.01  # jumprelu: the initial threshold (in units of the scaled inputs)
    warmup: float = 0.05  # share of the steps over which the learning rate rises linearly to lr (SAELens's warm-up)
    decay: float = 0.2  # share of the steps at the end over which it falls linearly to 0
    shuffle: int = 65536  # contexts read in windows of this many, each window's order permuted (seeded) before the
    #                       forward passes: a corpus in its own order holds long runs of one kind of text (the
    #                       default corpus: category after category), which the shuffling buffer alone does not
    #                       mix; the default corpus's train part (about 14k contexts) is one window. Memory: the
    #                       window's token ids and text. 0: the corpus's order
    buffer: int = 65536  # activations in the shuffling buffer (memory: buffer x site width x 4 bytes, twice)
    dead_window: int = 131072  # tokens without firing after which a feature counts as dead (topk's auxiliary
    #                            loss then trains it on the residual)
    eval_tokens: int | None = DEFAULT_TOKENS  # held-out tokens the final evaluation reads (32768: a uniform sample
    #                                           of the test part's contexts; None: all of it)
    forward_batch: int = 64  # contexts per forward batch of the model

    def __post_init__(self):
        if self.architecture not in TRAINABLE:
            raise NeurotextError(f"unknown architecture {self.architecture!r}: choose one of {', '.join(TRAINABLE)}")
        parse_width(self.width)
        for name in ("k", "batch_size", "max_length", "buffer", "dead_window", "forward_batch"):
            _whole(name.replace("_", " "), getattr(self, name))
        if self.eval_tokens is not None:
            _whole("eval tokens", self.eval_tokens)
        parse_tokens(self.tokens)
        _whole("shuffle", self.shuffle, minimum=0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise NeurotextError(f"seed must be a whole number, got {self.seed!r}")
        for name in ("lr", "l1", "sparsity", "threshold"):
            _positive(name, getattr(self, name), zero=name != "lr")
        for name in ("warmup", "decay"):
            _positive(name, getattr(self, name), zero=True)
        if self.warmup + self.decay > 1:
            raise NeurotextError(f"warmup + decay must be at most 1 (shares of the steps), got {self.warmup} + "
                                 f"{self.decay}")
        if self.buffer < self.batch_size:
            raise NeurotextError(f"the shuffling buffer ({self.buffer}) must hold at least one batch "
                                 f"({self.batch_size})")
        SplitConfig(self.test_share, self.split_seed)  # validates the share
        if self.test_share == 0:
            raise NeurotextError("a dictionary is evaluated on the held-out part of the corpus: the test share must "
                                 "be above 0")

    @property
    def split(self) -> SplitConfig:
        return SplitConfig(self.test_share, self.split_seed)

    def training_tokens(self, part: int | None) -> int | None:
        """The training tokens for a train part of ``part`` tokens (None where they depend on it and it is not
        given: count it first)."""
        return parse_tokens(self.tokens, part)

    def features(self, d_in: int) -> int:
        """The dictionary's width for a site of ``d_in`` values."""
        return parse_width(self.width, d_in)


def parse_site(spec, model: Model) -> tuple[int, str]:
    """(layer, site) of ``L3.ffn`` (or of a ``(3, "ffn")`` pair), checked against the model.

    Raises NeurotextError (one line) naming this model's layers and the sites for a malformed spec, an unknown
    site or a layer out of range.
    """
    sites = ", ".join(SITES)
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        spec = f"L{spec[0]}.{spec[1]}"
    m = re.fullmatch(r"L(\d+)\.([A-Za-z_]+)", str(spec).strip())
    if m is None:
        raise NeurotextError(f"malformed site {spec!r}: expected L{{layer}}.{{site}} with layer 0-"
                             f"{model.n_layers - 1} and site one of {sites}, e.g. L3.ffn")
    layer, site = int(m[1]), m[2]
    if site not in SITES:
        raise NeurotextError(f"unknown site {site!r} in {spec!r}: dictionaries are trained on {sites}")
    if layer >= model.n_layers:
        raise NeurotextError(f"layer {layer} in {spec!r} is out of range for {model.name}: layers are "
                             f"0-{model.n_layers - 1}")
    return layer, site


def check_length(model: Model, max_length: int) -> None:
    """A context of ``max_length`` text tokens in the template must fit the model's positions."""
    limit = getattr(model.hf.config, "max_position_embeddings", None) or getattr(model.hf.config, "n_positions", None)
    template = len(model.prefix_ids if model.decoder else model.prefix_ids[:1]) + len(model.suffix_ids)
    if limit is not None and max_length + template > int(limit):
        raise NeurotextError(f"max length {max_length} is beyond {model.name}'s positions: at most "
                             f"{int(limit) - template} text tokens per context ({int(limit)} positions, {template} "
                             "for the template)")


def part_tokens(model: Model, corpus: Corpus, config: DictionaryConfig) -> dict[str, int]:
    """Text tokens of each part of the corpus, ``{"train": n, "test": m}`` (tokenization only, no forward pass)."""
    tok = Tokenize(model.tokenizer, config.max_length, 0, config.split, vocab_size=int(model.embeddings.shape[0]))
    counts = [0] * len(PARTS)
    for c in tok.contexts(corpus.documents()):
        counts[c.part] += len(c.ids)
    return dict(zip(PARTS, counts))


# --------------------------------------------------------------------------- output directory
def check_out(out, force: bool) -> Path:
    """``out`` may be new or empty; a non-empty one only with ``force`` (it is replaced when training ends)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NeurotextError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise NeurotextError(f"--out {out} is not empty: give a new directory, or --force to replace it")
    return out


def _partial(out: Path) -> Path:
    """The temporary sibling a training writes into (renamed to ``out`` when complete)."""
    return out.with_name(f".{out.name}.partial-{os.getpid()}")


# --------------------------------------------------------------------------- the activations
@dataclass
class StreamStats:
    """What the training stream has read."""

    tokens: int = 0  # activations read from the model (more than trained on: the buffer's rest)
    positions: int = 0  # padded positions of the forward batches (template and padding included)
    batches: int = 0  # forward batches
    contexts: int = 0  # contexts in them
    epochs: int = 0  # complete passes over the train part
    part_tokens: int | None = None  # text tokens of the train part (known after the first pass)
    forward_seconds: float = 0.0  # time spent in the model's forward passes (and tokenizing)


def train_activations(model: Model, corpus: Corpus, point: tuple[int, str], config: DictionaryConfig,
                      stats: StreamStats):
    """The site's activations at every text position of the train part, (N, d_in) float32 per forward batch,
    pass after pass over the part (endless: the trainer stops asking). A part without a text token is an error."""
    template = len(model.prefix_ids if model.decoder else model.prefix_ids[:1]) + len(model.suffix_ids)
    while True:
        n = 0
        t = time.perf_counter()
        for b in stream_sites(model, corpus, [point], part="train", max_length=config.max_length,
                              split=config.split, batch_size=config.forward_batch, shuffle=config.shuffle,
                              shuffle_seed=config.seed * 1_000_003 + stats.epochs):  # another order each epoch
            v = b.values[point]  # (N, d_in)
            n += len(v)
            stats.tokens += len(v)
            stats.positions += len(b.lengths) * (int(b.lengths.max()) + template)
            stats.batches += 1
            stats.contexts += len(b.lengths)
            stats.forward_seconds += time.perf_counter() - t
            yield v
            t = time.perf_counter()
        if n == 0:
            raise NeurotextError(f"{corpus.source}: the train part holds no text token for {model.name} (test share "
                                 f"{config.test_share}, split seed {config.split_seed})")
        stats.epochs += 1
        stats.part_tokens = n


# --------------------------------------------------------------------------- training
def _sae_lens():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import sae_lens
            from sae_lens.config import LoggingConfig, SAETrainerConfig
            from sae_lens.training.mixing_buffer import mixing_buffer
    except ImportError as e:
        raise NeurotextError("training dictionaries needs SAELens: pip install sae-lens") from e
    return sae_lens, SAETrainerConfig, LoggingConfig, mixing_buffer


def build_sae(model: Model, layer: int, site: str, config: DictionaryConfig):
    """A fresh SAELens training SAE for the site (initialized from torch's current random state)."""
    sae_lens, *_ = _sae_lens()
    from sae_lens.saes.sae import SAEMetadata

    arch = TRAINABLE[config.architecture]
    d_in = model.sizes[site]
    cfg = getattr(sae_lens, arch.config)(
        d_in=d_in, d_sae=config.features(d_in), device=str(model.device), dtype="float32",
        normalize_activations="expected_average_only_in",
        metadata=SAEMetadata(model_name=model.name, hook_name=site_hook(layer, site), context_size=config.max_length,
                             prepend_bos=model.decoder),
        **arch.options(config))
    return (sparse_decode_topk() if arch.sparse_decode else getattr(sae_lens, arch.sae))(cfg)


def fuse_adam(optimizer: torch.optim.Optimizer, device: torch.device) -> bool:
    """Switch SAELens's Adam to torch's fused kernel (the same update in one pass over each parameter instead of
    a dozen) where this torch has it for the device; before the first step. Returns whether it did."""
    try:
        torch.optim.Adam([torch.zeros(1, device=device, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, False
    return True


def scaling_factor(acts: list[torch.Tensor], d_in: int) -> float:
    """SAELens's ``expected_average_only_in`` normalization: the factor that gives the inputs mean norm
    sqrt(d_in) (``ActivationScaler.estimate_scaling_factor``'s formula), from the first activations."""
    norms = torch.cat(acts).float().norm(dim=-1)
    return float(math.sqrt(d_in) / norms.mean().clamp_min(1e-12))


def grouped(acts, tokens: int):
    """The forward batches' activations joined into blocks of at least ``tokens`` rows (the last may be
    shorter), in order: SAELens's shuffling buffer copies all it holds for every block it takes in, so a few
    large blocks cost less than many forward batches."""
    held, n = [], 0
    for x in acts:
        held.append(x)
        n += len(x)
        if n >= tokens:
            yield torch.cat(held) if len(held) > 1 else held[0]
            held, n = [], 0
    if held:
        yield torch.cat(held)


def fit(trainer, data, progress: Progress, stats: StreamStats) -> dict:
    """SAELens's training loop (``SAETrainer.fit`` without its progress bar, Weights & Biases logging and
    checkpoints) through the trainer's public steps: ``maybe_reset_sparsity`` and ``step`` per batch of ``data``,
    then the input scaling folded into the weights and ``set_final_sae_metadata``. Returns the running loss and
    the running FVU of the training batches at the end (the progress bar shows them as it goes)."""
    cfg = trainer.cfg
    loss = fvu = None
    a = LOSS_SMOOTHING
    while trainer.n_training_samples < cfg.total_training_samples:
        trainer.maybe_reset_sparsity()
        out = trainer.step(next(data))
        trainer.n_training_steps += 1
        with torch.no_grad():
            x = out.sae_in.float()  # (B, d_in) scaled inputs
            step_fvu = float((out.sae_out.float() - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12))
        step_loss = float(out.loss.detach())
        loss = step_loss if loss is None else (1 - a) * loss + a * step_loss
        fvu = step_fvu if fvu is None else (1 - a) * fvu + a * step_fvu
        progress.update(cfg.train_batch_size_samples, loss=loss, fvu=fvu, epoch=stats.epochs + 1)
    scaler = trainer.activation_scaler
    if scaler.scaling_factor is not None:
        trainer.sae.fold_activation_norm_scaling_factor(scaler.scaling_factor)
        scaler.scaling_factor = None
    trainer.set_final_sae_metadata()
    return {"loss": loss, "batch_fvu": fvu}


def train_dictionary(model, site, corpus=None, config: DictionaryConfig | None = None, out=None, force: bool = False,
                     progress: bool | None = None, device: str | None = "auto"):
    """Train a dictionary on one site of a model over the train part of a corpus, evaluate it on the test part,
    and write it to ``out`` (SAELens's format with ``neurotext.json``; see the module docstring).

    Args:
        model: a loaded :class:`neurotext.model.Model`, or a ``--model`` value to load (None: the bundled model).
        site: ``"L3.ffn"``, ``"L3.out"`` or a ``(layer, site)`` pair.
        corpus: an opened :class:`neurotext.corpus.Corpus` or a source (None: the default corpus).
        config: the settings (:class:`DictionaryConfig`).
        out: the directory to write; new or empty, or with ``force`` replaced once training is complete.
        progress: None: a bar on a terminal, a line every 30 s elsewhere; False: nothing.
        device: where to load ``model`` when it is a name.

    Returns:
        The :class:`neurotext.model.dictionary.Dictionary` loaded from ``out`` (its ``manifest`` holds the record,
        the held-out evaluation under ``eval``).

    Raises:
        NeurotextError (one line, before any training): a bad site, setting, corpus or output directory.
    """
    config = config or DictionaryConfig()
    if out is None:
        raise NeurotextError("give the directory to write the dictionary to (out=..., --out DIR)")
    out = check_out(out, force)
    model = model if isinstance(model, Model) else load_model(model, device=device)
    layer, site = parse_site(site, model)
    check_length(model, config.max_length)
    corpus = corpus if isinstance(corpus, Corpus) else open_corpus(corpus)
    d_in = model.sizes[site]
    width = config.features(d_in)
    if config.architecture in ("topk", "batchtopk") and config.k > width:
        raise NeurotextError(f"k {config.k} is more than the dictionary's {width} features")
    parts = part_tokens(model, corpus, config) if config.training_tokens(None) is None else None  # passes: count
    for name in ("train", "test") if parts is not None else ():
        if parts[name] == 0:
            raise NeurotextError(f"{corpus.source}: the {name} part holds no text token for {model.name} (test "
                                 f"share {config.test_share}, split seed {config.split_seed})")
    part = None if parts is None else parts["train"]
    total = config.training_tokens(part)
    steps = total // config.batch_size
    if steps < 1:
        raise NeurotextError(f"{total} training tokens are fewer than one batch ({config.batch_size}): give more "
                             "tokens or a smaller batch size")
    sae_lens, trainer_config, logging_config, mixing_buffer = _sae_lens()
    warm = int(config.warmup * steps)
    tcfg = trainer_config(
        total_training_samples=steps * config.batch_size, train_batch_size_samples=config.batch_size, lr=config.lr,
        lr_end=config.lr, lr_scheduler_name="constant", lr_warm_up_steps=warm if warm >= 2 else 0,
        lr_decay_steps=int(config.decay * steps), device=str(model.device),
        dead_feature_window=max(1, math.ceil(config.dead_window / config.batch_size)),
        logger=logging_config(log_to_wandb=False), n_checkpoints=0, save_final_checkpoint=False)
    name = f"L{layer}.{site}"
    stats = StreamStats(part_tokens=part)
    tmp = _partial(out)
    dev = model.device
    try:
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(config.seed)  # the initialization and the buffer's shuffles; the caller's state is kept
            sae = build_sae(model, layer, site, config)
            acts = train_activations(model, corpus, (layer, site), config, stats)
            first, seen = [], 0
            for x in acts:  # the first activations set the input scale; they are trained on like the rest
                first.append(x)
                seen += len(x)
                if seen >= NORM_TOKENS:
                    break
            buffer = max(config.batch_size, min(config.buffer, tcfg.total_training_samples))  # a short run waits
            data = mixing_buffer(buffer, config.batch_size,  # for no more than it needs
                                 grouped(itertools.chain(first, acts), max(config.batch_size, buffer // FEED_PARTS)))
            trainer = sae_lens.SAETrainer(tcfg, sae, data_provider=data)
            fused = fuse_adam(trainer.optimizer, dev)
            trainer.activation_scaler.scaling_factor = scale = scaling_factor(first, d_in)
            del first
            bar = Progress(f"dictionary {name}", tcfg.total_training_samples, progress)
            try:
                running = fit(trainer, data, bar, stats)
            finally:
                bar.close()
        seconds = time.perf_counter() - t0
        trained = trainer.n_training_samples
        if tmp.exists():
            shutil.rmtree(tmp)
        sae.save_inference_model(tmp)
        metrics = evaluate_dictionary(model, load_dictionary(tmp, model), corpus, tokens=config.eval_tokens,
                                      max_length=config.max_length, split=config.split,
                                      batch_size=config.forward_batch, progress=progress)
        described = corpus.describe()
        manifest = {
            "format": FORMAT,
            "model": {"name": model.name, "source": model.source, "model_type": model.model_type,
                      "fingerprint": model.fingerprint(), "n_layers": model.n_layers, "sizes": model.sizes},
            "site": name, "layer": layer, "hook": site_hook(layer, site),
            "architecture": config.architecture, "saved_as": TRAINABLE[config.architecture].saved_as,
            "d_in": d_in, "width": width,
            "corpus": {**{k: described.get(k) for k in ("name", "source", "kind", "fingerprint", "text_column",
                                                        "max_docs", "categories", "revision")},
                       "part": "train", "split_seed": config.split_seed, "test_share": config.test_share,
                       "train_tokens": stats.part_tokens},
            "tokens": trained, "steps": trainer.n_training_steps,
            "epochs": trained / stats.part_tokens if stats.part_tokens else None,
            "seed": config.seed, "settings": asdict(config),
            "training": {"final_loss": running["loss"], "final_batch_fvu": running["batch_fvu"],
                         "scaling_factor": scale, "activations_read": stats.tokens, "positions": stats.positions,
                         "forward_batches": stats.batches, "forward_contexts": stats.contexts,
                         "forward_seconds": stats.forward_seconds, "lr_warm_up_steps": tcfg.lr_warm_up_steps,
                         "lr_decay_steps": tcfg.lr_decay_steps, "dead_feature_window": tcfg.dead_feature_window,
                         "sparse_decode": TRAINABLE[config.architecture].sparse_decode, "fused_adam": fused},
            "seconds": seconds, "tokens_per_s": trained / seconds, "device": describe(dev),
            "neurotext_version": __version__, "sae_lens_version": sae_lens.__version__,
            "eval": metrics,
        }
        (tmp / MANIFEST).write_text(json.dumps(finite(manifest), indent=2, allow_nan=False, default=str))
        replace_dir(tmp, out)  # an existing out (allowed by --force) goes only now
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_dictionary(out, model)
