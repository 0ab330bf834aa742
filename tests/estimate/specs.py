"""ModelSpecs of the simulator's catalog models, read from the /api/show fields the simulator serves."""

from __future__ import annotations

from tuner.estimate.spec import ModelSpec
from tuner.sim.catalog import lookup
from tuner.sim.modelinfo import spec_of


def spec(tag: str) -> ModelSpec:
    mf = lookup(tag)
    assert mf is not None, tag
    return spec_of(mf)
