"""Training a dictionary: SAELens loads what it writes unchanged, neurotext's manifest records it, only train-part
documents reach the SAE, an interrupted training leaves nothing that loads, and bad input is one line."""

from __future__ import annotations

import contextlib
import io
import json
import random

import pytest
import torch

from neurotext import NeurotextError, load_model
from neurotext.cli import build_parser, main
from neurotext.dictionaries import TRAINABLE, DictionaryConfig, parse_width, train_dictionary
from neurotext.dictionaries import train as train_module
from neurotext.dictionaries.evaluate import held_out_contexts
from neurotext.dictionaries.train import parse_tokens
from neurotext.engine.contexts import SplitConfig, doc_part, text_digest
from neurotext.model.dictionary import CFG, MANIFEST, WEIGHTS, load_dictionary, site_hook

from conftest import WORDS, make_tiny_decoder, make_tiny_model

UNIQUE = "hill"  # a word only documents of the test part hold
FAST = dict(tokens=2048, batch_size=128, max_length=16, buffer=1024, eval_tokens=None)


def write_corpus(path, docs: int = 300, seed: int = 0):
    """One document per line, words of the tiny vocabulary; UNIQUE only in a few documents of the test part."""
    rng = random.Random(seed)
    words = [w for w in WORDS if w != UNIQUE]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 24))) for _ in range(docs)]
    held = 0
    while held < 6:
        doc = " ".join([UNIQUE] + [rng.choice(words) for _ in range(rng.randint(3, 12))])
        if doc_part(text_digest(doc), SplitConfig()) == 1:
            lines.insert(rng.randrange(len(lines)), doc)
            held += 1
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on one thread: on two busy cores, torch's small products are many times slower on two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "docs.txt")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return load_model(str(make_tiny_model(tmp_path_factory.mktemp("enc") / "bert", "bert")), device="cpu")


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    return load_model(str(make_tiny_decoder(tmp_path_factory.mktemp("dec") / "llama", "llama")), device="cpu")


@pytest.mark.parametrize("which,site,arch", [("encoder", "L1.ffn", "topk"), ("encoder", "L2.out", "standard"),
                                             ("decoder", "L1.ffn", "batchtopk"), ("decoder", "L0.out", "jumprelu")])
def test_saelens_loads_the_directory_unchanged(request, corpus, tmp_path, which, site, arch):
    from sae_lens import SAE

    model = request.getfixturevalue(which)
    out = tmp_path / "dict"
    d = train_dictionary(model, site, str(corpus), DictionaryConfig(architecture=arch, **FAST), out=out, progress=False)
    sae = SAE.load_from_disk(str(out))
    assert sae.cfg.architecture() == TRAINABLE[arch].saved_as
    layer, name = int(site[1]), site.split(".")[1]
    assert sae.cfg.metadata.hook_name == site_hook(layer, name) and sae.cfg.metadata.model_name == model.name
    assert sae.cfg.d_in == model.sizes[name] and sae.cfg.d_sae == 4 * model.sizes[name]
    assert sorted(p.name for p in out.iterdir()) == sorted([CFG, WEIGHTS, MANIFEST])
    again = load_dictionary(out, model)  # neurotext's own check: the manifest's model fingerprint matches
    assert (again.layer, again.site, again.width) == (layer, name, 4 * model.sizes[name]) == (d.layer, d.site, d.width)
    m = json.loads((out / MANIFEST).read_text())
    assert m["model"]["fingerprint"] == model.fingerprint() and m["model"]["name"] == model.name
    assert m["model"]["source"] == model.source and m["model"]["model_type"] == model.model_type
    assert m["site"] == site and m["hook"] == site_hook(layer, name) and m["architecture"] == arch
    assert m["corpus"]["part"] == "train" and m["corpus"]["split_seed"] == 0 and m["corpus"]["test_share"] == 0.2
    assert m["corpus"]["source"] == str(corpus.resolve()) and len(m["corpus"]["fingerprint"]) == 32
    assert m["tokens"] == 2048 and m["steps"] == 16 and m["seed"] == 0 and m["settings"]["architecture"] == arch
    assert m["tokens_per_s"] == pytest.approx(m["tokens"] / m["seconds"]) and m["neurotext_version"]
    e = m["eval"]
    assert e["part"] == "test" and e["tokens"] > 0 and 0 <= e["dead_share"] <= 1 and 0 <= e["dense_share"] <= 1
    assert e["fvu"] > 0 and e["l0"] > 0 and e["downstream"]["kind"] == ("ce_recovered" if model.decoder
                                                                       else "embedding_cosine")


