"""Export a transformers / sentence-transformers model folder to the ONNX model folder bertflow
runs (run by `bertflow models export SRC OUT`; needs torch, transformers, onnx and
onnxruntime).

    python export.py SRC OUT HEAD

SRC: config.json, model.safetensors (or pytorch_model.bin), the tokenizer files, and any
sentence-transformers files. HEAD: what graph to export (bertflow decides it from the folder):
  encoder   the bare encoder, output last_hidden_state (sentence-transformers embedders)
  mlm       ...ForMaskedLM, output logits [batch, sequence, vocabulary] (SPLADE)
  sequence  ...ForSequenceClassification, output logits [batch, labels]
  token     ...ForTokenClassification, output logits [batch, sequence, labels]
  qa        ...ForQuestionAnswering, outputs start_logits, end_logits

The graph is exported with torch.onnx (TorchScript exporter, opset 17, dynamic batch and
sequence), then checked: onnxruntime and torch on the same padded batch of sample texts; the
largest difference is printed and an export above the tolerance is refused (exit 3). OUT gets
model.onnx, tokenizer.json (made from the tokenizer files when the folder has none),
config.json, the tokenizer's configuration and the sentence-transformers files (a module's
pytorch_model.bin is saved as model.safetensors). The last stdout line is a JSON summary.
Exit 2: bad input (said on stderr), 3: the export does not match the framework.
"""

import json
import pathlib
import shutil
import sys
import warnings

warnings.filterwarnings("ignore")

SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "Barack Obama met Angela Merkel in Berlin on Tuesday.",
    "I love this phone 😍 but the battery... meh",
    "Ünïcödé façade, naïve café — “quotes”.",
    "ok",
    "Revenue grew by twelve percent, driven by subscriptions in Europe and Asia, while costs rose "
    "more slowly because hiring was paused in March.",
]
TOLERANCE = 1e-3


def fail(msg: str, code: int = 2) -> None:
    print(msg, file=sys.stderr)
    sys.exit(code)


