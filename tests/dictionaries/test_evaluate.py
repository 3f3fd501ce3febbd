"""Evaluating a dictionary on held-out text: FVU and L0 equal an independent computation (a plain Hugging Face
forward pass with its own hook + SAELens's own encode/decode over the test part), the decoder's CE and loss
recovered hold together, the encoder's reconstruction keeps the sentence embedding better than zero-ablation, and
``neurotext dictionary eval`` reads what training recorded."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from neurotext import load_model
from neurotext.cli import main
from neurotext.corpus import open_corpus
from neurotext.dictionaries import DictionaryConfig, evaluate_dictionary, train_dictionary
from neurotext.dictionaries.evaluate import held_out_contexts
from neurotext.engine.contexts import SplitConfig, doc_part, text_digest

from conftest import make_tiny_decoder, make_tiny_model

MAX_LENGTH = 16
FAST = dict(tokens=2048, batch_size=128, max_length=MAX_LENGTH, buffer=1024, eval_tokens=None)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: two threads on two busy cores are many times slower
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from test_train import write_corpus

    root = tmp_path_factory.mktemp("eval")
    write_corpus(root / "docs.txt")
    make_tiny_model(root / "bert", "bert")
    make_tiny_decoder(root / "llama", "llama")
    return root


@pytest.fixture(scope="module")
def encoder(root):
    return load_model(str(root / "bert"), device="cpu")


@pytest.fixture(scope="module")
def decoder(root):
    return load_model(str(root / "llama"), device="cpu")


@pytest.fixture(scope="module")
def trained(root, encoder):
    """{site: dictionary directory} on the tiny encoder, evaluated at training on the whole test part."""
    out = {}
    for site in ("L1.ffn", "L1.out"):
        out[site] = root / f"dict-{site}"
        train_dictionary(encoder, site, str(root / "docs.txt"), DictionaryConfig(**FAST), out=out[site], progress=False)
    return out


def held_out(path, tokenizer, prefix: list[int], suffix: list[int]):
    """The test part's contexts as model inputs, found independently: each document's digest through the split
    function, its tokens cut into pieces of MAX_LENGTH, put in the template. Yields (input ids, text slice)."""
    split = SplitConfig()
    for doc in path.read_text().splitlines():
        if not doc.strip() or doc_part(text_digest(doc), split) != 1:
            continue
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        for i in range(0, len(ids), MAX_LENGTH):
            piece = ids[i:i + MAX_LENGTH]
            yield prefix + piece + suffix, slice(len(prefix), len(prefix) + len(piece))


def reference_site_values(model_dir, site: str, corpus_path) -> torch.Tensor:
    """The site's activations at every held-out text position: a plain AutoModel forward per context, with a hook
    of this test's own at the module the site is (BERT: the FFN output projection's input, the layer's output)."""
    from transformers import AutoModel, AutoTokenizer

    hf = AutoModel.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    layer, name = int(site[1]), site.split(".")[1]
    block = hf.encoder.layer[layer]
    grabbed = {}
    if name == "ffn":
        handle = block.output.dense.register_forward_pre_hook(lambda m, args: grabbed.__setitem__("h", args[0]))
    else:
        handle = block.register_forward_hook(
            lambda m, args, out: grabbed.__setitem__("h", out[0] if isinstance(out, tuple) else out))
    rows = []
    try:
        with torch.no_grad():
            for ids, text in held_out(corpus_path, tok, [tok.cls_token_id], [tok.sep_token_id]):
                hf(input_ids=torch.tensor([ids]))
                rows.append(grabbed["h"][0, text])
    finally:
        handle.remove()
    return torch.cat(rows)


@pytest.mark.parametrize("site", ["L1.ffn", "L1.out"])
def test_fvu_and_l0_equal_an_independent_computation(root, encoder, trained, site):
    from sae_lens import SAE

    a = reference_site_values(root / "bert", site, root / "docs.txt")  # (N, d)
    sae = SAE.load_from_disk(str(trained[site]))
    with torch.no_grad():
        f = sae.encode(a)
        a_hat = sae.decode(f)
    fvu = float((a - a_hat).double().pow(2).sum() / (a - a.mean(0)).double().pow(2).sum())
    l0 = float((f > 0).double().sum(-1).mean())
    fires = (f > 0).sum(0)
    recorded = json.loads((trained[site] / "neurotext.json").read_text())["eval"]  # written at the end of training
    again = evaluate_dictionary(encoder, trained[site], str(root / "docs.txt"), tokens=None, progress=False)
    for m in (recorded, again):
        assert m["tokens"] == len(a) and m["part"] == "test" and not m["corpus"]["sampled"]
        assert m["fvu"] == pytest.approx(fvu, rel=1e-4) and m["l0"] == pytest.approx(l0, rel=1e-6)
        assert m["dead_share"] == pytest.approx(float((fires == 0).double().mean()))
        assert m["dense_share"] == pytest.approx(float((fires > 0.1 * len(a)).double().mean()))
        assert m["mse"] == pytest.approx(float((a - a_hat).double().pow(2).sum(-1).mean()), rel=1e-4)
    assert 0 < fvu < 1.5 and l0 == pytest.approx(32.0, abs=0.5)


