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
    GOLDENS,
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
        assert_close_or_nearer_exact(stages[name], want, ref.exact_stages[name], f"{what} {name}", rows)


def assert_close_or_nearer_exact(got, want, exact, what: str, where) -> None:
    """A stage within tolerance of transformers' float32 one; or, where float32 rounding carries the two apart by
    more (a pair of thousands of tokens, whose sums run in another order on another CPU's kernels), minibert's
    stage at most twice as far from float64 (transformers' model in double) as transformers' float32 is."""
    try:
        assert_close(got, want, what, where)
    except AssertionError:
        ours, theirs = float(np.abs(got - exact).max()), float(np.abs(want - exact).max())
        print(f"{what}: vs float64, minibert {ours:.2e}, transformers' float32 {theirs:.2e}")
        if not ours <= 2 * theirs + 1e-7:
            raise


@dataclass(frozen=True)
class DecoderSpec:
    """A decoder reranker family's spec. Qwen3's test module builds its own models; the others give what the
    DecoderParity battery below builds: tiny random models of the transformers classes `name` + "Config",
    "ForSequenceClassification" and "ForCausalLM" with `shape` and each variant's overrides, the tokenizer files
    and chat template of the golden `golden`, scored by LogitScore of `score_tokens` (true, false or None)."""
    model_type: str
    variants: tuple = ()            # the encoders' Variant records: none here
    seq_cls: tuple = ()             # (name, config overrides) of the *ForSequenceClassification models
    name: str = ""                  # transformers' class prefix: "Qwen2"
    shape: dict = None
    golden: str = ""                # a golden fixture: its tokenizer files and chat template
    score_tokens: tuple = ("yes", "no")
    norm_center: float = 1.0        # random norm weights around it (Gemma's 1 + weight: 0)


DECODER_PAIRS = [("what is the capital of France?", "Paris is the capital and largest city of France."),
                 ("what is the capital of France?", "The cat sat on the mat."),
                 ("how do I define a function?", "Functions are defined with the def keyword. " * 12),
                 ("why is the sky blue? " * 10, "Rayleigh scattering."),
                 ("", "an empty query"), ("an empty passage", ""), ("Yes", "No"), ("日本語 1 0", "🐍 emoji")]
DECODER_PROMPT = "Find the passage that answers the question"
DECODER_MAX_LENGTH = 120


