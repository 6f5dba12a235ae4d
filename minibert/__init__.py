"""minibert: a framework-free BERT cross-encoder (NumPy, optional Numba, no PyTorch)."""

from minibert.cross_encoder import CrossEncoder
from minibert.errors import (ConfigError, FetchError, InputError, MinibertError, ModelFormatError,
                             NumericalError, TraceError, TruncationWarning, UnsafeCheckpointError)
from minibert.sentence_encoder import SentenceEncoder

__version__ = "0.1.0"

__all__ = [
    "CrossEncoder",
    "SentenceEncoder",
    "MinibertError",
    "ConfigError",
    "ModelFormatError",
    "UnsafeCheckpointError",
    "InputError",
    "FetchError",
    "NumericalError",
    "TraceError",
    "TruncationWarning",
    "__version__",
]
