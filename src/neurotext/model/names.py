"""Neuron names: ``L{layer}.{site}.{unit}``, layers and units counted from 0.

One canonical form per neuron (``L3.ffn.42``); every shorthand expands into it:
ranges (``L3.ffn.0-99``), wildcards (``L0-5.ffn.*``, ``L*.out.7``) and comma lists
(``L3.ffn.1,L4.out.2`` or, sharing the prefix, ``L3.ffn.1,5,9``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import NeurotextError

#: The sites a neuron can live at, and what each one is (DESIGN.md section 2).
SITES = {
    "ffn": "FFN intermediate neuron (output of the FFN's first linear layer, before/after the activation)",
    "out": "dimension of the layer's output hidden state",
}

_NAME = re.compile(r"^L(?P<layer>\*|\d+(?:-\d+)?)\.(?P<site>[A-Za-z_]+)\.(?P<unit>\*|\d+(?:-\d+)?)$")
_UNITS_ONLY = re.compile(r"^(\*|\d+(?:-\d+)?)$")


@dataclass(frozen=True, order=True)
class Neuron:
    """One neuron. Orders by (layer, site, unit), which is also the sweep order."""

    layer: int
    site: str
    unit: int

    @property
    def name(self) -> str:
        return f"L{self.layer}.{self.site}.{self.unit}"

    def __str__(self) -> str:
        return self.name


def _expand(field: str, size: int, what: str, spec: str, model: str) -> range:
    if field == "*":
        return range(size)
    lo, _, hi = field.partition("-")
    lo_i, hi_i = int(lo), int(hi or lo)
    if lo_i > hi_i:
        raise NeurotextError(f"{spec!r}: empty {what} range {field} (write low-high)")
    if hi_i >= size:
        raise NeurotextError(f"{spec!r}: {what} {hi_i} is out of range for {model}: {what}s are 0-{size - 1}")
    return range(lo_i, hi_i + 1)


def parse_neurons(specs, n_layers: int, site_sizes: dict[str, int], model: str = "this model") -> list[Neuron]:
    """Expand neuron specs into canonical, de-duplicated neurons in (layer, site, unit) order.

    Args:
        specs: a string or a list of strings, each one name, range, wildcard or comma list.
        n_layers: number of layers of the model (valid layers are ``0..n_layers-1``).
        site_sizes: units per site for this model, e.g. ``{"ffn": 1536, "out": 384}``.
        model: the model's name, used in error messages.

    Returns:
        Sorted list of unique :class:`Neuron`.

    Raises:
        NeurotextError: malformed name, unknown site, layer or unit out of range, or an empty list.
    """
    if isinstance(specs, str):
        specs = [specs]
    parts = [p.strip() for s in specs for p in str(s).split(",") if p.strip()]
    if not parts:
        raise NeurotextError("no neurons given: name at least one, e.g. L3.ffn.42 or L0-5.ffn.*")
    out: set[Neuron] = set()
    prefix = None  # "L3.ffn." of the last full name, for "L3.ffn.1,5,9"
    for part in parts:
        if _UNITS_ONLY.match(part) and prefix is not None:
            part = prefix + part
        m = _NAME.match(part)
        if not m:
            raise NeurotextError(
                f"malformed neuron name {part!r}: expected L{{layer}}.{{site}}.{{unit}}, e.g. L3.ffn.42, "
                "L3.ffn.0-99, L0-5.ffn.*, L*.out.7"
            )
        site = m["site"]
        if site not in site_sizes:
            raise NeurotextError(f"unknown site {site!r} in {part!r}: valid sites are {', '.join(site_sizes)}")
        prefix = f"L{m['layer']}.{site}."
        layers = _expand(m["layer"], n_layers, "layer", part, model)
        units = _expand(m["unit"], site_sizes[site], "unit", part, model)
        out.update(Neuron(lay, site, u) for lay in layers for u in units)
    return sorted(out)


def parse_layers(spec: str, n_layers: int, model: str = "this model") -> list[int]:
    """Parse a layer list such as ``0-5``, ``*`` or ``0,3,5`` into sorted unique layers."""
    layers: set[int] = set()
    for part in (p.strip() for p in str(spec).split(",")):
        if not _UNITS_ONLY.match(part):
            raise NeurotextError(f"malformed layer list {spec!r}: expected e.g. 0-5, 3, 0,3,5 or *")
        layers.update(_expand(part, n_layers, "layer", spec, model))
    return sorted(layers)
