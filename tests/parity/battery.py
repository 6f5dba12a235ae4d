"""The battery every family runs against transformers, in the manner of transformers' ModelTesterMixin:
a family's test module (tests/parity/test_<family>.py) defines its Spec (harness.py) and

    class TestElectra(ParityBattery):
        spec = SPEC

and each test below then runs for every variant of the spec, on both op sets where minibert computes.
Numbers first (token ids, logits, every stage), then decisions (rankings), then the other entry
points (rank, SentenceEncoder) and the errors (a bare checkpoint, refused options). The last test plants
a difference in a checkpoint and shows that the comparisons catch it.
"""

import re
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
from op_sets import OP_SETS
from safetensors.numpy import load_file, save_file

from minibert import ConfigError, CrossEncoder, ModelFormatError, SentenceEncoder
from minibert.models import Batch, forward
from parity.harness import (
    BATCH,
    LONG_MAX_LENGTH,
    LONG_PAIRS,
    PAIRS,
    PASSAGES,
    QUERIES,
    SENTENCES,
    Live,
    assert_close,
    assert_same_ids,
    assert_same_rankings,
    copy_with_config,
    core,
)


def check_logits(ce: CrossEncoder, live: Live, what: str) -> None:
    """CrossEncoder.predict on PAIRS (text in, logits out) against transformers: each logit within
    tolerance (first, transformers' own float32 within it of float64: else a failure would measure
    transformers' rounding, not minibert); against float64, minibert's float32 about as close as
    transformers' own; then each query's ranking, near ties left out."""
    ref = live.reference
    assert_close(ref.logits[ref.probe], ref.exact, f"{what} transformers' float32 logits vs float64")
    got = ce.predict(PAIRS, batch_size=BATCH).reshape(ref.logits.shape)
    assert_close(got, ref.logits, f"{what} logits", where=lambda i: f"pair {i[0]} label {i[1]}")
    ours = float(np.abs(got[ref.probe] - ref.exact).max())
    theirs = float(np.abs(ref.logits[ref.probe] - ref.exact).max())
    assert ours <= 2 * theirs + 1e-7, f"{what}: vs float64, minibert {ours:.2e}, transformers' float32 {theirs:.2e}"
    assert_same_rankings(got[:, 0], ref.logits[:, 0], len(QUERIES), f"{what} rankings")


def check_stages(ce: CrossEncoder, live: Live, what: str) -> None:
    """minibert.models.forward(return_stages=True) on the probe pairs against transformers'
    hidden_states and the input of the family's head module, stage by stage in forward order: a
    failure names the first stage that differs, and the pair and token."""
    ref = live.reference
    batch = Batch.pack(ce.tokenizer.encode_pairs([PAIRS[i] for i in ref.probe]))
    _, stages = forward(ce.params, ce.config, batch, ce.ops, return_stages=True)
    assert list(stages) == list(ref.stages), f"{what}: stages {list(stages)}, transformers {list(ref.stages)}"

    def token(index):
        pair = int(np.searchsorted(ref.offsets, index[0], side="right") - 1)
        return f"pair {ref.probe[pair]} token {index[0] - ref.offsets[pair]} dim {index[1]}"

    for name, want in ref.stages.items():
        rows = token if len(want) == ref.offsets[-1] else (lambda i: f"pair {ref.probe[i[0]]} column {i[1]}")
        assert_close(stages[name], want, f"{what} {name}", where=rows)


@dataclass(frozen=True)
class DecoderSpec:
    """A decoder reranker family's spec: its model_type. Its test module builds its own models (a chat template,
    a *ForCausalLM scored by LogitScore or a *ForSequenceClassification), not the battery's pair-tokenized ones."""
    model_type: str
    variants: tuple = ()


class DecoderParity:
    """A decoder reranker family's live parity against transformers and sentence-transformers' CrossEncoder, in its
    own test module (tests/parity/test_qwen3.py); a subclass names its DecoderSpec, which test_registry counts."""
    spec = None


