"""The two op sets every numerical test runs: NumPy's reference ops and the Numba kernels."""

import importlib.util

import pytest

NUMBA = importlib.util.find_spec("numba") is not None

OP_SETS = [
    pytest.param("ops", id="numpy"),
    pytest.param("kernels", id="numba", marks=pytest.mark.skipif(not NUMBA, reason="numba is not installed")),
]
