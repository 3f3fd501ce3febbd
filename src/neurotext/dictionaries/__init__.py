"""Dictionaries trained here: sparse autoencoders (SAELens format) on one site of a model, and their quality.

:func:`train_dictionary` trains an SAE with SAELens's own training classes and trainer on a site's activations
at the text positions of the **train part** of a corpus (the document split of ``neurotext examples``), fed by
neurotext's own forward pass (:func:`neurotext.engine.activations.stream_sites`) through SAELens's shuffling
buffer; :func:`evaluate_dictionary` measures it on the **held-out (test) part**: fraction of variance
unexplained, L0, dead and dense features, and what the model's output loses when the site is replaced by the
reconstruction (beside zero-ablation). The directory written is SAELens's (``SAE.load_from_disk`` loads it) with
neurotext's manifest beside it (:data:`neurotext.model.dictionary.MANIFEST`).

Command line: ``neurotext dictionary train L3.ffn`` and ``neurotext dictionary eval DIR`` (docs/cli/dictionary.md).
"""

from .evaluate import DEFAULT_TOKENS, DENSE_SHARE, evaluate_dictionary, read_manifest, recorded_model, summary
from .train import TRAINABLE, DictionaryConfig, check_out, parse_site, parse_width, train_dictionary

__all__ = ["DEFAULT_TOKENS", "DENSE_SHARE", "TRAINABLE", "DictionaryConfig", "check_out", "evaluate_dictionary",
           "parse_site", "parse_width", "read_manifest", "recorded_model", "summary", "train_dictionary"]
