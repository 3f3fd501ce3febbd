"""Tokens as a reader sees them, and results in notebooks.

On a tiny byte-level BPE model built here, every place that shows tokens (the textualize table, the atlas's
neuron pages and table data, a result's ``_repr_html_``) shows decoded text by the convention of
neurotext.model.tokens, while JSON and the store keep the raw vocabulary strings. A notebook card is the
atlas page's card (one renderer), escaped, without a script.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from html.parser import HTMLParser

import pytest

from neurotext import FTConfig, Textualizer, load_model, store
from neurotext.atlas.pages import search_href
from neurotext.atlas.report import build_report
from neurotext.cli import main
from neurotext.display.card import Chips, neuron_card, neuron_header
from neurotext.display.notebook import SHOWN_TOKENS, Results
from neurotext.display.render import render_result
from neurotext.engine.phrase import PhraseConfig
from neurotext.model.tokens import display_token
from neurotext.phrases import Phraser
from neurotext.store.sweep import run_sweep

from conftest import make_tiny_byte_level, make_tiny_model

#: raw vocabulary string -> how it is shown (a leading space, newlines, two multi-byte characters, a byte of
#: an incomplete character)
SHOWN = {"\u0120furniture": "\u2423furniture", "\u0120Kuh": "\u2423Kuh", "\u010a\u010a": "\u21b5\u21b5",
         "\u010a": "\u21b5", "\u00c3\u00a9": "\u00e9", "\u00ce\u00bf\u00ce\u00bc": "\u03bf\u03bc",
         "\u00ce": "\u20390xCE\u203a"}
RAW_ONLY = ["\u0120furniture", "\u00ce\u00bf\u00ce\u00bc", "\u00c3\u00a9"]  # must never be what is shown
TOP = 46  # the whole vocabulary of the tiny byte-level model: every token is in every list
CFG = FTConfig(steps=6, restarts=3, top=TOP)
HOSTILE = ["<script>window.__xss=1</script>", '"><img src=x onerror=window.__xss=2>', "</style><b>bold</b>"]


class _Chips(HTMLParser):
    """Text of every token chip (elements of class ``tok``) and every tag name of an HTML fragment."""

    def __init__(self):
        super().__init__()
        self.tokens, self.tags, self._depth, self._text = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if self._depth:
            self._depth += 1
        elif "tok" in (dict(attrs).get("class") or "").split():
            self._depth, self._text = 1, []

    def handle_endtag(self, tag):
        if self._depth:
            self._depth -= 1
            if not self._depth:
                self.tokens.append("".join(self._text))

    def handle_data(self, data):
        if self._depth:
            self._text.append(data)


def chips(html: str) -> _Chips:
    p = _Chips()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def bl_path(tmp_path_factory):
    return make_tiny_byte_level(tmp_path_factory.mktemp("bytelevel") / "model")


@pytest.fixture(scope="module")
def bl_model(bl_path):
    return load_model(str(bl_path), device="cpu")


@pytest.fixture(scope="module")
def bl_results(bl_model):
    return Textualizer(bl_model, CFG, cache_dir=False, progress=False).run("L1.ffn.0-3")


@pytest.fixture(scope="module")
def bl_store(bl_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bl-store") / "store"
    run_sweep(["L1.ffn.0-3"], out, model=bl_model, config=CFG, log=lambda m: None,
              phrases=PhraseConfig(lengths=(1, 2), iters=3))
    return out


@pytest.fixture(scope="module")
def bl_site(bl_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("bl-site") / "atlas"
    build_report(bl_store, out, log=lambda m: None)
    return out


def _assert_decoded(shown: list[str]) -> None:
    for raw, text in SHOWN.items():
        assert text in shown, (raw, text)
    for raw in RAW_ONLY:
        assert raw not in shown


# --------------------------------------------------------------------------- item 6: byte-level tokens
def test_textualize_table_shows_decoded_tokens(bl_path, capsys):
    assert main(["textualize", "L1.ffn.0", "--model", str(bl_path), "--steps", "5", "--restarts", "2",
                 "--top", str(TOP), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for text in SHOWN.values():
        assert text in out
    for raw in RAW_ONLY:
        assert raw not in out
    assert "\u2423 a space, \u21b5 a newline" in out  # the convention is named under the table


def test_json_and_store_keep_raw_strings_and_ids(bl_path, bl_model, bl_store, capsys):
    assert main(["textualize", "L1.ffn.0", "--model", str(bl_path), "--steps", "5", "--restarts", "2",
                 "--top", str(TOP), "--device", "cpu", "--json", "--no-vector"]) == 0
    [doc] = json.loads(capsys.readouterr().out)
    assert doc["token_kind"] == "byte-level"
    assert {d["token"] for d in doc["nearest"]} == set(bl_model.tokens)
    assert all(bl_model.tokens[d["id"]] == d["token"] for d in doc["nearest"] + doc["best_tokens"])
    assert set(doc["nearest"][0]) == {"token", "id", "cosine"}
    rows = store.read_table(bl_store, columns=["nearest_tokens", "best_tokens"]).to_pylist()
    assert set(rows[0]["nearest_tokens"]) == set(bl_model.tokens)
    assert store.read_manifest(bl_store)["vocabulary"] == {"kind": "byte-level"}


def test_atlas_neuron_page_and_table_show_decoded_tokens(bl_site):
    page = (bl_site / "neurons" / "L1.ffn.2.html").read_text()
    found = chips(page)
    _assert_decoded(found.tokens)
    assert "script" not in found.tags
    assert "vocabulary string &#x27;\u0120furniture&#x27;" in page  # the raw string is the chip's title
    assert "#q=%E2%90%A3furniture" in page  # a chip links to the index's search for what it shows
    assert "\u2423 a space, \u21b5 a newline" in (bl_site / "index.html").read_text()  # the convention, named
    data = (bl_site / "data" / "neurons.js").read_text()
    doc = json.loads(data[data.index("{"):data.rindex("}") + 1])
    cols = doc["columns"]
    shown = [t for row in doc["rows"] for t in row[cols.index("nearest_tokens")]]
    _assert_decoded(shown)


def test_atlas_of_a_store_without_the_recorded_kind_detects_it(bl_store, bl_site, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(bl_store, old)
    manifest = store.read_manifest(old)
    del manifest["vocabulary"]
    store.write_manifest(old, manifest)
    assert store.token_kind(old) == "byte-level"
    build_report(old, tmp_path / "site", log=lambda m: None)
    for name in ("L1.ffn.0.html", "L1.ffn.3.html"):
        assert (tmp_path / "site" / "neurons" / name).read_text() == (bl_site / "neurons" / name).read_text()


def test_show_uses_the_stores_kind(bl_store, capsys):
    assert main(["show", str(bl_store), "L1.ffn.1"]) == 0
    out = capsys.readouterr().out
    for text in SHOWN.values():
        assert text in out


def test_repr_html_shows_decoded_tokens(bl_results):
    r = bl_results[1]
    found = chips(r._repr_html_())
    _assert_decoded(found.tokens)
    assert "script" not in found.tags
    _assert_decoded(chips(Results(bl_results)._repr_html_()).tokens + chips(r._repr_html_()).tokens)


def test_wordpiece_tokens_are_shown_as_in_the_vocabulary(tmp_path, capsys):
    path = make_tiny_model(tmp_path / "bert", "bert", words=["rain", "##ing", "##s", "sun", "caf\u00e9", "a b"])
    model = load_model(str(path), device="cpu")
    assert model.token_kind == "wordpiece"
    [r] = Textualizer(model, FTConfig(steps=4, restarts=2, top=11), cache_dir=False, progress=False).run("L0.ffn.1")
    shown = chips(r._repr_html_()).tokens
    assert {"##ing", "##s", "caf\u00e9", "a b", "[CLS]"} <= set(shown)
    text = render_result(r)
    assert "##ing" in text and "caf\u00e9" in text and "\u2423" not in text and "tokens are shown decoded" not in text


# --------------------------------------------------------------------------- item 4: notebooks
def test_results_are_lists_that_display_a_table(bl_results, bl_model):
    assert type(bl_results) is Results and isinstance(bl_results, list) and len(bl_results) == 4
    html = bl_results._repr_html_()
    assert html.startswith('<div class="nt nt-nb"><style>') and "<script" not in html
    assert [m for m in re.findall(r'<td class="name">([^<]*)</td>', html)] == [r.neuron for r in bl_results]
    assert Results([])._repr_html_() is None and Results([1, 2])._repr_html_() is None  # plain repr then
    ph = Phraser(bl_model, PhraseConfig(lengths=(1, 2), iters=2), progress=False).run("L1.ffn.0-1")
    assert type(ph) is Results
    assert '<table class="list phrases">' in ph._repr_html_()
    card = ph[0]._repr_html_()
    assert "Best real phrases" in card and "<script" not in card
    phrase_tokens = [display_token(t["token"], "byte-level") for p in ph[0].phrases for t in p["tokens"]]
    assert chips(card).tokens == ["FT vector x", *phrase_tokens]


def test_notebook_card_is_the_atlas_card(bl_store, bl_site):
    """The same renderer: a store row's card is in its atlas page (with links) and in the _repr_html_ of the
    result read from the store (without), and a result's row equals the store's row."""
    manifest = store.read_manifest(bl_store)
    model_type = manifest["model"]["model_type"]
    for row in store.read_table(bl_store).to_pylist():
        page = (bl_site / "neurons" / f"{row['neuron']}.html").read_text(encoding="utf-8")
        assert neuron_card(row, Chips("byte-level", search_href), model_type) in page
        r = store.row_to_result(row, "tiny", "byte-level", model_type)
        html = r._repr_html_()
        no_phrases = {**row, **{k: None for k in row if k.startswith(("phrase_", "best_phrase"))}}
        assert neuron_header(row, "neurotext \u00b7 tiny") in html
        assert neuron_card(no_phrases, Chips("byte-level"), model_type) in html
        assert 'href="' not in html  # nothing links outside the output
        back = r.to_row()
        for key in back:
            if key not in ("vector", "restarts_detail"):
                assert back[key] == row[key], key


def test_everything_in_a_card_is_escaped(bl_results):
    r = bl_results[0]
    hostile = dataclasses.replace(
        r, nearest=[{**d, "token": HOSTILE[i % 3]} for i, d in enumerate(r.nearest)],
        best_tokens=[{**d, "token": HOSTILE[(i + 1) % 3]} for i, d in enumerate(r.best_tokens)],
        neuron='L1.ffn.0"><script>x</script>', model="<b>m</b>")
    for html in (hostile._repr_html_(), Results([hostile])._repr_html_()):
        found = chips(html)
        assert not {"script", "img", "b"} & set(found.tags)
        assert html.count("<style>") == 1 and html.count("</style>") == 1
        assert {display_token(h, "byte-level") for h in HOSTILE} <= set(found.tokens)
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html


# --------------------------------------------------------------------------- in a browser
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    pw = sync_api.sync_playwright().start()
    b = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()
    pw.stop()


@pytest.mark.browser
def test_notebook_html_in_a_browser(browser, bl_results):
    """A result's card and a list's table, put into a page as a notebook would: the tokens are visible text,
    a token holding a script tag is text, and nothing runs."""
    r = bl_results[2]
    hostile = dataclasses.replace(r, best_tokens=[{**d, "token": HOSTILE[i % 3]} for i, d in enumerate(r.best_tokens)])
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    dialogs, errors = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    for html in (r._repr_html_(), hostile._repr_html_(), Results(bl_results)._repr_html_()):
        page.set_content(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{html}</body></html>")
        assert page.evaluate("document.scripts.length") == 0
        assert page.evaluate("document.querySelectorAll('img, b, [onerror]').length") == 0
        assert "\u0120furniture" not in page.locator(".nt").first.inner_text()
        if 'class="list neurons"' in html:  # the table: each list's first tokens
            k = SHOWN_TOKENS
            want = [display_token(t, "byte-level") for x in bl_results for t in
                    [c["token"] for c in (x.stability or {}).get("consensus") or []][:k]
                    + [d["token"] for d in x.nearest[:k]] + [d["token"] for d in x.best_tokens[:k]]]
            assert page.locator(".nt .tok").all_inner_texts() == want
            continue
        shown = page.locator(".nt .tok").all_inner_texts()
        assert "\u2423furniture" in shown and "\u03bf\u03bc" in shown and "\u20390xCE\u203a" in shown
        for t in ("\u2423furniture", "\u03bf\u03bc"):
            assert page.locator(".nt .tok", has_text=t).first.is_visible()
    page.set_content(f"<html><body>{hostile._repr_html_()}</body></html>")
    shown = page.locator("table.toks.best .tok").all_inner_texts()
    assert {display_token(h, "byte-level") for h in HOSTILE} <= set(shown)  # as text, spaces marked
    # the card's scoped style applies (chips are styled) and leaves the page outside the card alone
    assert page.evaluate("getComputedStyle(document.querySelector('.nt .tok')).fontFamily").startswith("ui-monospace")
    assert page.evaluate("getComputedStyle(document.body).fontFamily") != \
        page.evaluate("getComputedStyle(document.querySelector('.nt')).fontFamily")
    assert page.evaluate("window.__xss") is None and dialogs == [] and errors == []
    page.close()


@pytest.mark.browser
def test_atlas_table_shows_and_finds_decoded_tokens(browser, bl_site):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"file://{bl_site}/index.html")
    page.wait_for_selector("html[data-atlas-ready]")
    shown = page.locator("#table tbody .tok").all_inner_texts()
    assert shown and not any("\u0120" in t or "\u00ce" in t for t in shown)
    page.fill("#q", "furniture")  # the word, without the space mark
    deadline = 100
    while page.evaluate("document.documentElement.getAttribute('data-atlas-query')") != "furniture" and deadline:
        page.wait_for_timeout(50)
        deadline -= 1
    hits = page.locator("tr .tok.hit").all_inner_texts()
    assert hits and set(hits) == {"\u2423furniture"}
    page.close()
