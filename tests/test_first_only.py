"""The last layer computed for the first tokens only (first_only in bert.run_layers, DeBERTa's and
ModernBERT's encoders): the same logits as the full last layer, within float32 rounding, with the
last feed-forward network run on B rows.

forward(return_stages=True) computes every row of every layer, so it is the full computation to
compare against, on every family whose head reads the first token alone.
"""

import importlib
import types
from pathlib import Path

import numpy as np
import pytest

from minibert import CrossEncoder
from minibert.model import Batch, forward
from op_sets import OP_SETS

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
FIRST_TOKEN_HEADS = ["tiny-l3", "roberta-bpe", "xlmr-unigram", "electra-e24", "electra-h32", "distilbert-gelu",
                     "distilbert-relu-sin", "deberta-v2", "deberta-v3", "modernbert-cls"]
PAIRS = [("what is the capital of france", "paris is the capital of france"),
         ("a", ""),
         ("how fast is a fish", "fish swim at different speeds depending on the species " * 3),
         ("why is the sky blue", "rayleigh scattering")]
pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")


def recording(ops, rows_seen):
    """The op set, with the row count of every feed-forward input recorded."""
    recorder = types.ModuleType(f"recording_{ops.__name__}")
    recorder.__dict__.update(vars(ops))

    def linear_gelu(x, weight, bias):
        rows_seen.append(len(x))
        return ops.linear_gelu(x, weight, bias)

    def relu(x):
        rows_seen.append(len(x))
        return ops.relu(x)

    def geglu(h):  # ModernBERT's feed-forward
        rows_seen.append(len(h))
        return ops.geglu(h)

    recorder.linear_gelu, recorder.relu, recorder.geglu = linear_gelu, relu, geglu
    return recorder


@pytest.mark.parametrize("op_set", OP_SETS)
@pytest.mark.parametrize("name", FIRST_TOKEN_HEADS)
def test_first_token_last_layer_gives_the_full_layers_logits(name, op_set):
    ops = importlib.import_module(f"minibert.{op_set}")
    ce = CrossEncoder(GOLDENS / name, ops=ops)
    batch = Batch.pack(ce.tokenizer.encode_pairs(PAIRS))
    rows_seen = []
    fast = forward(ce.params, ce.config, batch, recording(ops, rows_seen))
    full, stages = forward(ce.params, ce.config, batch, ops, return_stages=True)
    np.testing.assert_allclose(fast, full, atol=2e-6, rtol=2e-6)
    N, B = int(batch.offsets[-1]), len(PAIRS)
    layers = ce.config.num_hidden_layers
    # every layer but the last on all N rows, the last on the B first tokens (then the head, if it has a GELU)
    assert rows_seen[:layers] == [N] * (layers - 1) + [B], rows_seen
    assert stages[f"layer_{layers - 1}"].shape == (N, ce.config.hidden_size)


def test_mean_pooling_computes_every_row_of_the_last_layer():
    """ModernBERT with mean pooling reads every token: no first-token shortcut there."""
    from minibert import ops

    ce = CrossEncoder(GOLDENS / "modernbert-mean", ops=ops)
    batch = Batch.pack(ce.tokenizer.encode_pairs(PAIRS))
    rows_seen = []
    forward(ce.params, ce.config, batch, recording(ops, rows_seen))
    assert rows_seen == [int(batch.offsets[-1])] * ce.config.num_hidden_layers
