"""The probe benchmark runs at tiny sizes and its figures are consistent with each other (no timing asserts)."""

import importlib.util
import pathlib

import pytest

BENCH = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_probe.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_probe", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_projection_charges_every_stage(bench):
    records = [{"site": s, "units": "neurons"} for s in ("ffn", "out")] * 3 + [{"word": "x", "skipped": "why"}]
    p = bench.project(records, {"index": 2.0, "pass": 10.0, "fit": 6.0}, layers=[0, 2], n_layers=6, token_scale=2.0)
    assert p["index"] == 4.0 and p["pass"] == pytest.approx(10.0 * 6 / 3 * 2)
    assert p["fit"] == pytest.approx(1.0 * bench.TARGET_WORDS * 6 * 2)  # 6 s over 6 (word, site) pairs
    assert p["total"] == pytest.approx(p["index"] + p["pass"] + p["fit"])


def test_quick_benchmark_fields_are_consistent(bench, capsys):
    pytest.importorskip("sklearn")
    r = bench.main(["--quick", "--json", "--device", "cpu"])
    assert capsys.readouterr().out.lstrip().startswith("{")
    for key in ("machine", "threads", "torch", "matmul_gflops", "seconds", "projected", "target_time_s",
                "meets_target", "measured_target", "sklearn", "summary", "config"):
        assert key in r, key
    s = r["seconds"]
    assert s["total"] == pytest.approx(s["index"] + s["pass"] + s["fit"])
    assert r["records"] == 3 * 2 * 2 and not r["measured_target"]  # 3 words x layers 0-1 x ffn, out
    assert r["target_time_s"] == r["projected"]["total"] and r["projected"]["total"] > s["total"]
    sk = r["sklearn"]
    assert sk["probes"] and sk["max_ap_diff"] < 0.05
    assert sk["speedup"] == pytest.approx(sk["sklearn_s"] / sk["torch_s"])
