"""Atlas with real text (neurotext examples --out DIR): neuron pages show each neuron's corpus contexts with every
token coloured by its activation on one scale per neuron, the index gets a corpus max column and a search over the
max tokens of the top contexts, and a store of examples alone builds an atlas of real text. The corpus holds markup,
so every page is also an XSS test."""

from __future__ import annotations

import json
import os
import shutil
import threading
from html.parser import HTMLParser

import pytest
from test_report import ARTIFACTS, _open_index, _page, _search, _table_names, browser  # noqa: F401

from neurotext.atlas import serve
from neurotext.atlas.report import source_signature
from neurotext.atlas.serve import make_server
from neurotext.cli import main
from neurotext.display.card import NEGATIVE_RGB, POSITIVE_RGB, activation_colour, colour_scale, max_tokens
from neurotext.display.notebook import Results
from neurotext.examples import NeuronExamples, examples
from neurotext.store import examples as ex_store

from conftest import WORDS

SWEPT = [f"L1.ffn.{u}" for u in range(4)]
WITH_EXAMPLES = [f"L1.ffn.{u}" for u in range(6)]  # L1.ffn.4-5: real text only
HOSTILE = ["<script>xss</script>", "<b>bold</b>", '"><img src=x onerror=window.__xss=2>',
           "rain <script>window.__xss=1</script> sun"]  # the first two are one context of 8 tokens each


def _corpus(path):
    import random

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(24)]
    for i, h in enumerate(HOSTILE):
        lines.insert(3 + 5 * i, h)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def ex_store_dir(tmp_path_factory, tiny_models):
    """A sweep of 4 neurons and corpus examples of 6 in one folder (tiny BERT, a corpus with markup)."""
    root = tmp_path_factory.mktemp("atlas-examples")
    model = str(tiny_models["bert"])
    corpus = _corpus(root / "corpus.txt")
    out = root / "store"
    assert main(["sweep", "L1.ffn.0-3", "--model", model, "--out", str(out), "--steps", "4", "--restarts", "2"]) == 0
    # --random above the corpus's context count: every context is a random one, so every page shows the markup
    assert main(["examples", "L1.ffn.0-5", "--model", model, "--corpus", str(corpus), "--out", str(out),
                 "--max-length", "8", "--top", "4", "--random", "64"]) == 0
    return out


@pytest.fixture(scope="module")
def exs(ex_store_dir):
    return {n: ex_store.find_examples(ex_store_dir, n) for n in WITH_EXAMPLES}


@pytest.fixture(scope="module")
def ex_site(ex_store_dir, tmp_path_factory):
    site = tmp_path_factory.mktemp("ex-site") / "atlas"
    assert main(["report", str(ex_store_dir), "--out", str(site)]) == 0
    return site


@pytest.fixture(scope="module")
def only_site(ex_store_dir, tmp_path_factory):
    """An atlas of a folder that holds corpus examples and no sweep."""
    root = tmp_path_factory.mktemp("ex-only")
    shutil.copytree(ex_store_dir / "examples", root / "store" / "examples")
    assert main(["report", str(root / "store"), "--out", str(root / "atlas")]) == 0
    return root / "store", root / "atlas"


class Contexts(HTMLParser):
    """The contexts of a real-text section: per list (top, range, random), each context's shown max, its whole
    text and its token spans (classes, style, title, text)."""

    def __init__(self):
        super().__init__()
        self.lists: dict[str, list[dict]] = {}
        self.headings: list[str] = []
        self._list = self._ctx = self._tok = self._val = self._h4 = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "ol" and "contexts" in cls:
            self._list = self.lists.setdefault(cls[1], [])
        elif tag == "li" and self._list is not None:
            self._list.append({"value": "", "text": "", "tokens": []})
        elif tag == "span" and "exv" in cls:
            self._val = ""
        elif tag == "div" and "ctx" in cls:
            self._ctx = self._list[-1]
        elif tag == "span" and self._ctx is not None and "t" in cls:
            self._tok = {"cls": cls, "style": a.get("style"), "title": a.get("title"), "text": ""}
            self._ctx["tokens"].append(self._tok)
        elif tag == "h4":
            self._h4 = ""

    def handle_endtag(self, tag):
        if tag == "span" and self._tok is not None:
            self._tok = None
        elif tag == "span" and self._val is not None:
            self._list[-1]["value"], self._val = self._val, None
        elif tag == "div" and self._ctx is not None:
            self._ctx = None
        elif tag == "ol":
            self._list = None
        elif tag == "h4" and self._h4 is not None:
            self.headings.append(self._h4)
            self._h4 = None

    def handle_data(self, data):
        if self._ctx is not None:
            self._ctx["text"] += data
        if self._tok is not None:
            self._tok["text"] += data
        if self._val is not None:
            self._val += data
        if self._h4 is not None:
            self._h4 += data


