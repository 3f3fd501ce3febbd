"""The atlas's Q2 page on real text (q2.html): built from the records of a real ``run_probe`` on a tiny BERT and a
corpus written here (neurons at L0-1.ffn and L1.out, a dictionary's features at L1.ffn), with FT beside the probe from
an encode document that follows ``neurotext encode``'s layout (its summaries made by encode's own functions; the
ranks set by hand so that one word is recovered and one is not). Every number on the page is checked against the
JSON, every curve's points against the records, FT's marks against the encode document; the skipped words are
listed with their reasons (one of them markup); a folder of probe results alone builds an atlas; the page renders in
Chromium from file:// and from the server."""

from __future__ import annotations

import json
import os
import threading
from html.parser import HTMLParser

import numpy as np
import pytest
from test_report import ARTIFACTS, _page, browser  # noqa: F401

from neurotext.analysis.encode import smallest_k, smallest_k_summary, summarize
from neurotext.analysis.probe import run_probe, write_outputs
from neurotext.atlas import serve
from neurotext.atlas.pages import PROBE_ONLY_NOTE, esc
from neurotext.atlas.probes import read_probe
from neurotext.atlas.serve import make_server
from neurotext.cli import main

from conftest import WORDS, make_tiny_model

LAYERS = (0, 1)
PROBED = ["rain", "king", "blue"]
HOSTILE = "<script>window.__xss=1</script>"
SKIPPED = ["rains", "zebra", HOSTILE]  # two WordPiece tokens; not in the vocabulary; markup (many tokens)
ENCODE_KS = (1, 4, 16, 64)
RECOVERED = {("rain", 1): 16, ("blue", 0): 4, ("blue", 1): 64}  # FT's smallest k (z-score units); else never


def _corpus(rng) -> list[str]:
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 14)), p=p / p.sum())) for _ in range(240)]


