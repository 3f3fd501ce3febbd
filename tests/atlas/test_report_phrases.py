"""Atlas with real phrases (sweep --phrases): neuron pages show each length's phrase beside FT and the best
token, the index shows the best phrase and finds neurons by its tokens; hostile tokens stay text."""

import threading

import pytest
from test_report import HOSTILE, WORDS, _open_index, _page, _search, _table_names, browser  # noqa: F401

from neurotext import FTConfig, store
from neurotext.atlas.serve import make_server
from neurotext.cli import main
from neurotext.engine.phrase import PhraseConfig
from neurotext.store.sweep import run_sweep

from conftest import make_tiny_model


@pytest.fixture(scope="module")
def phrase_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas-phrases")
    model = make_tiny_model(root / "model", "bert", words=HOSTILE + WORDS)
    out = root / "store"
    run_sweep(["L1-2.ffn.0-5"], out, model=str(model), config=FTConfig(steps=6, restarts=1), log=lambda m: None,
              phrases=PhraseConfig(lengths=(1, 2, 3), iters=3, candidates=8, swaps=8, starts=2, patience=2))
    site = root / "site"
    assert main(["report", str(out), "--out", str(site)]) == 0
    return site, store.read_table(out).to_pylist()


def test_pages_show_phrases_escaped(phrase_site):
    site, rows = phrase_site
    phrase_tokens = set()
    for r in rows:
        text = (site / "neurons" / f"{r['neuron']}.html").read_text(encoding="utf-8")
        assert "Best real phrases" in text and "best single token" in text
        for toks in r["phrase_tokens"]:
            phrase_tokens |= set(toks)
        for t in HOSTILE:
            if "<" in t or '"' in t:
                assert t not in text
    assert phrase_tokens & set(HOSTILE)  # the check above covered hostile phrase tokens
    data = (site / "data" / "neurons.js").read_text(encoding="utf-8")
    assert "phrase_tokens" in data and not any(c in data for c in "<>&\u2028\u2029")


@pytest.fixture(scope="module")
def phrase_server(phrase_site):
    srv = make_server(phrase_site[0], 0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def best_phrase(r):
    acts = r["phrase_activations"]
    return r["phrase_tokens"][acts.index(max(acts))]


@pytest.mark.browser
def test_index_shows_and_searches_phrases(browser, phrase_server, phrase_site):  # noqa: F811
    _, rows = phrase_site
    page = _page(browser, bypass_csp=True)
    page.goto(phrase_server + "neurons/L1.ffn.2.html")
    row = next(r for r in rows if r["neuron"] == "L1.ffn.2")
    table = page.locator("table.phrases")
    chips = table.locator("td.phrase .tok").all_text_contents()
    assert chips == [t for toks in row["phrase_tokens"] for t in toks]
    assert page.evaluate("document.scripts.length") == 0
    _open_index(page, phrase_server)
    assert page.locator("th[data-key=phrase_tokens]").count() == 1
    token = best_phrase(row)[0]
    _search(page, token, where="phrase")
    assert set(_table_names(page)) == {r["neuron"] for r in rows if token in best_phrase(r)}
    assert page.locator("td.phrase .tok.hit").first.text_content() == token
    assert page.evaluate("window.__xss") is None and page.dialogs == [] and page.errors == []
    page.context.close()
