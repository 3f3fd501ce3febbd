"""The corpus-pass benchmark runs at tiny sizes and its figures are consistent with each other (no timing asserts)."""

import importlib.util
import os
import pathlib

import pytest
import torch

from neurotext.model.devices import cpu_name

BENCH = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_examples.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_examples", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_flops_per_token_matches_a_hand_count(bench):
    d, d_ff, t = 384, 1536, 40
    per_layer = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * d_ff + 2 * 2 * t * d
    assert bench.flops_per_token(d, d_ff, 6, t) == 6 * per_layer
    assert bench.flops_per_token(d, d_ff, 6, t + 1) > bench.flops_per_token(d, d_ff, 6, t)


def test_top_agreement_counts_sets_not_order(bench):
    a = {"names": ["u0", "u1"], "values": torch.tensor([[3.0, 2.0, 1.0], [5.0, 4.0, float("nan")]]),
         "contexts": torch.tensor([[7, 8, 9], [1, 2, -1]])}
    b = {"names": ["u1", "u0"], "values": torch.tensor([[5.0, 4.5, float("nan")], [2.0, 3.0, 1.5]]),
         "contexts": torch.tensor([[2, 3, -1], [8, 7, 4]])}
    r = bench.top_agreement(a, b)
    assert r["units"] == 2 and r["k"] == 3
    assert r["mean_overlap"] == pytest.approx((2 / 3 + 1 / 2) / 2) and r["identical_share"] == 0.0
    assert r["identical_up_to_ties_share"] == 0.0
    assert r["min_overlap"] == pytest.approx(0.5)
    assert r["max_abs_value_diff"] == pytest.approx(0.5) and r["max_top_value"] == 5.0
    same = bench.top_agreement(a, a)
    assert same["mean_overlap"] == same["identical_share"] == same["identical_up_to_ties_share"] == 1.0
    assert same["max_abs_value_diff"] == 0.0
    # two contexts tied at the k-th value (GELU's -0.0): either may be kept
    t1 = {"names": ["u"], "values": torch.tensor([[2.0, -0.0, -0.0]]), "contexts": torch.tensor([[1, 2, 3]])}
    t2 = {"names": ["u"], "values": torch.tensor([[2.0, -0.0, -0.0]]), "contexts": torch.tensor([[1, 4, 2]])}
    tied = bench.top_agreement(t1, t2)
    assert tied["identical_share"] == 0.0 and tied["identical_up_to_ties_share"] == 1.0
    assert tied["mean_overlap"] == pytest.approx(2 / 3)


