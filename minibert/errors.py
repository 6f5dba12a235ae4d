"""Everything minibert raises on purpose derives from MinibertError.

The errors about values (config, model files, input) also derive from ValueError, so code
written against plain Python exceptions keeps working; FetchError (the network) does not. Messages say what was expected, what was found, and where
(file, field, tensor, pair index).
"""


class MinibertError(Exception):
    """Base class of every error minibert raises on purpose."""


class ConfigError(MinibertError, ValueError):
    """A bad model configuration (config.json, tokenizer_config.json) or a bad option value."""


class ModelFormatError(MinibertError, ValueError):
    """Model files that are missing, unreadable, or do not fit a BERT cross-encoder."""


class ModelNotFoundError(ModelFormatError):
    """A model name or path that names no model: no such directory (or a file), nor such a Hub model.

    The command line counts it as bad usage (exit status 2)."""


class UnsafeCheckpointError(ModelFormatError):
    """A checkpoint that would run code or reach outside its own data to be loaded."""


class InputError(MinibertError, ValueError):
    """Input text that cannot be scored (not a pair of two strings, not encodable text)."""


class TraceError(InputError):
    """A trace file (minibert-trace/1, see minibert/oracle.py) that is unreadable or inconsistent."""


class FetchError(MinibertError):
    """A model that cannot be fetched: no such repository, no access, no usable files, no network."""


class NumericalError(MinibertError):
    """A forward pass that produced a non-finite score or embedding (NaN or infinity)."""


class TruncationWarning(UserWarning):
    """An input longer than max_length tokens was truncated (warned once per process)."""
