import pytest

from neurotext import Neuron, NeurotextError, parse_neurons
from neurotext.model.names import parse_layers

SIZES = {"ffn": 1536, "out": 384}


def names(spec):
    return [n.name for n in parse_neurons(spec, 6, SIZES, "m")]


def test_canonical_and_shorthands():
    assert names("L3.ffn.42") == ["L3.ffn.42"]
    assert names("L3.ffn.0-2") == ["L3.ffn.0", "L3.ffn.1", "L3.ffn.2"]
    assert names("L*.out.7") == [f"L{i}.out.7" for i in range(6)]
    assert len(names("L0-5.ffn.*")) == 6 * 1536
    assert names("L3.ffn.9,L1.out.2") == ["L1.out.2", "L3.ffn.9"]
    assert names("L3.ffn.1,5,9-10") == ["L3.ffn.1", "L3.ffn.5", "L3.ffn.9", "L3.ffn.10"]
    assert names(["L3.ffn.1", "L3.ffn.1"]) == ["L3.ffn.1"]  # de-duplicated
    assert parse_neurons("L2.out.3", 6, SIZES)[0] == Neuron(2, "out", 3)


@pytest.mark.parametrize("spec, message", [
    ("L3.foo.1", "unknown site 'foo'"),
    ("L6.ffn.1", "layers are 0-5"),
    ("L3.ffn.1536", "units are 0-1535"),
    ("L3.out.384", "units are 0-383"),
    ("L3ffn1", "malformed"),
    ("3.ffn.1", "malformed"),
    ("L3.ffn.5-2", "empty unit range"),
    ("", "no neurons"),
    ("5", "malformed"),  # a bare unit with no name before it
])
def test_bad_names_are_named(spec, message):
    with pytest.raises(NeurotextError, match=message):
        parse_neurons(spec, 6, SIZES, "m")


def test_parse_layers():
    assert parse_layers("0-2,5", 6) == [0, 1, 2, 5]
    assert parse_layers("*", 3) == [0, 1, 2]
    with pytest.raises(NeurotextError, match="layers are 0-5"):
        parse_layers("7", 6)
