"""Atlas with dictionary features (L1.ffn.f3, site ffn.f): a feature's page has every section of a neuron's page
(its FT card, what it writes, its read-out scores, its real text) plus its neuron support linked to the pages of the
neurons that carry it; the index lists the store's dictionaries and tells features from neurons; the notebook card of
a feature shows the same support. The dictionary is a SAELens TopK SAE made here, two features set by hand so their
support is known."""

from __future__ import annotations

import json
import random
import re
import threading
from html.parser import HTMLParser

import pytest
from test_report import ARTIFACTS, _open_index, _page, _table_names, browser  # noqa: F401

from neurotext import store
from neurotext.atlas import realtext
from neurotext.atlas.realtext import is_canonical
from neurotext.atlas.report import read_rows
from neurotext.atlas.serve import make_server
from neurotext.cli import main
from neurotext.display.notebook import examples_html
from neurotext.store import examples as ex_store

from conftest import WORDS, make_tiny_model

NEURONS = [f"L1.ffn.{u}" for u in range(4)]
SWEPT = [f"L1.ffn.f{u}" for u in range(6)]
FEATURES = [f"L1.ffn.f{u}" for u in range(8)]  # L1.ffn.f6-7: corpus examples only
D = 64  # the width of L1.ffn in the tiny BERT


def _dictionary(path):
    """A TopK SAE on L1.ffn (SAELens's own classes). Feature 0 reads neurons 1 and 2 only (weights 2 and -1: k90 2,
    participation ratio 25/17) and writes evenly to all 64 (k90 58, participation ratio 64); feature 1 reads
    neuron 40 alone (which has no page)."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=D, d_sae=64, k=8,
                                metadata=SAEMetadata(model_name="tiny", hook_name="blocks.1.mlp.hook_post")))
    with torch.no_grad():
        sae.W_enc[:, 0] = 0.0
        sae.W_enc[1, 0], sae.W_enc[2, 0] = 2.0, -1.0
        sae.W_dec[0] = 1 / 8
        sae.W_enc[:, 1] = 0.0
        sae.W_enc[40, 1] = 1.0
    sae.save_model(str(path))
    return path


@pytest.fixture(scope="module")
def feature_store(tmp_path_factory):
    """A sweep of 6 features and 4 neurons and corpus examples of 8 features and the 4 neurons, in one folder."""
    root = tmp_path_factory.mktemp("atlas-features")
    model = str(make_tiny_model(root / "tiny", "bert"))
    sae = str(_dictionary(root / "sae"))
    rng = random.Random(0)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
                                for _ in range(30)) + "\n")
    out = root / "store"
    assert main(["sweep", "L1.ffn.f0-5", "L1.ffn.0-3", "--out", str(out), "--dictionary", sae, "--steps", "8",
                 "--restarts", "2", "--model", model]) == 0
    assert main(["examples", "L1.ffn.f0-7", "L1.ffn.0-3", "--out", str(out), "--dictionary", sae, "--model", model,
                 "--corpus", str(corpus), "--max-length", "8", "--top", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def rows(feature_store):
    return {r["neuron"]: r for r in store.read_table(feature_store).to_pylist()}


@pytest.fixture(scope="module")
def site(feature_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("feature-site") / "atlas"
    assert main(["report", str(feature_store), "--out", str(out)]) == 0
    return out


def _html(site, name: str) -> str:
    return (site / "neurons" / f"{name}.html").read_text(encoding="utf-8")


class Page(HTMLParser):
    """A unit page's h2 headings, the ids of its sections and, in its support section, per side (encoder,
    decoder) the figures' values and the neurons listed: (name, href or None, signed weight)."""

    def __init__(self):
        super().__init__()
        self.headings, self.ids, self.support = [], set(), {}
        self._h2 = self._side = self._unit = self._value = None
        self._num = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "h2":
            self._h2 = ""
        elif tag == "div" and "side" in cls:
            self._side = self.support.setdefault(cls[1], {"values": [], "units": []})
        elif self._side is not None and "unit" in cls:
            self._unit = [tag, "", a.get("href")]
        elif self._side is not None and tag == "div" and "value" in cls:
            self._value = ""
        elif self._side is not None and tag == "td" and "num" in cls:
            self._num = True

    def handle_endtag(self, tag):
        if tag == "h2" and self._h2 is not None:
            self.headings.append(self._h2)
            self._h2 = None
        elif self._unit is not None and tag == self._unit[0]:
            self._side["units"].append([self._unit[1], self._unit[2], None])
            self._unit = None
        elif tag == "div" and self._value is not None:
            self._side["values"].append(self._value)
            self._value = None
        elif tag == "td":
            self._num = False
        elif tag == "table" and self._side is not None:
            self._side = None

    def handle_data(self, data):
        if self._h2 is not None:
            self._h2 += data
        if self._unit is not None:
            self._unit[1] += data
        if self._value is not None:
            self._value += data
        if self._num:
            self._side["units"][-1][2] = float(data)


