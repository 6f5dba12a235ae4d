"""minibert: a framework-free cross-encoder (reranker): NumPy, optional Numba, no PyTorch.

The package is built in layers, each importing only those below it:

    errors.py, ops/     the error hierarchy; the op sets (NumPy reference, Numba kernels)
    formats/            files on disk: config.json, checkpoints, tokenizers, sentence-transformers
                        directories, the HuggingFace Hub
    models/             the registry and one file per architecture (its Config, tensor names, forward)
    runtime/            loading a model once, running forward passes; CrossEncoder, SentenceEncoder
    oracle/             traces, comparison with another backend, diagnoses, explain
    cli.py, serve/, batch.py   the adapters: the command line, the HTTP server, Ray Data
"""

from minibert.errors import (
                             ConfigError,
                             FetchError,
                             InputError,
                             MinibertError,
                             ModelFormatError,
                             NumericalError,
                             TraceError,
                             TruncationWarning,
                             UnsafeCheckpointError,
)
from minibert.runtime.cross_encoder import CrossEncoder
from minibert.runtime.sentence_encoder import SentenceEncoder
from minibert.version import __version__

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
