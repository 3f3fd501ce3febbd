"""neurotext phrase: the JSON contract, the table, one-line errors."""

import json

import pytest

from neurotext.cli import main

FAST = ["--iters", "2", "--swaps", "4", "--candidates", "4", "--starts", "2"]


def test_json_contract(capsys, tiny_models):
    assert main(["phrase", "L1.ffn.3", "L2.out.4", "--model", str(tiny_models["bert"]), "--lengths", "1,2,4",
                 "--json", *FAST]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert [d["neuron"] for d in docs] == ["L1.ffn.3", "L2.out.4"]
    for d in docs:
        assert {"neuron", "model", "phrases", "best_phrase", "best_token_activation", "ft_activation"} <= set(d)
        assert d["ft_activation"] is None
        assert [p["length"] for p in d["phrases"]] == [1, 2, 4]
        for p in d["phrases"]:
            assert set(p) == {"length", "tokens", "text", "activation", "position", "curve"}
            assert len(p["tokens"]) == p["length"] and set(p["tokens"][0]) == {"token", "id"}
            assert 1 <= p["position"] <= p["length"]
        assert d["best_phrase"]["activation"] == max(p["activation"] for p in d["phrases"])


def test_table_with_ft(capsys, tiny_models):
    assert main(["phrase", "L1.ffn.3", "--model", str(tiny_models["bert"]), "--lengths", "1,2", "--with-ft",
                 *FAST]) == 0
    out = capsys.readouterr().out
    assert "L1.ffn.3" in out and "FT activation" in out and "n/a" not in out.splitlines()[1]
    assert "best single token" in out and "best phrase: length" in out
    assert len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == 2


@pytest.mark.parametrize("argv, message", [
    (["phrase"], "no neurons given"),
    (["phrase", "L3.foo.1"], "unknown site 'foo'"),
    (["phrase", "L1.ffn.1", "--lengths", "1,0"], "phrase lengths must be integers 1-64, got 0"),
    (["phrase", "L1.ffn.1", "--lengths", "two"], "got 'two'"),
    (["phrase", "L1.ffn.1", "--iters", "0"], "must be a positive integer"),
])
def test_bad_input_is_one_line(capsys, tiny_models, argv, message):
    assert main(argv + ["--model", str(tiny_models["bert"])]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