def page(html: str) -> Page:
    p = Page()
    p.feed(html)
    return p


def _sections(p: Page) -> set[str]:
    """The page's sections by heading, a feature's decoder-direction headings read as a neuron's."""
    return {h.removeprefix("Decoder direction ").capitalize() for h in p.headings} | {f"#{i}" for i in p.ids}


# --------------------------------------------------------------------------- static checks
def test_feature_pages_have_every_section_of_a_neuron_page_and_neuron_support(site):
    neuron = page(_html(site, NEURONS[0]))
    assert {"#real-text", "#scores", "#writes", "Promotes", "Suppresses"} <= _sections(neuron)
    for name in SWEPT:
        html = _html(site, name)
        p = page(html)
        assert _sections(neuron) <= _sections(p), name
        assert {"Decoder direction promotes", "Decoder direction suppresses", "Neuron support"} <= set(p.headings)
        assert "decoder direction" in html and "read out into the vocabulary" in html
        assert set(p.support) == {"encoder", "decoder"}
        assert "dictionary feature on the FFN intermediate neurons" in html and f"feature {name[8:]}" in html
        assert "encoder pre-activation" in html and "the dictionary&#x27;s encoding" in html
        assert "the same read-out of another feature of the same dictionary" in html  # its chance partner
    assert "Neuron support" not in _html(site, NEURONS[0])


def test_support_shows_k90_participation_and_links_the_neurons_with_pages(site, rows):
    sup = rows["L1.ffn.f0"]["support"]  # the dictionary made by hand, as the sweep measured it
    assert sup["d"] == D and sup["encoder"]["k90"] == 2 and sup["decoder"]["k90"] == 58
    assert sup["encoder"]["participation_ratio"] == pytest.approx(25 / 17)
    assert sup["decoder"]["participation_ratio"] == pytest.approx(64)
    p = page(_html(site, "L1.ffn.f0"))
    assert p.support["encoder"]["values"] == [f"2 of {D}", "1.47"]
    assert p.support["decoder"]["values"] == [f"58 of {D}", "64"]
    # the encoder row reads neurons 1 and 2 only, both with pages; zero weights are not listed
    assert p.support["encoder"]["units"] == [["L1.ffn.1", "L1.ffn.1.html", 2.0], ["L1.ffn.2", "L1.ffn.2.html", -1.0]]
    assert [u[0] for u in p.support["decoder"]["units"]] == \
        [f"L1.ffn.{u}" for u in sup["decoder"]["top_units"]]
    for name, href, w in p.support["decoder"]["units"]:  # linked exactly when the atlas has the neuron's page
        assert href == (f"{name}.html" if name in NEURONS else None) and w == pytest.approx(0.125, abs=1e-3)
    # a neuron without a page is plain text
    q = page(_html(site, "L1.ffn.f1"))
    assert q.support["encoder"]["units"] == [["L1.ffn.40", None, 1.0]]
    for name, href, _ in q.support["decoder"]["units"]:
        assert href == (f"{name}.html" if name in NEURONS else None)
        assert href is None or (site / "neurons" / href).is_file()


def test_features_with_real_text_only_get_their_support_from_the_dictionary(site):
    for name in FEATURES[len(SWEPT):]:
        html = _html(site, name)
        p = page(html)
        assert "does not include this feature" in html and "#real-text" in _sections(p)
        assert "Neuron support" in p.headings and set(p.support) == {"encoder", "decoder"}


