"""Unit names: ``L{layer}.{site}.{unit}`` for neurons, ``L{layer}.{site}.f{index}`` for dictionary features;
layers, units and features counted from 0.

One canonical form per unit (``L3.ffn.42``, ``L3.ffn.f12``); every shorthand expands into it: ranges
(``L3.ffn.0-99``, ``L3.ffn.f0-99``), wildcards (``L0-5.ffn.*``, ``L*.out.7``, ``L*.ffn.f*``) and comma lists
(``L3.ffn.1,L4.out.2`` or, sharing the prefix, ``L3.ffn.1,5,9``).

A feature is a unit like a neuron: its :class:`Neuron` has the site ``ffn.f`` (the features of the dictionary
on ``ffn``), so everything keyed by (layer, site) keeps neurons and features apart without knowing which is
which (:func:`feature_site`, :func:`base_site`).
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

#: The mark of a feature: ``L3.ffn.f12`` is feature 12 of the dictionary on ``L3.ffn``; its site is ``ffn.f``.
FEATURE = "f"

_NAME = re.compile(r"^L(?P<layer>\*|\d+(?:-\d+)?)\.(?P<site>[A-Za-z_]+)\.(?P<feature>f)?(?P<unit>\*|\d+(?:-\d+)?)$")
_UNITS_ONLY = re.compile(r"^(f?)(\*|\d+(?:-\d+)?)$")


def feature_site(site: str) -> str:
    """The site of the features of a dictionary on ``site``: ``ffn`` -> ``ffn.f``."""
    return f"{site}.{FEATURE}"


def is_feature_site(site: str) -> bool:
    return site.endswith(f".{FEATURE}")


def base_site(site: str) -> str:
    """The model site a unit reads: ``ffn.f`` -> ``ffn``; a neuron site is its own."""
    return site[: -len(FEATURE) - 1] if is_feature_site(site) else site


def unit_name(layer: int, site: str, unit: int) -> str:
    """The canonical name of a unit: ``L3.ffn.42``, or ``L3.ffn.f12`` for a feature (site ``ffn.f``)."""
    return f"L{layer}.{site}{unit}" if is_feature_site(site) else f"L{layer}.{site}.{unit}"


def parse_name(name: str):
    """A canonical unit name -> :class:`Neuron`, or None for anything else (a range, a direction's name)."""
    m = _NAME.match(name)
    if m is None or not m["layer"].isdigit() or not m["unit"].isdigit():
        return None
    site = feature_site(m["site"]) if m["feature"] else m["site"]
    return Neuron(int(m["layer"]), site, int(m["unit"]))


@dataclass(frozen=True, order=True)
class Neuron:
    """One unit: a neuron, or a dictionary feature (site ``ffn.f``). Orders by (layer, site, unit), which is also
    the sweep order."""

    layer: int
    site: str
    unit: int

    @property
    def name(self) -> str:
        return unit_name(self.layer, self.site, self.unit)

    @property
    def feature(self) -> bool:
        """A dictionary feature (site ``ffn.f``), not a neuron."""
        return is_feature_site(self.site)

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


def parse_neurons(specs, n_layers: int, site_sizes: dict[str, int], model: str = "this model",
                  features: dict | None = None) -> list[Neuron]:
    """Expand unit specs into canonical, de-duplicated units in (layer, site, unit) order.

    Args:
        specs: a string or a list of strings, each one name, range, wildcard or comma list.
        n_layers: number of layers of the model (valid layers are ``0..n_layers-1``).
        site_sizes: units per site for this model, e.g. ``{"ffn": 1536, "out": 384}``.
        model: the model's name, used in error messages.
        features: the dictionaries features can be named from: ``{(layer, site): width}`` (``(3, "ffn"): 6144``
            for a dictionary of 6,144 features on ``L3.ffn``). ``L*.ffn.f*`` expands over the layers that have
            one.

    Returns:
        Sorted list of unique :class:`Neuron` (a feature's site is ``ffn.f``).

    Raises:
        NeurotextError: malformed name, unknown site, layer or unit out of range, a feature without a
            dictionary on its site, or an empty list.
    """
    if isinstance(specs, str):
        specs = [specs]
    features = features or {}
    parts = [p.strip() for s in specs for p in str(s).split(",") if p.strip()]
    if not parts:
        raise NeurotextError("no neurons given: name at least one, e.g. L3.ffn.42 or L0-5.ffn.*")
    out: set[Neuron] = set()
    prefix = None  # "L3.ffn." of the last full name, for "L3.ffn.1,5,9" (and "L3.ffn.f1,f5")
    for part in parts:
        if _UNITS_ONLY.match(part) and prefix is not None:
            part = prefix + part
        m = _NAME.match(part)
        if not m:
            raise NeurotextError(
                f"malformed neuron name {part!r}: expected L{{layer}}.{{site}}.{{unit}}, e.g. L3.ffn.42, "
                "L3.ffn.0-99, L0-5.ffn.*, L*.out.7, or a dictionary feature L3.ffn.f12"
            )
        site = m["site"]
        if site not in site_sizes:
            raise NeurotextError(f"unknown site {site!r} in {part!r}: valid sites are {', '.join(site_sizes)}")
        prefix = f"L{m['layer']}.{site}."
        layers = _expand(m["layer"], n_layers, "layer", part, model)
        if not m["feature"]:
            units = _expand(m["unit"], site_sizes[site], "unit", part, model)
            out.update(Neuron(lay, site, u) for lay in layers for u in units)
            continue
        have = sorted(lay for (lay, s) in features if s == site)
        where = ", ".join(f"L{lay}.{site}" for lay in have) or "none"
        if m["layer"] == "*":
            layers = [lay for lay in layers if (lay, site) in features]
        missing = [lay for lay in layers if (lay, site) not in features]
        if missing or not layers:
            at = f"L{missing[0]}.{site}" if missing else f"any layer's {site}"
            raise NeurotextError(f"{part!r} names dictionary features, but no dictionary is loaded on {at} "
                                 f"(dictionaries on {site}: {where}); give one with --dictionary DIR")
        for lay in layers:
            units = _expand(m["unit"], features[(lay, site)], "feature", part, f"the dictionary on L{lay}.{site}")
            out.update(Neuron(lay, feature_site(site), u) for u in units)
    return sorted(out)


def parse_layers(spec: str, n_layers: int, model: str = "this model") -> list[int]:
    """Parse a layer list such as ``0-5``, ``*`` or ``0,3,5`` into sorted unique layers."""
    layers: set[int] = set()
    for part in (p.strip() for p in str(spec).split(",")):
        if not _UNITS_ONLY.match(part):
            raise NeurotextError(f"malformed layer list {spec!r}: expected e.g. 0-5, 3, 0,3,5 or *")
        layers.update(_expand(part, n_layers, "layer", spec, model))
    return sorted(layers)
