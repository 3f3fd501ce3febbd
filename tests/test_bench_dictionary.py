"""The dictionary benchmark runs --quick on a tiny model and its figures are consistent with each other (no timing
asserts)."""

import importlib.util
import pathlib
import random

import pytest
import torch

from neurotext.model.devices import cpu_name

from conftest import WORDS, make_tiny_model

BENCH = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_dictionary.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_dictionary", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sae_flops_count_the_dense_products(bench):
    d, f = 1536, 6144
    forward = 2 * d * f + 2 * d * f  # encoder, decoder
    backward = 2 * d * f + 2 * d * f + 2 * d * f  # decoder weight and input gradients, encoder weight gradient
    assert bench.sae_flops_per_token(d, f) == forward + backward
    k = 32  # TopK's decoder reads k rows: forward 2 d k, backward (weights and values) 4 d k; the encoder as above
    assert bench.sae_flops_per_token(d, f, k) == 2 * d * f + 2 * d * k + 4 * d * k + 2 * d * f


def test_quick_benchmark_fields_are_consistent(bench, tmp_path, capsys):
    rng = random.Random(0)
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 24))) for _ in range(300)))
    model = make_tiny_model(tmp_path / "bert", "bert")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: two threads on two busy cores are many times slower
    try:
        r = bench.main(["--quick", "--json", "--device", "cpu", "--model", str(model), "--site", "L1.ffn",
                        "--corpus", str(corpus), "--max-length", "16"])
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out.lstrip().startswith("{")
    one, twice = r["runs"]["first"], r["runs"]["twice"]
    assert r["site"] == "L1.ffn" and r["quick"] and one["tokens"] == bench.QUICK_TOKENS == twice["tokens"] // 2
    assert one["width"] == 4 * 64 and one["d_in"] == 64 and one["eval"]["tokens"] <= bench.QUICK_EVAL_TOKENS
    f = r["flops_per_token"]
    assert one["sparse_decode"] and one["fused_adam"]  # the default TopK trains with the sparse decoder
    assert f["sae"] == bench.sae_flops_per_token(64, 256, 32) < f["sae_dense"] == bench.sae_flops_per_token(64, 256)
    assert f["total"] == f["sae"] + f["model"] > f["sae"]
    for run in (one, twice):
        assert run["tokens_per_s"] == pytest.approx(run["tokens"] / run["seconds"])
        assert run["achieved_gflops"] == pytest.approx(f["total"] * run["tokens_per_s"] / 1e9)
        assert run["roofline_fraction"] == pytest.approx(run["achieved_gflops"] / r["matmul_gflops"])
        assert run["dense_equivalent_gflops"] == pytest.approx((f["sae_dense"] + f["model"]) * run["tokens_per_s"]
                                                               / 1e9)
        assert run["wall_seconds"] >= run["seconds"] + run["eval_seconds"] * 0.99 and run["activations_read"] >= \
            run["tokens"]
        assert 0 < run["eval"]["fvu"] and run["eval"]["l0"] > 0
    shapes = r["matmul_gflops_by_shape"]
    assert r["matmul_gflops"] == shapes["max"] == max(v for k, v in shapes.items() if k != "max")
    assert {"qkv", "ffn_in", "sae_encode", "sae_decode"} <= set(shapes)
    assert r["fvu_gap"] == pytest.approx(r["fvu_first"] - r["fvu_twice"])
    assert r["tokens_per_s"] == one["tokens_per_s"] and r["roofline_fraction"] == one["roofline_fraction"]
    assert set(r["meets_targets"]) == {"fvu_gap", "minutes"} and r["targets"] == {"fvu_gap": 0.02, "minutes": 15.0}
    assert r["machine"]["cpu"] == cpu_name() and r["device"]["type"] == "cpu" and r["threads"] >= 1
    assert r["config"]["width"] == "4x" and r["config"]["k"] == 32 and r["config"]["architecture"] == "topk"
