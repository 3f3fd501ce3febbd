"""The settings of a corpus pass (written next to every result)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..engine.contexts import SplitConfig
from ..errors import NeurotextError

DTYPES = ("float32", "bfloat16")
TOKEN_STATS_BUDGET = 1 << 30  # bytes: per-token sums are kept by default when they fit in this much memory
LOOKUP_K = 10  # tokens of the corpus lookup table
LOOKUP_MIN_COUNT = 3  # a token enters the lookup table when seen at least this often (train part)


@dataclass
class ExamplesConfig:
    """Settings of a corpus pass; written next to every result (the fields that change results)."""

    top: int = 20  # contexts of highest activation kept per neuron (and per part)
    ranges: int = 4  # equal-width ranges below the top fifth: (0, m/5], (m/5, 2m/5], ... for max m (R + 1 = 5)
    per_range: int = 3  # contexts sampled uniformly from each range
    random: int = 25  # random contexts per part (the same for every neuron); scoring takes as many as top
    #                   that are not top contexts (1:1), so a few more than top are kept
    max_length: int = 64  # text tokens per context at most; a longer document is cut into consecutive contexts
    seed: int = 0  # sampling keys: which contexts the range and random samples draw
    split_seed: int = 0  # which documents are held out
    test_share: float = 0.2  # share of documents held out (the test part)
    max_docs: int | None = None  # read at most this many documents
    max_tokens: int | None = None  # stop before the context that would pass this many text tokens
    hist_every: int = 16  # the position histogram bins the positions of one context in this many (by key)
    token_stats: bool | None = None  # per-token sums (token identity, lookup table); None: when they fit in 1 GiB
    dtype: str = "float32"  # arithmetic of the forward pass ("bfloat16": autocast)
    batch_size: int = 64  # contexts per forward batch at most
    batch_tokens: int = 8192  # padded text tokens per forward batch at most
    chunk_size: int = 1024  # contexts per chunk: the unit of work for resumption and Ray

    def __post_init__(self):
        for name in ("top", "ranges", "per_range", "random", "max_length", "hist_every", "batch_size", "batch_tokens",
                     "chunk_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NeurotextError(f"{name.replace('_', ' ')} must be a whole number >= 1, got {v!r}")
        for name in ("max_docs", "max_tokens"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise NeurotextError(f"{name.replace('_', ' ')} must be a whole number >= 1, got {v!r}")
        if self.dtype not in DTYPES:
            raise NeurotextError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        SplitConfig(self.test_share, self.split_seed)  # validates the share

    def identity(self) -> dict:
        """The settings that change results (batching, chunking and dtype of nothing else but rounding are
        kept too: a store continues only with what it started with)."""
        return asdict(self)
