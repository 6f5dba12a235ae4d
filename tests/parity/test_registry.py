"""Every family minibert runs has a live-parity spec: the families come from the registry
(minibert.models.FAMILIES), the specs from the test classes of this folder (battery.py's ParityBattery
subclasses), and neither list is typed by hand. A family added to FAMILIES without a spec fails here."""

import importlib
from pathlib import Path

from minibert.models import FAMILIES, find_family
from parity.battery import ParityBattery
from parity.harness import GOLDENS, core

HERE = Path(__file__).parent


def specs() -> list:
    """The spec of every ParityBattery subclass in tests/parity/test_*.py."""
    modules = [importlib.import_module(f"parity.{path.stem}") for path in sorted(HERE.glob("test_*.py"))]
    return [cls.spec for module in modules for cls in vars(module).values()
            if isinstance(cls, type) and issubclass(cls, ParityBattery) and cls.spec is not None]


def test_every_family_has_a_parity_spec():
    covered = {find_family(spec.model_type).name for spec in specs() if find_family(spec.model_type)}
    missing = [family.name for family in FAMILIES if family.name not in covered]
    assert not missing, f"no live-parity spec (tests/parity/test_<family>.py) for {missing}"


def test_every_spec_names_a_family_and_its_tokenizer_files():
    """A spec's model_type is one minibert reads, and each variant's tokenizer source is a golden fixture
    (or a directory) with tokenizer files."""
    for spec in specs():
        assert find_family(spec.model_type), f"{spec.model_type}: no family of minibert.models.FAMILIES reads it"
        for variant in spec.variants:
            if variant.weights is None:
                assert variant.tokenizer_dir.parent == GOLDENS, f"{variant.name}: {variant.tokenizer} is not a golden"
            assert core.tokenizer_files(variant.tokenizer_dir), f"{variant.name}: no tokenizer files"
