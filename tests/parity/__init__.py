"""Live parity against transformers: fresh models built by transformers in a temp dir, scored by both.

    harness.py         texts, specs, building, transformers' reference, comparisons: written once
    battery.py         the checks every family runs (ParityBattery); a decoder reranker's are its own (DecoderParity)
    test_<family>.py   a family's Spec, its `class Test<Family>(ParityBattery)`, and its own checks
    test_registry.py   every family of minibert.models.FAMILIES has a spec
"""
