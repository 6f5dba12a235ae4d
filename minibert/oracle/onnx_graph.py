"""An ONNX graph of a cross-encoder, checked against minibert: `minibert compare --onnx` and `agree --onnx`.

The graph is fed minibert's own token ids (input_ids, attention_mask, token_type_ids, position_ids: the
ones it declares), padded as it expects. For `compare`, the tensors that correspond to minibert's stages
are found by the graph's structure, added to its outputs, and read back over the real tokens only as a
trace (trace.py), which compare.py checks like any other backend's. For `agree`, only its scores.

Where the stages are, by structure (node names differ from one exporter to the next):

    normalizations  LayerNormalization; onnxruntime's fused SkipLayerNormalization and
                    (Q)EmbedLayerNormalization; and the LayerNorm that exports at opsets below 17
                    write out (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, then Mul and Add)
    attention       one per layer, S_0 .. S_{L-1} in graph order: a Softmax, or a fused Attention,
                    MultiHeadAttention or QAttention node
    embeddings      the first normalization on the way to S_0
    layer_i         the last normalization between S_i and S_{i+1}: its output (post-LN, as in BERT),
                    or its input when the residual stream goes around it (pre-LN, as in ModernBERT,
                    whose layers read a normalized copy and add to the stream)
    layer_{L-1}     the second normalization after S_{L-1} (post-LN: the output LayerNorm; pre-LN:
                    the final norm, after the MLP's)
    the head stage  the input of the linear layer (Gemm, MatMul, or their int8 forms) that makes
                    the logits
    logits          the output named `logits` (else the first output); when the graph ends with a
                    Sigmoid or Softmax, that node's input

A stage that cannot be found this way is reported as not located, with the reason; the others are
compared (the logits always). Needs the `onnx` extra (onnx, onnxruntime), imported when a graph is opened.
"""

import collections
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.errors import InputError, MinibertError
from minibert.models import forward
from minibert.models.batch import Batch
from minibert.ops import NUMPY
from minibert.oracle.compare import Report, compare
from minibert.oracle.trace import Trace

BATCH_SIZE = 32          # pairs per run of the graph
NORMS = {"LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization", "QEmbedLayerNormalization"}
ATTENTIONS = {"Softmax", "Attention", "MultiHeadAttention", "QAttention", "PackedAttention",
              "PackedMultiHeadAttention"}
# The linear layers, and which input is the data (the others are weights, scales, zero points).
LINEARS = {"Gemm": 0, "MatMul": 0, "FusedMatMul": 0, "MatMulInteger": 0, "DynamicQuantizeMatMul": 0,
           "MatMulIntegerToFloat": 0, "QGemm": 0, "QLinearMatMul": 0}
QUANTIZERS = {"DynamicQuantizeLinear", "QuantizeLinear"}   # int8 data comes from one of these: look through it
ACTIVATIONS = {"Sigmoid", "Softmax", "LogSoftmax"}
# What makes a graph quantized: quantize_dynamic's and static quantization's ops, onnxruntime's int8 fusions.
QUANTIZED = {"DynamicQuantizeLinear", "MatMulInteger", "QuantizeLinear", "DequantizeLinear", "QAttention",
             "QEmbedLayerNormalization", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm", "QLinearMatMul",
             "MatMulNBits"}
# The inputs a graph may declare, under the names exporters give them.
INPUT_NAMES = {"input_ids": "input_ids", "attention_mask": "attention_mask", "input_mask": "attention_mask",
               "token_type_ids": "token_type_ids", "segment_ids": "token_type_ids", "position_ids": "position_ids"}
INT_TYPES = {6: np.int32, 7: np.int64}   # TensorProto INT32, INT64
FLOAT_TYPES = {1: "F32", 10: "F16", 16: "BF16"}   # TensorProto FLOAT, FLOAT16, BFLOAT16 -> a trace's dtype


def _import():
    """onnx and onnxruntime, the `onnx` extra (pip install 'minibert-ce[onnx]'), and protobuf's DecodeError (onnx's)."""
    try:
        import onnx
        import onnxruntime
        from google.protobuf.message import DecodeError
    except ImportError as exc:
        raise MinibertError(f"reading an ONNX graph needs onnx and onnxruntime ({exc.name} is missing): "
                            "pip install 'minibert-ce[onnx]'") from None
    return onnx, onnxruntime, DecodeError