def contexts(html: str) -> Contexts:
    p = Contexts()
    p.feed(html)
    return p


def _check_context(shown: dict, e: dict, scale: float) -> None:
    """One coloured span per text token, holding its exact characters, its value in its title, its colour on the
    neuron's scale; the max token marked; the text kept whole."""
    text_positions = [i for i, s in enumerate(e["spans"]) if s is not None]
    assert len(shown["tokens"]) == len(text_positions)
    assert shown["text"] == e["text"]
    for tok, i in zip(shown["tokens"], text_positions):
        v = e["activations"][i]
        a, b = e["spans"][i]
        assert tok["text"] == e["text"][a:b]
        assert tok["title"].split(" ")[0] == f"{v:.4g}"
        assert tok["style"] == f"background:{activation_colour(v, scale)}"
        assert ("max" in tok["cls"]) == (i == e["position"])
    assert sum("max" in t["cls"] for t in shown["tokens"]) == 1


# --------------------------------------------------------------------------- pages (no browser)
def test_neuron_pages_show_real_text_coloured_by_activation(ex_site, exs):
    for name, ex in exs.items():
        page = contexts((ex_site / "neurons" / f"{name}.html").read_text(encoding="utf-8"))
        scale = colour_scale(ex)
        top = page.lists["top"]
        assert len(top) == len(ex.top) > 0
        for shown, e in zip(top, ex.top):
            assert shown["value"] == f"{e['activation']:.4g}"
            _check_context(shown, e, scale)
        # the range samples (highest range first: its bounds and context count) and the random contexts
        ranges = sorted(ex.ranges, key=lambda r: -r["range"])
        assert len(page.lists.get("range", [])) == sum(len(r["examples"]) for r in ranges)
        for heading, r in zip(page.headings, ranges):
            assert heading.startswith(f"({r['lo']:.4g}, {r['hi']:.4g}]") and f"{r['contexts']} context" in heading
        for shown, e in zip(page.lists.get("range", []), [e for r in ranges for e in r["examples"]]):
            _check_context(shown, e, scale)
        assert len(page.lists["random"]) == len(ex.random) > 0
        for shown, e in zip(page.lists["random"], ex.random):
            _check_context(shown, e, scale)


def _hex(rgb) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


def test_colour_scale_zero_is_white_and_nothing_is_clamped(exs):
    assert activation_colour(0.0, 1.0) == activation_colour(0.0, 0.0) == activation_colour(-0.0, 3.5) == "#ffffff"
    assert activation_colour(2.0, 2.0) == _hex(POSITIVE_RGB)
    assert activation_colour(-2.0, 2.0) == _hex(NEGATIVE_RGB)
    for bad in (2.0001, -2.0001):
        with pytest.raises(ValueError, match="beyond the colour scale"):
            activation_colour(bad, 2.0)  # the scale is the max: a value beyond it is an error, never clamped
    full = {_hex(POSITIVE_RGB), _hex(NEGATIVE_RGB)}
    for ex in exs.values():
        scale = colour_scale(ex)
        values = [v for e in ex.top + ex.random + [e for r in ex.ranges for e in r["examples"]]
                  for v in e["activations"] if v is not None]
        assert scale == pytest.approx(max(abs(v) for v in values + [ex.stats["max"]]))
        # linear and unclamped: the full colour only at the scale, intensity rising with |value| below it
        for v in values:
            c = activation_colour(v, scale)
            if c in full:
                assert abs(v) >= scale * (1 - 1 / 200), (v, scale, c)  # full only within a channel's rounding
            if abs(v) <= scale * (1 - 1 / 100):
                assert c not in full, (v, scale, c)

        def depth(v, scale=scale):  # how far the colour is from white
            c = activation_colour(v, scale)
            return sum(255 - int(c[i:i + 2], 16) for i in (1, 3, 5))

        for side in ([v for v in values if v > 0], [v for v in values if v < 0]):
            ordered = [depth(v) for v in sorted(side, key=abs)]
            assert ordered == sorted(ordered)
        assert len({depth(v) for v in values}) > 10


