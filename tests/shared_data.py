"""One generated dataset per test module for the in-process runs of an experiment (mnist1d takes ~1 s
to make, and every `run(config)` loads its data again).

    from shared_data import generated_once
    _data_generated_once = pytest.fixture(scope="module", autouse=True)(generated_once)
"""

from __future__ import annotations

import pytest

from experiments import config


def generated_once():
    """While active, `config.Data.load` returns the dataset made for equal Data options the first time."""
    load, made = config.Data.load, {}

    def load_once(self):
        if self not in made:
            made[self] = load(self)
        return made[self]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config.Data, "load", load_once)
        yield
