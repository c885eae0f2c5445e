"""Tiny seeded models of every encoder family `bertflow models export` supports, saved as
transformers / sentence-transformers folders with safetensors weights and no ONNX graph, and what
the reference libraries return for them.

    make reference          (runs this with the reference virtualenv)

Writes tests/fixtures/export/<arch>/ (config.json naming a task head, model.safetensors, a
trained tokenizer, and the sentence-transformers files modules.json, 1_Pooling/config.json,
sentence_bert_config.json: mean pooling, Normalize) and tests/fixtures/export/expected.json:
  embed      per arch, SentenceTransformer(folder).encode(TEXTS): the bare encoder the folder's
             layout asks for, whatever head config.json names (as all-mpnet-base-v2, whose
             config.json says MPNetForMaskedLM)
  sentiment / ner / qa   the transformers 4.53 pipelines on the folder's head, in the format of
             tests/fixtures/tasks/expected.json
tests/fixtures/export/splade.json: SparseEncoder (MLMTransformer + SpladePooling max,
log1p(relu)) over the set-up's pretrained SPLADE-tiny (models/splade-tiny-source, safetensors):
per text the active dimensions, ascending, and their values.
tests/fixtures/export/mpnet.json: SentenceTransformer(models/all-mpnet-base-v2-source).encode
(the pretrained all-mpnet-base-v2 as published, scripts/test_models.sh fetches it) of
MPNET_TEXTS, torch fp32.
Tokenizers: WordPiece (BERT, DistilBERT, ELECTRA, MPNet), byte-level BPE (RoBERTa, ModernBERT),
SentencePiece-style Unigram (XLM-RoBERTa, CamemBERT, DeBERTa-v2); models without token types
(DistilBERT, the RoBERTa family, DeBERTa-v2 with type_vocab_size 0, ModernBERT). The weights are
random (initializer_range 0.6, so that labels are not ties): only agreement with the libraries
is tested.
"""

import json
import pathlib
import shutil
import sys
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers as tr  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast, pipeline  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_task_fixtures as tf  # noqa: E402

OUT = tf.ROOT / "tests" / "fixtures" / "export"
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, initializer_range=0.6)


def train_unigram():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>"
    )
    tok.train_from_iterator(tf.CORPUS * 3, trainer)
    s, e = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", s), ("</s>", e)]
    )
    tok.decoder = decoders.Metaspace()
    return tok, dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                     sep_token="</s>", mask_token="<mask>")


# arch -> (config class, tokenizer, token types, head, extra config)
ARCHS = {
    "bert": (tr.BertConfig, "wordpiece", True, "ner", {}),
    "distilbert": (tr.DistilBertConfig, "wordpiece-cased", False, "qa",
                   dict(dim=32, n_layers=2, n_heads=2, hidden_dim=48)),
    "electra": (tr.ElectraConfig, "wordpiece", True, "sentiment", dict(embedding_size=32)),
    "mpnet": (tr.MPNetConfig, "wordpiece", False, "mlm", {}),
    "roberta": (tr.RobertaConfig, "bpe", False, "ner", dict(type_vocab_size=1)),
    "xlm-roberta": (tr.XLMRobertaConfig, "unigram", False, "qa", dict(type_vocab_size=1)),
    "camembert": (tr.CamembertConfig, "unigram", False, "sentiment", dict(type_vocab_size=1)),
    "deberta-v2": (tr.DebertaV2Config, "unigram", False, "sentiment",
                   dict(type_vocab_size=0, relative_attention=True, position_biased_input=False,
                        pos_att_type=["p2c", "c2p"], max_relative_positions=-1, position_buckets=64)),
    "modernbert": (tr.ModernBertConfig, "bpe", False, "ner", dict(global_attn_every_n_layers=1, local_attention=16)),
}
HEAD_CLASS = {
    "ner": tr.AutoModelForTokenClassification,
    "qa": tr.AutoModelForQuestionAnswering,
    "sentiment": tr.AutoModelForSequenceClassification,
    "mlm": tr.AutoModelForMaskedLM,
}


def tokenizer(kind, types):
    tok, specials = {
        "wordpiece": lambda: tf.train_wordpiece(True),
        "wordpiece-cased": lambda: tf.train_wordpiece(False),
        "bpe": tf.train_bytelevel,
        "unigram": train_unigram,
    }[kind]()
    names = ["input_ids", "token_type_ids", "attention_mask"] if types else ["input_ids", "attention_mask"]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=128, model_input_names=names, **specials)
    return tok, fast


