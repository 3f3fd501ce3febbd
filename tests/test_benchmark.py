"""The benchmark runs at tiny sizes and its figures are consistent with each other (no timing asserts)."""

import importlib.util
import os
import pathlib

import pytest

from neurotext.model.devices import cpu_name

BENCH = pathlib.Path(__file__).parents[1] / "benchmarks" / "bench_textualize.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_textualize", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_flops_count_grows_with_depth_and_matches_a_hand_count(bench):
    f = [bench.flops_per_neuron_step(384, 1536, 3, layer, "ffn") for layer in range(6)]
    assert all(b > a for a, b in zip(f, f[1:]))
    # layer 0, ffn: K,V for 3 tokens, Q and output projection for x, attention, one unit; x2 for backward
    d, t = 384, 3
    by_hand = 2 * (t * 2 * d * 2 * d + 2 * d * d + 2 * d * d + 2 * 2 * t * d + 2 * d)
    assert f[0] == by_hand
    assert bench.flops_per_neuron_step(384, 1536, 3, 2, "out") > f[2]


def test_quick_benchmark_fields_are_consistent(bench, capsys):
    r = bench.main(["--quick", "--json"])
    for key in ("naive_neuron_steps_per_s", "engine_neuron_steps_per_s", "speedup", "flops_per_neuron_step",
                "achieved_gflops", "matmul_gflops", "roofline_fraction", "peak_rss_mb", "quality", "threads",
                "torch", "model", "projected_full_ffn_sweep_s", "defaults_vs_long"):
        assert key in r, key
    assert r["speedup"] == pytest.approx(r["engine_neuron_steps_per_s"] / r["naive_neuron_steps_per_s"])
    assert r["achieved_gflops"] == pytest.approx(r["flops_per_neuron_step"] * r["engine_neuron_steps_per_s"] / 1e9)
    assert r["roofline_fraction"] == pytest.approx(r["achieved_gflops"] / r["matmul_gflops"])
    shapes = r["matmul_gflops_by_shape"]
    assert r["matmul_gflops"] == max(v for k, v in shapes.items() if k != "max") and set(shapes) > {"qkv", "ffn_in"}
    dl = r["defaults_vs_long"]
    assert 0 < dl["default_over_long_per_neuron_min"] <= dl["default_over_long_per_neuron_median"]
    assert dl["default_over_long_median"] == pytest.approx(dl["default_median"] / dl["long_median"])
    q = r["quality"]
    assert 0.0 <= q["engine_at_least_naive_share"] <= 1.0 and len(q["neurons"]) == r["naive_neurons"]
    # same starts, steps and schedule: the batched engine and the naive loop reach the same optimum
    assert q["engine_median"] == pytest.approx(q["naive_median"], rel=1e-3)
    assert r["model"] == "all-MiniLM-L6-v2" and r["peak_rss_mb"] > 0
    # the naive loop ran in another process; the machine is named
    assert r["naive_process"]["separate"] and r["naive_process"]["pid"] != os.getpid()
    assert r["device"]["type"] in ("cpu", "cuda") and r["device"]["dtype"] == "float32"
    assert r["machine"]["cpu"] == cpu_name() and (r["machine"]["gpu"] is None) == (r["device"]["type"] == "cpu")
    # reduced precision beside seed noise, on the same neurons
    p = r["precision"]
    assert p["neurons"] == r["defaults_vs_long"]["neurons"]
    for name in ["seed_noise", "bfloat16"] + (["tf32"] if r["device"]["type"] == "cuda" else []):
        d = p[name]
        assert 0 <= d["top1_changed_share"] <= 1 and 0 <= d["top10_changed_share"] <= 1
        assert 0 <= d["top10_mean_overlap"] <= 1 and d["median_activation_ratio"] > 0
    assert "tf32" not in p or r["device"]["type"] == "cuda"
    b = p["bfloat16"]
    assert b["speed_ratio_vs_float32"] == pytest.approx(p["float32_seconds"] / b["seconds"])
    assert b["within_seed_noise"] == (b["top1_changed_share"] <= p["seed_noise"]["top1_changed_share"]
                                      and b["top10_changed_share"] <= p["seed_noise"]["top10_changed_share"])
    assert capsys.readouterr().out.lstrip().startswith("{")


def test_results_differ_counts_changed_tokens(bench):
    from types import SimpleNamespace as R

    def res(act, ids):
        return R(activation=act, nearest=[{"id": i} for i in ids])

    a = [res(2.0, range(10)), res(1.0, range(10))]
    b = [res(1.0, range(10)), res(1.0, [1, 0] + list(range(2, 9)) + [99])]
    d = bench.results_differ(a, b)
    assert d["top1_changed_share"] == 0.5 and d["top10_changed_share"] == 0.5
    assert d["top10_mean_overlap"] == pytest.approx(0.95) and d["median_activation_ratio"] == pytest.approx(1.5)


def test_settings_benchmark_compares_against_its_reference(capsys):
    spec = importlib.util.spec_from_file_location("bench_settings", BENCH.parent / "bench_settings.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.main(["steps=3,restarts=2,prune_at=0.5", "--per-layer", "1", "--long-steps", "6",
                     "--long-restarts", "2", "--json"])
    ref, row = rows
    assert ref["neuron_steps_per_neuron"] == 2 * 7 and row["neuron_steps_per_neuron"] == 2 * 3 + 1
    assert row["median_over_reference_median"] == pytest.approx(row["median_activation"] / ref["median_activation"])
    assert 0 < row["per_neuron_ratio_min"] <= row["per_neuron_ratio_median"]
    assert 0 <= row["ft_at_least_best_token_share"] <= 1
    assert capsys.readouterr().out.lstrip().startswith("[")
    with pytest.raises(SystemExit, match="unknown setting 'stpes'"):
        mod.main(["stpes=3"])


def test_phrase_benchmark_fields_are_consistent(capsys):
    spec = importlib.util.spec_from_file_location("bench_phrase", BENCH.parent / "bench_phrase.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.main(["--quick"])
    assert r["speedup"] == pytest.approx(r["naive_s"] / r["batched_s"])
    assert r["batched_neurons_per_s"] == pytest.approx(r["neurons"] / r["batched_s"])
    assert r["same_phrase_share"] == 1.0  # per-neuron generators: the batch does not change a phrase
    assert r["neurons"] == 3 and r["length"] == 2 and r["cpu"]
    assert capsys.readouterr().out.lstrip().startswith("{")


def test_decoder_prefix_benchmark_on_a_tiny_decoder(tmp_path, capsys):
    """The cached-prefix benchmark runs on a tiny Llama and both modes give the same gradient."""
    from conftest import make_tiny_decoder

    spec = importlib.util.spec_from_file_location("bench_decoder_prefix", BENCH.with_name("bench_decoder_prefix.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = make_tiny_decoder(tmp_path / "llama", "llama")
    r = mod.main(["--model", str(model), "--layer", "2", "--rows", "16", "--steps", "1", "--rounds", "1",
                  "--device", "cpu", "--json"])
    assert r["gradient_relative_difference"] < 1e-4 and r["prefix_tokens"] == 1
    assert r["speedup"] == pytest.approx(r["seconds_per_step"]["full"] / r["seconds_per_step"]["cached"])
    assert r["machine"]["cpu"] == cpu_name()
