"""The CLI contract: readable tables, one JSON document on stdout, one-line errors with exit 2."""

import json
import os
import subprocess
import sys

import pytest

from neurotext.cli import main


def test_json_is_one_document_with_the_contract_fields(capsys):
    assert main(["textualize", "L1.ffn.3", "L2.out.4", "--steps", "20", "--restarts", "1", "--json"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["neuron"] for d in docs] == ["L1.ffn.3", "L2.out.4"]
    for d in docs:
        assert d["model"] == "all-MiniLM-L6-v2"
        assert {"activation", "pre_activation", "vector", "nearest", "nearest_activation", "retention",
                "best_tokens", "overlap_at_10", "steps", "seconds", "seed"} <= set(d)
        assert len(d["vector"]) == 384 and all(isinstance(v, float) for v in d["vector"])
        assert set(d["nearest"][0]) == {"token", "id", "cosine"}
        assert set(d["best_tokens"][0]) == {"token", "id", "activation"}
        assert len(d["nearest"]) == 10 and d["steps"] == 20


def test_table_shows_tokens_and_metrics(capsys):
    assert main(["textualize", "L1.ffn.3", "--steps", "10", "--restarts", "1", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "L1.ffn.3" in out and "FT nearest tokens" in out and "best real tokens" in out
    assert "retention" in out and "overlap@10" in out
    assert len([line for line in out.splitlines() if line.startswith("  ") and line.split()[-1][0].isdigit()]) >= 5


@pytest.mark.parametrize("argv, message", [
    (["textualize", "L3.foo.1"], "unknown site 'foo'"),
    (["textualize", "L6.ffn.1"], "layers are 0-5"),
    (["textualize", "L3.ffn.1536"], "units are 0-1535"),
    (["textualize", "L3ffn"], "malformed neuron name"),
    (["textualize"], "no neurons given"),
    (["textualize", "L1.ffn.1", "--steps", "0"], "--steps: must be a positive integer"),
    (["textualize", "L1.ffn.1", "--restarts", "-2"], "--restarts: must be a positive integer"),
    (["textualize", "L1.ffn.1", "--top", "0"], "--top: must be a positive integer"),
    (["textualize", "L1.ffn.1", "--top", "100"], "top must be at most 64"),
    (["textualize", "L1.ffn.1", "--model", "bert-base-uncased"], "not found offline"),
    (["textualize", "L1.ffn.1", "--model", "./missing-model"], "does not exist"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_one_line_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurotext: error: ") and message in err and err.count("\n") == 1


def test_path_that_is_not_a_model(capsys, tmp_path):
    assert main(["textualize", "L1.ffn.1", "--model", str(tmp_path)]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_console_script_no_traceback_and_clean_stdout():
    exe = os.path.join(os.path.dirname(sys.executable), "neurotext")
    bad = subprocess.run([exe, "textualize", "L99.ffn.0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stdout == ""
    ok = subprocess.run([exe, "textualize", "L0.ffn.1", "--steps", "5", "--restarts", "1", "--json", "--no-vector"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)[0]["vector"] is None


NO_CUDA = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")


@NO_CUDA
@pytest.mark.parametrize("command", [
    ["textualize", "L0.ffn.1"],
    ["sweep", "L0.ffn.1", "--out", "{tmp}/s"],
    ["encode", "--words", "rain", "--layers", "0"],
    ["words", "{tmp}"],
    ["phrase", "L0.ffn.1", "--lengths", "1,2"],
])
def test_cuda_on_a_cpu_only_machine_is_one_line_exit_2(capsys, tmp_path, command):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command] + ["--device", "cuda"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurotext: error: ") and err.count("\n") == 1
    assert "device 'cuda' was asked for, but" in err and "use --device cpu or auto" in err
    assert not (tmp_path / "s").exists()  # refused before any store was made


@pytest.mark.parametrize("argv, message", [
    (["textualize", "L0.ffn.1", "--device", "gpu"], "device must be one of auto, cpu, cuda, cuda:N, got 'gpu'"),
    (["textualize", "L0.ffn.1", "--device", "cpu:1"], "device must be one of"),
    (["sweep", "L0.ffn.1", "--out", "x", "--gpus-per-worker", "-1"], "--gpus-per-worker: must be 0 or positive"),
    (["sweep", "L0.ffn.1", "--out", "x", "--gpus-per-worker", "0.5"], "is for --executor ray"),
])
def test_bad_device_options(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurotext: error: ") and message in err and err.count("\n") == 1


def test_device_cpu_runs(capsys):
    assert main(["textualize", "L0.ffn.1", "--steps", "3", "--restarts", "1", "--device", "cpu", "--json",
                 "--no-vector"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["neuron"] == "L0.ffn.1"


def test_version_prints_the_package_version():
    import neurotext

    out = subprocess.run([sys.executable, "-m", "neurotext", "--version"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0 and out.stdout.strip() == f"neurotext {neurotext.__version__}" == "neurotext 0.1.0"


def _subcommands():
    import argparse

    from neurotext.cli import build_parser

    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_help_has_an_example(command):
    text = _subcommands()[command].format_help()
    assert "Example: neurotext " + command in " ".join(text.split()), text
