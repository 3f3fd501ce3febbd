"""neurotext: feature textualization of transformer neurons (Baeumel et al., BlackboxNLP 2023).

Finds the vector in a model's word-embedding space that maximizes a neuron, maps it to the real tokens
nearest to it, and measures how word-like the result is beside the best real tokens of an exhaustive
vocabulary scan. Encoders (BERT, RoBERTa, XLM-R, CamemBERT, DistilBERT, ELECTRA) and decoder LMs (GPT-2,
GPT-NeoX, Llama, Qwen2, Mistral); the bundled all-MiniLM-L6-v2 is the default model and SmolLM2-135M-Instruct
(``load_model("smollm2")``) the bundled decoder.

The public API is re-exported here: :func:`textualize`, :class:`Textualizer`, :class:`FTConfig`,
:func:`load_model`, :class:`Model`, :func:`parse_neurons`, :class:`Neuron`, :class:`NeuronResult` and
:class:`NeurotextError`.
"""

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
