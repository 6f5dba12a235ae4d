"""The live models of the parity tests, built once per session (harness.py)."""

import pytest


@pytest.fixture(scope="session")
def live_models(tmp_path_factory):
    """live_models(spec, variant or its name) -> harness.Live, built on first use."""
    # harness.py needs torch and transformers: a test that asks for live models is skipped without them
    from parity.harness import LiveModels
    return LiveModels(tmp_path_factory.mktemp("parity"))
