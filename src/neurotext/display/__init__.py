"""How a result is shown: :mod:`~neurotext.display.card` (the HTML card of a neuron or feature, shared by the
atlas and notebooks), :mod:`~neurotext.display.notebook` (Jupyter) and :mod:`~neurotext.display.render` (the
terminal)."""
