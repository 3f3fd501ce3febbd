"""Dictionaries: SAEs written with SAELens's own classes load through neurotext, their encoding is SAELens's, and
their features are units: FT, the vocabulary scan and the corpus pass agree with independent computations."""

import json
import warnings

import numpy as np
import pytest
import torch

from neurotext import NeurotextError, load_model
from neurotext.engine.optimize import FTConfig
from neurotext.model.dictionary import hook_site, load_dictionaries, load_dictionary
from neurotext.textualize import Textualizer

warnings.filterwarnings("ignore", category=DeprecationWarning)
sae_lens = pytest.importorskip("sae_lens")

from conftest import write_sae  # noqa: E402


@pytest.fixture(scope="module")
def bert(tiny_models):
    return load_model(str(tiny_models["bert"]), device="cpu")


@pytest.mark.parametrize("arch, kw", [("topk", {}), ("topk", {"rescale_acts_by_decoder_norm": True}),
                                      ("jumprelu", {}), ("standard", {"normalize_activations": "layer_norm"}),
                                      ("standard", {"apply_b_dec_to_input": False})])
def test_encoding_is_saelens_own(tmp_path, bert, arch, kw):
    path = write_sae(tmp_path / "d", arch, **kw)
    d = load_dictionary(path, bert)
    sae = sae_lens.SAE.load_from_disk(str(path))
    a = torch.randn(50, 64) * 2 + 0.3
    with torch.no_grad():
        want = sae.encode(a)
        got = d.encode(a)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert (want > 0).any()
        idx = torch.randint(0, 32, (50, 3))
        torch.testing.assert_close(d.pre(a, idx), d.pre(a).gather(1, idx), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(d.decode(got), sae.decode(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch, kw", [("topk", {}), ("topk", {"rescale_acts_by_decoder_norm": True}),
                                      ("jumprelu", {}), ("standard", {})])
def test_sparse_encoding_is_the_dense_one(tmp_path, bert, arch, kw):
    """encode_sparse's (row, feature, value) are exactly encode's non-zero values; in chunks of rows, the same up to
    the rounding of a smaller matrix product."""
    d = load_dictionary(write_sae(tmp_path / "d", arch, **kw), bert)
    a = torch.randn(70, 64) * 2 + 0.3
    with torch.no_grad():
        dense = d.encode(a)
        for chunk in (1 << 26, 4 * 32 * 3):  # one chunk, chunks of 3 rows
            rows, cols, vals = d.encode_sparse(a, chunk_bytes=chunk)
            assert bool((rows[1:] >= rows[:-1]).all()) and bool((vals > 0).all())
            got = torch.zeros_like(dense)
            got[rows, cols] = vals
            if chunk == 1 << 26:
                assert torch.equal(got, dense)
            else:
                torch.testing.assert_close(got, dense, rtol=1e-5, atol=1e-5)


def test_hook_names_map_to_sites():
    assert hook_site("blocks.3.mlp.hook_post") == (3, "ffn")
    assert hook_site("blocks.3.hook_resid_post") == (3, "out")
    assert hook_site("blocks.4.hook_resid_pre") == (3, "out")
    assert hook_site("blocks.0.hook_resid_pre") is None
    assert hook_site("blocks.3.attn.hook_z") is None


def test_a_release_folder_loads_one_dictionary_per_hook(tmp_path, bert):
    write_sae(tmp_path / "rel" / "blocks.1.mlp.hook_post", hook="blocks.1.mlp.hook_post")
    write_sae(tmp_path / "rel" / "blocks.1.hook_resid_pre", d_in=32, hook="blocks.1.hook_resid_pre")
    ds = load_dictionaries(tmp_path / "rel", bert)
    assert [(d.layer, d.site, d.width) for d in ds] == [(0, "out", 32), (1, "ffn", 32)]
    bert.attach(tmp_path / "rel")
    try:
        assert [n.name for n in bert.parse("L*.ffn.f3-4,L0.out.f31")] == ["L0.out.f31", "L1.ffn.f3", "L1.ffn.f4"]
        assert bert.parse("L1.ffn.3")[0].feature is False
    finally:
        bert.dictionaries.clear()


@pytest.mark.parametrize("case, message", [
    ("hook", "is not a site neurotext reads; supported hooks are blocks.{L}.mlp.hook_post"),
    ("arch", "architecture 'gated' is not one neurotext can compute; supported are topk, jumprelu, standard"),
    ("width", "reads 48 values at L1.ffn, but bert's ffn site has 64"),
    ("model", "is for model 'gpt2-small', not bert"),
    ("corrupt", "is unreadable"),
    ("layer", "reads L7.ffn, but bert has layers 0-2"),
    ("twice", "two dictionaries on L1.ffn"),
    ("missing", "is neither a SAELens dictionary"),
])
def test_bad_dictionaries_are_one_line(tmp_path, bert, case, message):
    p = tmp_path / "d"
    paths = [p]
    if case == "hook":
        write_sae(p, hook="blocks.1.attn.hook_z")
    elif case == "arch":
        write_sae(p, "gated")
    elif case == "width":
        write_sae(p, d_in=48)
    elif case == "model":
        write_sae(p, model_name="gpt2-small")
    elif case == "corrupt":
        write_sae(p)
        (p / "sae_weights.safetensors").write_bytes(b"\x00" * 40)
    elif case == "layer":
        write_sae(p, hook="blocks.7.mlp.hook_post")
    elif case == "twice":
        write_sae(p)
        write_sae(tmp_path / "e", seed=1)
        paths.append(tmp_path / "e")
    elif case == "missing":
        p.mkdir()
    with pytest.raises(NeurotextError, match=message.replace("{", r"\{").replace("(", r"\(")) as e:
        load_dictionaries(paths, bert)
    assert "\n" not in str(e.value)


def test_feature_names_are_checked_against_the_dictionary(tmp_path, bert):
    bert.attach(write_sae(tmp_path / "d"))
    try:
        with pytest.raises(NeurotextError, match="feature 32 is out of range .* features are 0-31"):
            bert.parse("L1.ffn.f32")
        with pytest.raises(NeurotextError, match="no dictionary is loaded on L0.ffn"):
            bert.parse("L0.ffn.f1")
    finally:
        bert.dictionaries.clear()


def _hf_site(model_dir, ids_or_embeds, layer: int):
    """Post-activation FFN values of a plain Hugging Face forward pass, by the test's own hook."""
    from transformers import AutoModel

    hf = AutoModel.from_pretrained(str(model_dir)).eval()
    got = {}
    h = hf.encoder.layer[layer].output.dense.register_forward_pre_hook(lambda m, a: got.setdefault("a", a[0]))
    try:
        with torch.no_grad():
            hf(**ids_or_embeds)
    finally:
        h.remove()
    return got["a"]


def test_feature_ft_reads_the_pre_activation_and_beats_real_tokens(tmp_path, tiny_models):
    """FT of a feature maximizes its pre-activation: the same optimum as the encoder row as a --direction at
    L1.ffn (post-activation values) up to the dictionary's constant (- b_dec . w + b_enc), at least the best real
    token's, and its reported activation is SAELens's encoding of a plain forward pass at the FT vector."""
    m = load_model(str(tiny_models["bert"]), device="cpu")
    path = write_sae(tmp_path / "d", "topk", k=8)
    m.attach(path)
    d = m.dictionary(1, "ffn")
    tx = Textualizer(m, FTConfig(steps=150, restarts=4, top=5), cache_dir=False)
    feats = [3, 11, 20]
    results = tx.run([f"L1.ffn.f{i}" for i in feats])
    w = d.sae.W_enc.detach().T[feats].numpy()  # (3, 64) encoder rows
    dirs = tx.run_directions(1, "ffn", w, [f"L1.ffn.f{i}" for i in feats])  # same names: same starts
    const = (-(d.sae.b_dec @ d.sae.W_enc) + d.sae.b_enc).detach().numpy()[feats]
    for r, dr, c in zip(results, dirs, const):
        assert r.pre_activation == pytest.approx(dr.pre_activation + c, rel=0.02, abs=1e-3)
        assert r.activation >= r.best_tokens[0]["activation"] - 1e-5
    x = torch.from_numpy(np.stack([r.vector for r in results]))
    cls, sep = m.tokenizer.cls_token_id, m.tokenizer.sep_token_id
    from transformers import AutoModel

    emb = AutoModel.from_pretrained(str(tiny_models["bert"])).get_input_embeddings().weight.detach()
    seq = torch.stack([torch.stack([emb[cls], xi, emb[sep]]) for xi in x])  # [CLS] x [SEP]
    a = _hf_site(tiny_models["bert"], {"inputs_embeds": seq}, 1)[:, 1]  # x's position
    sae = sae_lens.SAE.load_from_disk(str(path))
    with torch.no_grad():
        enc = sae.encode(a)
    np.testing.assert_allclose([r.activation for r in results], enc[torch.arange(3), feats].numpy(), rtol=1e-4,
                               atol=1e-4)


def test_feature_top_contexts_equal_a_brute_force_pass(tmp_path, tiny_models):
    """The corpus pass's top contexts of features equal a plain Hugging Face forward over every context with
    SAELens's own encode, context by context."""
    from neurotext.examples import Examiner, ExamplesConfig

    from conftest import WORDS

    rng = np.random.default_rng(0)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(80)) + "\n")
    m = load_model(str(tiny_models["bert"]), device="cpu")
    path = write_sae(tmp_path / "d", "topk", k=6)
    m.attach(path)
    [r] = Examiner(m, ExamplesConfig(top=5, max_length=16)).run(["L1.ffn.f7"], str(corpus))
    sae = sae_lens.SAE.load_from_disk(str(path))
    best = []
    tok = m.tokenizer
    for line in corpus.read_text().splitlines():
        ids = tok(line, return_tensors="pt")  # [CLS] text [SEP], one context per line (under 16 tokens)
        a = _hf_site(tiny_models["bert"], {"input_ids": ids["input_ids"]}, 1)[0, 1:-1]
        with torch.no_grad():
            best.append((float(sae.encode(a)[:, 7].max()), line))
    best.sort(key=lambda t: -t[0])
    got = [(e["activation"], e["text"]) for e in r.top]
    np.testing.assert_allclose([g[0] for g in got], [b[0] for b in best[:5]], rtol=1e-4, atol=1e-5)
    assert r.stats["max"] == pytest.approx(best[0][0], rel=1e-4)
    # the stored per-position values replay the brute-force encoding of the top context
    top = r.top[0]
    a = _hf_site(tiny_models["bert"], {"input_ids": torch.tensor([top["ids"]])}, 1)[0]
    with torch.no_grad():
        want = sae.encode(a)[:, 7].numpy()
    got_acts = np.array([np.nan if v is None else v for v in top["activations"]], dtype=float)
    np.testing.assert_allclose(got_acts[1:-1], want[1:-1], rtol=1e-4, atol=1e-5)
    assert json.dumps(r.to_dict())  # JSON-ready