def _encode_doc(model_name: str) -> dict:
    """An encode document with the layout of ``run_encode``'s: per_word rows set by hand, the summaries made by
    encode's own functions."""
    per_word = []
    for layer in LAYERS:
        for w in PROBED:
            for select in ("zscore", "random"):
                for k in ENCODE_KS:
                    first = RECOVERED.get((w, layer)) if select == "zscore" else None
                    rank = 1 if first is not None and k >= first else 3 + ENCODE_KS.index(k) * 7
                    per_word.append({"word": w, "token": w, "layer": layer, "select": select, "k": k, "rank": rank,
                                     "cosine": 0.5, "value": 0.9, "nearest": [w]})
    selects, layers, ks = ["zscore", "random"], list(LAYERS), list(ENCODE_KS)
    doc = {"model": model_name, "site": "ffn", "width": 64, "objective": "pattern", "layers": layers, "ks": ks,
           "select": selects, "words": PROBED, "skipped": [], "word_source": "given", "vocab_size": len(WORDS) + 6,
           "results": summarize(per_word, layers, selects, ks), "per_word": per_word,
           "smallest_k": smallest_k(per_word)}
    doc["smallest_k_summary"] = smallest_k_summary(doc["smallest_k"], layers, selects, len(PROBED))
    return doc


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    """A folder of Q2 results only: DIR/probe (neurotext probe --out, from run_probe) and DIR/encode/encode.json."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from neurotext import load_model
    from neurotext.corpus import open_corpus

    root = tmp_path_factory.mktemp("atlas-probe")
    model_dir = make_tiny_model(root / "bert", "bert", words=WORDS + ["##s"])
    (root / "corpus.txt").write_text("\n".join(_corpus(np.random.default_rng(0))) + "\n")
    torch.manual_seed(0)
    TopKSAE(TopKSAEConfig(d_in=64, d_sae=128, k=8, metadata=SAEMetadata(
        hook_name="blocks.1.mlp.hook_post", model_name="bert"))).save_model(str(root / "dictionary"))
    model = load_model(str(model_dir), device="cpu")
    model.attach(str(root / "dictionary"))
    encode = _encode_doc(model.name)
    out = root / "store"
    (out / "encode").mkdir(parents=True)
    (out / "encode" / "encode.json").write_text(json.dumps(encode))
    corpus = open_corpus(str(root / "corpus.txt"))
    result = run_probe(model, PROBED + SKIPPED, "L0-1.ffn,L1.out", corpus, encode=encode, progress=False)
    write_outputs(result.records, out / "probe")
    return {"dir": out, "model": model_dir, "records": read_probe(out / "probe" / "probe.json"), "encode": encode,
            "root": root}


@pytest.fixture(scope="module")
def site(probe_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe-site") / "atlas"
    assert main(["report", str(probe_dir["dir"]), "--out", str(out)]) == 0
    return out


class Q2Page(HTMLParser):
    """What the Q2 page shows: per word section its word, charts (caption, polylines with their points and title,
    FT marks, FT's line) and table rows (per (layer, site, units): each value's data-key -> (text, title)); the
    skipped table; every link."""

    def __init__(self):
        super().__init__()
        self.words: dict[str, dict] = {}
        self.skipped: list[list[str]] = []
        self.links: list[str] = []
        self._word = self._chart = self._row = self._v = self._text = None
        self._cell: list[str] | None = None
        self._in_skipped = False
        self._title_for = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "section" and "q2word" in cls:
            self._word = {"id": a["id"], "word": "", "charts": {}, "rows": {}}
        elif tag == "section" and a.get("id") == "skipped":
            self._in_skipped = True
        elif self._in_skipped and tag == "tr":
            self._cell = []
            self.skipped.append(self._cell)
        elif self._in_skipped and tag == "td":
            self._cell.append("")
        elif self._word is not None and tag == "span" and "word" in cls:
            self._text = "word"
        elif tag == "figcaption":
            self._text = "caption"
        elif tag == "svg" and "apk" in cls:
            self._chart = {"lines": {}, "ft": [], "ft_line": None}
        elif tag == "polyline" and self._chart is not None:
            pts = [tuple(map(float, p.split(","))) for p in a["points"].split()]
            line = {"points": pts, "title": ""}
            self._chart["lines"][(a["data-units"], a["data-curve"])] = line
            self._title_for = line
        elif tag == "circle" and "ft" in cls and self._chart is not None:
            self._chart["ft"].append((a["data-select"], int(a["data-k"]), int(a["data-rank"]), cls[1]))
        elif tag == "line" and "ftk" in cls:
            self._chart["ft_line"] = {"title": ""}
            self._title_for = self._chart["ft_line"]
        elif tag == "tr" and "data-units" in a and self._word is not None:
            self._row = {}
            self._word["rows"][(int(a["data-layer"]), a["data-site"], a["data-units"])] = self._row
        elif tag == "span" and "v" in cls and self._row is not None:
            self._v = [a["data-key"], "", a.get("title")]
            self._row[a["data-key"]] = self._v

    def handle_endtag(self, tag):
        if tag == "svg" and self._chart is not None:
            self._word["charts"][self._caption] = self._chart
            self._chart = None
        elif tag in ("polyline", "line"):
            self._title_for = None
        elif tag == "span":
            self._v = None
            if self._text == "word":
                self._text = None
        elif tag == "figcaption":
            self._text = None
        elif tag == "tr":
            self._row = None
        elif tag == "section" and self._word is not None:
            self.words[self._word["word"]] = self._word
            self._word = None
        elif tag == "section":
            self._in_skipped = False

    def handle_data(self, data):
        if self._text == "word":
            self._word["word"] += data
        elif self._text == "caption":
            self._caption = data
        if self._title_for is not None:
            self._title_for["title"] += data
        if self._v is not None:
            self._v[1] += data
        if self._in_skipped and self._cell:
            self._cell[-1] += data


def _parse(html: str) -> Q2Page:
    p = Q2Page()
    p.feed(html)
    return p


def _done(records):
    return [r for r in records if "skipped" not in r]


# --------------------------------------------------------------------------- static checks (no browser)
def test_q2_page_is_written_and_linked_from_the_index(site, probe_dir):
    assert (site / "q2.html").is_file()
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="q2.html"' in index and 'href="#q2-text"' in index and 'id="q2-text"' in index
    marker = json.loads((site / "atlas.json").read_text())
    assert marker["probe"] == str(probe_dir["dir"] / "probe" / "probe.json")
    assert marker["encode"] == str(probe_dir["dir"] / "encode" / "encode.json")
    page = (site / "q2.html").read_text(encoding="utf-8")
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert 'href="index.html"' in page


def test_every_probed_word_shows_its_curves_and_numbers(site, probe_dir):
    records, page = probe_dir["records"], _parse((site / "q2.html").read_text(encoding="utf-8"))
    done = _done(records)
    assert {r["word"] for r in done} == set(PROBED) and set(page.words) == set(PROBED)
    assert {(r["layer"], r["site"], r["units"]) for r in done} == {(0, "ffn", "neurons"), (1, "ffn", "neurons"),
                                                                    (1, "ffn", "features"), (1, "out", "neurons")}
    for r in done:
        w = page.words[r["word"]]
        row = w["rows"][(r["layer"], r["site"], r["units"])]
        exact = {"ap_full": r["ap_full"], "auroc_full": r["auroc_full"], "chance_ap": r["chance_ap"],
                 "k95": r["k95"], "k99": r["k99"], "random_k95": r["random_k95"], "random_k99": r["random_k99"],
                 "selectivity": r["selectivity"], "best_single_ap": r["best_single"]["ap"],
                 "control_ap": r["control"]["ap_full"], "positives_train": r["positives_train"],
                 "positives_test": r["positives_test"]}
        for key, value in exact.items():
            _, text, title = row[key]
            assert title is not None and float(title) == value, (r["word"], key)
            assert text == (str(value) if isinstance(value, int) else format(value, "+.3f" if key == "selectivity"
                                                                                   else ".3f"))
        # the chart of this layer and site: each curve's points are the record's APs by k (log2 x, AP y)
        chart = w["charts"][f"L{r['layer']}.{r['site']}"]
        for key in ("ap_by_k", "random_ap_by_k"):
            line = chart["lines"][(r["units"], key)]
            pts = sorted((int(k), v) for k, v in r[key].items() if v is not None)
            assert len(line["points"]) == len(pts)
            xs, ys = [x for x, _ in line["points"]], [y for _, y in line["points"]]
            assert xs == sorted(xs)
            zero, one = _ys_of()  # y grows downwards: AP 0 at the axis, AP 1 at the top
            for (k, v), y in zip(pts, ys):
                assert (zero - y) / (zero - one) == pytest.approx(v, abs=0.01), (r["word"], key, k)
            assert line["title"].endswith(", ".join(f"{k}: {v:.4g}" for k, v in pts))


def _ys_of() -> tuple[float, float]:
    """The y pixel of AP 0 and AP 1 in a chart (its geometry: see neurotext.atlas.probes.curve_svg)."""
    from neurotext.atlas.probes import curve_svg

    svg = curve_svg({"neurons": {"ap_by_k": {"1": 0.0, "2": 1.0}, "random_ap_by_k": {}, "width": 2}}, None, "x")
    pts = _parse(f'<section class="q2word" id="w0"><span class="word">x</span><figure><figcaption>c</figcaption>'
                 f'{svg}</figure></section>').words["x"]["charts"]["c"]["lines"][("neurons", "ap_by_k")]["points"]
    return pts[0][1], pts[1][1]


def test_ft_beside_the_probe(site, probe_dir):
    """FT's rank at every k of the encode document under each chart of its site; its smallest recovering k as a
    line and in the table (the probe's own --encode block, with the units FT and the probe share)."""
    records, encode = probe_dir["records"], probe_dir["encode"]
    page = _parse((site / "q2.html").read_text(encoding="utf-8"))
    for word in PROBED:
        for layer in LAYERS:
            chart = page.words[word]["charts"][f"L{layer}.ffn"]
            want = sorted((r["select"], r["k"], r["rank"]) for r in encode["per_word"]
                          if r["word"] == word and r["layer"] == layer)
            assert sorted((s, k, rank) for s, k, rank, _ in chart["ft"]) == want
            for _, _, rank, cls in chart["ft"]:
                assert cls == ("hit" if rank == 1 else "top" if rank <= 10 else "miss")
            k = RECOVERED.get((word, layer))
            if k is None:
                assert chart["ft_line"] is None
            else:
                assert chart["ft_line"]["title"] == f"FT recovers the word from k = {k} units"
            rec = next(r for r in _done(records) if (r["word"], r["layer"], r["site"], r["units"]) ==
                       (word, layer, "ffn", "neurons"))
            assert rec["ft"]["k"] == k  # the probe's --encode read the same document
            row = page.words[word]["rows"][(layer, "ffn", "neurons")]
            assert row["ft_k"][1] == (str(k) if k is not None else "never")
            if k is not None:
                assert int(row["ft_shared"][2]) == rec["ft"]["shared"]
                assert float(row["ft_jaccard"][2]) == rec["ft"]["jaccard"]
                assert float(row["ft_chance_shared"][2]) == rec["ft"]["chance_shared"]
        assert page.words[word]["charts"]["L1.out"]["ft"] == []  # encode ran on ffn only


def test_skipped_words_are_listed_with_their_reasons(site, probe_dir):
    skipped = [r for r in probe_dir["records"] if "skipped" in r]
    assert [r["word"] for r in skipped] == SKIPPED
    html = (site / "q2.html").read_text(encoding="utf-8")
    page = _parse(html)
    assert page.skipped[1:] == [[r["word"], r["skipped"]] for r in skipped]  # [0]: the header row
    assert HOSTILE not in html and esc(HOSTILE) in html
    assert "not a single token" in skipped[0]["skipped"] and "not in the vocabulary" in skipped[1]["skipped"]


def test_index_section_summarizes_per_layer_and_site(site, probe_dir):
    index = (site / "index.html").read_text(encoding="utf-8")
    section = index[index.index('id="q2-text"'):]
    section = section[:section.index("</section>")]
    # L0.ffn neurons: the median k95 over the three words, as observed ks
    ks = sorted(r["k95"] for r in _done(probe_dir["records"]) if (r["layer"], r["site"], r["units"]) ==
                (0, "ffn", "neurons"))
    assert f"<td>L0</td><td>ffn</td><td>neurons (64)</td><td>3</td><td>{ks[1]}" in section
    # FT's smallest k over the words, a word never recovered larger than every k: L0 blue 4, rain and king never;
    # L1 rain 16, blue 64, king never
    assert "<td>never [4\u2013never] (1/3)</td>" in section and "<td>64 [16\u2013never] (2/3)</td>" in section


def test_probe_only_folder_builds_an_atlas_and_serves(site, probe_dir):
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'id="neurons"' not in index and "atlas.js" not in index and esc(PROBE_ONLY_NOTE) in index
    assert not any((site / "neurons").iterdir())
    marker = json.loads((site / "atlas.json").read_text())
    assert marker["sweep"] is False and marker["examples"] is False and marker["neurons"] == 0
    built = serve.site_for(probe_dir["dir"], log=lambda m: None)
    assert built == probe_dir["dir"] / "site" and (built / "q2.html").is_file()
    logs = []
    assert serve.site_for(probe_dir["dir"], log=logs.append) == built and "up to date" in logs[0]
    probe_json = probe_dir["dir"] / "probe" / "probe.json"
    st = probe_json.stat()
    os.utime(probe_json, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # new probe results: built again
    serve.site_for(probe_dir["dir"], log=logs.append)
    assert any("written to" in m for m in logs[1:])


def test_probe_flag_beside_a_sweep_links_the_units_with_pages(probe_dir, tmp_path):
    store_dir = tmp_path / "store"
    assert main(["sweep", "L1.ffn.0-63", "--model", str(probe_dir["model"]), "--out", str(store_dir), "--steps", "2",
                 "--restarts", "1"]) == 0
    out = tmp_path / "atlas"
    assert main(["report", str(store_dir), "--out", str(out), "--probe", str(probe_dir["dir"] / "probe")]) == 0
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="neurons"' in index and 'href="q2.html"' in index and "atlas.js" in index
    page = _parse((out / "q2.html").read_text(encoding="utf-8"))
    units = [h for h in page.links if h.startswith("neurons/")]
    assert units and all((out / h).is_file() for h in units)
    assert {h.split("/")[1].rsplit(".", 2)[0] for h in units} == {"L1.ffn"}  # only the swept layer has pages
    assert json.loads((out / "atlas.json").read_text())["sweep"] is True


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ({"word": "rain"}, "not neurotext probe results"),
    ([{"word": "rain", "layer": 0, "site": "attn", "units": "neurons", "width": 4, "ap_by_k": {},
       "random_ap_by_k": {}}], "malformed probe record"),
])
def test_bad_probe_results_one_line_exit_2(capsys, probe_dir, tmp_path, content, message):
    path = tmp_path / "probe.json"
    if content is not None:
        path.write_text(json.dumps(content))
    assert main(["report", str(probe_dir["dir"]), "--out", str(tmp_path / "s"), "--probe", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurotext: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- browser
@pytest.mark.browser
def test_q2_page_renders_from_file_and_from_the_server(browser, site, probe_dir):  # noqa: F811
    done = _done(probe_dir["records"])
    charts = {(r["word"], r["layer"], r["site"]) for r in done}
    srv = make_server(site, 0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        for url in (f"http://127.0.0.1:{srv.server_address[1]}/", site.resolve().as_uri() + "/"):
            page = _page(browser, bypass_csp=True)  # escaping alone must hold
            page.goto(url + "q2.html")
            assert page.locator("h1").text_content() == "Q2 on real text"
            assert page.locator("svg.apk").count() == len(charts)
            assert page.locator("svg.apk polyline").count() == 2 * len(done)
            assert page.locator("section.q2word h3 .word").all_text_contents() == PROBED
            assert page.locator("#skipped td:nth-child(1)").all_text_contents() == SKIPPED
            box = page.locator("svg.apk").first.bounding_box()
            assert box["width"] > 200 and box["height"] > 100
            assert page.evaluate("window.__xss") is None and page.dialogs == [] and page.errors == []
            if url.startswith("http"):
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=ARTIFACTS / "atlas-q2.png", full_page=True)
                page.click("nav.crumbs >> text=atlas index")
                page.click("#q2-text a[href='q2.html']")
                assert page.url.endswith("/q2.html")
            page.context.close()
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.browser
def test_probe_only_index_loads(browser, site):  # noqa: F811
    page = _page(browser)
    page.goto(site.resolve().as_uri() + "/index.html")
    assert page.locator("#q2-text table tbody tr").count() == 4
    assert page.locator("#neurons").count() == 0 and page.errors == []
    page.context.close()