class ParityBattery:
    """Every family's live parity checks against transformers; a subclass names the family's `spec`."""
    spec = None
    pytestmark = pytest.mark.filterwarnings("ignore::minibert.TruncationWarning")  # some pairs are cut on purpose

    def pytest_generate_tests(self, metafunc):
        if "variant" in metafunc.fixturenames:
            metafunc.parametrize("variant", self.spec.variants, ids=[v.name for v in self.spec.variants])
        if "refusal" in metafunc.fixturenames:
            metafunc.parametrize("refusal", self.spec.refused, ids=[r.field for r in self.spec.refused])

    @pytest.fixture
    def live(self, live_models, variant) -> Live:
        return live_models(self.spec, variant)

    @pytest.fixture
    def small(self, live_models) -> Live:
        """The spec's first variant, a small one."""
        return live_models(self.spec, self.spec.variants[0])

    def test_reference_is_what_the_variant_says(self, live):
        """transformers read back the family's classes and model_type, the pairs are cut at max_length if
        the variant says so, and the variant reaches the code path it is meant for (its `expect`)."""
        assert type(live.model).__name__ == self.spec.model_class
        assert live.model.config.model_type == self.spec.model_type
        cut = sum(len(ids) == live.variant.max_length for ids in live.reference.ids)
        assert cut >= len(QUERIES) if live.variant.truncates else cut == 0, f"{cut} pairs cut at max_length"
        if live.variant.expect:
            live.variant.expect(live)

    def test_token_ids(self, live):
        """The ids and type ids of every pair are AutoTokenizer's; max_length resolves by default to where
        transformers cut; token type ids are made exactly when transformers makes them."""
        ce = CrossEncoder(live.directory, ops="numpy")
        assert ce.max_length == live.variant.max_length
        ref = live.reference
        assert ce.tokenizer.token_types == ref.token_types == live.variant.token_types
        assert any(1 in types for types in ref.type_ids) == live.variant.token_types, "the passages' type is 1"
        assert_same_ids(ce.tokenizer.encode_pairs(PAIRS), ref.ids, ref.type_ids, PAIRS, live.what)

    def test_long_texts_keep_transformers_ids(self, live):
        """Sides over max_length * 101 characters go through the long-text path: the same ids."""
        assert min(map(len, LONG_PAIRS[2])) > LONG_MAX_LENGTH * 101, "the long-text path is not reached"
        want = live.tokenizer([q for q, _ in LONG_PAIRS], [p for _, p in LONG_PAIRS], truncation="longest_first",
                              max_length=LONG_MAX_LENGTH)
        tokenizer = CrossEncoder(live.directory, max_length=LONG_MAX_LENGTH, ops="numpy").tokenizer
        encoded = tokenizer.encode_pairs(LONG_PAIRS)
        assert_same_ids(encoded, want["input_ids"], core.type_ids(want), LONG_PAIRS, f"{live.what} long texts")

    @pytest.mark.parametrize("op_set", OP_SETS)
    def test_logits_and_rankings(self, live, op_set):
        check_logits(CrossEncoder(live.directory, ops=op_set), live, f"{live.what} [{op_set}]")

    @pytest.mark.parametrize("op_set", OP_SETS)
    def test_stages(self, live, op_set):
        check_stages(CrossEncoder(live.directory, ops=op_set), live, f"{live.what} [{op_set}]")

    def test_rank(self, live):
        """CrossEncoder.rank on one query: transformers' order, best first (near ties left out), and its
        scores; a model of several labels is refused, naming num_labels."""
        ce = CrossEncoder(live.directory)
        if ce.num_labels != 1:
            with pytest.raises(ConfigError, match=f"num_labels={ce.num_labels}"):
                ce.rank(QUERIES[0], PASSAGES)
            return
        hits = ce.rank(QUERIES[0], PASSAGES)
        want = live.reference.logits[:len(PASSAGES), 0]
        order = np.array([h["corpus_id"] for h in hits])
        assert sorted(order) == list(range(len(PASSAGES)))
        got = np.array([h["score"] for h in hits], np.float32)
        assert_close(got, want[order], f"{live.what} rank scores")
        position = np.argsort(order)  # corpus id -> place in the ranking
        assert_same_rankings(-position.astype(np.float64), want, 1, f"{live.what} rank")

    @pytest.mark.parametrize("op_set", OP_SETS)
    def test_sentence_encoder(self, live, op_set):
        """SentenceEncoder on the bare encoder against sentence-transformers (mean pooling; real weights: as
        their modules.json says)."""
        got = SentenceEncoder(live.bare_directory, ops=op_set).encode(SENTENCES)
        assert_close(got, live.sentence_embeddings, f"{live.what} SentenceEncoder [{op_set}]",
                     where=lambda i: f"text {i[0]} dim {i[1]}")

    def test_bare_checkpoint_is_not_a_cross_encoder(self, live):
        family = re.escape(self.spec.family.name)
        with pytest.raises(ModelFormatError, match=f"bare {family} encoder.*not a cross-encoder"):
            CrossEncoder(live.bare_directory)

    def test_refused_option(self, small, refusal, tmp_path):
        """A config value the family does not implement is a ConfigError naming the file and the field."""
        where = copy_with_config(small.directory, tmp_path / "m", {refusal.field: refusal.value})
        with pytest.raises(ConfigError) as info:
            CrossEncoder(where)
        message = str(info.value)
        assert message.startswith(str(where / "config.json")) and refusal.field in message, message
        assert refusal.says in message, message

    def test_a_planted_difference_fails(self, small, tmp_path):
        """One weight of the embeddings' norm changed by 0.05 in the checkpoint: the stage comparison
        fails at the embeddings, and the logits' fails too (so neither passes whatever it is given)."""
        changed = tmp_path / "changed"
        shutil.copytree(small.directory, changed)
        tensors = load_file(str(changed / "model.safetensors"))
        (name,) = [k for k in tensors if re.search(r"embeddings\.(LayerNorm|norm)\.weight$", k)]
        tensors[name] = tensors[name].copy()
        tensors[name][0] += 0.05
        save_file(tensors, str(changed / "model.safetensors"), metadata={"format": "pt"})
        ce = CrossEncoder(changed, ops="numpy")
        with pytest.raises(AssertionError, match=r"\] embeddings: max"):
            check_stages(ce, small, f"{small.what} [planted]")
        with pytest.raises(AssertionError, match="logits: max"):
            check_logits(ce, small, f"{small.what} [planted]")