# ---------------------------------------------------------------------------------------------
# The graph: nodes, who produces and who reads each tensor, order, ancestry


@dataclass(frozen=True)
class Norm:
    """A normalization, fused or written out: its output, and the residual-stream tensor it normalizes (the
    input of a LayerNorm; the sum output of a SkipLayerNormalization, if it writes one; None if unknown)."""
    node: int          # the node that writes `output` (the last node of a written-out LayerNorm)
    output: str
    stream: str | None
    nodes: frozenset   # every node of it


class Graph:
    """A loaded ONNX model and its structure."""

    def __init__(self, path):
        onnx, _, DecodeError = _import()
        self.path = Path(path)
        try:
            self.model = onnx.load(str(self.path))
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such file") from None
        except (OSError, ValueError, RuntimeError, DecodeError) as exc:   # not protobuf, a bad external-data path
            raise InputError(f"{self.path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
        graph = self.model.graph
        if not graph.output:
            raise InputError(f"{self.path}: the graph has no outputs")
        self.nodes = _sorted_nodes(graph)
        self.producer = {out: i for i, node in enumerate(self.nodes) for out in node.output if out}
        self.consumers = collections.defaultdict(list)
        for i, node in enumerate(self.nodes):
            for name in node.input:
                if name:
                    self.consumers[name].append(i)
        initializers = {t.name for t in graph.initializer} | {t.name for t in graph.sparse_initializer}
        self.inputs = [i for i in graph.input if i.name not in initializers]
        self.constant = set(initializers)
        for node in self.nodes:          # a node that reads only constants makes constants (Constant too)
            if all(name in self.constant or not name for name in node.input):
                self.constant.update(node.output)
        fed = {value.name for value in self.inputs}
        self.from_inputs = self._reachable([i for i, node in enumerate(self.nodes) if fed.intersection(node.input)],
                                           True)

    def _reachable(self, start, forward: bool) -> set:
        """The nodes reachable from the nodes `start` (themselves included), forward or backward."""
        seen, todo = set(start), list(start)
        while todo:
            node = self.nodes[todo.pop()]
            if forward:
                nexts = [c for out in node.output for c in self.consumers.get(out, ())]
            else:
                nexts = [self.producer[name] for name in node.input if name in self.producer]
            for j in nexts:
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return seen

    def descendants(self, i) -> set:
        return self._reachable([i], True)

    def ancestors(self, i) -> set:
        return self._reachable([i], False)

    def op(self, name: str) -> str | None:
        i = self.producer.get(name)
        return None if i is None else self.nodes[i].op_type

    # --- what the structure says

    def norms(self) -> list[Norm]:
        """Every normalization that depends on the inputs, in graph order."""
        found = []
        for i, node in enumerate(self.nodes):
            if node.op_type in NORMS:
                stream = node.input[0] if node.op_type == "LayerNormalization" else None
                if node.op_type == "SkipLayerNormalization" and len(node.output) > 3 and node.output[3]:
                    stream = node.output[3]
                found.append(Norm(i, node.output[0], stream, frozenset([i])))
            elif node.op_type == "Div":
                norm = self._written_out_layer_norm(i)
                if norm is not None:
                    found.append(norm)
        return sorted((n for n in found if n.node in self.from_inputs), key=lambda n: n.node)

    def _written_out_layer_norm(self, div: int) -> Norm | None:
        """(x - ReduceMean(x)) / Sqrt(...), then * weight and + bias where they follow: a LayerNorm of opset < 17."""
        node = self.nodes[div]
        sub = self.producer.get(node.input[0])
        if sub is None or self.nodes[sub].op_type != "Sub":
            return None
        x, mean = self.nodes[sub].input[:2]
        if self.op(mean) != "ReduceMean" or self.nodes[self.producer[mean]].input[0] != x:
            return None
        if self.op(node.input[1]) not in ("Sqrt", "Add"):
            return None
        nodes, last = {div, sub, self.producer[mean]}, div
        for op in ("Mul", "Add"):      # the affine part: one consumer, the other input a constant
            readers = self.consumers.get(self.nodes[last].output[0], [])
            if len(readers) != 1 or self.nodes[readers[0]].op_type != op:
                break
            other = [n for n in self.nodes[readers[0]].input if n != self.nodes[last].output[0]]
            if not other or other[0] not in self.constant:
                break
            last = readers[0]
            nodes.add(last)
        return Norm(last, self.nodes[last].output[0], x, frozenset(nodes))

    def logits_output(self) -> tuple[str, str, str | None]:
        """(the graph output read as the scores, the tensor compared as the logits, the activation between)."""
        outputs = [o.name for o in self.model.graph.output]
        output = "logits" if "logits" in outputs else outputs[0]
        producer = self.producer.get(output)
        if producer is not None and self.nodes[producer].op_type in ACTIVATIONS:
            return output, self.nodes[producer].input[0], self.nodes[producer].op_type
        return output, output, None

    def final_linear(self, logits: str) -> tuple[int, str] | None:
        """(the linear node that makes `logits`, its data input), looking back a few nodes (a bias Add, the
        int8 scale's Mul and Cast); None if there is none."""
        start = self.producer.get(logits)
        queue, seen = collections.deque([(start, 0)] if start is not None else []), set()
        while queue:
            i, depth = queue.popleft()
            node = self.nodes[i]
            if node.op_type in LINEARS:
                data = node.input[LINEARS[node.op_type]]
                if node.op_type in ("Gemm", "MatMul", "FusedMatMul") and data in self.constant:
                    data = node.input[1]                 # weights first: x W^T written as W x^T is not seen here
                if self.op(data) in QUANTIZERS:
                    data = self.nodes[self.producer[data]].input[0]
                return i, data
            if depth < 6:
                for name in node.input:
                    j = self.producer.get(name)
                    if j is not None and name not in self.constant and j not in seen:
                        seen.add(j)
                        queue.append((j, depth + 1))
        return None


def _sorted_nodes(graph) -> list:
    """The graph's nodes in an order where each comes after the nodes it reads from (Kahn's algorithm; ONNX
    files are usually sorted already, and the file's order is kept where it can be)."""
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    waiting = [len({producer[n] for n in node.input if n in producer}) for node in nodes]
    readers = collections.defaultdict(set)
    for i, node in enumerate(nodes):
        for n in node.input:
            if n in producer:
                readers[producer[n]].add(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order = []
    while ready:
        ready.sort(reverse=True)
        i = ready.pop()
        order.append(i)
        for j in readers[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) != len(nodes):
        raise InputError("the ONNX graph has a cycle")
    return [nodes[i] for i in order]


# ---------------------------------------------------------------------------------------------
# Locating minibert's stages


@dataclass(frozen=True)
class Located:
    """Where each of minibert's stages is in the graph."""
    tensors: dict        # stage -> graph tensor name, in forward order
    not_located: dict    # stage -> why not
    output: str          # the graph output read as the scores
    notes: tuple = ()    # anything the reader should know (an activation at the end of the graph)


def locate(graph: Graph, stages: list[str]) -> Located:
    """Find minibert's `stages` (names in forward order: embeddings, layer_0 .., the head's, logits) in the graph."""
    output, logits, activation = graph.logits_output()
    notes = []
    if activation:
        notes.append(f"the graph ends with a {activation} ({output}): its input is compared as the logits")
    quantized = sorted({node.op_type for node in graph.nodes} & QUANTIZED)
    if quantized:
        notes.append(f"the graph is quantized ({', '.join(quantized)})")
    tensors, missing = {}, {}
    layers = [s for s in stages if s.startswith("layer_")]
    head = [s for s in stages if s not in layers and s not in ("embeddings", "logits")]
    linear = graph.final_linear(logits)
    if linear is None:
        for name in head:
            missing[name] = f"no linear layer (Gemm, MatMul) makes {logits}"
    elif head:
        for name in head[:-1]:
            missing[name] = "only the last stage of a module chain's head is located (the final linear layer's input)"
        tensors[head[-1]] = linear[1]
    heads = graph.ancestors(linear[0]) if linear else set(range(len(graph.nodes)))
    attention = [i for i, node in enumerate(graph.nodes)
                 if node.op_type in ATTENTIONS and i in graph.from_inputs and i in heads]
    norms = graph.norms()
    if len(attention) != len(layers):
        why = (f"found {len(attention)} attention nodes (Softmax, Attention) before the head, the model has "
               f"{len(layers)} layers")
        missing.update({name: why for name in ["embeddings", *layers]})
    else:
        found, why = _encoder_stages(graph, attention, norms)
        tensors.update({name: found[name] for name in ["embeddings", *layers] if name in found})
        missing.update({name: why[name] for name in ["embeddings", *layers] if name not in found})
    tensors["logits"] = logits
    order = [s for s in stages if s in tensors]
    return Located({s: tensors[s] for s in order}, {s: missing[s] for s in stages if s in missing}, output,
                   tuple(notes))


def _encoder_stages(graph: Graph, attention: list[int], norms: list[Norm]) -> tuple[dict, dict]:
    """embeddings, layer_0 .. layer_{L-1} from the attention nodes and the normalizations (see the module's
    docstring); returns (stage -> tensor, stage -> why not)."""
    found, why = {}, {}
    L = len(attention)
    before = graph.ancestors(attention[0])
    first = [n for n in norms if n.node in before]
    if first:
        found["embeddings"] = first[0].output
    else:
        why["embeddings"] = "no normalization before the first attention"
    for i in range(L):
        after = graph.descendants(attention[i])
        if i + 1 < L:
            upto = graph.ancestors(attention[i + 1])
            between = [n for n in norms if n.node in after and n.node in upto]
            if not between:
                why[f"layer_{i}"] = f"no normalization between attention {i} and {i + 1}"
                continue
            norm = between[-1]
            if _pre_norm(graph, norm):
                if norm.stream is None:
                    why[f"layer_{i}"] = "a pre-LN layer whose residual sum is not a tensor of the graph (fused)"
                    continue
                found[f"layer_{i}"] = norm.stream
            else:
                found[f"layer_{i}"] = norm.output
        else:
            following = [n for n in norms if n.node in after]
            if len(following) < 2:
                why[f"layer_{i}"] = "fewer than two normalizations after the last attention"
                continue
            found[f"layer_{i}"] = following[1].output
    return found, why


def _pre_norm(graph: Graph, norm: Norm) -> bool:
    """Does the residual stream go around this normalization (pre-LN: the tensor it normalizes is also added to)?"""
    if norm.stream is None:
        return False
    readers = [j for j in graph.consumers.get(norm.stream, []) if j not in norm.nodes]
    return any(graph.nodes[j].op_type in ("Add", "SkipLayerNormalization") for j in readers)


# ---------------------------------------------------------------------------------------------
# Running it


@dataclass(frozen=True)
class Inputs:
    """How to feed the graph: its declared inputs, as (graph name, what it is, numpy dtype), and fixed sizes."""
    names: list          # [(graph input name, "input_ids" | "attention_mask" | ..., dtype)]
    batch: int | None    # a fixed batch size, or None
    tokens: int | None   # a fixed sequence length, or None


def graph_inputs(graph: Graph) -> Inputs:
    known, batch, tokens = [], None, None
    for value in graph.inputs:
        kind = INPUT_NAMES.get(value.name)
        if kind is None:
            raise InputError(f"{graph.path}: graph input {value.name!r} is not one minibert can feed "
                             f"(it feeds {', '.join(sorted(set(INPUT_NAMES)))})")
        tensor = value.type.tensor_type
        if tensor.elem_type not in INT_TYPES:
            raise InputError(f"{graph.path}: graph input {value.name!r} must be int64 or int32, found element type "
                             f"{tensor.elem_type}")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if len(dims) != 2:
            raise InputError(f"{graph.path}: graph input {value.name!r} must be [batch, tokens], found {len(dims)} "
                             "dimensions")
        batch, tokens = dims[0] or batch, dims[1] or tokens
        known.append((value.name, kind, INT_TYPES[tensor.elem_type]))
    if "input_ids" not in {kind for _, kind, _ in known}:
        raise InputError(f"{graph.path}: the graph declares no input_ids input")
    return Inputs(known, batch, tokens)


def feeds(inputs: Inputs, batch: Batch, positions: np.ndarray, pad_token_id: int) -> dict:
    """The padded arrays [B, T] the graph declares for a packed batch: right padding with pad_token_id, mask 1
    then 0, token types and positions 0 at the padding."""
    lengths = batch.lengths
    T = inputs.tokens or int(lengths.max())
    if lengths.max() > T:
        raise InputError(f"a pair of {int(lengths.max())} tokens is longer than the graph's fixed {T} tokens")
    real = np.arange(T)[None, :] < lengths[:, None]                    # [B, T]
    values = {"input_ids": (batch.input_ids, pad_token_id), "attention_mask": (np.ones_like(batch.input_ids), 0),
              "token_type_ids": (batch.token_type_ids, 0), "position_ids": (positions, 0)}
    out = {}
    for name, kind, dtype in inputs.names:
        packed, fill = values[kind]
        array = np.full(real.shape, fill, dtype=dtype)
        array[real] = packed                                           # [N] -> [B, T]
        out[name] = array
    return out


def positions_of(family, config, batch: Batch) -> np.ndarray:
    """The position ids minibert gives each token ([N]): the family's numbering, else 0, 1, 2, ... per pair."""
    if family.position_ids is None:
        return batch.positions
    return family.position_ids(batch.input_ids, batch.offsets, config.pad_token_id)


def session(onnxruntime, model, threads=None):
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3     # no warnings on stderr (unused initializers, ...)
    try:
        return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors (Fail, InvalidGraph, ...) derive from Exception alone
        raise InputError(f"onnxruntime cannot load the graph: {exc}".splitlines()[0]) from None


def run(session_, outputs: list, feed: dict, path) -> list:
    """session_.run, its failures (a shape the graph does not take, ...) a MinibertError naming the graph."""
    try:
        return session_.run(outputs, feed)
    except Exception as exc:  # noqa: BLE001 - as in session()
        shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in feed.items())
        raise MinibertError(f"{path}: onnxruntime failed on inputs {shapes}: {str(exc).splitlines()[0]}") from None


def _chunks(n: int, size: int | None, length_order=None):
    order = list(range(n)) if length_order is None else list(length_order)
    size = size or BATCH_SIZE
    return [order[a:a + size] for a in range(0, n, size)]


def scores(path, model, pairs, batch_size=BATCH_SIZE, threads=None) -> np.ndarray:
    """The graph's scores for `pairs` ([n, L] float32, or [n] for one label), run on minibert's token ids of
    `model` (a CrossEncoder), as deployed (the graph as it is, onnxruntime's default optimizations), in
    length-sorted batches."""
    graph = Graph(path)
    _, ort, _ = _import()
    inputs = graph_inputs(graph)
    output = graph.logits_output()[0]
    graph_session = session(ort, str(graph.path), threads)
    encoded = model.tokenizer.encode_pairs(pairs)
    order = np.argsort([len(ids) for ids, _ in encoded], kind="stable")
    out = None
    for rows in _chunks(len(encoded), inputs.batch or batch_size, order):
        batch = Batch.pack([encoded[r] for r in rows])
        feed = feeds(inputs, batch, positions_of(model.family, model.config, batch), model.config.pad_token_id or 0)
        got = np.asarray(run(graph_session, [output], feed, graph.path)[0], dtype=np.float32).reshape(len(rows), -1)
        if out is None:
            out = np.empty((len(encoded), got.shape[1]), np.float32)
        out[rows] = got
    if out is None:
        return np.zeros(0, np.float32)
    return out[:, 0] if out.shape[1] == 1 else out


def compare_graph(path, model, pairs, atol, rtol, batch_size=BATCH_SIZE) -> tuple[Report, Trace, Located, dict]:
    """`minibert compare --onnx`: run `pairs` through the graph at `path` (trace) and compare its stages with
    `model`'s (a CrossEncoder) as compare.py compares a trace. A graph without a token_type_ids input runs with
    the types it makes itself; minibert runs with its tokenizer's. A divergence with no known pattern in a
    quantized graph is said to look like quantization error."""
    found, located, header = trace(path, model, pairs, batch_size)
    types_ = Batch.pack(model.tokenizer.encode_pairs(pairs)).token_type_ids
    report = compare(model.params, model.config, found, atol, rtol, token_type_ids=types_)
    div = report.first_divergence
    quantized = [note for note in located.notes if note.startswith("the graph is quantized")]
    if div is not None and div.diagnosis is None and quantized:
        stage = next(s for s in report.stages if s.name == div.stage)
        diagnosis = (f"no known bug pattern; {quantized[0]}, and int8 rounding makes differences of this kind "
                     f"(nmse {stage.nmse:.1e}, min cosine {stage.min_cosine:.4f} at {stage.name}): whether it "
                     "still ranks like the model is `minibert agree --onnx`'s question")
        report = dataclasses.replace(report, first_divergence=dataclasses.replace(div, diagnosis=diagnosis))
    return report, found, located, header


def trace(path, model, pairs, batch_size=BATCH_SIZE) -> tuple[Trace, Located, dict]:
    """Run `pairs` through the graph with minibert's stages exposed: (the trace, packed over real tokens; where
    each stage was found; what the header says). The pairs run in the given order, batch_size at a time,
    each batch padded to its longest pair, so padding is exercised as in a deployment."""
    if not len(pairs):
        raise InputError("no pairs to run")
    onnx, ort, _ = _import()
    graph = Graph(path)
    inputs = graph_inputs(graph)
    encoded = model.tokenizer.encode_pairs(pairs)
    names = list(forward(model.params, model.config, Batch.pack(encoded[:1]), NUMPY, return_stages=True)[1])
    located = locate(graph, names)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(graph.model)
    present = {o.name for o in exposed.graph.output}
    for tensor in located.tensors.values():
        if tensor not in present:
            exposed.graph.output.append(onnx.ValueInfoProto(name=tensor))   # type and shape: onnxruntime infers them
            present.add(tensor)
    exposed_session = session(ort, exposed.SerializeToString())
    wanted = list(dict.fromkeys(located.tensors.values()))
    full = Batch.pack(encoded)
    parts = collections.defaultdict(list)
    dtypes = {}
    for rows in _chunks(len(encoded), inputs.batch or batch_size):
        batch = Batch.pack([encoded[r] for r in rows])
        feed = feeds(inputs, batch, positions_of(model.family, model.config, batch), model.config.pad_token_id or 0)
        values = dict(zip(wanted, run(exposed_session, wanted, feed, graph.path)))
        real = np.arange(feed[inputs.names[0][0]].shape[1])[None, :] < batch.lengths[:, None]   # [B, T]
        for stage, tensor in located.tensors.items():
            value = values[tensor]
            dtypes[stage] = {np.dtype(np.float16): "F16"}.get(value.dtype, "F32")
            value = np.asarray(value, dtype=np.float32)
            if stage.startswith("layer_") or stage == "embeddings":
                value = value.reshape(*real.shape, -1)[real]         # [B, T, H] (or [B * T, H]) -> [n, H], real tokens
            parts[stage].append(value.reshape(len(value), -1))
    stages = {stage: np.concatenate(parts[stage]) for stage in located.tensors}
    fed = {kind for _, kind, _ in inputs.names}
    ort_version = getattr(ort, "__version__", "?")
    producer = " ".join(x for x in (graph.model.producer_name, graph.model.producer_version) if x) or "unknown"
    result = Trace(full.input_ids, full.token_type_ids if "token_type_ids" in fed else None, full.offsets, stages,
                   dtypes, "padded", {"producer": f"onnxruntime {ort_version}"}, str(graph.path))
    header = {"file": str(graph.path), "exporter": producer,
              "opset": max((o.version for o in graph.model.opset_import if o.domain in ("", "ai.onnx")), default=None),
              "onnxruntime": ort_version, "inputs": [name for name, _, _ in inputs.names]}
    return result, located, header
