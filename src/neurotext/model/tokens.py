"""How a vocabulary token is shown to a reader: its decoded text, with invisible characters made visible.

Vocabularies store tokens in encoded forms: byte-level BPE (GPT-2, RoBERTa, SmolLM2, Pythia) writes each
byte as one printable character (``Ġfurniture`` is `` furniture``, ``Î¿Î¼`` the two Greek letters ``ομ``);
SentencePiece (Llama-2, Mistral, T5, XLM-R) writes a space as ``▁`` and keeps bytes as ``<0xCE>`` tokens;
WordPiece (BERT) marks a word's continuation with ``##``. Tables, the atlas and notebooks show every token
by one convention (:data:`CONVENTION`), the way TransformerLens's ``to_str_tokens`` and Neuronpedia show
decoded tokens, with whitespace made visible:

* a space is ``␣``, a newline ``↵``, a tab ``⇥``; other control characters are their Unicode control
  pictures (``␍`` for a carriage return, ``␀`` for NUL); other invisible characters (no-break and other
  spaces, zero-width and format characters) are their code point, ``‹U+00A0›``;
* a byte that is only part of a UTF-8 character (the token holds an incomplete character) is ``‹0xCE›``;
* WordPiece and unrecognized vocabularies are shown as they are (``##ing`` stays ``##ing``).

The raw vocabulary string and the id are what JSON and the store keep; only what is shown changes.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable

#: The vocabulary kinds, one registry: name -> how its tokens are shown.
KINDS = {
    "byte-level": "byte-level BPE (GPT-2 style: one character per byte, Ġ = space): decoded from UTF-8",
    "sentencepiece": "SentencePiece (▁ = space, <0xNN> byte tokens): decoded from UTF-8",
    "wordpiece": "WordPiece (BERT: ## marks a word's continuation): shown as in the vocabulary",
    "plain": "any other vocabulary: shown as in the vocabulary",
}
BYTE_LEVEL, SENTENCEPIECE, WORDPIECE, PLAIN = "byte-level", "sentencepiece", "wordpiece", "plain"
#: The kinds whose tokens are shown decoded (the others as they are).
DECODED = (BYTE_LEVEL, SENTENCEPIECE)

#: Marks for whitespace; every other control character becomes its Unicode control picture.
VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"}
#: The display convention in one line (for notes on pages and in tables).
CONVENTION = ("tokens are shown decoded: \u2423 a space, \u21b5 a newline, \u21e5 a tab, \u2039U+00A0\u203a another "
              "invisible character, \u20390xCE\u203a a byte of an incomplete UTF-8 character")
SP_SPACE = "\u2581"  # SentencePiece's space
_SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_WORDPIECE = re.compile(r"##\w")
_INVISIBLE = {"Zs", "Zl", "Zp", "Cc", "Cf"}  # separators, control and format characters


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's fixed map from each byte to one printable character (``encoder.py`` of GPT-2, reproduced).

    Printable Latin-1 bytes map to themselves; the other 68 (control bytes, space, DEL, NBSP, soft hyphen)
    to U+0100 onwards, in byte order, so the space 0x20 is ``Ġ`` (U+0120) and the newline 0x0A ``Ċ``.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
            *range(ord("\u00ae"), ord("\u00ff") + 1)]
    shifted = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(shifted)}}


BYTE_CHARS = bytes_to_unicode()
#: The inverse: character of a byte-level token -> the byte it stands for.
BYTE_OF = {c: b for b, c in BYTE_CHARS.items()}
_SHIFTED = {c for b, c in BYTE_CHARS.items() if ord(c) >= 256}


def _visible(text: str) -> str:
    out = []
    for ch in text:
        o = ord(ch)
        if ch in VISIBLE:
            out.append(VISIBLE[ch])
        elif o < 0x20:
            out.append(chr(0x2400 + o))  # control pictures: U+240D for \r, U+2400 for NUL
        elif o == 0x7F:
            out.append("\u2421")
        elif unicodedata.category(ch) in _INVISIBLE:
            out.append(f"\u2039U+{o:04X}\u203a")
        else:
            out.append(ch)
    return "".join(out)


def show_bytes(data: bytes) -> str:
    """Bytes as text by the convention: UTF-8 decoded, whitespace visible, every byte of an incomplete or
    invalid character as ``‹0xCE›``."""
    out, i = [], 0
    while i < len(data):
        try:
            out.append(_visible(data[i:].decode("utf-8")))
            break
        except UnicodeDecodeError as e:
            out.append(_visible(data[i:i + e.start].decode("utf-8")))
            out.extend(f"\u20390x{b:02X}\u203a" for b in data[i + e.start:i + e.end])
            i += e.end
    return "".join(out)


def token_bytes(token: str, kind: str) -> bytes | None:
    """The bytes a byte-level or SentencePiece token stands for (None for other kinds)."""
    if kind == BYTE_LEVEL:  # characters outside the map (added tokens) stand for themselves
        return b"".join(bytes([BYTE_OF[c]]) if c in BYTE_OF else c.encode("utf-8") for c in token)
    if kind == SENTENCEPIECE:
        m = _SP_BYTE.fullmatch(token)
        return bytes([int(m.group(1), 16)]) if m else token.replace(SP_SPACE, " ").encode("utf-8")
    return None


def display_token(token: str, kind: str) -> str:
    """A vocabulary string as it is shown (see the module's convention).

    Examples:
        >>> display_token("Ġfurniture", "byte-level"), display_token("Î¿Î¼", "byte-level")
        ('␣furniture', 'ομ')
        >>> display_token("Ċ", "byte-level"), display_token("Î", "byte-level"), display_token("##ing", "wordpiece")
        ('↵', '‹0xCE›', '##ing')
        >>> display_token("▁word", "sentencepiece"), display_token("<0xCE>", "sentencepiece")
        ('␣word', '‹0xCE›')
    """
    data = token_bytes(token, kind)
    return token if data is None else show_bytes(data)


def display_tokens(tokens: Iterable[str], kind: str) -> list[str]:
    """:func:`display_token` of each token."""
    return [display_token(t, kind) for t in tokens]


# --------------------------------------------------------------------------- detection
def _decoder_kind(decoder_state: dict | None) -> str | None:
    """The kind named by a ``tokenizers`` decoder's JSON state (None when it names none)."""
    if not decoder_state:
        return None
    kind = decoder_state.get("type")
    if kind == "ByteLevel":
        return BYTE_LEVEL
    if kind == "WordPiece":
        return WORDPIECE
    if kind in ("Metaspace", "ByteFallback"):
        return SENTENCEPIECE
    if kind == "Replace" and decoder_state.get("pattern", {}).get("String") == SP_SPACE:
        return SENTENCEPIECE
    if kind == "Sequence":
        kinds = {_decoder_kind(d) for d in decoder_state.get("decoders") or []} - {None}
        return kinds.pop() if len(kinds) == 1 else None
    return None


def tokenizer_kind(tokenizer, tokens: list[str] | None = None) -> str:
    """The vocabulary kind of a loaded Hugging Face tokenizer: from its decoder (fast tokenizers) or its
    attributes (slow ones), else from its vocabulary strings (:func:`detect_kind`)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is not None:
        try:
            found = _decoder_kind(json.loads(decoder.__getstate__()))
        except (TypeError, ValueError, AttributeError):
            found = None
        if found:
            return found
    if hasattr(tokenizer, "byte_decoder"):
        return BYTE_LEVEL
    if hasattr(tokenizer, "sp_model"):
        return SENTENCEPIECE
    if hasattr(tokenizer, "wordpiece_tokenizer"):
        return WORDPIECE
    if tokens is None:
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return detect_kind(tokens)


def _multibyte(token: str) -> bool:
    """True when a token of byte-map characters decodes to valid UTF-8 holding a non-ASCII character."""
    try:
        text = bytes(BYTE_OF[c] for c in token).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return any(ord(c) > 127 for c in text)


def detect_kind(tokens: Iterable[str]) -> str:
    """The vocabulary kind from token strings alone (stores written before the kind was recorded).

    Evidence per kind: SentencePiece tokens hold ``▁`` or are ``<0xNN>``; byte-level tokens lie wholly in
    the byte map's image and hold a shifted character (``Ġ`` ...) or decode to a multi-byte UTF-8
    character; WordPiece tokens start with ``##`` and a letter. A kind needs evidence and, for byte-level,
    no token with characters outside the map (added special tokens in brackets aside); ties go to
    SentencePiece, then WordPiece. Without any evidence (plain ASCII words) the kind is ``plain``, which
    shows tokens as they are: the same text byte-level decoding would show for them.
    """
    sp = bl = wp = outside = 0
    for t in tokens:
        if not t:
            continue
        if SP_SPACE in t or _SP_BYTE.fullmatch(t):
            sp += 1
        if _WORDPIECE.match(t):
            wp += 1
        if all(c in BYTE_OF for c in t):
            if any(c in _SHIFTED for c in t) or (any(ord(c) > 127 for c in t) and _multibyte(t)):
                bl += 1
        elif not (t[0] in "<[" and t[-1] in ">]"):
            outside += 1
    if sp and sp >= max(bl, wp):
        return SENTENCEPIECE
    if wp and wp >= bl:
        return WORDPIECE
    if bl and outside <= bl // 100:
        return BYTE_LEVEL
    return PLAIN


def manifest_kind(manifest: dict, tokens: Iterable[str] = ()) -> str:
    """A store's vocabulary kind: the manifest's ``vocabulary.kind`` (stores from now on), else detected from
    its token strings."""
    kind = (manifest.get("vocabulary") or {}).get("kind")
    return kind if kind in KINDS else detect_kind(tokens)
