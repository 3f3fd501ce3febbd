"""docs/tour.ipynb runs from top to bottom on the bundled model (offline) and shows what it promises: a
neuron's card with its tokens, a table of results, phrases, a store queried with DuckDB, a figure."""

from __future__ import annotations

import ast
import base64
import html
from pathlib import Path

import pytest

import neurotext

TOUR = Path(__file__).resolve().parents[2] / "docs" / "tour.ipynb"
CELL_TIMEOUT = 300  # seconds per cell; the whole notebook takes about a minute on two cores


def _outputs(cell, kind: str) -> list[str]:
    """The cell's outputs of one MIME type ("stdout": the printed text)."""
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == kind:
            out.append(o["text"])
        elif kind in o.get("data", {}):
            out.append(o["data"][kind])
    return out


def _cell(nb, source_start: str):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start))


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(TOUR, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "store the tour without outputs"
    work = tmp_path_factory.mktemp("tour")  # the kernel's working directory; it inherits this environment
    nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}}).execute()
    return nb


def test_the_kernel_runs_this_neurotext(tour):
    [line] = [t for t in "".join(_outputs(tour.cells[1], "stdout")).splitlines() if t.startswith("neurotext ")]
    assert line.endswith(f" from {Path(neurotext.__file__).parent}")


def test_the_card_shows_the_neurons_tokens(tour):
    [card] = _outputs(_cell(tour, '[r] = textualize("L2.ffn.40"'), "text/html")
    assert card.startswith('<div class="nt nt-nb"><style>') and "<script" not in card
    assert "<h1>L2.ffn.40</h1>" in card and "Consensus of restarts" in card and "<svg" in card
    [listed] = _outputs(_cell(tour, "print(f\"activation"), "text/plain")
    tokens = ast.literal_eval(listed)
    assert len(tokens) == 10
    for t in tokens:  # WordPiece tokens are shown as they are
        assert f'<span class="tok">{html.escape(t)}</span>' in card


def test_lists_and_phrases_display(tour):
    [table] = _outputs(_cell(tour, "results = textualize("), "text/html")
    assert [f"L2.ffn.{u}" for u in range(40, 46)] == [
        line.split("</td>")[0] for line in table.split('<td class="name">')[1:]]
    [phrases] = _outputs(_cell(tour, "from neurotext.phrases import"), "text/html")
    assert "Best real phrases" in phrases and "<script" not in phrases


def test_the_query_returned_rows_and_the_figure_was_drawn(tour):
    [text] = _outputs(_cell(tour, "rows = by_layer.fetchall()"), "text/plain")
    rows = ast.literal_eval(text)
    assert [r[0] for r in rows] == [0, 1, 2] and all(r[1] == 8 for r in rows)
    [png] = _outputs(_cell(tour, "%matplotlib inline"), "image/png")
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_dictionary_trains_and_its_features_are_units(tour):
    [text] = _outputs(_cell(tour, "from neurotext.dictionaries import"), "stdout")
    assert text.startswith("3072 features: held-out FVU ")
    [ex] = _outputs(_cell(tour, "from neurotext.examples import"), "text/html")
    assert "L2.ffn.f" in ex and "<script" not in ex
    [card] = _outputs(_cell(tour, "[f] = textualize(best.neuron"), "text/html")
    assert "<h1>L2.ffn.f" in card and "Neuron support" in card and "Decoder direction" in card