def main() -> None:
    if len(sys.argv) != 4:
        fail("usage: export.py SRC OUT HEAD")
    src, out, head = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    try:
        import numpy as np
        import onnxruntime as ort
        import torch
        import transformers
        from transformers import AutoConfig, AutoTokenizer
    except ImportError as e:
        fail(f"missing Python package: {e.name}")

    classes = {
        "encoder": transformers.AutoModel,
        "mlm": transformers.AutoModelForMaskedLM,
        "sequence": transformers.AutoModelForSequenceClassification,
        "token": transformers.AutoModelForTokenClassification,
        "qa": transformers.AutoModelForQuestionAnswering,
    }
    if head not in classes:
        fail(f"unknown head {head}")
    try:
        config = AutoConfig.from_pretrained(src)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(f"config.json cannot be read by transformers {transformers.__version__} (an architecture it does not know?): {first}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, use_fast=True)
    except Exception as e:  # noqa: BLE001
        fail(f"the tokenizer cannot be loaded: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
    if not getattr(tokenizer, "is_fast", False):
        fail("the tokenizer has no fast (Rust) form, which bertflow needs (tokenizer.json)")
    try:
        model = classes[head].from_pretrained(src, torch_dtype=torch.float32, attn_implementation="eager")
    except ValueError as e:
        fail(f"transformers cannot build a {head} model of type {config.model_type}: {str(e).splitlines()[0]}")
    except Exception as e:  # noqa: BLE001
        fail(f"the weights cannot be loaded: {str(e).splitlines()[0]}")
    model.eval()

    wanted = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    if "input_ids" not in wanted:
        wanted.insert(0, "input_ids")
    import inspect

    forward = inspect.signature(model.forward).parameters
    inputs = [n for n in wanted if n in forward]
    outputs = {"qa": ["start_logits", "end_logits"], "encoder": ["last_hidden_state"]}.get(head, ["logits"])

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *args):
            r = self.m(**dict(zip(inputs, args)), return_dict=True)
            return tuple(r[o] for o in outputs)

    batch = tokenizer(SAMPLES, padding=True, truncation=True, max_length=64, return_tensors="pt")
    args = tuple(batch[n] for n in inputs)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    axes = {n: {0: "batch", 1: "sequence"} for n in inputs}
    for o in outputs:
        axes[o] = {0: "batch", 1: "sequence"} if head != "sequence" else {0: "batch"}
    # Checked beside the traced batch: one short text alone, and one long text (up to the
    # model's positions), so that a graph that only holds for the traced shapes is refused.
    one = tokenizer(SAMPLES[:1], return_tensors="pt")
    limit = min(512, getattr(config, "max_position_embeddings", 512) or 512, tokenizer.model_max_length or 512)
    long_text = " ".join(SAMPLES * 40)
    long = tokenizer([long_text], truncation=True, max_length=max(8, limit - 4), return_tensors="pt")
    with torch.no_grad():
        # The framework's outputs first: the exporter may leave the module changed.
        expected = [t.numpy().copy() for t in Wrapped(model)(*args)]
        others = [
            (feeds, [t.numpy().copy() for t in Wrapped(model)(*(feeds[n] for n in inputs))])
            for feeds in (one, long)
        ]
    if not all(np.isfinite(e).all() for e in expected):
        fail("the model's own outputs (torch) are not finite on sample texts: its weights or configuration are broken", 3)
    with torch.no_grad():
        try:
            torch.onnx.export(
                Wrapped(model), args, str(onnx_path), input_names=inputs, output_names=outputs,
                dynamic_axes=axes, opset_version=17, do_constant_folding=True, dynamo=False,
            )
        except Exception as e:  # noqa: BLE001
            fail(f"torch.onnx cannot export {config.model_type} ({type(e).__name__}): {str(e).splitlines()[0]}")

    # The check: onnxruntime on the traced batch, then on the short and the long text.
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    feeds = {n: batch[n].numpy().astype(np.int64) for n in inputs}
    got = sess.run(outputs, feeds)
    mask = batch["attention_mask"].numpy().astype(bool)
    worst = 0.0
    for name, e, g in zip(outputs, expected, got):
        if e.shape != g.shape:
            fail(f"the exported graph's {name} has shape {g.shape}, the framework's {e.shape}", 3)
        d = np.abs(e - g)
        if head != "sequence":
            d = d[mask]  # padded positions are not compared
        scale = max(1.0, float(np.abs(e).max()))
        worst = max(worst, float(d.max()) / scale)
    for feeds1, e1 in others:
        g1 = sess.run(outputs, {n: feeds1[n].numpy().astype(np.int64) for n in inputs})
        for e, g in zip(e1, g1):
            if e.shape != g.shape:
                fail(f"the exported graph gives shape {g.shape} where the framework gives {e.shape}", 3)
            worst = max(worst, float(np.abs(e - g).max()) / max(1.0, float(np.abs(e).max())))
    if not worst <= TOLERANCE:
        onnx_path.unlink()
        fail(f"the exported graph differs from {config.model_type} in torch by {worst:.3g} (relative; at most {TOLERANCE} allowed)", 3)

    # The folder's other files.
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for f in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json", "README.md", "LICENSE"):
        if (src / f).is_file():
            shutil.copy(src / f, out / f)
    modules = []
    if (src / "modules.json").is_file():
        modules = [m.get("path", "") for m in json.loads((src / "modules.json").read_text())]
    for sub in sorted(p for p in src.iterdir() if p.is_dir() and (p.name in modules or p.name[:1].isdigit())):
        if not sub.name:
            continue
        dest = out / sub.name
        dest.mkdir(exist_ok=True)
        for f in sub.iterdir():
            if f.name == "pytorch_model.bin":
                from safetensors.torch import save_file

                state = torch.load(f, map_location="cpu", weights_only=True)
                save_file({k: v.contiguous() for k, v in state.items()}, str(dest / "model.safetensors"))
            elif f.is_file():
                shutil.copy(f, dest / f.name)
    print(json.dumps({
        "model_type": config.model_type,
        "head": head,
        "inputs": inputs,
        "outputs": outputs,
        "max_difference": worst,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
