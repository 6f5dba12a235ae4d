"""The two op sets every numerical test runs: NumPy's reference ops and the Numba kernels, by name
(minibert.ops.op_set turns a name into the OpSet)."""

import importlib.util

import pytest

NUMBA = importlib.util.find_spec("numba") is not None

OP_SETS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("numba", id="numba", marks=pytest.mark.skipif(not NUMBA, reason="numba is not installed")),
]
