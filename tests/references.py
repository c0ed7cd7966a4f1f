"""Comparing arrays with the committed reference records (tests/data/README.md) "to float rounding".

The references were written by the code before the library layout at XLA's default optimisation
level; the tests compile at level 0 (tests/conftest.py), which orders some float32 sums differently.
Both are rounding: integers and booleans must be equal, floats within rtol 1e-4 and an absolute 1e-5
of the array's largest magnitude (an eigenvalue's float32 error scales with the matrix's norm, not
with the eigenvalue). A change of the computation moves numbers far more than that.
"""

from __future__ import annotations

import numpy as np


def assert_close(got, expected, key: str = "") -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, (key, got.shape, expected.shape)
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(got, expected, err_msg=key)
        return
    finite = np.isfinite(expected)
    scale = float(np.max(np.abs(expected[finite]))) if finite.any() else 1.0
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * (scale or 1.0), err_msg=key)
