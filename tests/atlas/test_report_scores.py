"""Atlas of a store with a sweep and corpus examples: every read-out's scores on held-out text beside its chance
level, on each neuron page (equal to :func:`neurotext.analysis.scores.corpus_arm`'s record), as sortable columns
of the index, and as per-layer figures and tables; an atlas of either half alone has no score sections."""

from __future__ import annotations

import json
import random
import shutil
import threading
from html.parser import HTMLParser

import pytest
from test_report import _open_index, _page, browser  # noqa: F401

from neurotext.analysis import scores
from neurotext.atlas import pages, readouts
from neurotext.atlas.readouts import scores_section
from neurotext.atlas.report import CORPUS_PLOTS
from neurotext.atlas.serve import make_server
from neurotext.cli import main
from neurotext.display.card import Chips, fmt
from neurotext.model.tokens import display_token
from neurotext.store import examples as ex_store

from conftest import WORDS

SWEPT = [f"L1.ffn.{u}" for u in range(4)]
WITH_EXAMPLES = [f"L1.ffn.{u}" for u in range(6)]  # L1.ffn.4-5: corpus examples only
SORTED = ["score_lookup", "score_ft_nearest", "score_ft_best", "omega_squared"]


@pytest.fixture(scope="module")
def scored_store(tmp_path_factory, tiny_models):
    """A sweep (with phrases) of 4 neurons and corpus examples of 6 in one folder: tiny BERT, a small corpus."""
    root = tmp_path_factory.mktemp("atlas-scores")
    rng = random.Random(1)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
                                for _ in range(60)) + "\n")
    model, out = str(tiny_models["bert"]), root / "store"
    assert main(["sweep", "L1.ffn.0-3", "--model", model, "--out", str(out), "--steps", "4", "--restarts", "3",
                 "--phrases", "1,2", "--iters", "1"]) == 0
    assert main(["examples", "L1.ffn.0-5", "--model", model, "--corpus", str(corpus), "--out", str(out),
                 "--max-length", "8", "--top", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def arm(scored_store):
    emb = scores.store_unit_embeddings(scored_store)
    assert emb is not None  # the tiny model is a local folder: the vector read-outs are scored
    return scores.corpus_arm(scored_store, scored_store, emb, seed=0)  # the sweep's seed


@pytest.fixture(scope="module")
def site(scored_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("scores-site") / "atlas"
    assert main(["report", str(scored_store), "--out", str(out)]) == 0
    return out


class ScoreTables(HTMLParser):
    """The read-out table of a neuron page: per ``data-readout`` row, its token chips and number cells; and the
    measures table: per ``data-measure`` row, its cells."""

    def __init__(self):
        super().__init__()
        self.readouts: dict[str, dict] = {}
        self.measures: dict[str, list[str]] = {}
        self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "tr" and "data-readout" in a:
            self._row = self.readouts.setdefault(a["data-readout"], {"tokens": [], "cells": []})
        elif tag == "tr" and "data-measure" in a:
            self._row = {"tokens": [], "cells": []}
            self.measures[a["data-measure"]] = self._row["cells"]
        elif self._row is not None and tag == "td":
            self._cell = ["td", ""]
        elif self._row is not None and tag in ("a", "span") and "tok" in cls:
            self._cell = ["tok", ""]

    def handle_endtag(self, tag):
        if self._cell is not None and ((tag == "td" and self._cell[0] == "td") or
                                       (tag in ("a", "span") and self._cell[0] == "tok")):
            kind, text = self._cell
            self._row["cells" if kind == "td" else "tokens"].append(text)
            self._cell = ["td", ""] if kind == "tok" else None
        elif tag == "tr":
            self._row = self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


def _page_tables(site, name) -> tuple[str, ScoreTables]:
    text = (site / "neurons" / f"{name}.html").read_text(encoding="utf-8")
    parsed = ScoreTables()
    parsed.feed(text)
    return text, parsed


def _data(site) -> tuple[dict, list]:
    data = json.loads((site / "data" / "neurons.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    return {c: i for i, c in enumerate(data["columns"])}, data["rows"]


# --------------------------------------------------------------------------- pages (no browser)
def test_neuron_page_lists_every_readout_beside_chance_as_the_arm_computes(site, arm, scored_store):
    assert arm.readouts == list(scores.READOUTS)  # every read-out: vectors (model here) and phrases (--phrases)
    by = {r["neuron"]: r for r in arm.neurons}
    assert set(by) == set(SWEPT)
    for name in SWEPT:
        rec, ex = by[name], ex_store.find_examples(scored_store, name)
        text, page = _page_tables(site, name)
        assert "<script" not in text.lower() and 'id="scores"' in text
        assert list(page.readouts) == arm.readouts
        for readout, shown in page.readouts.items():
            s, c = rec["scores"][readout], rec["scores"][readout + scores.CHANCE]
            want = [fmt(v, ".3f") for stat in scores.SCORES for v in (s[stat], c[stat])]
            assert shown["cells"][1:] == want, (name, readout)
        # the tokens beside a token-set read-out are the ones scored: the lookup table's, the FT nearest tokens
        lookup = [d["token"] for d in ex.token_stats["lookup"]][:scores.K]
        assert page.readouts["corpus_lookup"]["tokens"] == [display_token(t, "wordpiece") or "\u2205"
                                                            for t in lookup]
        assert len(page.readouts["ft_nearest"]["tokens"]) == scores.K
        assert page.readouts["ft_vector"]["tokens"] == ["vector"]
        ev = rec["evaluation"]
        assert f"{ev['top']} top + {ev['random']} random test contexts, {ev['positions']} text positions" in text
        m = page.measures
        assert m["token identity \u03c9\u00b2"][0] == fmt(rec["omega_squared"], ".3f")
        assert fmt(rec["omega_squared_permuted"], ".3f") in m["token identity \u03c9\u00b2"][1]
        assert m["FT activation / corpus max"][0] == fmt(rec["optimization"]["ft"], ".3g")
        assert m["best real token / corpus max"][0] == fmt(rec["optimization"]["scan_best"], ".3g")
        for n, v in rec["optimization"]["phrase"].items():
            key = f"best phrase of {n} token{'s' if n != '1' else ''} / corpus max"
            assert m[key][0] == fmt(v, ".3g")
    for name in set(WITH_EXAMPLES) - set(SWEPT):  # real text only: nothing to score
        text, page = _page_tables(site, name)
        assert 'id="real-text"' in text and 'id="scores"' not in text and not page.readouts


def test_index_has_score_columns_figures_and_median_tables(site, arm):
    col, rows = _data(site)
    by = {r["neuron"]: r for r in arm.neurons}
    assert all(c in col for c in readouts.DATA_COLUMNS)
    for row in rows:
        name = row[col["neuron"]]
        got = [row[col[c]] for c in readouts.DATA_COLUMNS]
        assert all(v is None or isinstance(v, (int, float)) for v in got)  # numbers only
        if name not in by:
            assert got[:-2] == [None] * (len(got) - 2) and got[-2] is not None  # the token identity from examples
            continue
        rec = by[name]
        s = rec["scores"]
        best = max(s[r]["correlation"] for r in readouts.FT_READOUTS if s[r]["correlation"] is not None)
        want = [s["corpus_lookup"]["correlation"], s["corpus_lookup_chance"]["correlation"],
                s["ft_nearest"]["correlation"], s["ft_nearest_chance"]["correlation"], best,
                max(s[r + "_chance"]["correlation"] for r in readouts.FT_READOUTS
                    if s[r + "_chance"]["correlation"] is not None)]
        for g, w in zip(got, want):
            assert g == pytest.approx(w, rel=1e-3, abs=1e-6)
        assert s[readouts.FT_READOUTS[got[6]]]["correlation"] == pytest.approx(best)
        assert got[7] == pytest.approx(rec["omega_squared"], rel=1e-3)
    for rel in CORPUS_PLOTS.values():  # the per-layer figures: real PNG files the index shows
        assert (site / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = (site / "index.html").read_text(encoding="utf-8")
    assert all(f'src="{rel}"' in index for rel in CORPUS_PLOTS.values())
    assert 'id="real-text"' in index and "Which reading predicts real text?" in index
    group = arm.groups[0]["scores"]
    ft = next(r for r in group if r["readout"] == "ft_nearest")
    ch = next(r for r in group if r["readout"] == "ft_nearest_chance")
    assert (f"<td>ft_nearest</td><td>{ft['n']}</td><td>{fmt(ft['correlation']['median'], '.3f')}</td>"
            f"<td>{fmt(ch['correlation']['median'], '.3f')}</td>") in index
    assert readouts.NO_VECTORS_NOTE not in index
    marker = json.loads((site / "atlas.json").read_text())
    assert marker["scores"] is True


def test_without_the_model_token_sets_only_and_the_index_says_so(scored_store, monkeypatch):
    monkeypatch.setattr(scores, "store_unit_embeddings", lambda d: None)
    got = readouts.compute(scored_store, 0, log=[].append)
    assert got.arm is not None and not got.vectors
    assert not set(scores.VECTOR_READOUTS) & set(got.arm.readouts)
    html = pages.real_text_section({"doc": got.arm.to_dict(), "note": got.note, "seed": 0, "plots": {}})
    assert readouts.NO_VECTORS_NOTE.split(":")[0] in html.replace("&#x27;", "'")
    page = scores_section(got.record("L1.ffn.0"))
    assert 'data-readout="ft_nearest"' in page and 'data-readout="ft_vector"' not in page


def test_scores_section_without_a_test_context_and_with_hostile_tokens():
    rec = {"scores": {"ft_nearest": {"correlation": None, "detection_auroc": None},
                      "ft_nearest_chance": {"correlation": None, "detection_auroc": None}},
           "evaluation": None, "omega_squared": 0.4, "omega_squared_permuted": 0.01,
           "optimization": {"ft": 2.0, "scan_best": 0.5, "phrase": {}}}
    html = scores_section(rec, {"ft_nearest": ["<script>alert(1)</script>", '"><b>']}, Chips())
    assert "No test context for this neuron" in html
    assert "<script" not in html and "<b>" not in html and "&lt;script&gt;" in html
    assert html.count('class="num score"') == 2 + 3  # two read-out scores (n/a) and three measures


def test_sweep_alone_and_examples_alone_have_no_score_sections(scored_store, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(scored_store, sweep, ignore=shutil.ignore_patterns("examples"))
    only = tmp_path / "only"
    shutil.copytree(scored_store / "examples", only / "examples")
    for store_dir in (sweep, only):
        out = tmp_path / f"{store_dir.name}-atlas"
        assert main(["report", str(store_dir), "--out", str(out)]) == 0
        index = (out / "index.html").read_text(encoding="utf-8")
        assert 'id="real-text"' not in index and "Which reading predicts" not in index
        assert not (out / "plots" / "corpus_correlation.png").exists()
        assert "score_lookup" not in (out / "data" / "neurons.js").read_text()
        assert '"scores":false' in index.replace(" ", "")
        page = (out / "neurons" / "L1.ffn.0.html").read_text(encoding="utf-8")
        assert 'id="scores"' not in page
        assert json.loads((out / "atlas.json").read_text())["scores"] is False


# --------------------------------------------------------------------------- browser
@pytest.mark.browser
def test_index_score_columns_sort_and_show_their_chance(browser, site):  # noqa: F811
    col, rows = _data(site)
    srv = make_server(site, 0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        page = _page(browser)
        _open_index(page, f"http://127.0.0.1:{srv.server_address[1]}/")
        for key in SORTED:
            values = {r[col["neuron"]]: r[col[key]] for r in rows}
            known = sorted((n for n in values if values[n] is not None), key=lambda n: -values[n])
            for direction in ("descending", "ascending"):  # first click: highest first
                page.click(f'#table thead th[data-key="{key}"] button')
                assert page.get_attribute(f'#table thead th[data-key="{key}"]', "aria-sort") == direction
                names = page.locator("#table tbody td.name a").all_text_contents()
                order = known if direction == "descending" else known[::-1]
                shown = [n for n in names if values[n] is not None]
                assert [values[n] for n in shown] == [values[n] for n in order], (key, direction)
                assert names[len(shown):] == [n for n in names if values[n] is None]  # missing values last
        # each score cell shows its chance level beside it
        page.click('#table thead th[data-key="score_lookup"] button')
        top = page.locator("#table tbody tr").first
        name = top.locator("td.name a").text_content()
        row = next(r for r in rows if r[col["neuron"]] == name)
        heads = page.locator("#table thead th").evaluate_all("ths => ths.map(t => t.getAttribute('data-key'))")
        cell = top.locator("td").nth(heads.index("score_lookup"))
        assert cell.locator(".chance").text_content() == f"{row[col['score_lookup_chance']]:.3f}"
        assert page.errors == []
        page.context.close()
    finally:
        srv.shutdown()
        srv.server_close()