def build(arch):
    cls, kind, types, head, extra = ARCHS[arch]
    tok, fast = tokenizer(kind, types)
    kw = dict(SMALL) if arch != "distilbert" else dict(initializer_range=0.6)
    kw.update(extra)
    kw.update(vocab_size=tok.get_vocab_size(), max_position_embeddings=130 if kind in ("bpe", "unigram") else 128)
    pad = fast.pad_token_id
    kw.update(pad_token_id=pad)
    if arch == "modernbert":
        kw.update(bos_token_id=fast.cls_token_id, eos_token_id=fast.sep_token_id, cls_token_id=fast.cls_token_id,
                  sep_token_id=fast.sep_token_id)
    cfg = cls(**kw)
    if head == "ner":
        cfg.id2label = dict(enumerate(tf.NER_LABELS))
    elif head == "sentiment":
        cfg.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    if head in ("ner", "sentiment"):
        cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    torch.manual_seed(7)
    model = HEAD_CLASS[head].from_config(cfg, attn_implementation="eager").eval()
    d = OUT / arch
    model.save_pretrained(d, safe_serialization=True)
    fast.save_pretrained(d)
    for extra_file in ["vocab.txt", "merges.txt", "vocab.json"]:
        (d / extra_file).unlink(missing_ok=True)
    # The sentence-transformers layout: the bare encoder, mean pooling, Normalize.
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=1) + "\n")
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "mean"}) + "\n")
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}) + "\n")
    return model, fast, head


def main():
    from sentence_transformers import SentenceTransformer

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    expected = {"embed": [], "sentiment": [], "ner": [], "qa": []}
    for arch in ARCHS:
        model, fast, head = build(arch)
        st = SentenceTransformer(str(OUT / arch), device="cpu", model_kwargs={"attn_implementation": "eager"})
        vecs = st.encode(tf.TEXTS, convert_to_numpy=True)
        expected["embed"].append({"model": arch, "texts": tf.TEXTS, "vectors": [[float(f"{x:.8g}") for x in v] for v in vecs]})
        if head == "sentiment":
            p = pipeline("text-classification", model=model, tokenizer=fast, device=-1)
            outs = [p(t, truncation=True) for t in tf.NER_TEXTS]
            expected["sentiment"].append({"model": arch, "top_k": 1, "texts": tf.NER_TEXTS, "outputs": tf.clean(outs)})
        elif head == "ner":
            p = pipeline("token-classification", model=model, tokenizer=fast, device=-1)
            outs = [p(t, aggregation_strategy="simple") for t in tf.NER_TEXTS]
            expected["ner"].append({"model": arch, "aggregation": "simple", "stride": None, "texts": tf.NER_TEXTS,
                                    "outputs": tf.clean(outs)})
        elif head == "qa":
            p = pipeline("question-answering", model=model, tokenizer=fast, device=-1)
            outs = []
            for context, question in tf.QA:
                r = p(question=question, context=context, top_k=1)
                outs.append(r if isinstance(r, list) else [r])
            expected["qa"].append({"model": arch, "params": {"top_k": 1}, "pairs": [list(x) for x in tf.QA],
                                   "outputs": tf.clean(outs)})
        print(f"{arch}: {type(model).__name__}, tokenizer {type(fast.backend_tokenizer.model).__name__}")
    (OUT / "expected.json").write_text(json.dumps(expected, ensure_ascii=False) + "\n")
    splade()
    mpnet()
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({size / 1e6:.1f} MB)")


SPLADE_TEXTS = tf.TEXTS + ["heart attacks", "what causes a heart attack?", "", "The capital of France is Paris."]


def splade():
    import numpy as np
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling

    src = tf.ROOT / "models" / "splade-tiny-source"
    mlm = MLMTransformer(str(src), max_seq_length=512)
    model = SparseEncoder(modules=[mlm, SpladePooling("max", activation_function="relu")], device="cpu")
    dense = model.encode(SPLADE_TEXTS, convert_to_tensor=True, convert_to_sparse_tensor=False).cpu().numpy()
    rows = []
    for v in np.asarray(dense, dtype=np.float32):
        idx = np.nonzero(v)[0]
        rows.append({"indices": idx.tolist(), "values": [float(f"{x:.8g}") for x in v[idx]]})
    (OUT / "splade.json").write_text(json.dumps({"texts": SPLADE_TEXTS, "vectors": rows}, ensure_ascii=False) + "\n")
    print(f"splade: {len(rows)} texts, {sum(len(r['indices']) for r in rows)} active dimensions")


def mpnet():
    import make_reference as mr
    from sentence_transformers import SentenceTransformer

    texts = tf.TEXTS + mr.EMBED_TEXTS + [tf.LONG * 4]
    st = SentenceTransformer(str(tf.ROOT / "models" / "all-mpnet-base-v2-source"), device="cpu")
    vecs = st.encode(texts, batch_size=8, convert_to_numpy=True)
    (OUT / "mpnet.json").write_text(json.dumps(
        {"texts": texts, "vectors": [[float(f"{x:.8g}") for x in v] for v in vecs]}, ensure_ascii=False) + "\n")
    print(f"mpnet: {len(texts)} texts, max_seq_length {st.max_seq_length}")


if __name__ == "__main__":
    main()
