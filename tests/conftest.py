"""Shared fixtures: a tiny random BERT cross-encoder checkpoint in HuggingFace's layout; no real Hub."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

# Imported now, before any test sets HF_* variables: huggingface_hub reads some of them at import.
import huggingface_hub.constants  # noqa: F401


# Lines a test module leaves for the end of the run (the fuzz counts): printed in pytest's terminal
# summary, so that they do not break into its progress line.
SUMMARY_LINES = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(SUMMARY_LINES, [])
    if lines:
        terminalreporter.section("minibert")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _no_real_hub(monkeypatch, tmp_path_factory):
    """Every test runs offline against an empty HuggingFace cache of its own session: a name that
    is not a directory is looked up in that cache only, never on the Hub. The Hub tests
    (tests/test_hub.py, tests/test_fetch.py) turn HF_HUB_OFFLINE off and point HF_ENDPOINT at a
    server on 127.0.0.1; HF_ENDPOINT's default here is a closed port on 127.0.0.1."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
    for name in ("HF_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Whole words first, then single characters and their '##' continuations, so that any lowercase
# ASCII word splits into WordPiece tokens instead of becoming [UNK].
WORDS = ("the a an of and to in is are was what how why who where which do does not city capital "
         "paris france berlin germany rome italy cat cats dog dogs sat on mat cheese moon sun river "
         "fish bird tree water blue green red big small fast slow").split()
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789")
PUNCTUATION = list(".,!?;:'\"-()")
VOCAB = SPECIAL_TOKENS + WORDS + CHARACTERS + ["##" + c for c in CHARACTERS] + PUNCTUATION


def build_tiny_bert(directory: Path, *, num_labels: int = 1, seed: int = 0, hidden_size: int = 32,
                    num_hidden_layers: int = 2, num_attention_heads: int = 4, intermediate_size: int = 64,
                    max_position_embeddings: int = 64) -> Path:
    """Write config.json, model.safetensors and vocab.txt of a random BertForSequenceClassification.

    Every parameter is re-randomized, LayerNorm included (default init would hide a swapped or
    missing LayerNorm), with a spread wide enough that different inputs get clearly different scores.
    """
    rng = np.random.default_rng(seed)
    V, P, TV, H, I, L = len(VOCAB), max_position_embeddings, 2, hidden_size, intermediate_size, num_labels

    def weights(*shape, std=0.2):
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    tensors = {}

    def linear(prefix, n_out, n_in, std=0.2):
        tensors[prefix + ".weight"] = weights(n_out, n_in, std=std)  # [out, in], as nn.Linear
        tensors[prefix + ".bias"] = weights(n_out, std=std)

    def layer_norm(prefix):
        tensors[prefix + ".weight"] = 1.0 + weights(H, std=0.2)
        tensors[prefix + ".bias"] = weights(H, std=0.2)

    tensors["bert.embeddings.word_embeddings.weight"] = weights(V, H, std=1.0)
    tensors["bert.embeddings.position_embeddings.weight"] = weights(P, H, std=0.5)
    tensors["bert.embeddings.token_type_embeddings.weight"] = weights(TV, H, std=0.5)
    layer_norm("bert.embeddings.LayerNorm")
    for i in range(num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            linear(p + "attention.self." + name, H, H)
        linear(p + "attention.output.dense", H, H)
        layer_norm(p + "attention.output.LayerNorm")
        linear(p + "intermediate.dense", I, H)
        linear(p + "output.dense", H, I)
        layer_norm(p + "output.LayerNorm")
    linear("bert.pooler.dense", H, H, std=0.5)
    linear("classifier", L, H, std=1.0)

    config = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "vocab_size": V,
        "hidden_size": H,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "intermediate_size": I,
        "hidden_act": "gelu",
        "max_position_embeddings": P,
        "type_vocab_size": TV,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "id2label": {str(i): f"LABEL_{i}" for i in range(L)},
        "label2id": {f"LABEL_{i}": i for i in range(L)},
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                    "model_max_length": P}, indent=2) + "\n", encoding="utf-8")
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory: tiny_model_dir(num_labels=1, seed=0, **sizes) -> Path of a tiny random checkpoint.

    Built once per session and argument set; treat it as read-only (copy it to change it).
    """
    built = {}

    def make(num_labels: int = 1, seed: int = 0, **sizes) -> Path:
        key = (num_labels, seed, tuple(sorted(sizes.items())))
        if key not in built:
            directory = tmp_path_factory.mktemp(f"tiny-bert-l{num_labels}-s{seed}")
            built[key] = build_tiny_bert(directory, num_labels=num_labels, seed=seed, **sizes)
        return built[key]

    return make


GOLDENS = Path(__file__).parent / "fixtures" / "goldens"


@pytest.fixture(scope="module")
def ce():
    """The tiny-l1 golden model (1 label, uncased, tokenizer.json), loaded once per module."""
    from minibert import CrossEncoder
    return CrossEncoder(GOLDENS / "tiny-l1")


@pytest.fixture(scope="module")
def ce3():
    """The tiny-l3 golden model (3 labels, cased, vocab.txt only)."""
    from minibert import CrossEncoder
    return CrossEncoder(GOLDENS / "tiny-l3")
