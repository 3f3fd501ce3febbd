"""neurotext: feature textualization of BERT-family neurons (Baeumel et al., BlackboxNLP 2023)."""

__version__ = "0.1.0"

from .engine.optimize import FTConfig  # noqa: E402
from .errors import NeurotextError  # noqa: E402
from .model.adapters import BUNDLED, Model, load_model  # noqa: E402
from .model.names import Neuron, parse_neurons  # noqa: E402
from .textualize import NeuronResult, Textualizer, textualize  # noqa: E402

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
