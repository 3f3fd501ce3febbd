"""The model side: adapters that load Hugging Face models and run them only as deep as a target
(`adapters`), the canonical neuron names `L{layer}.{site}.{unit}` with their set syntax (`names`), and the
`--device` values (`devices`)."""

from .adapters import ARCHITECTURES, BUNDLED, Model, SiteActs, load_model  # noqa: F401,E402
from .devices import DEVICES, resolve_device  # noqa: F401,E402
from .names import SITES, Neuron, parse_neurons  # noqa: F401,E402
