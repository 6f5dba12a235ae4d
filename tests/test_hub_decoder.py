"""A decoder reranker by Hub id and by `minibert fetch`, against the Hub-like server on 127.0.0.1
(tests/hub_server.py), never the real Hub: the files a decoder needs besides an encoder's (its chat template, in
chat_template.jinja or tokenizer_config.json; sentence-transformers' LogitScore folder) come, the rest does not.

The repositories are the qwen3-reranker golden's files: as sentence-transformers saves a Qwen3-Reranker
(modules.json + 1_LogitScore, chat_template.jinja), and as a bare Qwen3ForCausalLM repository (config, weights,
tokenizer.json and a tokenizer_config.json that holds the template), which minibert scores from "yes" and "no".
"""

import json
from pathlib import Path

import numpy as np
import pytest
from hub_server import folder, hub  # noqa: F401

from minibert import CrossEncoder
from minibert.formats.fetch import RECORD_NAME, fetch

GOLDEN = Path(__file__).parent / "fixtures" / "goldens" / "qwen3-reranker"
PAIRS = [("how do I define a function?", "Functions are defined with the def keyword."),
         ("how do I define a function?", "The cat sat on the mat."),
         ("", "an empty query"), ("a long one", "Functions are defined with the def keyword. " * 20)]
NOT_NEEDED = ("README.md", "generation_config.json", "golden.json", "golden.npz")
# What sentence-transformers saves for a decoder reranker, and what minibert needs of it.
SAVED_NEEDED = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                "1_LogitScore/config.json"}
BARE_NEEDED = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


def saved_files() -> dict[str, bytes]:
    """The golden's directory as a Hub repository holds it, with a model card beside it."""
    files = {p.relative_to(GOLDEN).as_posix(): p.read_bytes() for p in GOLDEN.rglob("*") if p.is_file()}
    return {**files, "README.md": b"# a decoder reranker\n"}


def bare_files() -> dict[str, bytes]:
    """A bare Qwen3ForCausalLM repository: no modules.json, the chat template inside tokenizer_config.json."""
    files = {name: data for name, data in saved_files().items()
             if name in BARE_NEEDED | {"README.md", "generation_config.json"}}
    tc = json.loads(files["tokenizer_config.json"])
    tc["chat_template"] = (GOLDEN / "chat_template.jinja").read_text(encoding="utf-8")
    files["tokenizer_config.json"] = json.dumps(tc).encode()
    return files


@pytest.fixture(scope="module")
def golden_scores():
    return CrossEncoder(GOLDEN, ops="numpy").predict(PAIRS)


@pytest.mark.parametrize("layout, files, needed", [("saved", saved_files, SAVED_NEEDED),
                                                   ("bare", bare_files, BARE_NEEDED)])
def test_hub_id_and_fetch_bring_what_a_decoder_needs(hub, tmp_path, golden_scores, layout, files, needed):  # noqa: F811
    """CrossEncoder("org/name") and `minibert fetch` get exactly the needed files, byte for byte, and the model
    scores as the golden's directory does (the bare one from the tokens "yes" and "no", the golden's LogitScore)."""
    repo_id = f"org/qwen3-reranker-{layout}"
    hub.add_repo(repo_id, files(), lfs={"model.safetensors"})

    ce = CrossEncoder(repo_id, ops="numpy")
    assert set(folder(ce.path)) == needed
    np.testing.assert_array_equal(ce.predict(PAIRS), golden_scores)

    dest = fetch(repo_id, dest=tmp_path / "fetched")
    got = folder(dest)
    assert set(got) == needed | {RECORD_NAME}
    assert all(got[name] == files()[name] for name in needed)
    for name in NOT_NEEDED:
        assert hub.file_requests(name) == [], f"{name} was downloaded"
    np.testing.assert_array_equal(CrossEncoder(dest, ops="numpy").predict(PAIRS), golden_scores)
