"""Export a cross-encoder to ONNX the three ways people deploy it, for `minibert compare --onnx` and `agree --onnx`.

    python tools/export_onnx.py --model weights/bench-minilm-cross-encoder            # -> weights/bench-minilm-cross-encoder/onnx/
    python tools/export_onnx.py --model DIR --out DIR --opset 14
    python tools/export_onnx.py --model weights/bench-minilm-cross-encoder --pairs short.jsonl   # + bench.py's pairs

writes, from the model directory (transformers' *ForSequenceClassification, eval mode, eager attention):
- model.onnx            torch.onnx.export (the TorchScript exporter, dynamo=False), fp32, opset 17 by default,
                        inputs input_ids, attention_mask (and token_type_ids when the tokenizer gives them),
                        dynamic batch and sequence axes, output `logits`: what optimum and sentence-transformers'
                        `backend="onnx"` export (they default to opset 14, where LayerNorm is written out)
- model-optimized.onnx  onnxruntime's transformer optimizer (onnxruntime.transformers.optimizer.optimize_model,
                        model_type "bert": fused EmbedLayerNormalization, Attention, SkipLayerNormalization, Gelu)
- model-int8.onnx       onnxruntime.quantization.quantize_dynamic of model.onnx: int8 weights (MatMul, Gather),
                        activations quantized on the fly

Needs torch, transformers (the golden extra), onnx and onnxruntime (the onnx extra). The tests import
`export`, `optimize` and `quantize` from here.
"""

import argparse
import importlib.util
import json
import os
from pathlib import Path

AXES = {0: "batch", 1: "tokens"}


def load(model_dir):
    """(transformers model in eval mode with eager attention, its tokenizer's model_input_names)."""
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager").eval()
    names = transformers.AutoTokenizer.from_pretrained(model_dir).model_input_names
    return model, [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]


def export(module, path, input_names, opset: int = 17) -> Path:
    """torch.onnx.export of `module` (forward(*inputs named input_names) -> logits [B, L]), dynamic axes."""
    import torch

    ids = torch.ones(2, 8, dtype=torch.long)
    sample = tuple(torch.ones_like(ids) if name != "token_type_ids" else torch.zeros_like(ids)
                   for name in input_names)
    path = Path(path)
    with torch.no_grad():
        torch.onnx.export(module, sample, str(path) + ".tmp", input_names=list(input_names), output_names=["logits"],
                          dynamic_axes={**{name: AXES for name in input_names}, "logits": {0: "batch"}},
                          opset_version=opset, dynamo=False)
    os.replace(str(path) + ".tmp", path)
    return path


def export_model(model_dir, path, opset: int = 17) -> Path:
    """The model directory's *ForSequenceClassification as ONNX (see the module's docstring)."""
    model, names = load(model_dir)
    return export(logits_only(model, names), path, names, opset)


def logits_only(model, names, **fixed):
    """A module whose forward takes `names` positionally and returns model(**inputs, **fixed).logits."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs)), **fixed).logits

    return LogitsOnly().eval()


def optimize(src, dst, model_dir) -> Path:
    """onnxruntime's transformer optimizer (model_type bert) on `src`, written to `dst`."""
    from onnxruntime.transformers.optimizer import optimize_model

    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    optimized = optimize_model(str(src), model_type="bert", num_heads=config["num_attention_heads"],
                               hidden_size=config["hidden_size"])
    optimized.save_model_to_file(str(dst))
    return Path(dst)


def quantize(src, dst) -> Path:
    """onnxruntime.quantization.quantize_dynamic of `src` (int8 weights), written to `dst`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return Path(dst)


def write_workload(path) -> None:
    spec = importlib.util.spec_from_file_location("bench", Path(__file__).with_name("bench.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    pairs = bench.workload("short")
    Path(path).write_text("".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in pairs), encoding="utf-8")
    print(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model directory (config.json, weights, tokenizer)")
    parser.add_argument("--out", help="the folder to write to (default: MODEL/onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset of model.onnx (default 17)")
    parser.add_argument("--pairs", metavar="FILE", help="also write tools/bench.py's short workload (400 pairs, 4 "
                        "queries) to FILE as JSON lines, the pairs file of `minibert agree` and `compare --onnx`")
    args = parser.parse_args()
    if args.pairs:
        write_workload(args.pairs)
    out = Path(args.out or Path(args.model) / "onnx")
    out.mkdir(parents=True, exist_ok=True)
    plain = export_model(args.model, out / "model.onnx", args.opset)
    print(plain)
    print(optimize(plain, out / "model-optimized.onnx", args.model))
    print(quantize(plain, out / "model-int8.onnx"))


if __name__ == "__main__":
    main()
