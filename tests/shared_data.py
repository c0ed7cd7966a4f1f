"""One generated dataset per test module for the in-process runs of an experiment (mnist1d takes ~1 s
to make, and every `run(config)` loads its data again), and the real data folder where a machine has it.

    from shared_data import generated_once
    _data_generated_once = pytest.fixture(scope="module", autouse=True)(generated_once)

    data_dir = shared_data_dir()   # <repo>/../shared/data, or the test is skipped
"""

from __future__ import annotations

from pathlib import Path

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


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir(*names: str) -> str:
    """The real data folder beside the repository (<repo>/../shared/data) holding mnist.npz (or `names`,
    e.g. ``"cifar10.npz"``); skips the calling test when this machine does not have them."""
    needed = names or ("mnist.npz",)
    if not all((SHARED_DATA / n).exists() for n in needed):
        pytest.skip(f"no {', '.join(needed)} in {SHARED_DATA}")
    return str(SHARED_DATA)
