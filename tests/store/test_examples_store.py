"""Corpus examples on disk: resumable after SIGKILL, Ray equals local, refusals, the CLI and its bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from neurotext.cli import main
from neurotext.errors import NeurotextError
from neurotext.examples import ExamplesConfig
from neurotext.store import examples as ex_store
from neurotext.store.examples import run_examples

WORDS = ["the", "rain", "sun", "cat", "dog", "run", "blue", "red", "house", "tree", "water", "fire", "stone",
         "bird", "fish", "king", "queen", "city", "road", "ship", "star", "moon", "wind", "snow", "leaf"]


def quiet(*a, **k):
    pass


def sentences(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(n)]


@pytest.fixture()
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(sentences(300)) + "\n")
    return p


CFG = dict(top=4, random=4, per_range=2, max_length=6, chunk_size=16, batch_size=8, hist_every=2)


def rows(out):
    return ex_store.read_rows(out)[1]


def test_store_show_query_and_refusals(tmp_path, tiny_models, corpus, capsys):
    model = str(tiny_models["bert"])
    out = tmp_path / "s"
    s = run_examples("L1.ffn.0-9", out, corpus=str(corpus), model=model, config=ExamplesConfig(**CFG), log=quiet)
    assert s["computed"] and s["neurons"] == 10
    again = run_examples("L1.ffn.0-9", out, corpus=str(corpus), model=model, config=ExamplesConfig(**CFG), log=quiet)
    assert not again["computed"]  # complete: nothing to do
    manifest = ex_store.read_manifest(out)
    assert manifest["status"] == "complete" and manifest["corpus"]["fingerprint"]
    assert manifest["contexts"] == s["contexts"] and not (ex_store.examples_dir(out) / "checkpoint.pt").exists()
    with pytest.raises(NeurotextError, match="another settings"):
        run_examples("L1.ffn.0-9", out, corpus=str(corpus), model=model, config=ExamplesConfig(**{**CFG, "top": 5}),
                     log=quiet)
    other = tmp_path / "other.txt"
    other.write_text("\n".join(sentences(50, seed=1)) + "\n")
    with pytest.raises(NeurotextError, match="another corpus"):
        run_examples("L1.ffn.0-9", out, corpus=str(other), model=model, config=ExamplesConfig(**CFG), log=quiet)
    with pytest.raises(NeurotextError, match="another model"):
        run_examples("L1.ffn.0-9", out, corpus=str(corpus), model=str(tiny_models["distilbert"]),
                     config=ExamplesConfig(**CFG), log=quiet)
    forced = run_examples("L1.ffn.0-9", out, corpus=str(other), model=model, config=ExamplesConfig(**CFG),
                          force=True, log=quiet)
    assert forced["computed"] and ex_store.read_manifest(out)["corpus"]["source"] == str(other)
    # a sweep into the same directory: show and query join both
    assert main(["sweep", "L1.ffn.0-3", "--model", model, "--out", str(out), "--steps", "8", "--restarts", "1"]) == 0
    capsys.readouterr()
    assert main(["show", str(out), "L1.ffn.2"]) == 0
    text = capsys.readouterr().out
    assert "FT nearest tokens" in text and "top contexts" in text
    assert main(["show", str(out), "L1.ffn.2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["neuron"] == "L1.ffn.2" and "nearest" in doc and doc["examples"]["top"]
    assert main(["query", str(out), "SELECT count(*) AS n FROM neurons", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 4}]
    assert main(["query", str(out), "SELECT kind, count(*) AS n FROM examples WHERE neuron = 'L1.ffn.2' "
                 "GROUP BY kind ORDER BY kind", "--json"]) == 0
    kinds = {d["kind"]: d["n"] for d in json.loads(capsys.readouterr().out)}
    assert kinds["top"] == 4 and kinds["random"] == 4 and kinds["top_test"] <= 4
    assert main(["query", str(out), "SELECT n.neuron, n.activation, c.max FROM neurons n JOIN corpus_stats c "
                 "USING (neuron) ORDER BY neuron", "--json"]) == 0
    joined = json.loads(capsys.readouterr().out)
    assert [d["neuron"] for d in joined] == [f"L1.ffn.{u}" for u in range(4)]
    # a sweep of another model refuses examples in its directory
    with pytest.raises(NeurotextError, match="sweep of another model"):
        run_examples("L1.ffn.0", out, corpus=str(corpus), model=str(tiny_models["electra"]),
                     config=ExamplesConfig(**CFG), force=True, log=quiet)


def _cmd(model, corpus, out):
    return [sys.executable, "-m", "neurotext", "examples", "L0-2.ffn.*", "L1.out.*", "--model", str(model), "--corpus",
            str(corpus), "--out", str(out), "--top", "4", "--random", "4", "--per-range", "2", "--max-length", "6",
            "--chunk-size", "16", "--batch-size", "8", "--checkpoint-every", "0", "--device", "cpu"]


def test_sigkill_mid_pass_then_resume_equals_uninterrupted(tmp_path, tiny_models):
    big = tmp_path / "big.txt"
    big.write_text("\n".join(sentences(700, seed=2)) + "\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NEUROTEXT_COMPILE": "0"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(tiny_models["bert"], big, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    ckpt = ex_store.examples_dir(killed) / "checkpoint.pt"
    deadline = time.time() + 240
    seen = set()
    while time.time() < deadline and len(seen) < 3 and proc.poll() is None:
        if ckpt.exists():
            seen.add(ckpt.stat().st_mtime_ns)
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ex_store.read_manifest(killed)["status"] == "running"
    resumed = subprocess.run(_cmd(tiny_models["bert"], big, killed), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the corpus pass at context" in resumed.stderr
    clean = tmp_path / "clean"
    subprocess.run(_cmd(tiny_models["bert"], big, clean), env=env, check=True, capture_output=True)
    got, want = rows(killed), rows(clean)
    assert len(got) == 3 * 64 + 32 and [r["neuron"] for r in got] == [r["neuron"] for r in want]
    assert got == want


def test_ray_equals_local(tmp_path, tiny_models, corpus):
    pytest.importorskip("ray")
    model = str(tiny_models["bert"])
    cfg = ExamplesConfig(**CFG)
    run_examples("L0-1.ffn.0-15", tmp_path / "local", corpus=str(corpus), model=model, config=cfg, log=quiet)
    run_examples("L0-1.ffn.0-15", tmp_path / "ray", corpus=str(corpus), model=model, config=cfg, executor="ray",
                 workers=2, log=quiet)
    a, b = rows(tmp_path / "local"), rows(tmp_path / "ray")
    exact = ["neuron", "contexts", "tokens", "top", "ranges", "random", "top_train", "top_test", "random_train",
             "random_test", "histogram", "context_histogram", "max", "share_positive", "lookup"]
    assert [{k: r[k] for k in exact if k != "lookup"} for r in a] == \
        [{k: r[k] for k in exact if k != "lookup"} for r in b]
    for ra, rb in zip(a, b):  # sums merge per chunk on Ray: the same up to rounding
        for k in ("mean", "std", "omega_squared"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7)
        assert [d["id"] for d in ra["lookup"]] == [d["id"] for d in rb["lookup"]]


def test_ray_with_features_and_a_killed_actor_equals_local(tmp_path, tiny_models, corpus):
    """A Ray pass over neurons and a dictionary's features (the actors attach it by its path), flushing after every
    chunk, where one actor's process dies mid-pass: its chunks since the last flush are folded again by a new actor,
    and the store equals the local one (nothing lost, nothing counted twice)."""
    pytest.importorskip("ray")
    pytest.importorskip("sae_lens")
    from neurotext import load_model
    from neurotext.store import ray_executor

    from conftest import write_sae

    model = load_model(str(tiny_models["bert"]), device="cpu").attach(write_sae(tmp_path / "sae", k=6, d_sae=48))
    cfg = ExamplesConfig(**CFG)
    units = ["L0-1.ffn.0-7", "L1.ffn.f*"]
    run_examples(units, tmp_path / "local", corpus=str(corpus), model=model, config=cfg, log=quiet)
    marker = str(tmp_path / "died")

    class DiesOnce(ray_executor._ExamplesWorker):
        def fold(self, contexts):
            if contexts[0].index >= 3 * CFG["chunk_size"] and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)  # the actor's process dies, its running state with it
            return super().fold(contexts)

    logged = []
    ray_executor_worker = ray_executor._ExamplesWorker
    try:
        ray_executor._ExamplesWorker = DiesOnce
        run_examples(units, tmp_path / "ray", corpus=str(corpus), model=model, config=cfg, executor="ray", workers=2,
                     checkpoint_seconds=0, log=logged.append)
    finally:
        ray_executor._ExamplesWorker = ray_executor_worker
    assert os.path.exists(marker) and any("folded again" in m for m in logged)
    a, b = rows(tmp_path / "local"), rows(tmp_path / "ray")
    assert [r["neuron"] for r in a] == [r["neuron"] for r in b] and len(a) == 16 + 48
    for ra, rb in zip(a, b):
        # sums merged per flush: up to rounding (float32 per-token sums; the permuted omega, near 0, is a
        # difference of nearly equal sums)
        for k, tol in (("mean", 1e-7), ("std", 1e-7), ("omega_squared", 1e-5), ("omega_squared_permuted", 1e-4)):
            x, y = ra.pop(k), rb.pop(k)
            assert (x is None) == (y is None) and (x is None or x == pytest.approx(y, rel=1e-5, abs=tol)), k
        assert [d["id"] for d in ra.pop("lookup")] == [d["id"] for d in rb.pop("lookup")]
        assert ra == rb, ra["neuron"]


def test_cli_table_json_and_formats(tmp_path, tiny_models, capsys):
    model = str(tiny_models["bert"])
    jsonl = tmp_path / "c.jsonl"
    lines = [json.dumps({"body": s}) for s in sentences(40, seed=3)]
    lines.insert(20, "{not json")
    jsonl.write_text("\n".join(lines) + "\n")
    assert main(["examples", "L1.ffn.3", "--model", model, "--corpus", str(jsonl), "--text-column", "body",
                 "--top", "3", "--max-length", "8"]) == 0
    out, err = capsys.readouterr()
    assert "L1.ffn.3" in out and "top contexts" in out and "⟦" in out
    assert "malformed lines 1" in err
    assert main(["examples", "L1.ffn.3", "L0.out.1", "--model", model, "--corpus", str(jsonl), "--text-column", "body",
                 "--top", "3", "--max-length", "8", "--json"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["neuron"] for d in docs] == ["L0.out.1", "L1.ffn.3"]
    d = docs[1]
    for key in ("model", "corpus", "contexts", "tokens", "stats", "top", "ranges", "random"):
        assert key in d
    e = d["top"][0]
    assert set(e) >= {"text", "tokens", "ids", "activations", "position", "activation", "doc"}
    assert e["activations"][0] is None and e["activations"][e["position"]] == pytest.approx(e["activation"], abs=1e-5)
    assert d["corpus"]["fingerprint"] and d["tokens"] > 0
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("\n".join(sentences(10, seed=4)))
    (folder / "sub" / "b.csv").write_text("text\n" + "\n".join(sentences(10, seed=5)))
    assert main(["examples", "L0.ffn.1", "--model", model, "--corpus", str(folder), "--max-length", "16",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["contexts"] == 20
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": sentences(12, seed=6)})
    ds.save_to_disk(str(tmp_path / "saved"))
    assert main(["examples", "L0.ffn.1", "--model", model, "--corpus", str(tmp_path / "saved"), "--max-length", "16",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["contexts"] == 12


def test_cli_bad_input(tmp_path, tiny_models, capsys, monkeypatch):
    model = str(tiny_models["bert"])
    good = tmp_path / "good.txt"
    good.write_text("\n".join(sentences(5)))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    no_tokens = tmp_path / "none.txt"
    no_tokens.write_text("\u200b\n\u200b\u200b\n")
    nocol = tmp_path / "c.csv"
    nocol.write_text("body\nthe rain\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = [
        (["--corpus", str(tmp_path / "missing.txt")], "missing.txt"),
        (["--corpus", str(empty)], "no documents"),
        (["--corpus", str(no_tokens)], "no text token"),
        (["--corpus", str(nocol)], "text"),
        (["--corpus", str(good), "--top", "0"], "positive integer"),
        (["--corpus", str(good), "--max-length", "0"], "positive integer"),
        (["--corpus", str(good), "--max-length", "31"], "beyond"),
        (["--corpus", "hf:some/dataset"], "hf:some/dataset"),
        (["--corpus", str(good), "--at", "L0.out"], "--at needs --direction"),
        (["--corpus", str(good), "--executor", "ray"], "needs --out"),
    ]
    for extra, message in cases:
        extra = extra if "--max-length" in extra else [*extra, "--max-length", "16"]
        assert main(["examples", "L0.ffn.1", "--model", model, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (extra, err)
    assert main(["examples", "--model", model, "--corpus", str(good), "--max-length", "16"]) == 2
    assert "no neurons given" in capsys.readouterr().err
    assert main(["examples", "L9.ffn.1", "--model", model, "--corpus", str(good), "--max-length", "16"]) == 2
    assert "layers are 0-2" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert main(["examples", "L0.ffn.1", "--model", model, "--corpus", "hf:some/dataset", "--max-length", "16"]) == 2
    assert "datasets" in capsys.readouterr().err
