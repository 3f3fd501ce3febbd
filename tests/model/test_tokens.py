"""How tokens are shown: decoded text by one convention (neurotext.model.tokens), the kind of a vocabulary
detected from its tokenizer or from token strings alone."""

from __future__ import annotations

import pytest

from neurotext.model import tokens as T

from conftest import BYTE_LEVEL_WORDS, make_tiny_byte_level, make_tiny_model


def test_the_byte_map_is_gpt2s():
    """Our copy of GPT-2's table agrees with the tokenizers library's ByteLevel pre-tokenizer on every byte that
    valid UTF-8 text holds, and has the same image (its alphabet)."""
    from tokenizers import pre_tokenizers

    assert set(T.BYTE_CHARS.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    text = "".join(chr(i) for i in range(0x800)) + "\u4e2d\uffff\U0001f600\U0010fffd"  # lead bytes up to 0xF4
    [(mapped, _)] = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text)
    assert mapped == "".join(T.BYTE_CHARS[b] for b in text.encode("utf-8"))
    assert T.BYTE_CHARS[0x20] == "\u0120" and T.BYTE_CHARS[0x0A] == "\u010a" and T.BYTE_CHARS[ord("a")] == "a"


@pytest.mark.parametrize("raw, shown", [
    ("\u0120furniture", "\u2423furniture"),  # a leading space
    ("\u0120Kuh", "\u2423Kuh"),
    ("\u00ce\u00bf\u00ce\u00bc", "\u03bf\u03bc"),  # Greek omicron mu, four bytes
    ("\u00c3\u00a9", "\u00e9"),
    ("\u010a", "\u21b5"), ("\u010a\u010a", "\u21b5\u21b5"), ("\u0109", "\u21e5"),  # newline, tab
    ("\u0120\u0120\u0120", "\u2423\u2423\u2423"),
    ("furniture\u0120", "furniture\u2423"),  # a trailing space
    ("\u00ce", "\u20390xCE\u203a"),  # one byte of a two-byte character
    ("\u00f0\u0141", "\u20390xF0\u203a\u20390x9F\u203a"),  # half of an emoji
    ("\u00ce\u00bf\u00ce", "\u03bf\u20390xCE\u203a"),
    ("\u00c2\u0142", "\u2039U+00A0\u203a"),  # a no-break space
    ("\u010d", "\u240d"),  # carriage return: its control picture
    ("<|endoftext|>", "<|endoftext|>"),
    ("<script>", "<script>"),
    ("", ""),
])
def test_byte_level(raw, shown):
    assert T.display_token(raw, "byte-level") == shown


@pytest.mark.parametrize("raw, shown", [
    ("\u2581word", "\u2423word"), ("word", "word"), ("\u2581", "\u2423"),
    ("<0xCE>", "\u20390xCE\u203a"), ("<0x0A>", "\u21b5"), ("<0x20>", "\u2423"), ("<s>", "<s>"),
    ("\u2581\u03bf\u03bc", "\u2423\u03bf\u03bc"),
])
def test_sentencepiece(raw, shown):
    assert T.display_token(raw, "sentencepiece") == shown


@pytest.mark.parametrize("kind", ["wordpiece", "plain"])
def test_wordpiece_and_plain_tokens_are_shown_as_they_are(kind):
    for raw in ("##ing", "rain", "[CLS]", "caf\u00e9", "\u0120x", "a b", "<script>alert(1)</script>"):
        assert T.display_token(raw, kind) == raw


def test_detect_kind_from_strings():
    assert T.detect_kind(["\u0120the", "cat", "\u0120sat", "<|endoftext|>"]) == "byte-level"
    assert T.detect_kind(["\u00ce\u00bf\u00ce\u00bc", "ab"]) == "byte-level"  # multi-byte UTF-8, no Ġ
    assert T.detect_kind(["\u2581the", "cat", "<0xCE>", "<s>"]) == "sentencepiece"
    assert T.detect_kind(["the", "##ing", "[CLS]", "caf\u00e9"]) == "wordpiece"
    assert T.detect_kind(["the", "cat", "caf\u00e9"]) == "plain"  # é alone is not valid UTF-8 as bytes
    assert T.detect_kind(["rain", "sun"]) == "plain"
    assert T.detect_kind([]) == "plain"
    assert T.manifest_kind({"vocabulary": {"kind": "sentencepiece"}}, ["\u0120x"]) == "sentencepiece"
    assert T.manifest_kind({}, ["\u0120x", "y"]) == "byte-level"


def test_kind_of_a_loaded_tokenizer(tmp_path, bundled):
    from tokenizers import Tokenizer, decoders, models
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = make_tiny_byte_level(tmp_path / "bl")
    tok = AutoTokenizer.from_pretrained(path)
    assert T.tokenizer_kind(tok) == "byte-level"
    assert bundled.token_kind == "wordpiece"
    assert bundled.display_tokens == bundled.tokens  # BERT's vocabulary is shown as it is
    bert = AutoTokenizer.from_pretrained(make_tiny_model(tmp_path / "bert", "bert"))
    assert T.tokenizer_kind(bert) == "wordpiece"
    # a Llama-2-style SentencePiece BPE: ▁ for spaces, byte fallback
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0xCE>": 3, "\u2581": 4, "\u2581a": 5, "a": 6}
    sp = Tokenizer(models.BPE(vocab=vocab, merges=[("\u2581", "a")], byte_fallback=True, unk_token="<unk>"))
    sp.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    assert T.tokenizer_kind(PreTrainedTokenizerFast(tokenizer_object=sp)) == "sentencepiece"


def test_model_exposes_kind_and_display_tokens(tmp_path):
    from neurotext import load_model

    model = load_model(str(make_tiny_byte_level(tmp_path / "bl")), device="cpu")
    assert model.token_kind == "byte-level"
    shown = dict(zip(model.tokens, model.display_tokens))
    assert [shown[w] for w in BYTE_LEVEL_WORDS] == ["\u2423furniture", "\u2423Kuh", "\u21b5\u21b5", "\u00e9",
                                                     "\u03bf\u03bc", "<script>"]
    assert shown["\u00ce"] == "\u20390xCE\u203a" and shown["\u010a"] == "\u21b5"
    # the tokenizer itself agrees: a shown token is its decoded text with the marks
    for raw, ids in ((w, model.tokenizer.convert_tokens_to_ids(w)) for w in BYTE_LEVEL_WORDS):
        text = model.tokenizer.decode([ids])
        assert shown[raw] == text.replace(" ", "\u2423").replace("\n", "\u21b5")
