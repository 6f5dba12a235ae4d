"""The last layer computed for the first tokens only (first_only in bert.run_layers, DeBERTa's and
ModernBERT's encoders): the same logits as the full last layer, within float32 rounding, with the
last feed-forward network run on B rows.

forward(return_stages=True) computes every row of every layer, so it is the full computation to
compare against, on every family whose head reads the first token alone.
"""

from pathlib import Path

import numpy as np
import pytest
from op_sets import OP_SETS

from minibert import CrossEncoder
from minibert.models import FAMILIES, Batch, family_of, forward
from minibert.models.family import ALL, FIRST, LAST
from minibert.ops import NUMPY, op_set
from minibert.runtime.load import load_config

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"


def head_reads(name: str) -> str:
    """What the head of a golden model fixture reads, as its family says."""
    config = load_config(GOLDENS / name)
    return family_of(config).head_reads(config)


# Every golden model fixture (tests/fixtures/goldens/*/model.safetensors), by what its family's head reads.
MODELS = sorted(p.parent.name for p in GOLDENS.glob("*/model.safetensors"))
FIRST_TOKEN_HEADS = [name for name in MODELS if head_reads(name) == FIRST]
EVERY_TOKEN_HEADS = [name for name in MODELS if head_reads(name) == ALL]
LAST_TOKEN_HEADS = [name for name in MODELS if head_reads(name) == LAST]   # decoder rerankers
PAIRS = [("what is the capital of france", "paris is the capital of france"),
         ("a", ""),
         ("how fast is a fish", "fish swim at different speeds depending on the species " * 3),
         ("why is the sky blue", "rayleigh scattering")]
pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")


def recording(ops, rows_seen):
    """The op set, with the row count of every feed-forward input recorded."""
    def linear_gelu(x, weight, bias):
        rows_seen.append(len(x))
        return ops.linear_gelu(x, weight, bias)

    def relu(x):
        rows_seen.append(len(x))
        return ops.relu(x)

    def geglu(h):  # ModernBERT's feed-forward
        rows_seen.append(len(h))
        return ops.geglu(h)

    def swiglu(gate, up):  # a decoder's feed-forward
        rows_seen.append(len(gate))
        return ops.swiglu(gate, up)

    def gelu_tanh_gate(gate, up):  # Gemma's
        rows_seen.append(len(gate))
        return ops.gelu_tanh_gate(gate, up)

    return ops.replace(linear_gelu=linear_gelu, relu=relu, geglu=geglu, swiglu=swiglu, gelu_tanh_gate=gelu_tanh_gate)


def test_the_fixtures_cover_every_family_and_both_kinds_of_head():
    covered = {family_of(load_config(GOLDENS / name)).name for name in MODELS}
    # CamemBERT is RoBERTa's model under another name: its fixture is a tokenizer's only (camembert-tok)
    assert covered >= {f.name for f in FAMILIES} - {"CamemBERT"}, covered
    assert FIRST_TOKEN_HEADS and EVERY_TOKEN_HEADS and LAST_TOKEN_HEADS


@pytest.mark.parametrize("op_set_name", OP_SETS)
@pytest.mark.parametrize("name", FIRST_TOKEN_HEADS)
def test_first_token_last_layer_gives_the_full_layers_logits(name, op_set_name):
    ops = op_set(op_set_name)
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


@pytest.mark.parametrize("name", EVERY_TOKEN_HEADS)
def test_a_head_that_reads_every_token_computes_every_row_of_the_last_layer(name):
    """ModernBERT with mean pooling reads every token: no first-token shortcut there."""
    ce = CrossEncoder(GOLDENS / name, ops=NUMPY)
    batch = Batch.pack(ce.tokenizer.encode_pairs(PAIRS))
    rows_seen = []
    forward(ce.params, ce.config, batch, recording(NUMPY, rows_seen))
    assert rows_seen == [int(batch.offsets[-1])] * ce.config.num_hidden_layers


@pytest.mark.parametrize("op_set_name", OP_SETS)
@pytest.mark.parametrize("name", LAST_TOKEN_HEADS)
def test_last_token_last_layer_gives_the_full_layers_scores(name, op_set_name):
    """A decoder reranker's head reads each pair's last token: the last layer computes those B rows alone, the
    same scores as the full layer (to float32 rounding)."""
    ops = op_set(op_set_name)
    ce = CrossEncoder(GOLDENS / name, ops=ops)
    batch = Batch.pack(ce.tokenizer.encode_pairs(PAIRS))
    rows_seen = []
    fast = forward(ce.params, ce.config, batch, recording(ops, rows_seen))
    full, _ = forward(ce.params, ce.config, batch, ops, return_stages=True)
    np.testing.assert_allclose(fast, full, atol=2e-6, rtol=2e-6)
    N, B = int(batch.offsets[-1]), len(PAIRS)
    assert rows_seen == [N] * (ce.config.num_hidden_layers - 1) + [B], rows_seen
