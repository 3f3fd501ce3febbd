"""Sweeps: resumable store, crash safety (SIGKILL), reading back, and the Ray executor."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from neurotext import FTConfig, NeurotextError, load_model, store
from neurotext.cli import main
from neurotext.store.lock import LOCK, StoreLock, holder
from neurotext.store.sweep import plan_shards, run_sweep

CFG = FTConfig(steps=12, restarts=2, batch_size=16)  # 8 neurons per shard


@pytest.fixture(scope="module")
def tiny(tiny_models):
    return load_model(str(tiny_models["bert"]))


def rows(directory):
    t = store.read_table(directory).drop_columns(["seconds"])  # wall time is the only non-deterministic field
    return t.to_pylist()


def quiet(*_):
    pass


def test_sweep_writes_every_neuron_once_and_reads_back(tmp_path, tiny):
    out = tmp_path / "s"
    summary = run_sweep(["L0-2.ffn.0-9", "L1.out.*"], out, model=tiny, config=CFG, log=quiet)
    assert summary == {"computed": 62, "total": 62, "seconds": summary["seconds"]}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["fingerprint"] == tiny.fingerprint() and manifest["config"]["steps"] == 12
    assert manifest["neurotext_version"]
    t = store.read_table(out)
    names = t["neuron"].to_pylist()
    assert len(names) == len(set(names)) == 62
    assert t.schema.field("vector").type.list_size == 32  # fixed-size float32 list
    messages = []
    again = run_sweep(["L0-2.ffn.0-9", "L1.out.*"], out, model=tiny, config=CFG, log=messages.append)
    assert again["computed"] == 0 and "already complete" in messages[0]


def test_results_match_textualize(tmp_path, tiny):
    from neurotext import Textualizer

    out = tmp_path / "s"
    run_sweep("L2.ffn.0-7", out, model=tiny, config=CFG, log=quiet)
    direct = Textualizer(tiny, CFG, progress=False).run("L2.ffn.0-7")
    for row, r in zip(store.read_table(out).to_pylist(), direct):
        assert row["neuron"] == r.neuron and row["activation"] == r.activation
        assert row["nearest_ids"] == [d["id"] for d in r.nearest]


def test_refuses_other_model_or_settings_unless_forced(tmp_path, tiny, tiny_models):
    out = tmp_path / "s"
    run_sweep("L0.ffn.0-3", out, model=tiny, config=CFG, log=quiet)
    with pytest.raises(NeurotextError, match="another settings"):
        run_sweep("L0.ffn.0-3", out, model=tiny, config=FTConfig(steps=13, restarts=2, batch_size=16), log=quiet)
    with pytest.raises(NeurotextError, match="another model"):
        run_sweep("L0.ffn.0-3", out, model=str(tiny_models["roberta"]), config=CFG, log=quiet)
    with pytest.raises(NeurotextError, match="another neuron set"):
        run_sweep("L0.ffn.0-4", out, model=tiny, config=CFG, log=quiet)
    forced = run_sweep("L0.ffn.0-4", out, model=tiny, config=CFG, force=True, log=quiet)
    assert forced["computed"] == 5 and len(store.read_table(out)) == 5


def test_truncated_shard_is_detected_and_recomputed(tmp_path, tiny):
    out = tmp_path / "s"
    run_sweep("L1.ffn.0-15", out, model=tiny, config=CFG, log=quiet)
    before = rows(out)
    victim = store.shard_paths(out)[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a torn write on disk
    (out / "shards" / ".L1.ffn.00008-00015.parquet.tmp999").write_bytes(b"partial")  # a killed writer's file
    messages = []
    again = run_sweep("L1.ffn.0-15", out, model=tiny, config=CFG, log=messages.append)
    assert again["computed"] == 8 and any("truncated or unreadable" in m for m in messages)
    assert rows(out) == before
    assert not [p for p in (out / "shards").iterdir() if ".tmp" in p.name]


def test_bad_stores_and_outputs(tmp_path, tiny):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(NeurotextError, match="not a neurotext store"):
        run_sweep("L0.ffn.0", foreign, model=tiny, config=CFG, log=quiet)
    assert (foreign / "notes.txt").read_text() == "mine"
    out = tmp_path / "s"
    run_sweep("L0.ffn.0-3", out, model=tiny, config=CFG, log=quiet)
    (out / "shards" / "L9.ffn.00000-00001.parquet").write_bytes(b"x")
    with pytest.raises(NeurotextError, match="foreign or corrupt file"):
        run_sweep("L0.ffn.0-3", out, model=tiny, config=CFG, log=quiet)
    (out / "manifest.json").write_text("{broken")
    with pytest.raises(NeurotextError, match="corrupt"):
        store.read_table(out)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(NeurotextError, match="not a directory"):
        run_sweep("L0.ffn.0", a_file, model=tiny, config=CFG, log=quiet)
    with pytest.raises(NeurotextError, match="no neurons"):
        run_sweep([], tmp_path / "empty", model=tiny, config=CFG, log=quiet)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output(tmp_path, tiny):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(NeurotextError, match="cannot write"):
        run_sweep("L0.ffn.0", ro / "s", model=tiny, config=CFG, log=quiet)


def test_unwritable_output_as_root(tmp_path, tiny, monkeypatch):
    """Root ignores permission bits, so simulate the OS refusing the write."""
    import pathlib

    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pathlib.Path, "write_text", refuse)
    with pytest.raises(NeurotextError, match="cannot write to .*Permission denied"):
        run_sweep("L0.ffn.0", tmp_path / "s", model=tiny, config=CFG, log=quiet)


def test_plan_is_a_function_of_the_set(tiny):
    neurons = tiny.parse(["L0.ffn.*", "L2.out.0-4"])
    a = plan_shards(neurons, 16)
    b = plan_shards(list(reversed(neurons)), 16)
    assert [s.name for s in a] == [s.name for s in b]
    assert sum(len(s.neurons) for s in a) == len(neurons)
    assert all(len({(n.layer, n.site) for n in s.neurons}) == 1 for s in a)


def _sweep_cmd(model_dir, out):
    return [sys.executable, "-m", "neurotext", "sweep", "L0-2.ffn.*", "--model", str(model_dir), "--out", str(out),
            "--steps", "40", "--restarts", "2", "--batch-size", "16", "--seed", "3"]


def test_sigkill_mid_sweep_then_resume_equals_uninterrupted(tmp_path, tiny_models):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_sweep_cmd(tiny_models["bert"], killed), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(store.shard_paths(killed)) < 5:
        time.sleep(0.05)
    assert holder(killed)["pid"] == proc.pid  # the killed sweep held the store's lock
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(store.shard_paths(killed))
    assert 0 < done < 24, "the kill should land mid-sweep"
    resumed = subprocess.run(_sweep_cmd(tiny_models["bert"], killed), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "being written" not in resumed.stderr  # the dead lock did not block
    clean = tmp_path / "clean"
    subprocess.run(_sweep_cmd(tiny_models["bert"], clean), env=env, check=True, capture_output=True)
    got, want = rows(killed), rows(clean)
    assert len(got) == 3 * 64 and [r["neuron"] for r in got] == [r["neuron"] for r in want]
    assert got == want


def test_show_and_query_cli(tmp_path, tiny_models, capsys):
    out = tmp_path / "s"
    assert main(["sweep", "L0.ffn.0-7", "L1.out.3", "--model", str(tiny_models["bert"]), "--out", str(out),
                 "--steps", "10", "--restarts", "1"]) == 0
    capsys.readouterr()
    assert main(["show", str(out), "L0.ffn.5"]) == 0
    text = capsys.readouterr().out
    assert "L0.ffn.5" in text and "FT nearest tokens" in text
    assert main(["show", str(out), "L0.ffn.5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = store.find_neuron(out, "L0.ffn.5")
    assert doc["activation"] == want["activation"] and doc["nearest"][0]["token"] == want["nearest_token"]
    assert main(["query", str(out), "SELECT site, count(*) AS n FROM neurons GROUP BY site ORDER BY site",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"site": "ffn", "n": 8}, {"site": "out", "n": 1}]
    assert main(["query", str(out), "SELECT neuron, layer FROM neurons WHERE unit = 3 ORDER BY neuron"]) == 0
    assert "L0.ffn.3" in capsys.readouterr().out
    for argv, message in [
        (["show", str(out), "L0.ffn.60"], "not in the store"),
        (["show", str(out), "L0.ffn.999"], "units are 0-63"),
        (["show", str(tmp_path / "nope"), "L0.ffn.1"], "no such store"),
        (["query", str(out), "SELEC nonsense"], "query failed"),
        (["query", str(tmp_path), "SELECT 1"], "not a neurotext store"),
    ]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def ray_available():
    return pytest.importorskip("ray")


def test_ray_executor_produces_the_same_store(tmp_path, tiny, ray_available):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    run_sweep("L0-1.ffn.0-11", local, model=tiny, config=CFG, log=quiet)
    run_sweep("L0-1.ffn.0-11", on_ray, model=tiny, config=CFG, executor="ray", workers=2, log=quiet)
    assert rows(on_ray) == rows(local)
    assert sorted(p.name for p in store.shard_paths(on_ray)) == sorted(p.name for p in store.shard_paths(local))


def test_unreachable_ray_address(tmp_path, tiny, ray_available):
    with pytest.raises(NeurotextError, match="could not connect to Ray"):
        run_sweep("L0.ffn.0", tmp_path / "s", model=tiny, config=CFG, executor="ray",
                  ray_address="127.0.0.1:1", log=quiet)
    assert store.shard_paths(tmp_path / "s") == []  # nothing half-written


def _wait_for(predicate, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline and not predicate():
        time.sleep(0.05)
    assert predicate()


def test_second_sweep_refuses_then_waits_and_the_store_ends_complete(tmp_path, tiny_models, capsys):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "s"
    first = subprocess.Popen(_sweep_cmd(tiny_models["bert"], out), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: holder(out).get("pid") == first.pid and len(store.shard_paths(out)) >= 1)
        first.send_signal(signal.SIGSTOP)  # hold the first sweep mid-run, lock taken, so the timing is certain
        assert main(_sweep_cmd(tiny_models["bert"], out)[3:]) == 2
        err = capsys.readouterr().err
        assert err.startswith("neurotext: error: ") and err.count("\n") == 1
        assert f"being written by another sweep (pid {first.pid} on " in err and "--wait" in err
        second = subprocess.Popen(_sweep_cmd(tiny_models["bert"], out) + ["--wait"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = second.stderr.readline()
        assert f"pid {first.pid}" in line and "waiting" in line
        assert second.poll() is None  # still waiting while the first sweep is stopped
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0
        rest = second.stderr.read()
        assert second.wait(timeout=300) == 0, rest
    finally:
        for p in (first,):
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
    assert "already complete" in rest  # the waiting sweep found the first one's work done
    names = [r["neuron"] for r in rows(out)]
    assert len(names) == len(set(names)) == 3 * 64
    assert not [p for p in (out / "shards").iterdir() if ".tmp" in p.name]


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    code = ("import sys, time; from neurotext.store.lock import StoreLock; "
            "l = StoreLock(sys.argv[1]).__enter__(); print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(NeurotextError, match=f"pid {proc.pid}"):
            StoreLock(tmp_path).__enter__()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert holder(tmp_path)["pid"] == proc.pid  # the file still names the dead process...
    with StoreLock(tmp_path):  # ...but the kernel released its lock
        assert holder(tmp_path)["pid"] == os.getpid()
    assert (tmp_path / LOCK).exists() and holder(tmp_path) == {}


def test_manifest_records_device_and_refuses_another_device_type(tmp_path, tiny):
    out = tmp_path / "s"
    run_sweep("L0.ffn.0-3", out, model=tiny, config=CFG, log=quiet)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"]["type"] == "cpu" and manifest["device"]["dtype"] == "float32"
    assert "name" in manifest["device"]
    # a store swept on a GPU is not continued on the CPU: the reason is named
    manifest["device"] = {"type": "cuda", "index": 0, "name": "NVIDIA H100", "dtype": "float32"}
    store.write_manifest(out, manifest)
    (store.shard_paths(out)[0]).unlink()
    with pytest.raises(NeurotextError, match=r"was swept on cuda \(NVIDIA H100\) and this run is on cpu.*"
                                             r"--device cuda"):
        run_sweep("L0.ffn.0-3", out, model=tiny, config=CFG, log=quiet)
    # a store from before devices were recorded was written on the CPU: it continues
    del manifest["device"]
    store.write_manifest(out, manifest)
    assert run_sweep("L0.ffn.0-3", out, model=tiny, config=CFG, log=quiet)["computed"] == 4
    assert len(store.read_table(out)) == 4


def test_out_of_memory_halves_the_batch_and_loses_no_neuron(tmp_path, tiny, monkeypatch):
    """An OOM is injected for batches above 6 rows: the shard (16 rows) is retried in halves until it fits."""
    import torch

    from neurotext.textualize import Textualizer

    clean = tmp_path / "clean"
    run_sweep("L1.ffn.0-15", clean, model=tiny, config=CFG, log=quiet)
    real = Textualizer._run_batch
    sizes = []

    def tight(self, layer, site, neurons, scan):
        sizes.append(len(neurons))
        if len(neurons) * self.config.restarts > 6:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(self, layer, site, neurons, scan)

    monkeypatch.setattr(Textualizer, "_run_batch", tight)
    split = tmp_path / "split"
    assert run_sweep("L1.ffn.0-15", split, model=tiny, config=CFG, log=quiet)["computed"] == 16
    assert sizes[:3] == [8, 4, 2] and set(sizes[3:]) == {2}  # halved, and the learned size is kept
    got, want = rows(split), rows(clean)
    assert [r["neuron"] for r in got] == [r["neuron"] for r in want]  # each neuron once, in order
    for a, b in zip(got, want):
        assert a["activation"] == pytest.approx(b["activation"], rel=1e-5, abs=1e-6)
        assert a["nearest_ids"] == b["nearest_ids"]


def test_a_single_row_out_of_memory_is_raised(tiny, monkeypatch):
    import torch

    from neurotext.engine.memory import OOMSplitter

    def never(items):
        raise torch.OutOfMemoryError("injected")

    with pytest.raises(torch.OutOfMemoryError):
        OOMSplitter().run(never, [1, 2, 3])
    assert OOMSplitter().run(lambda xs: [x * 2 for x in xs], [1, 2, 3]) == [2, 4, 6]


def test_memory_sizing_is_no_cap_on_cpu_and_grows_with_depth(tiny):
    from neurotext.engine.memory import bytes_per_row, neurons_per_batch, rows_that_fit

    assert rows_that_fit(tiny, 2) is None and neurons_per_batch(tiny, 2, CFG) == 8
    assert bytes_per_row(tiny, 0) < bytes_per_row(tiny, 1) < bytes_per_row(tiny, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_sweep_sizes_batches_from_free_memory(tmp_path, tiny_models):
    from neurotext.engine.memory import rows_that_fit

    m = load_model(str(tiny_models["bert"]), device="cuda")
    assert rows_that_fit(m, 2) > 16
    out = tmp_path / "s"
    run_sweep("L0-1.ffn.0-7", out, model=m, config=CFG, log=quiet)
    assert json.loads((out / "manifest.json").read_text())["device"]["type"] == "cuda"
    assert len(store.read_table(out)) == 16


def test_ray_gpus_per_worker_validation(tmp_path, tiny, ray_available):
    with pytest.raises(NeurotextError, match="must be 0 or a positive number"):
        run_sweep("L0.ffn.0", tmp_path / "neg", model=tiny, config=CFG, executor="ray", gpus_per_worker=-1,
                  log=quiet)
    with pytest.raises(NeurotextError, match="needs --gpus-per-worker > 0"):
        run_sweep("L0.ffn.0", tmp_path / "dev", model=tiny, config=CFG, executor="ray", device="cuda", log=quiet)
    if not __import__("torch").cuda.is_available():
        with pytest.raises(NeurotextError, match=r"needs 1 GPUs, but the Ray cluster has 0"):
            run_sweep("L0.ffn.0-3", tmp_path / "gpu", model=tiny, config=CFG, executor="ray", workers=2,
                      gpus_per_worker=0.5, log=quiet)
        assert store.shard_paths(tmp_path / "gpu") == []