def test_markup_in_the_corpus_stays_text(ex_site, exs):
    pages = [p.read_text(encoding="utf-8") for p in (ex_site / "neurons").glob("*.html")]
    assert len(pages) == len(WITH_EXAMPLES)
    for text in pages:
        assert "<script" not in text.lower() and "<img" not in text and "<b>bold" not in text
        shown = [c["text"] for lst in contexts(text).lists.values() for c in lst]
        assert "<script>xss</script>" in shown and "<b>bold</b>" in shown  # the markup is shown as text
    data = (ex_site / "data" / "neurons.js").read_text(encoding="utf-8")
    assert not any(c in data for c in "<>&\u2028\u2029")


def test_combined_store_pages_show_both_and_the_rest_say_what_they_lack(ex_site, exs):
    for name in WITH_EXAMPLES:
        text = (ex_site / "neurons" / f"{name}.html").read_text(encoding="utf-8")
        assert 'id="real-text"' in text
        assert ("Consensus of restarts" in text) == (name in SWEPT)
        if name not in SWEPT:
            assert "does not include this neuron" in text
    index = (ex_site / "index.html").read_text(encoding="utf-8")
    assert 'value="corpus"' in index and 'id="q1"' in index and "corpus.txt" in index


def test_sweep_without_examples_is_unchanged(ex_store_dir, tmp_path):
    plain = tmp_path / "store"
    shutil.copytree(ex_store_dir, plain, ignore=shutil.ignore_patterns("examples", "site"))
    assert main(["report", str(plain), "--out", str(tmp_path / "atlas")]) == 0
    index = (tmp_path / "atlas" / "index.html").read_text(encoding="utf-8")
    assert 'value="corpus"' not in index and "Corpus" not in index
    data = (tmp_path / "atlas" / "data" / "neurons.js").read_text(encoding="utf-8")
    assert "corpus_max" not in data
    page = (tmp_path / "atlas" / "neurons" / "L1.ffn.0.html").read_text(encoding="utf-8")
    assert "real-text" not in page and "Consensus of restarts" in page
    assert {p.stem for p in (tmp_path / "atlas" / "neurons").glob("*.html")} == set(SWEPT)