def randomize_decoder(model, seed, norm_center=1.0):
    """Weights far from their initialization (norm weights too), so a missing norm or a swapped tensor shows."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm = "norm" in name
            p.copy_((norm_center if is_norm else 0.0) + (0.3 if is_norm else 0.2) * torch.randn(p.shape, generator=g))


def scores_within(got, want, what):
    """max |diff| / (1 + |score|) within 1e-5; returns it."""
    worst = float(np.max(np.abs(np.asarray(got) - want) / (1 + np.abs(want))))
    assert worst <= 1e-5, f"{what}: max |diff| / (1 + |score|) {worst:.2e}"
    return worst


class DecoderParity:
    """A decoder reranker family's live parity against transformers and sentence-transformers' CrossEncoder; a
    subclass names its DecoderSpec, which test_registry counts. Qwen3's module (tests/parity/test_qwen3.py) has its
    own tests; DecoderBattery's are the other families'."""
    spec = None


class DecoderBattery(DecoderParity):
    """Live parity of a decoder family whose spec names its transformers classes (`name`): against transformers
    (eager, float32) and sentence-transformers 6's CrossEncoder (activation off)."""

    @classmethod
    def transformers_class(cls, suffix):
        import transformers

        return getattr(transformers, cls.spec.name + suffix)

    @classmethod
    def build(cls, path, seq_cls, overrides=None, template=True):
        """A random model with the golden's tokenizer files (and chat template, unless template=False), saved as
        transformers saves it: what a Hub repository holds."""
        import json

        import torch

        golden = GOLDENS / cls.spec.golden
        path.mkdir(parents=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (golden / name).is_file() and (template or name != "chat_template.jinja"):
                shutil.copy(golden / name, path / name)
        tc = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        tc["model_max_length"] = DECODER_MAX_LENGTH
        (path / "tokenizer_config.json").write_text(json.dumps(tc), encoding="utf-8")
        golden_config = json.loads((golden / "config.json").read_text(encoding="utf-8"))
        config = cls.transformers_class("Config")(**{**cls.spec.shape, **(overrides or {})},
                                                   vocab_size=golden_config["vocab_size"], num_labels=1,
                                                   pad_token_id=golden_config.get("pad_token_id"),
                                                   attn_implementation="eager")
        torch.manual_seed(0)
        model = cls.transformers_class("ForSequenceClassification" if seq_cls else "ForCausalLM")(config).eval()
        randomize_decoder(model, 11, cls.spec.norm_center)
        model.save_pretrained(path)
        return path, model

    @classmethod
    def score_ids(cls, tokenizer):
        return [None if t is None else tokenizer.convert_tokens_to_ids(t) for t in cls.spec.score_tokens]

    @classmethod
    def saved_reranker(cls, bare, out):
        """sentence-transformers' CrossEncoder of a bare *ForCausalLM with LogitScore(score_tokens), saved to out."""
        from sentence_transformers import CrossEncoder as STCrossEncoder
        from sentence_transformers.cross_encoder.modules import LogitScore, Transformer

        transformer = Transformer(str(bare), transformer_task="text-generation")
        true, false = cls.score_ids(transformer.tokenizer)
        st = STCrossEncoder(modules=[transformer, LogitScore(true_token_id=true, false_token_id=false)], device="cpu")
        st.save(str(out))
        return st

    @pytest.fixture(scope="class")
    @classmethod
    def rerankers(cls, tmp_path_factory):
        """{"chat" | "text": (the directory sentence-transformers saved, its CrossEncoder)}: with the chat template,
        and without one (the tokenizer's own pair encoding)."""
        root = tmp_path_factory.mktemp(cls.spec.model_type)
        out = {}
        for kind in ("chat", "text"):
            bare, _ = cls.build(root / f"bare-{kind}", seq_cls=False, template=kind == "chat")
            out[kind] = (root / kind, cls.saved_reranker(bare, root / kind))
        return out

    @pytest.mark.parametrize("kind", ["chat", "text"])
    @pytest.mark.parametrize("ops", OP_SETS)
    def test_predict_matches_sentence_transformers(self, rerankers, kind, ops):
        """Raw scores with and without a prompt, pairs cut at max_length (the template's tail written back), empty
        texts; the token ids sentence-transformers makes."""
        import torch

        directory, st = rerankers[kind]
        ce = CrossEncoder(directory, ops=ops)
        assert ce.max_length == st.max_seq_length == DECODER_MAX_LENGTH
        enc = st.preprocess(DECODER_PAIRS)
        want_ids = [row[mask == 1].tolist() for row, mask in zip(enc["input_ids"], enc["attention_mask"])]
        assert [ids.tolist() for ids, _ in ce.tokenizer.encode_pairs(DECODER_PAIRS)] == want_ids
        assert max(map(len, want_ids)) == DECODER_MAX_LENGTH, "no pair reaches max_length"
        for prompt in (None, DECODER_PROMPT):
            kwargs = {"prompt": prompt} if prompt else {}
            want = st.predict(DECODER_PAIRS, activation_fn=torch.nn.Identity(), **kwargs)
            worst = scores_within(ce.predict(DECODER_PAIRS, batch_size=3, **kwargs), want,
                                  f"{self.spec.model_type} {kind} [{ops}] prompt {prompt!r}")
            print(f"{self.spec.model_type} {kind} [{ops}] prompt {prompt!r}: max |diff| / (1 + |score|) {worst:.1e}")

    @pytest.fixture(scope="class")
    @classmethod
    def seq_cls_models(cls, tmp_path_factory):
        """Per seq_cls variant: (name, directory, sentence-transformers' token ids, transformers' outputs on them
        with hidden states, sentence-transformers' raw scores)."""
        import torch
        from sentence_transformers import CrossEncoder as STCrossEncoder

        out = []
        for name, overrides in cls.spec.seq_cls:
            path, model = cls.build(tmp_path_factory.mktemp(name) / "seq-cls", seq_cls=True, overrides=overrides)
            st = STCrossEncoder(str(path), device="cpu")
            enc = st.preprocess(DECODER_PAIRS)
            ids = [row[mask == 1] for row, mask in zip(enc["input_ids"], enc["attention_mask"])]
            with torch.no_grad():
                theirs = [model(row[None], output_hidden_states=True) for row in ids]
            out.append((name, path, [row.tolist() for row in ids], theirs, st.predict(DECODER_PAIRS, activation_fn=torch.nn.Identity())))
        return out

    @pytest.mark.parametrize("ops", OP_SETS)
    def test_sequence_classification_matches_transformers(self, seq_cls_models, ops):
        """*ForSequenceClassification, every variant: every stage and the logits against transformers, pair by pair
        on sentence-transformers' ids, then the scores of text against sentence-transformers' CrossEncoder."""
        for name, path, st_ids, theirs, st_scores in seq_cls_models:
            ce = CrossEncoder(path, ops=ops)
            ids = [ids for ids, _ in ce.tokenizer.encode_pairs(DECODER_PAIRS)]
            assert [i.tolist() for i in ids] == st_ids, f"{name}: token ids"
            batch = Batch.pack([(i, np.zeros_like(i)) for i in ids])
            logits, stages = forward(ce.params, ce.config, batch, ce.ops, return_stages=True)
            scores_within(logits, np.concatenate([o.logits.numpy() for o in theirs]), f"{name} [{ops}] logits")
            for b, o in enumerate(theirs):
                rows = slice(batch.offsets[b], batch.offsets[b + 1])
                for i, hidden in enumerate(o.hidden_states):
                    stage = "embeddings" if i == 0 else f"layer_{i - 1}"
                    np.testing.assert_allclose(stages[stage][rows], hidden[0].numpy(), atol=2e-5, rtol=1e-5,
                                               err_msg=f"{name} pair {b} {stage}")
            worst = scores_within(ce.predict(DECODER_PAIRS), st_scores, f"{name} [{ops}] sentence-transformers")
            print(f"{self.spec.model_type} seq-cls {name} [{ops}]: max |diff| / (1 + |score|) {worst:.1e}")

    def test_unimplemented_configs_are_named(self, rerankers, tmp_path):
        """A rope_scaling minibert does not implement: a ConfigError naming the field and config.json."""
        import json

        scaled = tmp_path / "rope-scaling"
        shutil.copytree(rerankers["chat"][0], scaled)
        config = json.loads((scaled / "config.json").read_text(encoding="utf-8"))
        config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1000.0, "factor": 4.0}
        (scaled / "config.json").write_text(json.dumps(config), encoding="utf-8")
        with pytest.raises(ConfigError, match=r"config.json: unsupported rope_parameters rope_type 'yarn'"):
            CrossEncoder(scaled)


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
