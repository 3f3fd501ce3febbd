"""Real text for a neuron: its max-activating contexts in a corpus, samples below the top, and its statistics.

Everything else neurotext says about a neuron comes from inputs it synthesizes (FT vectors, one-token scans,
phrases). This is the other half of reading a neuron (Neuroscope, OpenAI's neuron viewer, Neuronpedia): one
streaming pass over a corpus (:mod:`neurotext.engine.corpus_pass`) computes every requested unit at every
text position and keeps, per neuron:

- ``top``: the K contexts of highest activation (a context's activation is its maximum over its text
  positions), best first;
- ``ranges``: a few contexts sampled uniformly from each of R equal-width ranges below the top fifth of the
  maximum, so a reader sees more than the extremes;
- ``random``: R random contexts (the same for every neuron of a pass);
- ``stats``: count, mean, standard deviation, maximum and the share of positions above 0 over every text
  position, with histograms.

Documents are split into a train and a test part by a seeded hash of their text (default 80 / 20); the
top and random contexts of each part are kept too, for scoring read-outs on held-out text.

An example is ``{"text", "tokens", "ids", "activations", "position", "activation", "doc", "context", "part",
"spans"}``: ``ids`` is the whole model input (template included), ``position`` indexes it, ``activations``
holds the unit's value at every position of ``ids`` (None at template positions), so it can be replayed.

The package, by concept: :mod:`.config` (the settings), :mod:`.run` (the pass over a corpus: contexts, chunks,
batches, the registry of the contexts kept for their text), :mod:`.tables` (a finished pass's state into
Arrow tables) and :mod:`.records` (a table row as a :class:`NeuronExamples`). The pass's engine is
:mod:`neurotext.engine.corpus_pass` (forward), :mod:`neurotext.engine.fold` and :mod:`neurotext.engine.merge`.
"""

from .config import DTYPES, ExamplesConfig
from .records import NeuronExamples, row_to_examples, tables_to_examples
from .run import CorpusRun, Examiner, examples
from .tables import EXAMPLE_LISTS, Finalizer, contexts_schema, omega_squared, results_schema

__all__ = ["DTYPES", "EXAMPLE_LISTS", "CorpusRun", "Examiner", "ExamplesConfig", "Finalizer", "NeuronExamples",
           "contexts_schema", "examples", "omega_squared", "results_schema", "row_to_examples", "tables_to_examples"]
