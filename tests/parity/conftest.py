"""The live models of the parity tests, built once per session (harness.py)."""

import pytest


@pytest.fixture(scope="session")
def live_models(tmp_path_factory):
    """live_models(spec, variant or its name) -> harness.Live, built on first use."""
    from parity.harness import LiveModels  # needs torch and transformers: skips the test without them
    return LiveModels(tmp_path_factory.mktemp("parity"))
