"""minibert: a framework-free BERT cross-encoder (NumPy, optional Numba, no PyTorch)."""

from minibert.cross_encoder import CrossEncoder
from minibert.errors import ConfigError, InputError, MinibertError, ModelFormatError, UnsafeCheckpointError

__version__ = "0.1.0"

__all__ = [
    "CrossEncoder",
    "MinibertError",
    "ConfigError",
    "ModelFormatError",
    "UnsafeCheckpointError",
    "InputError",
    "__version__",
]