def test_quick_benchmark_fields_are_consistent(bench, capsys):
    r = bench.main(["--quick", "--json", "--device", "cpu"])
    assert capsys.readouterr().out.lstrip().startswith("{")
    for key in ("tokens_per_s", "flops_per_token", "achieved_gflops", "matmul_gflops", "roofline_fraction",
                "speedup", "breakdown", "finalize", "bfloat16", "naive", "rss", "config", "settings", "warmup",
                "threads", "torch", "peak_rss_mb", "meets_targets"):
        assert key in r, key
    assert r["model"] == "all-MiniLM-L6-v2" and r["units"] == 32
    # the headline is the full run; every run's figures hold together
    assert r["headline"] == "full" and r["tokens_per_s"] == r["engine"]["full"]["tokens_per_s"]
    shapes = r["matmul_gflops_by_shape"]
    assert r["matmul_gflops"] == max(v for k, v in shapes.items() if k != "max") and set(shapes) > {"qkv", "ffn_in"}
    assert r["matmul_rows"] == round(r["engine"]["sample"]["mean_batch_rows"])
    for run in (r["engine"]["sample"], r["engine"]["full"], r["bfloat16"]):
        assert run["tokens_per_s"] == pytest.approx(run["tokens"] / run["seconds"])
        assert run["achieved_gflops"] == pytest.approx(run["flops_per_token"] * run["tokens_per_s"] / 1e9)
        assert run["flops_per_token"] == bench.flops_per_token(384, 1536, run["layers_run"], run["mean_padded_length"])
        assert run["layers_run"] == 2 and run["positions"] >= run["tokens"] > 0 and run["contexts"] > 0
        assert run["achieved_gflops_all_positions"] >= run["achieved_gflops"]
    for run in (r["engine"]["sample"], r["engine"]["full"]):
        assert run["roofline_fraction"] == pytest.approx(run["achieved_gflops"] / r["matmul_gflops"])
    assert r["roofline_fraction"] == pytest.approx(r["achieved_gflops"] / r["matmul_gflops"])
    assert r["achieved_gflops"] == pytest.approx(r["flops_per_token"] * r["tokens_per_s"] / 1e9)
    assert r["engine"]["full"]["documents"] == 40 and r["engine"]["sample"]["documents"] == 20
    # the breakdown covers the same sample, its parts add up
    b = r["breakdown"]
    parts = sum(b[f"{k}_seconds"] for k in ("prepare", "forward", "fold", "keep", "other"))
    assert parts == pytest.approx(b["total_seconds"]) and 0 < b["forward_share"] <= 1 and 0 <= b["fold_share"] <= 1
    sample = r["engine"]["sample"]
    assert b["forward_only_gflops"] == pytest.approx(sample["flops_per_token"] * sample["tokens"]
                                                     / b["forward_seconds"] / 1e9)
    assert b["forward_only_roofline_fraction"] == pytest.approx(b["forward_only_gflops"] / r["matmul_gflops"])
    assert r["finalize"]["neurons"] == 32 and r["finalize"]["run"] == "full" and r["finalize"]["seconds"] > 0
    # the naive loop ran in another process on the same contexts
    n = r["naive"]
    assert n["separate_process"] and n["pid"] != os.getpid()
    assert n["tokens"] == r["engine"]["sample"]["tokens"] and n["contexts"] == r["engine"]["sample"]["contexts"]
    assert r["speedup"] == pytest.approx(r["engine"]["sample"]["tokens_per_s"] / n["tokens_per_s"])
    # top-k agreement, naive against float32 and bfloat16 against float32
    for agree in (n["agreement_vs_engine"], r["bfloat16"]["agreement_vs_float32"]):
        assert agree["units"] == 32 and agree["k"] == 20
        for k in ("mean_overlap", "min_overlap", "identical_share", "identical_up_to_ties_share"):
            assert 0 <= agree[k] <= 1
        assert agree["min_overlap"] <= agree["mean_overlap"] and agree["max_abs_value_diff"] >= 0
        assert agree["identical_share"] <= agree["identical_up_to_ties_share"]
    # the same float32 values up to rounding, the same sets up to exact ties
    assert n["agreement_vs_engine"]["max_abs_value_diff"] < 1e-3
    assert n["agreement_vs_engine"]["identical_up_to_ties_share"] == 1.0
    bf = r["bfloat16"]
    assert bf["speed_ratio_vs_float32"] == pytest.approx(bf["tokens_per_s"] / r["engine"]["sample"]["tokens_per_s"])
    # the streaming check: two fresh processes, ten times the documents
    one, ten = r["rss"]["1x"], r["rss"]["10x"]
    assert len({one["pid"], ten["pid"], os.getpid()}) == 3
    assert ten["documents"] == 10 * one["documents"] and ten["tokens"] == 10 * one["tokens"]
    assert r["rss"]["growth"] == pytest.approx((ten["peak_rss_mb"] - one["peak_rss_mb"]) / one["peak_rss_mb"])
    # the machine and the settings are named
    assert r["device"]["type"] == "cpu" and r["device"]["dtype"] == "float32" and r["threads"] >= 1
    assert r["machine"]["cpu"] == cpu_name() and r["machine"]["gpu"] is None
    assert r["config"]["top"] == 20 and r["settings"]["sample_docs"] == 20 and r["settings"]["quick"]
    assert set(r["meets_targets"]) == {"roofline_fraction", "speedup", "rss", "floor_ratio", "dict_rss_mb",
                                       "dict_rss_growth", "dict_roofline_fraction"}
    assert set(r["targets"]) >= {"floor_ratio", "dict_rss_mb", "dict_rss_growth", "dict_roofline_fraction"}
    # the floor: a bare forward over the same contexts, and neurotext examples into a store, in fresh processes
    f = r["floor"]
    assert f["floor"]["tokens"] == r["engine"]["full"]["tokens"] and f["floor"]["pid"] != os.getpid()
    assert f["ratio"] == pytest.approx(f["examples_wall_seconds"] / f["floor"]["wall_seconds"])
    # its loop's throughput, counted as the pass's: the same batches, so the same positions and FLOPs per token
    ff = f["floor"]
    assert 0 < ff["seconds"] < ff["wall_seconds"] and ff["contexts"] == r["engine"]["full"]["contexts"]
    assert ff["positions"] == r["engine"]["full"]["positions"]
    assert ff["flops_per_token"] == pytest.approx(r["engine"]["full"]["flops_per_token"])
    assert ff["achieved_gflops"] == pytest.approx(ff["flops_per_token"] * ff["tokens"] / ff["seconds"] / 1e9)
    assert ff["roofline_fraction"] == pytest.approx(ff["achieved_gflops"] / r["matmul_gflops"])
    assert 0 < ff["forward_seconds"] < ff["seconds"]  # the Hugging Face forward alone, inside the loop
    assert ff["forward_only_gflops"] == pytest.approx(ff["flops_per_token"] * ff["tokens"]
                                                      / ff["forward_seconds"] / 1e9)
    assert ff["forward_only_roofline_fraction"] == pytest.approx(ff["forward_only_gflops"] / r["matmul_gflops"])
    assert "--out DIR" in f["command"] and "--max-docs 40" in f["command"]
    # (b): every feature of the random dictionaries (1x wide on 2 layers here) and the units, in fresh processes
    d = r["dictionaries"]
    full = d["full"]
    assert d["dictionaries"] == 2 and d["features"] == 2 * 1536 and d["units"] == 32 + 2 * 1536
    assert full["tokens"] == r["engine"]["full"]["tokens"] and full["pid"] != os.getpid()
    assert full["encode_flops_per_token"] == 2 * 2 * 1536 * 1536
    assert full["flops_per_token"] == full["model_flops_per_token"] + full["encode_flops_per_token"]
    assert full["achieved_gflops"] == pytest.approx(full["flops_per_token"] * full["tokens"] / full["seconds"] / 1e9)
    assert d["matmul_gflops"] == max(v for k, v in d["matmul_gflops_by_shape"].items() if k != "max")
    assert "encode" in d["matmul_gflops_by_shape"]
    assert d["roofline_fraction"] == pytest.approx(full["achieved_gflops"] / d["matmul_gflops"])
    assert full["state_bytes_formula"] == 32 * 25_864 + 2 * 1536 * 23_808  # the formula at the defaults
    assert full["peak_rss_mb"] >= full["peak_rss_with_state_mb"] >= full["peak_rss_before_pass_mb"]
    assert full["finalize_seconds"] > 0 and full["store_mb"] > 0 and d["peak_rss_mb"] == full["peak_rss_mb"]
    one, ten = d["rss"]["1x"], d["rss"]["10x"]
    assert ten["tokens"] == 10 * one["tokens"] and one["pid"] != ten["pid"]
    assert d["rss"]["growth"] == pytest.approx((ten["peak_rss_pass_mb"] - one["peak_rss_pass_mb"])
                                               / one["peak_rss_pass_mb"])
    # (c): a random model of BERT-base's shape (tiny here), measured per-unit memory, and the projection
    p = r["projection"]
    m = p["measured"]
    assert m["units"] == m["neurons"] + m["features"] and m["features"] == 256 and m["neurons"] == 2 * (256 + 64)
    assert m["state_rss_mb"] == pytest.approx(m["state_formula_mb"], rel=0.25)  # the formula is what is held
    assert m["formula_bytes_per_neuron"] == 25_864 and m["formula_bytes_per_feature"] == 23_808
    pr = p["projected"]
    assert pr["features"] == 2 * 256 and pr["neurons"] == 2 * (256 + 64) and pr["units"] == 512 + 640
    assert pr["state_mb"] == pytest.approx((512 * 23_808 + 640 * 25_864) / 2**20)
    assert pr["seconds"] > 0 and pr["memory_mb"] > pr["state_mb"]