def test_feature_names_parse_everywhere(site, feature_store):
    manifest, srows = read_rows(feature_store)  # no "malformed neuron name"
    assert {r["neuron"] for r in srows} == set(SWEPT + NEURONS)
    assert [r["neuron"] for r in realtext.neurons(feature_store)] == NEURONS + FEATURES  # ffn, then ffn.f
    assert is_canonical("L1.ffn.f3", 1, "ffn.f", 3) and is_canonical("L1.ffn.3", 1, "ffn", 3)
    assert not is_canonical("L1.ffn.f3", 1, "ffn", 3) and not is_canonical("L1.bad.f3", 1, "bad.f", 3)
    assert not is_canonical(None, 1, "ffn", 3)
    text = (site / "data" / "neurons.js").read_text(encoding="utf-8")
    data = json.loads(text[text.index("{"):text.rindex("}") + 1])
    col = {c: i for i, c in enumerate(data["columns"])}
    got = {r[col["neuron"]]: (r[col["layer"]], r[col["site"]], r[col["unit"]]) for r in data["rows"]}
    assert got == {**{f"L1.ffn.{u}": (1, "ffn", u) for u in range(4)}, **{f"L1.ffn.f{u}": (1, "ffn.f", u)
                                                                            for u in range(8)}}
    assert {p.stem for p in (site / "neurons").glob("*.html")} == set(NEURONS + FEATURES)
    # neighbours: a feature's page links the features beside it
    f1 = _html(site, "L1.ffn.f1")
    assert 'href="L1.ffn.f0.html"' in f1 and 'href="L1.ffn.f2.html"' in f1
    assert 'href="L1.ffn.f4.html"' in _html(site, "L1.ffn.f5")  # f6 has real text only: still a page
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "<td>L1</td><td>ffn.f</td><td>6</td>" in index  # the Q1 table's row of the features
    meta = json.loads(re.search(r'id="atlas-meta">(.*?)</script>', index).group(1))
    assert meta["features"] is True
    assert '<select id="units"' in index
    assert "10 units (4 neurons, 6 dictionary features)" in index


def test_index_lists_the_dictionaries(site, feature_store):
    index = (site / "index.html").read_text(encoding="utf-8")
    [d] = store.read_manifest(feature_store)["dictionaries"]
    section = index[index.index('<section id="dictionaries">'):]
    section = section[:section.index("</section>")]
    for key in ("site", "width", "architecture", "k", "path", "fingerprint"):
        assert f"<td>{d[key]}</td>" in section, key
    assert d["site"] == "L1.ffn" and d["architecture"] == "topk" and d["k"] == 8
    assert '<a href="#dictionaries">' in index


def test_notebook_card_of_a_feature_shows_its_support(feature_store, rows):
    manifest = store.read_manifest(feature_store)
    r = store.row_to_result(rows["L1.ffn.f0"], "tiny", "wordpiece", manifest["model"]["model_type"])
    html = r._repr_html_()
    p = page(html)
    assert "Neuron support" in p.headings and p.support["encoder"]["values"] == [f"2 of {D}", "1.47"]
    assert [u[:2] for u in p.support["encoder"]["units"]] == [["L1.ffn.1", None], ["L1.ffn.2", None]]
    assert 'href="' not in html and "Decoder direction promotes" in html
    assert "Neuron support" not in store.row_to_result(rows["L1.ffn.0"], "tiny", "wordpiece")._repr_html_()
    ex = examples_html(ex_store.find_examples(feature_store, "L1.ffn.f3"))
    assert "layer 1" in ex and "dictionary feature on the FFN intermediate neurons" in ex and "feature 3" in ex


# --------------------------------------------------------------------------- browser
@pytest.mark.browser
def test_feature_page_in_a_browser(browser, site):  # noqa: F811
    srv = make_server(site, 0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        pg = _page(browser)
        _open_index(pg, f"http://127.0.0.1:{srv.server_address[1]}/")
        assert pg.locator("#count").text_content() == f"{len(NEURONS + FEATURES)} units"
        assert pg.locator("#table thead th").all_text_contents()[:2] == ["neuron", "site"]
        assert pg.locator("#dictionaries").is_visible()
        pg.select_option("#units", "features")
        assert _table_names(pg) == FEATURES and "units=features" in pg.url
        pg.select_option("#units", "neurons")
        assert _table_names(pg) == NEURONS
        pg.select_option("#units", "all")
        pg.click("th[data-key=site] button")  # by site: the neurons (ffn) first, then the features (ffn.f)
        assert _table_names(pg) == NEURONS + FEATURES
        assert pg.locator("#table tbody tr.feature td.site").first.text_content() == "ffn.f"
        pg.locator("#table a:text-is('L1.ffn.f0')").click()
        pg.wait_for_selector("#support")
        for sel in ("#real-text ol.contexts.top li", "#scores", "#writes", "#support table.support",
                    "#support .side.encoder .supportcards"):
            assert pg.locator(sel).first.is_visible(), sel
        assert pg.locator("#support .side.encoder a.unit").all_text_contents() == ["L1.ffn.1", "L1.ffn.2"]
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=ARTIFACTS / "atlas-feature.png", full_page=True)
        pg.locator("#support .side.encoder a.unit").first.click()  # to the neuron that carries it
        pg.wait_for_selector("h1")
        assert pg.locator("h1").text_content() == "L1.ffn.1" and pg.locator("#support").count() == 0
        assert pg.errors == []
        pg.context.close()
    finally:
        srv.shutdown()
        srv.server_close()