def test_only_train_documents_reach_the_sae(encoder, corpus, tmp_path, monkeypatch):
    import sae_lens

    streamed, ids = [], []
    real_stream = train_module.stream_sites

    def spy(*args, **kw):
        assert kw["part"] == "train"
        for b in real_stream(*args, **kw):
            assert all(c.part == 0 for c in b.contexts)
            ids.append(b.token_ids.clone())
            streamed.append(b.values[(1, "ffn")].clone())
            yield b

    stepped = []
    real_step = sae_lens.SAETrainer.step

    def step(self, batch):
        stepped.append(batch.clone())
        return real_step(self, batch)

    monkeypatch.setattr(train_module, "stream_sites", spy)
    monkeypatch.setattr(sae_lens.SAETrainer, "step", step)
    split = SplitConfig()
    docs = [line for line in corpus.read_text().splitlines() if line.strip()]
    train_tokens = sum(len(encoder.tokenizer(doc, add_special_tokens=False)["input_ids"]) for doc in docs
                       if doc_part(text_digest(doc), split) == 0)
    cfg = DictionaryConfig(**{**FAST, "tokens": "3x"})  # three passes over the train part
    d = train_dictionary(encoder, "L1.ffn", str(corpus), cfg, out=tmp_path / "dict", progress=False)
    unique = encoder.tokenizer.convert_tokens_to_ids(UNIQUE)
    assert not any(bool((t == unique).any()) for t in ids), "a test-part token reached the training stream"
    rows = {tuple(r.tolist()) for r in torch.cat(streamed)}
    trained = torch.cat(stepped)
    assert len(trained) == d.manifest["tokens"] and all(tuple(r.tolist()) in rows for r in trained)
    assert d.manifest["corpus"]["train_tokens"] == train_tokens and d.manifest["epochs"] == pytest.approx(
        d.manifest["tokens"] / train_tokens) and d.manifest["epochs"] > 2.5
    batch = cfg.batch_size  # whole steps of the three passes' tokens
    assert d.manifest["tokens"] == (3 * train_tokens) // batch * batch
    # the held-out part, which the evaluation reads, does hold the word
    contexts, _, _ = held_out_contexts(encoder, train_module.open_corpus(str(corpus)), 16, split, None)
    assert any(unique in c.ids for c in contexts())


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_interrupted_training_leaves_nothing_that_loads(encoder, corpus, tmp_path, monkeypatch, error):
    import sae_lens

    real_step = sae_lens.SAETrainer.step
    calls = []

    def failing(self, batch):
        calls.append(1)
        if len(calls) == 5:
            raise error("injected")
        return real_step(self, batch)

    monkeypatch.setattr(sae_lens.SAETrainer, "step", failing)
    parent = tmp_path / "runs"
    parent.mkdir()
    with pytest.raises(error):
        train_dictionary(encoder, "L1.ffn", str(corpus), DictionaryConfig(**FAST), out=parent / "dict", progress=False)
    assert len(calls) == 5 and list(parent.iterdir()) == []  # no --out, no partial directory beside it

    # with --force over a complete dictionary, the old one stays as it was until a new one is complete
    monkeypatch.setattr(sae_lens.SAETrainer, "step", real_step)
    old = train_dictionary(encoder, "L1.ffn", str(corpus), DictionaryConfig(**FAST), out=parent / "dict",
                           progress=False)
    monkeypatch.setattr(sae_lens.SAETrainer, "step", failing)
    calls.clear()
    with pytest.raises(error):
        train_dictionary(encoder, "L1.ffn", str(corpus), DictionaryConfig(**{**FAST, "seed": 1}), out=parent / "dict",
                         force=True, progress=False)
    assert [p.name for p in parent.iterdir()] == ["dict"]
    assert load_dictionary(parent / "dict", encoder).fingerprint() == old.fingerprint()


def test_existing_out_is_refused_unless_forced_and_seeds_reproduce(encoder, corpus, tmp_path):
    out = tmp_path / "dict"
    first = train_dictionary(encoder, "L1.ffn", str(corpus), DictionaryConfig(**FAST), out=out, progress=False)
    with pytest.raises(NeurotextError, match="not empty"):
        train_dictionary(encoder, "L1.ffn", str(corpus), DictionaryConfig(**FAST), out=out, progress=False)
    same = train_dictionary(encoder, "L1.ffn", str(corpus), DictionaryConfig(**FAST), out=tmp_path / "again",
                            progress=False)
    assert same.fingerprint() == first.fingerprint()  # the seed fixes the initialization and the shuffles
    other = train_dictionary(encoder, "L1.ffn", str(corpus), DictionaryConfig(**{**FAST, "seed": 1}), out=out,
                             force=True, progress=False)
    assert other.fingerprint() != first.fingerprint() and load_dictionary(out, encoder).manifest["seed"] == 1


