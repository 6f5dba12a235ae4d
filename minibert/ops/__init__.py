"""The op sets: every operation a forward pass needs besides NumPy's own array arithmetic.

An op set is an explicit record (`OpSet`) of functions with fixed names and signatures. There are
two, computing the same numbers (within 1e-6; tests/test_kernels.py checks each op against its twin):

    NUMPY     minibert/ops/reference.py: the NumPy reference, each op a few lines
    numba     minibert/ops/kernels.py: the same ops compiled with Numba (the optional `fast` extra)

A family's forward pass takes the op set as an argument, so the tests run both and compare them,
and a tool can swap one op for another (`OpSet.replace`: the oracle recomputes a stage with a
planted difference, explain records attention). Matrix products stay with NumPy's BLAS in both.
Either op set runs one pass on several cores as `shared(ops, workers)` (minibert/ops/shared.py).
"""

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable

from minibert.errors import ConfigError
from minibert.ops import reference

OP_SET_NAMES = ("numpy", "numba")


@dataclass(frozen=True)
class OpSet:
    name: str
    linear: Callable          # (x [.., in], weight [out, in], bias [out] or None, out=None) -> x @ W.T + b, [.., out]
    layer_norm: Callable      # (x [.., H], weight [H], bias [H], eps, out=None) -> [.., H]
    add_layer_norm: Callable  # (x, residual, weight, bias, eps, out=None) -> LayerNorm(x + residual)
    rms_norm: Callable        # (x [.., H], weight [H], eps, out=None) -> x / sqrt(mean(x^2) + eps) * weight
    gelu: Callable            # (x, out=None): exact erf GELU, elementwise
    linear_gelu: Callable     # (x, weight, bias, out=None) -> GELU(linear(x, weight, bias))
    relu: Callable            # max(x, 0), elementwise
    softmax: Callable         # over the last axis
    attention: Callable       # (q, k, v, offsets, num_heads, window=None, first_only=False, ...) -> context
    rotary_tables: Callable   # (positions [N], head_dim, theta, divisor=1) -> cos, sin [N, HD / 2]
    apply_rotary: Callable    # (x [N, H], cos, sin, num_heads, out=None) -> [N, H]
    geglu: Callable           # (h [N, 2I], out=None) -> GELU(input) * gate, [N, I]
    swiglu: Callable          # (gate [N, I], up [N, I], out=None) -> SiLU(gate) * up, [N, I]
    gelu_tanh_gate: Callable  # (gate [N, I], up [N, I], out=None) -> tanh-GELU(gate) * up, [N, I] (Gemma)
    widen: Callable           # (stored half-precision weights: bfloat16 bits as uint16, or float16) -> float32
    each: Callable            # (fn, items) -> None: fn(item) for every item, items independent (own output rows)

    def replace(self, **ops) -> "OpSet":
        """This op set with some ops replaced; its name says which."""
        return dataclasses.replace(self, name=f"{self.name}+{'+'.join(ops)}", **ops)

    def __repr__(self):
        return f"OpSet({self.name!r})"


def _of(name: str, module) -> OpSet:
    """The op set of a module that defines every op by its name."""
    return OpSet(name, **{f.name: getattr(module, f.name) for f in dataclasses.fields(OpSet) if f.name != "name"})


NUMPY = _of("numpy", reference)


def numba_ops() -> OpSet:
    """The Numba kernels' op set; ImportError when numba is not installed. (numba is an optional extra:
    the kernels are imported when their op set is asked for.)"""
    from minibert.ops import kernels

    return _of("numba", kernels)


def default_ops() -> OpSet:
    """The Numba kernels when numba is installed and MINIBERT_NO_NUMBA is not set, else NumPy."""
    if os.environ.get("MINIBERT_NO_NUMBA", "") not in ("", "0"):
        return NUMPY
    try:
        return numba_ops()
    except ImportError:
        return NUMPY


def op_set(ops=None) -> OpSet:
    """An op set given as itself, by name ("numpy", "numba"), or None for the default."""
    if ops is None:
        return default_ops()
    if isinstance(ops, OpSet):
        return ops
    if ops == "numpy":
        return NUMPY
    if ops == "numba":
        return numba_ops()
    raise ConfigError(f"ops must be an OpSet, one of {', '.join(map(repr, OP_SET_NAMES))} or None, found {ops!r}")
