"""A chunk's batches: every context once, within the limits, cut where they spend the fewest positions."""

from __future__ import annotations

import itertools

import numpy as np

from neurotext.engine.contexts import BATCH_COST, Context, batches


def chunk(lengths, parts):
    return [Context(index=i, doc=i, piece=0, part=p, key=0, ids=np.zeros(n, dtype=np.int32), text="")
            for i, (n, p) in enumerate(zip(lengths, parts, strict=True))]


def cost(groups) -> int:
    return sum(len(g) * max(len(c.ids) for c in g) + BATCH_COST for g in groups)


def best_cost(lengths: list[int], max_contexts: int, max_tokens: int) -> int:
    """Every way to cut the sorted lengths into consecutive batches within the limits: the cheapest."""
    n, best = len(lengths), None
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        groups = [lengths[a:b] for a, b in itertools.pairwise(bounds)]
        if any(len(g) > max_contexts or (len(g) > 1 and len(g) * max(g) > max_tokens) for g in groups):
            continue
        c = sum(len(g) * max(g) + BATCH_COST for g in groups)
        best = c if best is None else min(best, c)
    return best


def test_batches_are_the_cheapest_cuts_within_the_limits():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 11))
        lengths = [int(x) for x in rng.choice([1, 2, 3, 40, 41, 64, 200, 300], n)]
        parts = [int(x) for x in rng.integers(0, 2, n)]
        max_contexts, max_tokens = int(rng.integers(1, 6)), int(rng.choice([64, 400, 8192]))
        got = batches(chunk(lengths, parts), max_contexts, max_tokens)
        assert sorted(c.index for g in got for c in g) == list(range(n))
        for g in got:
            assert len({c.part for c in g}) == 1 and len(g) <= max_contexts
            assert len(g) == 1 or len(g) * max(len(c.ids) for c in g) <= max_tokens
            assert [(len(c.ids), c.index) for c in g] == sorted((len(c.ids), c.index) for c in g)
        for part in (0, 1):
            mine = [g for g in got if g[0].part == part]
            lens = sorted(n for n, p in zip(lengths, parts, strict=True) if p == part)
            if lens:
                assert cost(mine) == best_cost(lens, max_contexts, max_tokens), (trial, lens)
    # parts in order, lengths ascending; of two cuts that cost the same, the one whose last batch is longer
    assert [[c.index for c in g] for g in batches(chunk([5, 3, 4, 3], [0, 1, 0, 0]), 2, 8192)] == [[3], [2, 0], [1]]


def test_a_batch_of_similar_lengths_is_not_cut_and_one_of_distant_lengths_is():
    got = batches(chunk([10] * 8 + [60] * 8, [0] * 16), 64, 8192)
    assert [len(g) for g in got] == [8, 8]  # padding the short ones to 60 would cost 400 > BATCH_COST
    got = batches(chunk([10] * 8 + [12] * 8, [0] * 16), 64, 8192)
    assert [len(g) for g in got] == [16]
