"""Create tiny random-weight BERT, DistilBERT and RoBERTa models with sequence-classification,
token-classification and question-answering heads, export them to ONNX, and record what the
Hugging Face transformers 4.53 pipelines return for a fixture text set.

    make reference          (runs this with the reference virtualenv; needs torch + transformers)

Writes tests/fixtures/tasks/<arch>-<head>/{model.onnx,tokenizer.json,config.json,...} and
tests/fixtures/tasks/expected.json. The models have small trained vocabularies (so the files stay
a few hundred KB) and random weights with a large initializer range (so the outputs are decisive).
"""

import json
import pathlib
import shutil

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    DistilBertConfig,
    PreTrainedTokenizerFast,
    RobertaConfig,
    pipeline,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "tasks"

TEXTS = [
    "Barack Obama met Angela Merkel in Berlin on Tuesday.",
    "My name is John Doe, and I live in New York City.",
    "Apple is looking at buying a U.K. startup for $1 billion.",
    "This movie is absolutely fantastic!",
    "A terrible waste of time.",
    "Microsoft Corporation and Alphabet compete in Seattle and Mountain View.",
    "Café Müller in Zürich serves crème brûlée — naïve façades everywhere.",
    "I love this phone 😍🔥 but the battery... meh 🙄 #fail @support",
    "東京とニューヨークは大きな都市です。北京も。",
    "The unbelievably overcomplicated anti-establishmentarianism discussion continued.",
    "   leading and trailing spaces   ",
    "x",
    "Visit https://example.com/path?q=1 or call +1-555-0100 tomorrow.",
]

LONG = " ".join(
    [
        "Alice Johnson founded Northwind Traders in Lisbon in 1998 and later moved to Oslo.",
        "The company grew quickly, opening offices in Madrid, Prague and Dublin.",
        "In 2010 Bob Smith became chief executive and the headquarters moved to Vienna.",
        "Revenue reached 42 million euros the following year, according to the annual report.",
        "Critics said the expansion was reckless, but investors in Zurich and Geneva disagreed.",
    ]
    * 3
)

NER_TEXTS = TEXTS + [LONG]

QA = [
    ("The capital of France is Paris.", "What is the capital of France?"),
    ("My name is John Doe, and I live in New York City.", "Where does John Doe live?"),
    ("Hamlet is a tragedy written by William Shakespeare around 1600.", "Who wrote Hamlet?"),
    ("Café Müller in Zürich serves crème brûlée 🍮 every day.", "What does Café Müller serve?"),
    ("東京は日本の首都です。人口は多いです。", "日本の首都は?"),
    (LONG, "Who became chief executive in 2010?"),
    (LONG, "Where was Northwind Traders founded?"),
    ("x", "What?"),
]

CORPUS = TEXTS + [LONG] + [c for c, _ in QA] + [q for _, q in QA] + [
    "the a an of in on and or but is was were be been to for with at by from",
    "who what where when which how why does did do",
]


def train_wordpiece(lowercase):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=700,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        continuing_subword_prefix="##",
        min_frequency=1,
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok, dict(
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )


def train_bytelevel():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.post_processor = processors.RobertaProcessing(
        sep=("</s>", tok.token_to_id("</s>")), cls=("<s>", tok.token_to_id("<s>")), trim_offsets=True
    )
    tok.decoder = decoders.ByteLevel()
    return tok, dict(
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
        sep_token="</s>", mask_token="<mask>",
    )


NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def make_config(arch, vocab, head):
    common = dict(vocab_size=vocab, max_position_embeddings=512, initializer_range=0.6)
    if arch == "bert":
        cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, **common)
    elif arch == "distilbert":
        cfg = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=48, **common)
    else:
        cfg = RobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, pad_token_id=1,
            bos_token_id=0, eos_token_id=2, type_vocab_size=1, **{**common, "max_position_embeddings": 514},
        )
    if head == "ner":
        cfg.id2label = dict(enumerate(NER_LABELS))
        cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    elif head == "sentiment":
        if arch == "bert":
            cfg.id2label = {0: "negative", 1: "neutral", 2: "positive"}
        elif arch == "distilbert":
            cfg.id2label = {0: "toxic", 1: "spam", 2: "offtopic", 3: "question"}
            cfg.problem_type = "multi_label_classification"
        else:
            cfg.id2label = {0: "rating"}
            cfg.problem_type = "regression"
        cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    return cfg


