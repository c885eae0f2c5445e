"""Make a precision variant of a BERT-family ONNX encoder with ONNX Runtime's own tooling.

    python optimize.py INPUT.onnx OUTPUT.onnx PRECISION MODEL_TYPE NUM_HEADS HIDDEN [--u8-weights]
        [--keep-fp32=ffn_output,attention_output]

PRECISION: fp32 (fused graph), int8 (fused, then dynamic int8 quantisation with per-channel
weights), fp16 (fused for the GPU, then float16 with fp32 inputs and outputs), bf16 (the fused
fp32 graph; bf16 matrix products are a session setting). MODEL_TYPE is the config.json model type
(bert, distilbert, roberta, xlm-roberta, camembert). NUM_HEADS / HIDDEN of 0: detected from the
graph. --keep-fp32 leaves the named matrix products of every layer in fp32 when quantizing
(ffn_output: the product after the GELU, whose inputs have the widest range; attention_output:
the projection after attention). Prints one JSON object (fused operators, method); exits 3 with the reason on stderr when
the model cannot be made into that variant.
"""

import json
import logging
import sys

# The optimizer's notes (e.g. on the graph's producer) are not failures.
logging.disable(logging.WARNING)


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(3)


try:
    import onnx
    import onnxruntime
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions
except ImportError as e:  # the caller reports the interpreter and what to install
    print(f"missing Python package: {e}", file=sys.stderr)
    sys.exit(4)

QUANTIZED_OPS = {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
    "QAttention", "DynamicQuantizeMatMul", "QLinearMatMul", "MatMulNBits", "MatMulIntegerToFloat",
    "QGemm", "QOrderedAttention", "QOrderedMatMul",
}
ARCHITECTURES = {"bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra"}
FUSED = ["EmbedLayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization",
         "BiasGelu", "FastGelu", "Gelu", "LayerNormalization"]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 6:
        fail(__doc__)
    src, out, precision, model_type, heads, hidden = args
    u8 = "--u8-weights" in sys.argv
    keep = set()
    for a in sys.argv[1:]:
        if a.startswith("--keep-fp32="):
            keep = {k for k in a.split("=", 1)[1].split(",") if k}
    unknown = keep - {"ffn_output", "attention_output"}
    if unknown:
        fail(f"--keep-fp32 takes ffn_output and attention_output, not {', '.join(sorted(unknown))}")
    model = onnx.load(src)
    ops = {n.op_type for n in model.graph.node}
    quantized = sorted(ops & QUANTIZED_OPS)
    if quantized:
        fail(f"the graph is already quantized (it has {', '.join(quantized)}); "
             "point at the fp32 export of the model")
    int8 = [i.name for i in model.graph.initializer
            if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and len(i.dims) >= 2]
    if int8:
        fail(f"the graph is already quantized (its weights are stored as 8-bit integers: {int8[0]}, ...); "
             "point at the fp32 export of the model")
    half = [i.name for i in model.graph.initializer
            if i.data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)]
    if half:
        fail(f"the graph already holds half-precision weights ({half[0]}, ...); "
             "point at the fp32 export of the model")
    if model_type not in ARCHITECTURES:
        fail(f"architecture '{model_type}' (config.json model_type) is not one the transformer "
             f"optimizer fuses; supported: {', '.join(sorted(ARCHITECTURES))}")
    weights = {i.name for i in model.graph.initializer}
    if not any(n.op_type in ("MatMul", "Gemm") and any(x in weights for x in n.input)
               for n in model.graph.node):
        fail("no matrix product with constant weights (MatMul/Gemm) to fuse or quantize: "
             "this is not a transformer encoder export")
    options = FusionOptions("bert")
    try:
        opt = optimizer.optimize_model(
            src, model_type="bert", num_heads=int(heads), hidden_size=int(hidden),
            optimization_options=options, opt_level=0)
    except Exception as e:  # noqa: BLE001 - the optimizer raises many kinds
        fail(f"ONNX Runtime's transformer optimizer failed: {e}")
    stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    method = f"onnxruntime {onnxruntime.__version__} transformer optimizer (model_type bert)"
    if precision == "fp16":
        opt.convert_float_to_float16(keep_io_types=True)
        method += ", float16 with fp32 inputs and outputs"
    opt.save_model_to_file(out if precision != "int8" else out + ".fused", use_external_data_format=False)
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic
        fused = onnx.load(out + ".fused")
        for i, node in enumerate(fused.graph.node):
            node.name = node.name or f"{node.op_type}_{i}"
        producer = {o: node for node in fused.graph.node for o in node.output}
        kinds = {"ffn_output": ("BiasGelu", "Gelu", "FastGelu"),
                 "attention_output": ("Attention", "MultiHeadAttention")}
        exclude = [node.name for node in fused.graph.node
                   if node.op_type == "MatMul" and node.input[0] in producer
                   and any(producer[node.input[0]].op_type in kinds[k] for k in keep)]
        onnx.save(fused, out + ".fused")
        try:
            quantize_dynamic(
                out + ".fused", out,
                per_channel=True,
                weight_type=QuantType.QUInt8 if u8 else QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Attention"],
                nodes_to_exclude=exclude,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT,
                               "MatMulConstBOnly": True})
        except Exception as e:  # noqa: BLE001
            fail(f"ONNX Runtime's quantizer failed: {e}")
        finally:
            import os
            os.remove(out + ".fused")
        q = onnx.load(out)
        n = sum(1 for node in q.graph.node if node.op_type in QUANTIZED_OPS)
        if n == 0:
            fail("the quantizer found no MatMul or Attention with constant weights to quantize")
        method += (f", then quantize_dynamic: per-channel {'uint8' if u8 else 'int8'} weights, "
                   f"uint8 activations quantized per batch ({n} quantized operators)")
        if keep:
            method += f"; kept in fp32: {', '.join(sorted(keep))} ({len(exclude)} products)"
        for op in ("QAttention", "DynamicQuantizeMatMul", "MatMulInteger"):
            c = sum(1 for node in q.graph.node if node.op_type == op)
            if c:
                stats[op] = c
    print(json.dumps({"fused_operators": stats, "method": method}))


if __name__ == "__main__":
    main()
