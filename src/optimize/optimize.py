"""Make a precision variant of a BERT-family ONNX encoder with ONNX Runtime's own tooling.

    python optimize.py INPUT.onnx OUTPUT.onnx PRECISION MODEL_TYPE NUM_HEADS HIDDEN [--u8-weights]
        [--keep-fp32=ffn_output,attention_output] [--pool=OUTPUT:MODE[,MODE...]] [--normalize]
        [--activation=relu|log1p_relu] [--as-exported]

PRECISION: fp32 (fused graph), int8 (fused, then dynamic int8 quantisation with per-channel
weights), fp16 (fused for the GPU, then float16 with fp32 inputs and outputs), bf16 (the fused
fp32 graph; bf16 matrix products are a session setting; with --as-exported, the exported graph
with its float32 weights stored as float16, which OpenVINO keeps compressed at bf16). MODEL_TYPE
is the config.json model type (bert, distilbert, roberta, xlm-roberta, camembert). NUM_HEADS /
HIDDEN of 0: detected from the graph. --keep-fp32 leaves the named matrix products of every layer in fp32 when quantizing
(ffn_output: the product after the GELU, whose inputs have the widest range; attention_output:
the projection after attention). --pool ends the graph in sentence-transformers' pooling of the
token embeddings output OUTPUT over the attention mask (modes cls, max, mean, mean_sqrt_len,
lasttoken, concatenated in the order given), computed in fp32, and --normalize divides the result
by its L2 norm (at least 1e-12); the graph's only output is then `sentence_embedding`
[batch, dim]. --pool=logits:splade_max (or splade_sum) ends a masked-language model in
sentence-transformers' SpladePooling instead: --activation (relu: log(1 + relu(x)), log1p_relu:
log(1 + log(1 + relu(x)))) of the logits over the attention mask, max (or sum) per vocabulary
entry; the only output is then `sparse_embedding` [batch, vocabulary]. --as-exported keeps the exported graph as it is (no fusion, no conversion: for OpenVINO, which
compiles the graph itself at the precision its session names), then pools as asked. Prints one
JSON object (fused operators, method); exits 3 with the reason on stderr when
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


POOL_MODES = ("cls", "max", "mean", "mean_sqrt_len", "lasttoken")
SPLADE_MODES = ("splade_max", "splade_sum")


def add_pooling(path, token_output, modes, normalize, activation="relu"):
    """Append pooling (and L2 normalisation) to the graph at `path`, in place."""
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    model = onnx.load(path)
    g = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        fail(f"the graph uses ONNX opset {opset}; pooling in the graph needs opset 13 or later "
             "(export the model again with a newer opset)")
    outputs = {o.name: o for o in g.output}
    if token_output not in outputs:
        fail(f"the graph has no output '{token_output}' to pool")
    masks = [i for i in g.input if i.name == "attention_mask"]
    if not masks:
        fail("the graph has no attention_mask input, so its padding cannot be pooled away")
    taken = {n for node in g.node for n in node.output} | {i.name for i in g.initializer} \
        | {i.name for i in g.input}
    sparse = any(m in SPLADE_MODES for m in modes)
    result = "sparse_embedding" if sparse else "sentence_embedding"
    if sparse and (len(modes) != 1 or normalize):
        fail("SPLADE pooling is one mode (splade_max or splade_sum) without --normalize")
    if activation not in ("relu", "log1p_relu"):
        fail(f"--activation takes relu or log1p_relu, not {activation}")
    if result in taken:
        fail(f"the graph already computes '{result}': it is pooled already")
    nodes, inits = [], []
    counter = [0]

    def name(stem):
        counter[0] += 1
        return f"bertflow_pool/{stem}_{counter[0]}"

    def const(stem, value, dtype):
        n = name(stem)
        inits.append(numpy_helper.from_array(np.array(value, dtype=dtype), n))
        return n

    def op(kind, inputs, out=None, **attrs):
        out = out or name(kind.lower())
        nodes.append(helper.make_node(kind, inputs, [out], name=name(kind), **attrs))
        return out

    def reduce(kind, x, axis, keepdims):
        # Axes became an input in opset 13 for ReduceSum, in opset 18 for the others.
        if opset >= (13 if kind == "ReduceSum" else 18):
            return op(kind, [x, const("axes", [axis], np.int64)], keepdims=keepdims)
        return op(kind, [x], axes=[axis], keepdims=keepdims)

    tokens = token_output
    mask_f = op("Cast", ["attention_mask"], to=TensorProto.FLOAT)            # [B, S]
    mask3 = op("Unsqueeze", [mask_f, const("axes", [2], np.int64)])          # [B, S, 1]
    count = None
    pooled = []
    for mode in modes:
        if mode == "cls":
            pooled.append(op("Gather", [tokens, const("zero", 0, np.int64)], axis=1))
        elif mode == "max":
            keep = op("Cast", [mask3], to=TensorProto.BOOL)
            masked = op("Where", [keep, tokens, const("neg", -1e9, np.float32)])
            pooled.append(reduce("ReduceMax", masked, 1, 0))
        elif mode in ("mean", "mean_sqrt_len"):
            summed = reduce("ReduceSum", op("Mul", [tokens, mask3]), 1, 0)  # [B, H]
            if count is None:
                count = op("Max", [reduce("ReduceSum", mask3, 1, 0),           # [B, 1]
                                   const("eps", 1e-9, np.float32)])
            denom = count if mode == "mean" else op("Sqrt", [count])
            pooled.append(op("Div", [summed, denom]))
        elif mode in SPLADE_MODES:
            # relu and log(1 + x) never decrease, so the max of the activations is the activation
            # of the max: max pooling takes the largest logit first and activates one value per
            # entry (the mask always holds a token: the model's special tokens). Sum pooling
            # activates every token, padding masked to zero.
            def activate(x):
                one = const("one", 1.0, np.float32)
                x = op("Log", [op("Add", [x, one])])
                return op("Log", [op("Add", [x, one])]) if activation == "log1p_relu" else x
            if mode == "splade_max":
                # Two passes over the [B, S, V] logits (mask, max) instead of three: the
                # largest logit of the mask's tokens, then relu and the activation per entry.
                keep = op("Cast", [mask3], to=TensorProto.BOOL)
                masked = op("Where", [keep, tokens, const("neg", -1e9, np.float32)])
                pooled.append(activate(op("Relu", [reduce("ReduceMax", masked, 1, 0)])))
            else:
                relu = op("Mul", [op("Relu", [tokens]), mask3])              # [B, S, V]
                pooled.append(reduce("ReduceSum", activate(relu), 1, 0))
        elif mode == "lasttoken":
            # The last position whose mask is set (position 0 when none is).
            seq = op("Gather", [op("Shape", ["attention_mask"]), const("one", 1, np.int64)])
            positions = op("Range", [const("zero", 0, np.int64), seq, const("one", 1, np.int64)])
            weighted = op("Mul", [mask_f, op("Cast", [positions], to=TensorProto.FLOAT)])
            last = op("ArgMax", [weighted], axis=1, keepdims=1)                # [B, 1]
            onehot = op("Cast", [op("Equal", [positions, last])], to=TensorProto.FLOAT)
            picked = op("Mul", [tokens, op("Unsqueeze", [onehot, const("axes", [2], np.int64)])])
            pooled.append(reduce("ReduceSum", picked, 1, 0))
        else:
            fail(f"unknown pooling mode '{mode}'; modes: {', '.join(POOL_MODES + SPLADE_MODES)}")
    vec = pooled[0] if len(pooled) == 1 else op("Concat", pooled, axis=1)
    if normalize:
        norm = op("Max", [reduce("ReduceL2", vec, 1, 1), const("eps", 1e-12, np.float32)])
        vec = op("Div", [vec, norm])
    op("Identity", [vec], out=result)
    g.node.extend(nodes)
    g.initializer.extend(inits)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(
        result, TensorProto.FLOAT, ["batch", "vocabulary" if sparse else "embedding"]))
    # Drop what only the removed outputs needed (e.g. a pooler head), so none of it runs.
    needed = {result}
    kept = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:  # subgraphs read outer names too
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    needed.update(i for n in sub.node for i in n.input)
    del g.node[:]
    g.node.extend(reversed(kept))
    unused = [i for i in g.initializer if i.name not in needed]
    for i in unused:
        g.initializer.remove(i)
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        fail(f"the pooled graph is not valid ONNX: {e}")
    onnx.save(model, path)


def half_weights(model, min_size=1024):
    """Store every float32 initializer of at least `min_size` values whose magnitudes float16
    holds (the matrices and embedding tables) as float16, widened back by a Cast before first
    use. Runs at bf16 lose nothing to it: float16 keeps 10 mantissa bits where bf16 keeps 7.
    Returns how many tensors were stored so."""
    import numpy as np
    from onnx import helper, numpy_helper
    g = model.graph
    used = {i for node in g.node for i in node.input}
    kept, casts = [], []
    for init in g.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name not in used:
            kept.append(init)
            continue
        a = numpy_helper.to_array(init)
        if a.size < min_size or not np.isfinite(a).all() or np.abs(a).max() > 65504:
            kept.append(init)
            continue
        kept.append(numpy_helper.from_array(a.astype(np.float16), init.name + "_float16"))
        casts.append(helper.make_node("Cast", [init.name + "_float16"], [init.name],
                                      to=onnx.TensorProto.FLOAT, name=init.name + "_widen"))
    # A graph input of the same name would shadow nothing now: drop it with the initializer.
    names = {c.output[0] for c in casts}
    inputs = [i for i in g.input if i.name not in names]
    del g.input[:]
    g.input.extend(inputs)
    del g.initializer[:]
    g.initializer.extend(kept)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    return len(casts)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 6:
        fail(__doc__)
    src, out, precision, model_type, heads, hidden = args
    u8 = "--u8-weights" in sys.argv
    normalize = "--normalize" in sys.argv
    activation = "relu"
    for a in sys.argv[1:]:
        if a.startswith("--activation="):
            activation = a.split("=", 1)[1]
    pool = None
    for a in sys.argv[1:]:
        if a.startswith("--pool="):
            spec = a.split("=", 1)[1]
            output, _, modes = spec.rpartition(":")
            pool = (output, [m for m in modes.split(",") if m])
            if not output or not pool[1]:
                fail(f"--pool takes OUTPUT:MODE[,MODE...], not {spec}")
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
    if "--as-exported" in sys.argv:
        if precision == "bf16":
            n = half_weights(model)
            onnx.save(model, out)
            method = ("the exported graph with its float32 weight tensors stored as float16 "
                      f"({n} tensors, each widened by a Cast that OpenVINO folds into its bf16 "
                      "products and keeps compressed); "
                      "OpenVINO compiles it at bf16")
        else:
            import shutil
            shutil.copyfile(src, out)
            method = "the exported graph unchanged (OpenVINO compiles it; the precision is its inference precision)"
        if pool:
            add_pooling(out, pool[0], pool[1], normalize, activation)
            method += f"; {' + '.join(pool[1])} pooling of {pool[0]} in the graph (fp32)"
        print(json.dumps({"fused_operators": {}, "method": method}))
        return
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
    if pool:
        add_pooling(out, pool[0], pool[1], normalize, activation)
        if pool[1][0] in SPLADE_MODES:
            act = "log(1 + log(1 + relu(x)))" if activation == "log1p_relu" else "log(1 + relu(x))"
            method += (f"; SPLADE {pool[1][0][len('splade_'):]} pooling of {act} of {pool[0]} over the"
                       " attention mask in the graph (fp32), output sparse_embedding")
        else:
            method += (f"; {' + '.join(pool[1])} pooling of {pool[0]} over the attention mask"
                       f"{' and L2 normalisation' if normalize else ''} in the graph (fp32),"
                       " output sentence_embedding")
    print(json.dumps({"fused_operators": stats, "method": method}))


if __name__ == "__main__":
    main()
