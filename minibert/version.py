"""minibert's version: one place, read by the package, `minibert --version`, /info and fetch records."""

__version__ = "0.1.0"
