"""stream_sites: a site's values at the text positions of one part, in the corpus's order or shuffled windows."""

import numpy as np
import torch

from neurotext import load_model
from neurotext.corpus import open_corpus
from neurotext.engine.activations import stream_sites

from conftest import WORDS


def test_shuffled_windows_hold_the_same_positions_in_another_order(tmp_path, tiny_models):
    rng = np.random.default_rng(0)
    path = tmp_path / "c.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS, rng.integers(2, 9))) for _ in range(200)) + "\n")
    m = load_model(str(tiny_models["bert"]), device="cpu")
    c = open_corpus(str(path))

    def read(**kw):
        out = {}
        order = []
        for b in stream_sites(m, c, [(1, "out")], part="train", chunk_size=16, **kw):
            at = 0
            for ctx, n in zip(b.contexts, b.lengths.tolist()):
                out[ctx.index] = b.values[(1, "out")][at:at + n]
                at += n
                order.append(ctx.index)
        return out, order

    plain, plain_order = read()
    shuffled, order = read(shuffle=50, shuffle_seed=1)
    again, order_again = read(shuffle=50, shuffle_seed=1)
    other, order_other = read(shuffle=50, shuffle_seed=2)
    assert sorted(order) == sorted(plain_order) and order != plain_order
    assert order == order_again and order != order_other  # seeded
    for i, v in plain.items():
        torch.testing.assert_close(shuffled[i], v, rtol=1e-5, atol=1e-6)
    # windows of 50: a context never moves out of its window of the part
    pos = {i: k for k, i in enumerate(plain_order)}
    assert all(abs(pos[i] - k) < 50 + 16 for k, i in enumerate(order))