def _hash_of_memory(d) -> str:
    """The fingerprint computed from the weights in memory (the file is not looked at)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    cfg = {k: v for k, v in d.sae.cfg.to_dict().items() if k not in ("device", "metadata")}
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, t in sorted(d.sae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("arch", ["topk", "jumprelu", "standard"])
def test_fingerprint_reads_the_weights_file_and_equals_the_hash_of_memory(tmp_path, bert, arch, monkeypatch):
    """A loaded dictionary's weights are hashed from its file (never all brought into memory): the same hash as
    the weights in memory; a weight changed in memory after loading is seen, and hashed from memory."""
    from neurotext.model import dictionary

    path = write_sae(tmp_path / "d", arch, d_sae=2048)  # big enough for the tensors to span many pages
    d = load_dictionary(path, bert)
    read = []
    spans = dictionary._file_spans
    monkeypatch.setattr(dictionary, "_file_spans", lambda *a: read.append(spans(*a)) or read[-1])
    assert d.fingerprint() == _hash_of_memory(d)
    assert read and read[0] is not None and set(read[0]) == set(d.sae.state_dict())  # from the file
    changed = load_dictionary(path, bert)
    with torch.no_grad():
        w = changed.sae.W_dec
        w.view(-1)[w.numel() // 2] += 1.0  # mid-tensor: not among the bytes compared with the file
    read.clear()
    assert changed.fingerprint() == _hash_of_memory(changed) != d.fingerprint()
    assert read == [None]  # the changed page: hashed from memory
