"""Every family minibert runs has a live-parity spec: the families come from the registry
(minibert.models.FAMILIES), the specs from the test classes of this folder (battery.py's ParityBattery
subclasses), and neither list is typed by hand. A family added to FAMILIES without a spec fails here.

The one exception is a family whose reference is custom code (config.json's auto_map, run by transformers only
with trust_remote_code from the Hub: GTE "new", jina's XLM-RoBERTa). It cannot be built live here, so it must
have committed goldens instead, made from that code in a scratch environment (tools/goldens)."""

import importlib
import json
from pathlib import Path

from minibert.models import FAMILIES, family_of, find_family
from minibert.runtime.load import load_config
from parity.battery import DecoderParity, ParityBattery
from parity.harness import GOLDENS, core

HERE = Path(__file__).parent


def specs() -> list:
    """The spec of every ParityBattery (and DecoderParity) subclass in tests/parity/test_*.py."""
    modules = [importlib.import_module(f"parity.{path.stem}") for path in sorted(HERE.glob("test_*.py"))]
    return [cls.spec for module in modules for cls in vars(module).values()
            if isinstance(cls, type) and issubclass(cls, (ParityBattery, DecoderParity)) and cls.spec is not None]


def golden_families() -> dict:
    """Family name -> is its golden made from custom code (auto_map), over every golden fixture (token-id-only
    fixtures included: CamemBERT's golden is its tokenizer, its forward is RoBERTa's, checked live here)."""
    found = {}
    for path in sorted(GOLDENS.glob("*/golden.json")):
        config = json.loads((path.parent / "config.json").read_text(encoding="utf-8"))
        name = family_of(load_config(path.parent)).name
        found[name] = found.get(name, False) or "auto_map" in config
    return found


def test_every_family_has_a_parity_spec_or_custom_code_goldens():
    covered = {find_family(spec.model_type).name for spec in specs() if find_family(spec.model_type)}
    custom = {name for name, is_custom in golden_families().items() if is_custom}
    missing = [family.name for family in FAMILIES if family.name not in covered | custom]
    assert not missing, (f"no live-parity spec (tests/parity/test_<family>.py) and no custom-code goldens "
                         f"(tests/fixtures/goldens) for {missing}")


def test_every_family_has_goldens():
    """Goldens are the offline half of parity: every family has at least one committed fixture."""
    missing = [family.name for family in FAMILIES if family.name not in golden_families()]
    assert not missing, f"no golden fixture (tests/fixtures/goldens, made by tools/goldens) for {missing}"


def test_every_spec_names_a_family_and_its_tokenizer_files():
    """A spec's model_type is one minibert reads, and each variant's tokenizer source is a golden fixture
    (or a directory) with tokenizer files."""
    for spec in specs():
        assert find_family(spec.model_type), f"{spec.model_type}: no family of minibert.models.FAMILIES reads it"
        for variant in spec.variants:
            if variant.weights is None:
                assert variant.tokenizer_dir.parent == GOLDENS, f"{variant.name}: {variant.tokenizer} is not a golden"
            assert core.tokenizer_files(variant.tokenizer_dir), f"{variant.name}: no tokenizer files"
