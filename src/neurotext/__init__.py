"""neurotext: feature textualization of BERT-family neurons (Baeumel et al., BlackboxNLP 2023)."""

from .errors import NeurotextError
from .model import BUNDLED, Model, load_model
from .names import Neuron, parse_neurons
from .optimize import FTConfig
from .textualize import NeuronResult, Textualizer, textualize

__version__ = "0.1.0"

__all__ = [
    "BUNDLED",
    "FTConfig",
    "Model",
    "Neuron",
    "NeuronResult",
    "NeurotextError",
    "Textualizer",
    "load_model",
    "parse_neurons",
    "textualize",
    "__version__",
]
