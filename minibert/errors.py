"""Everything minibert raises on purpose derives from MinibertError.

The errors about values (config, model files, input) also derive from ValueError, so code
written against plain Python exceptions keeps working; FetchError (the network) does not.
Messages say what was expected, what was found, and where (file, field, tensor, pair index);
`show` puts a value read from an untrusted file into a message at a bounded length.
"""

import reprlib
import sys

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 8, 4, 80, 80, 80


def show(value) -> str:
    """A repr of bounded length and depth, for values read from untrusted files (any JSON value)."""
    try:
        return _REPR.repr(value)
    except ValueError:  # an int too long to turn into text (Python's int-to-str digit limit)
        return f"<an integer of more than {getattr(sys, 'get_int_max_str_digits', lambda: 4300)()} digits>"


class MinibertError(Exception):
    """Base class of every error minibert raises on purpose."""


class ConfigError(MinibertError, ValueError):
    """A bad model configuration (config.json, tokenizer_config.json) or a bad option value."""


class ModelFormatError(MinibertError, ValueError):
    """Model files that are missing, unreadable, or do not fit a BERT cross-encoder."""


class ModelNotFoundError(ModelFormatError):
    """A model name or path that names no model: no such directory (or a file), nor such a Hub model.

    The command line counts it as bad usage (exit status 2)."""


class NotACrossEncoderError(ModelFormatError):
    """A model with no classification head (a sentence encoder, a bare base model) loaded as a cross-encoder.

    The command line counts it as bad usage (exit status 2): the model is there, of another kind."""


class UnsafeCheckpointError(ModelFormatError):
    """A checkpoint that would run code or reach outside its own data to be loaded."""


class InputError(MinibertError, ValueError):
    """Input text that cannot be scored (not a pair of two strings, not encodable text)."""


class TraceError(InputError):
    """A trace file (minibert-trace/1, see minibert/oracle/trace.py) that is unreadable or inconsistent."""


class FetchError(MinibertError):
    """A model that cannot be fetched: no such repository, no access, no usable files, no network."""


class NumericalError(MinibertError):
    """A forward pass that produced a non-finite score or embedding (NaN or infinity)."""


class TruncationWarning(UserWarning):
    """An input longer than max_length tokens was truncated (warned once per process)."""