def test_examples_only_atlas(only_site, exs):
    store_dir, site = only_site
    assert {p.stem for p in (site / "neurons").glob("*.html")} == set(WITH_EXAMPLES)
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'id="q1"' not in index and "holds corpus examples only" in index and "Q1" in index
    assert '<option value="corpus">' in index and 'value="both"' not in index
    marker = json.loads((site / "atlas.json").read_text())
    assert marker["sweep"] is False and marker["examples"] is True
    for name, ex in exs.items():
        text = (site / "neurons" / f"{name}.html").read_text(encoding="utf-8")
        assert "Consensus of restarts" not in text and "Optimization curve" not in text
        page = contexts(text)
        assert len(page.lists["top"]) == len(ex.top)
        _check_context(page.lists["top"][0], ex.top[0], colour_scale(ex))
    data = json.loads((site / "data" / "neurons.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    col = {c: i for i, c in enumerate(data["columns"])}
    for row in data["rows"]:
        ex = exs[row[col["neuron"]]]
        assert row[col["corpus_max"]] == pytest.approx(ex.stats["max"], rel=1e-4)
        assert row[col["corpus_tokens"]] == max_tokens(ex, "wordpiece")
        left, mid, right = row[col["corpus_context"]]
        assert mid and len(left) <= 31 and len(right) <= 31


def test_serve_rebuilds_an_examples_only_store_when_its_examples_change(only_site):
    store_dir, _ = only_site
    quiet = [].append
    site = serve.site_for(store_dir, log=quiet)
    assert site == store_dir / "site" and (site / "index.html").is_file()
    assert serve.site_for(store_dir, log=quiet) == site  # up to date: not rebuilt
    before = source_signature(store_dir, None)
    shard = ex_store.shard_paths(store_dir)[0]
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert source_signature(store_dir, None) != before
    logs = []
    serve.site_for(store_dir, log=logs.append)
    assert any("written to" in m for m in logs)


# --------------------------------------------------------------------------- notebooks
def test_repr_html_of_examples_and_of_a_list(exs, ex_store_dir, tiny_models):
    ex = exs["L1.ffn.2"]
    html = ex._repr_html_()
    assert "<script" not in html.lower()
    page = contexts(html)
    assert "<script>xss</script>" in [c["text"] for c in page.lists["random"]]
    assert page.lists["top"][0]["text"] == ex.top[0]["text"]
    _check_context(page.lists["top"][0], ex.top[0], colour_scale(ex))
    table = Results(exs.values())._repr_html_()
    assert table is not None and "<script" not in table.lower() and all(n in table for n in WITH_EXAMPLES)
    assert "corpus max" in table and "top context" in table
    # the API returns such a list
    corpus = ex_store_dir.parent / "corpus.txt"
    got = examples("L1.ffn.0-1", corpus=str(corpus), model=str(tiny_models["bert"]), max_length=8, top=2, random=4)
    assert type(got) is Results and all(isinstance(r, NeuronExamples) for r in got)
    assert "L1.ffn.1" in got._repr_html_()


# --------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def ex_server(ex_site):
    srv = make_server(ex_site, 0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def _norm(t: str) -> str:
    return t.strip().lower().removeprefix("##")


@pytest.mark.browser
def test_markup_is_visible_text_and_never_runs(browser, ex_server):  # noqa: F811
    """CSP is bypassed here, so escaping alone must hold."""
    page = _page(browser, bypass_csp=True)
    for name in WITH_EXAMPLES:
        page.goto(f"{ex_server}neurons/{name}.html")
        assert page.evaluate("document.scripts.length") == 0
        assert page.evaluate("document.querySelectorAll('.ctx *:not(span), img, [onerror]').length") == 0
        assert page.locator(".ctx", has_text="<script>xss</script>").count() >= 1
        assert page.locator(".ctx", has_text="<b>bold</b>").count() >= 1
        # the hovered value is the token's title; the max token is outlined
        first = page.locator("ol.contexts.top .ctx").first
        assert first.locator(".t.max").count() == 1
        assert page.evaluate("getComputedStyle(document.querySelector('.ctx .t.max')).outlineStyle") == "solid"
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#real-text").screenshot(path=ARTIFACTS / "atlas-real-text.png")
    assert page.evaluate("window.__xss") is None and page.dialogs == [] and page.errors == []
    page.context.close()


@pytest.mark.browser
def test_index_corpus_max_column_and_real_text_search(browser, ex_server, exs):  # noqa: F811
    page = _page(browser)
    _open_index(page, ex_server)
    assert page.locator("#count").text_content() == f"{len(WITH_EXAMPLES)} neurons"
    page.click("th[data-key=corpus_max] button")
    assert _table_names(page)[0] == max(exs, key=lambda n: exs[n].stats["max"])
    page.click("th[data-key=corpus_max] button")
    assert _table_names(page)[0] == min(exs, key=lambda n: exs[n].stats["max"])
    toks = {n: [_norm(t) for t in max_tokens(ex, "wordpiece")] for n, ex in exs.items()}
    word = next(t for n in WITH_EXAMPLES for t in toks[n] if t in WORDS)
    _search(page, word, where="corpus")
    assert set(_table_names(page)) == {n for n, ts in toks.items() if word in ts}
    assert page.locator("tr .tok.hit").first.text_content() == word
    part = word[1:3]
    page.check("#partial")
    _search(page, part, where="corpus")
    assert set(_table_names(page)) == {n for n, ts in toks.items() if any(part in t for t in ts)}
    assert "in=corpus" in page.url and "partial=1" in page.url
    assert page.errors == []
    page.context.close()


@pytest.mark.browser
def test_examples_only_index_lists_and_searches(browser, only_site, exs):  # noqa: F811
    _, site = only_site
    srv = make_server(site, 0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        page = _page(browser)
        _open_index(page, f"http://127.0.0.1:{srv.server_address[1]}/")
        heads = page.locator("#table thead th").all_text_contents()
        assert heads == ["neuron", "corpus max", "above 0", "max tokens in real text", "top context"]
        assert page.locator("#table tbody tr").count() == len(WITH_EXAMPLES)
        name = WITH_EXAMPLES[0]
        word = _norm(max_tokens(exs[name], "wordpiece")[0])
        _search(page, word, where="corpus")
        assert name in _table_names(page)
        page.locator(f"#table a:text-is('{name}')").click()
        page.wait_for_selector("#real-text")
        assert page.locator("ol.contexts.top li").count() == len(exs[name].top)
        assert page.errors == []
        page.context.close()
    finally:
        srv.shutdown()
        srv.server_close()
