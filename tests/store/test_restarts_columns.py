"""Per-restart results in the store: round trip through show, and stores written before they existed."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from neurotext import FTConfig, Textualizer, store
from neurotext.cli import main
from neurotext.store.sweep import run_sweep


@pytest.fixture(scope="module")
def swept(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("restarts") / "store"
    cfg = FTConfig(steps=12, restarts=3)
    run_sweep(["L0-1.ffn.0-5", "L1.out.0-2"], out, model=str(tiny_models["bert"]), config=cfg, cache_dir=False,
              log=lambda m: None)
    return out, cfg


@pytest.fixture()
def old_store(swept, tmp_path):
    """The same store as written before per-restart results were kept."""
    out, _ = swept
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for p in store.shard_paths(old):
        pq.write_table(pq.read_table(p).drop_columns(list(store.RESTART_COLUMNS)), p)
    return old


def test_show_json_round_trips_every_restart(swept, tiny_models, capsys):
    out, cfg = swept
    [want] = Textualizer(str(tiny_models["bert"]), cfg, cache_dir=False, progress=False).run("L1.ffn.4")
    assert main(["show", str(out), "L1.ffn.4", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["stability"]["restarts"] == want.stability["restarts"]
    assert got["stability"]["consensus"] == json.loads(json.dumps(want.stability["consensus"]))
    assert [d["restart"] for d in got["restarts_detail"]] == [d["restart"] for d in want.restarts_detail]
    for g, w in zip(got["restarts_detail"], want.restarts_detail):
        # a sweep optimizes neurons in batches, this run one alone: equal up to float32 rounding of the products
        np.testing.assert_allclose(g["vector"], w["vector"], rtol=1e-6, atol=1e-6 * np.abs(w["vector"]).max())
        assert [t["id"] for t in g["nearest"]] == [t["id"] for t in w["nearest"]]
        assert g["activation"] == pytest.approx(w["activation"], rel=1e-5)
    assert main(["show", str(out), "L1.ffn.4", "--json", "--no-vector"]) == 0
    slim = json.loads(capsys.readouterr().out)
    assert slim["vector"] is None and all("vector" not in d for d in slim["restarts_detail"])


def test_show_table_leads_with_the_consensus(swept, capsys):
    out, _ = swept
    assert main(["show", str(out), "L0.ffn.1"]) == 0
    text = capsys.readouterr().out
    assert "stability:" in text and "consensus of restarts" in text and "every restart, best first" in text


def test_old_store_opens_everywhere_and_says_what_is_missing(old_store, capsys):
    assert main(["show", str(old_store), "L1.ffn.4"]) == 0
    text = capsys.readouterr().out
    assert "stability: not in this store" in text and "--force" in text
    assert main(["show", str(old_store), "L1.ffn.4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["stability"] is None and doc["restarts_detail"] == []
    assert main(["query", str(old_store), "SELECT count(*) AS n FROM neurons", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 15}]
    assert main(["words", str(old_store), "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert "Traceback" not in captured.err
    assert "stability arm is not available" in doc["stability"]["note"]
    assert all(g["stability"] is None for g in doc["groups"])
    assert main(["words", str(old_store)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("stability:")]
    assert len(lines) == 1 and "--force" in lines[0]


def test_resuming_an_old_store_is_refused_with_the_reason(old_store, tiny_models, swept, capsys):
    """A store from before the change was made with other settings (no stability_tol): resume refuses."""
    import neurotext.store.layout as layout

    manifest = layout.read_manifest(old_store)
    manifest["config"].pop("stability_tol")
    layout.write_manifest(old_store, manifest)
    _, cfg = swept
    code = main(["sweep", "L0-1.ffn.0-5", "L1.out.0-2", "--out", str(old_store), "--model", str(tiny_models["bert"]),
                 "--steps", "12", "--restarts", "3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--force" in err and "Traceback" not in err