HEADS = {
    "sentiment": AutoModelForSequenceClassification,
    "ner": AutoModelForTokenClassification,
    "qa": AutoModelForQuestionAnswering,
}


def export(model, tok_fast, arch, head, out_dir):
    model.eval()
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if arch == "bert" else [])
    enc = tok_fast(["hello world", "a longer second example text"], padding=True, return_tensors="pt")
    args = tuple(enc[n] for n in names)
    outputs = ["start_logits", "end_logits"] if head == "qa" else ["logits"]
    dyn = {n: {0: "batch", 1: "sequence"} for n in names}
    for o in outputs:
        dyn[o] = {0: "batch", 1: "sequence"} if head != "sentiment" else {0: "batch"}
    torch.onnx.export(
        model, args, str(out_dir / "model.onnx"), input_names=names, output_names=outputs,
        dynamic_axes=dyn, opset_version=17, dynamo=False,
    )


def build_models():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    torch.manual_seed(0)
    toks = {"bert": train_wordpiece(True), "distilbert": train_wordpiece(False), "roberta": train_bytelevel()}
    pipes = {}
    for arch, (tok, specials) in toks.items():
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=128, **specials)
        if arch == "distilbert":
            fast.model_input_names = ["input_ids", "attention_mask"]
        for head, cls in HEADS.items():
            cfg = make_config(arch, tok.get_vocab_size(), head)
            model = cls.from_config(cfg)
            d = OUT / f"{arch}-{head}"
            d.mkdir()
            model.config.save_pretrained(d)
            fast.save_pretrained(d)
            export(model, fast, arch, head, d)
            for extra in ["vocab.txt", "merges.txt", "vocab.json"]:
                (d / extra).unlink(missing_ok=True)
            pipes[(arch, head)] = (model, fast)
    return pipes


def clean(x):
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [clean(v) for v in x]
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def main():
    pipes = build_models()
    expected = {"sentiment": [], "ner": [], "qa": []}
    for arch in ["bert", "distilbert", "roberta"]:
        model, tok = pipes[(arch, "sentiment")]
        p = pipeline("text-classification", model=model, tokenizer=tok, device=-1)
        for top_k in [1, None]:
            kwargs = {} if top_k == 1 else {"top_k": None}
            outs = [p(t, truncation=True, **kwargs) for t in NER_TEXTS]
            expected["sentiment"].append(
                {"model": f"{arch}-sentiment", "top_k": "all" if top_k is None else 1, "texts": NER_TEXTS,
                 "outputs": clean(outs)}
            )
        model, tok = pipes[(arch, "ner")]
        p = pipeline("token-classification", model=model, tokenizer=tok, device=-1)
        for agg in ["none", "simple", "first", "average", "max"]:
            outs = [p(t, aggregation_strategy=agg) for t in NER_TEXTS]
            expected["ner"].append(
                {"model": f"{arch}-ner", "aggregation": agg, "stride": None, "texts": NER_TEXTS,
                 "outputs": clean(outs)}
            )
        for agg in ["simple", "first", "max"]:
            outs = [p(t, aggregation_strategy=agg, stride=16) for t in NER_TEXTS]
            expected["ner"].append(
                {"model": f"{arch}-ner", "aggregation": agg, "stride": 16, "texts": NER_TEXTS,
                 "outputs": clean(outs), "max_length": 128}
            )
        model, tok = pipes[(arch, "qa")]
        p = pipeline("question-answering", model=model, tokenizer=tok, device=-1)
        for params in [
            {"top_k": 1},
            {"top_k": 3, "handle_impossible_answer": True},
            {"top_k": 2, "max_seq_len": 48, "doc_stride": 16, "max_answer_len": 8},
        ]:
            outs = []
            for context, question in QA:
                r = p(question=question, context=context, **params)
                outs.append(r if isinstance(r, list) else [r])
            expected["qa"].append(
                {"model": f"{arch}-qa", "params": params, "pairs": [list(x) for x in QA], "outputs": clean(outs)}
            )
    (OUT / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1) + "\n")
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