def _cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(argv)
    return status, err.getvalue()


@pytest.mark.parametrize("args,message", [
    (["L9.ffn"], "layer 9 in 'L9.ffn' is out of range for bert: layers are 0-2"),
    (["L1.attn"], "unknown site 'attn'"),
    (["L1"], "malformed site 'L1'"),
    (["3.ffn"], "malformed site"),
    (["L1.ffn", "--width", "0x"], "width '0x' gives 0 features"),
    (["L1.ffn", "--width", "abc"], "width must be a multiple of the site width such as 4x"),
    (["L1.ffn", "--architecture", "gated"], "invalid choice: 'gated'"),
    (["L1.ffn", "--k", "0"], "must be a positive integer"),
    (["L1.ffn", "--k", "999"], "k 999 is more than the dictionary's 256 features"),
    (["L1.ffn", "--max-length", "40"], "beyond bert's positions"),
    (["L1.ffn", "--test-share", "1.5"], "test share must be in [0, 1)"),
    (["L1.ffn", "--test-share", "0"], "the test share must be above 0"),
    (["L1.ffn", "--batch-size", "4096"], "2048 training tokens are fewer than one batch (4096)"),
    (["L1.ffn", "--tokens", "0x"], "the passes must be above 0"),
    (["L1.ffn", "--tokens", "2y"], "tokens must be a count such as 500000 or passes over the train part such as 2x"),
    (["L1.ffn", "--tokens", "0"], "must be a positive integer"),
])
def test_bad_input_is_one_line(encoder, corpus, tmp_path, args, message):
    out = tmp_path / "dict"
    status, err = _cli(["dictionary", "train", args[0], "--model", encoder.source, "--corpus", str(corpus), "--out",
                        str(out), "--tokens", "2048", "--max-length", "16", *args[1:]])
    assert status == 2 and err.count("\n") == 1 and err.startswith("neurotext: error: ") and message in err, err
    assert not out.exists()


def test_a_non_empty_out_and_a_missing_corpus_are_one_line(encoder, corpus, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for args, message in ((["--out", str(tmp_path / "full")], "is not empty"),
                          (["--corpus", str(tmp_path / "missing.txt")], "missing.txt")):
        status, err = _cli(["dictionary", "train", "L1.ffn", "--model", encoder.source, "--corpus", str(corpus),
                            "--out", str(tmp_path / "new"), *args])
        assert status == 2 and err.count("\n") == 1 and message in err, err
    assert (tmp_path / "full" / "x").read_text() == "x" and not (tmp_path / "new").exists()


def test_settings_are_validated_and_the_choices_come_from_the_registry():
    assert parse_width("4x", 32) == 128 and parse_width("100", 32) == 100 and parse_width(" 1.5x ", 32) == 48
    assert parse_width(64) == 64 and parse_width("2x") is None
    assert parse_tokens("2x", 1000) == 2000 and parse_tokens(" 0.5x ", 1001) == 500 and parse_tokens(None, 7) == 7
    assert parse_tokens(300, 1000) == 300 and parse_tokens("2x") is None and parse_tokens("300") == 300
    for bad in ("0x", "abc", "0", "x", "4y", True):
        with pytest.raises(NeurotextError):
            parse_width(bad, 32)
    for kw in (dict(architecture="gated"), dict(width="0x"), dict(k=0), dict(tokens=0), dict(lr=0), dict(lr=-1.0),
               dict(batch_size=2.5), dict(l1=-1.0), dict(test_share=1.0), dict(seed="a"), dict(buffer=10),
               dict(warmup=0.6, decay=0.6), dict(eval_tokens=0), dict(tokens="0x"), dict(tokens="x2")):
        with pytest.raises(NeurotextError) as e:
            DictionaryConfig(**kw)
        assert "\n" not in str(e.value)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["dictionary"]
    train = next(a for a in sub._actions if a.dest == "dictionary_command").choices["train"]
    arch = next(a for a in train._actions if a.dest == "architecture")
    assert list(arch.choices) == list(TRAINABLE) and arch.default == DictionaryConfig().architecture == "topk"