def test_encoder_reconstruction_keeps_the_sentence_embedding_better_than_zero_ablation(root, encoder, trained):
    ds = evaluate_dictionary(encoder, trained["L1.out"], str(root / "docs.txt"), tokens=None, progress=False)
    ds = ds["downstream"]
    assert ds["kind"] == "embedding_cosine" and ds["contexts"] > 0
    assert ds["cosine_zero"] < ds["cosine_recon"] <= 1 + 1e-6


def test_decoder_loss_recovered_is_plausible_and_its_clean_ce_is_huggingface_s(root, decoder, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = DictionaryConfig(**{**FAST, "tokens": 8192, "width": "8x", "k": 48})  # a close reconstruction of L1.out
    d = train_dictionary(decoder, "L1.out", str(root / "docs.txt"), cfg, out=tmp_path / "dict", progress=False)
    m = d.manifest["eval"]
    ds = m["downstream"]
    assert ds["kind"] == "ce_recovered"
    # the clean cross-entropy of the next-token predictions made at text positions, from HF's own loss
    hf = AutoModelForCausalLM.from_pretrained(root / "llama").eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, text in held_out(root / "docs.txt", decoder.tokenizer, [decoder.tokenizer.bos_token_id], []):
            labels = torch.tensor([ids])
            labels[0, :text.start + 1] = -100  # the prediction from BOS (of the first text token) is not counted
            n = len(ids) - text.start - 1
            if n:
                total += float(hf(input_ids=torch.tensor([ids]), labels=labels).loss) * n
                count += n
    assert ds["predictions"] == count and ds["ce_clean"] == pytest.approx(total / count, rel=1e-4)
    assert ds["ce_recovered"] == pytest.approx((ds["ce_zero"] - ds["ce_recon"]) / (ds["ce_zero"] - ds["ce_clean"]))
    assert m["fvu"] < 0.2 and abs(ds["ce_zero"] - ds["ce_clean"]) > 0.1  # a good dictionary, a site that matters
    assert 0.5 < ds["ce_recovered"] < 1.5
    for v in ("ce_clean", "ce_recon", "ce_zero"):
        assert 0 < ds[v] < 20


def test_a_sample_of_the_test_part_is_its_contexts_of_smallest_key(root, encoder, trained):
    corpus = open_corpus(str(root / "docs.txt"))
    every, total, part = held_out_contexts(encoder, corpus, MAX_LENGTH, SplitConfig(), None)
    sample, kept, part2 = held_out_contexts(encoder, corpus, MAX_LENGTH, SplitConfig(), 200)
    assert total == part == part2 and kept <= 200 < total
    by_key = sorted(every(), key=lambda c: c.key)  # bottom-k: a uniform sample without replacement
    chosen = {c.index for c in sample()}
    n = len(chosen)
    assert chosen == {c.index for c in by_key[:n]} and sum(len(c.ids) for c in by_key[:n + 1]) > 200
    m = evaluate_dictionary(encoder, trained["L1.ffn"], corpus, tokens=200, progress=False)
    assert m["tokens"] == kept and m["corpus"]["sampled"] and m["corpus"]["part_tokens"] == total


def _cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def test_eval_cli_reads_the_recorded_model_corpus_and_split(root, encoder, trained):
    status, out, err = _cli(["dictionary", "eval", str(trained["L1.ffn"]), "--json", "--tokens", "100000"])
    assert status == 0, err
    doc = json.loads(out)
    recorded = json.loads((trained["L1.ffn"] / "neurotext.json").read_text())["eval"]
    assert doc["tokens"] == recorded["tokens"] and doc["fvu"] == pytest.approx(recorded["fvu"], rel=1e-6)
    assert doc["corpus"]["fingerprint"] == recorded["corpus"]["fingerprint"]
    status, out, err = _cli(["dictionary", "eval", str(trained["L1.ffn"]), "--tokens", "300"])
    assert status == 0 and "FVU" in out and "L0" in out and "dead" in out and "cosine" in out, err
    # a dictionary of another model, a directory that is no dictionary: one line each
    other = make_tiny_model(root / "other", "bert", seed=1)
    for argv, message in (([str(trained["L1.ffn"]), "--model", str(other)], "a dictionary of another model"),
                          ([str(root)], "is not a SAELens dictionary directory")):
        status, out, err = _cli(["dictionary", "eval", *argv])
        assert status == 2 and err.count("\n") == 1 and message in err, err
