"""Using a fine-tuned model: score it on a benchmark file (`train.py evaluate`), or run it on raw text (`train.py
predict`): NER marks the entities in each line, RE labels each line, QA answers a question about a passage (the
paper's Table 6). Examples are cut as the model was fine-tuned (`read_config`).

    python train.py evaluate --model runs/ner/best --data ../shared/data/ner/NCBI-disease/test.txt
    echo "Mutations in ATM cause ataxia-telangiectasia ." | python train.py predict --model runs/ner/best
"""
import re
from dataclasses import replace
from pathlib import Path

import benchmarks
import metrics
import qa
from data import read_json_or_none
from runtime import setup_runtime
from tasks import (DEFAULTS, WINDOW_KEYS, FinetuneConfig, check_length, decode_tags, evaluate, featurize,
                   load_finetuned, predict_logits, read_examples, score_text)
from tokenizer import InputError, WordPieceTokenizer


def format_scores(scores):
    """What `train.py evaluate` prints: P/R/F1 and a row per entity type or relation class; EM/F1; or BioASQ's
    SAcc/LAcc/MRR per test batch."""
    if "batches" in scores:  # BioASQ: a line per test batch
        return "\n".join(f"batch {batch}: {score_text(row)}" for batch, row in scores["batches"].items())
    if "precision" not in scores:
        return score_text(scores)
    lines = [f"precision {100 * scores['precision']:.2f}  recall {100 * scores['recall']:.2f}  "
             f"f1 {100 * scores['f1']:.2f}", f"{'type/class':<20} {'P':>7} {'R':>7} {'F1':>7} {'support':>8}"]
    for name, row in sorted(scores["table"].items()):
        lines.append(f"{name:<20} {100 * row['precision']:7.2f} {100 * row['recall']:7.2f} {100 * row['f1']:7.2f} "
                     f"{row['support']:8d}")
    return "\n".join(lines)


def read_config(model_dir, model, task, batch_size, max_length=None) -> FinetuneConfig:
    """How to cut examples for a fine-tuned model: as it was trained (config.json "electramed_windows", written by
    save_finetuned), else as Table 5 (a model made by transformers): NER/RE 128 pieces; QA windows of 384, stride 128,
    questions cut at 64. `max_length` (--max-length) replaces the length, for QA the window."""
    path = Path(model_dir) / "config.json"
    recorded = (read_json_or_none(path) or {}).get("electramed_windows") or {}
    if not isinstance(recorded, dict) or any(type(recorded.get(key, 1)) is not int or recorded.get(key, 1) < 1
                                             for key in WINDOW_KEYS[task]):
        raise InputError(f"{path}: electramed_windows is not a set of positive whole numbers ({recorded})")
    config = replace(DEFAULTS["squad" if task == "qa" else task], batch_size=batch_size,
                     **{key: recorded[key] for key in WINDOW_KEYS[task] if key in recorded})
    config = replace(config, max_length=max_length or config.max_length)
    check_length(config.max_length, model.config, model_dir)
    return config


def evaluate_file(model_dir, path, batch_size=32, max_length=None, device_name="cpu", golden=None):
    """Scores of a fine-tuned model on one data file; the file's labels must be the model's. NER/RE: examples of
    `max_length` (default: the model's, read_config); QA: a SQuAD file (EM/F1) or a BioASQ test batch with its
    `golden` file (SAcc/LAcc/MRR), in windows of `max_length` (default: the model's)."""
    model, labels, task = load_finetuned(model_dir)
    config = read_config(model_dir, model, task, batch_size, max_length)
    if golden and task != "qa":
        raise InputError(f"--golden {golden}: scores a QA model's BioASQ test batch; {model_dir} is a {task} model")
    examples = read_examples(task, path, labels)
    device = setup_runtime(device_name).device
    features = featurize(task, examples, WordPieceTokenizer(Path(model_dir) / "vocab.txt"), labels, config)
    if task == "qa" and not golden and not any(example.answers for example in examples):
        raise InputError(f"{path}: no answers to score by (a BioASQ test batch needs its golden file: --golden)")
    if golden:  # checked before the model runs: the wrong golden file is an error, missing questions a warning
        answers = benchmarks.read_bioasq_golden(golden)
        qa.check_golden(examples, {str(golden): answers})
        golden = {qa.bioasq_batch(path): answers}
    return task, evaluate(task, model.to(device), examples, features, labels, config, device, golden)[0]


# words as the model's training corpus split them (config.json "electramed_word_split", benchmarks.word_split):
WORDS = {"words": re.compile(r"\w+(?:[-'/.]\w+)*|[^\w\s]"),  # JNLPBA, BC5CDR: "B-NHL", "(", "IL-2", "."
         "punctuation": re.compile(r"\w+|[^\w\s]")}  # NCBI-disease, BC5CDR-typed: "IL", "-", "2"


def predict_lines(model_dir, lines, batch_size=32, max_length=None, device_name="cpu"):
    """Raw text, one example per line -> NER: the line with entities marked [[entity]]/TYPE (the paper's Table 6
    uses bold); RE: the predicted label, a TAB, the line. `max_length`: default the model's (read_config)."""
    model, labels, task = load_finetuned(model_dir)
    if task == "qa":
        raise InputError(f"{model_dir}: a question-answering model: give the question with --question")
    tokenizer = WordPieceTokenizer(Path(model_dir) / "vocab.txt")
    max_length = read_config(model_dir, model, task, batch_size, max_length).max_length
    device = setup_runtime(device_name).device
    model = model.to(device)
    if task == "re":
        examples = [(str(i), line, None) for i, line in enumerate(lines)]
        features = benchmarks.re_features(examples, tokenizer, labels, max_length)
        logits = predict_logits(model, features, batch_size, device)
        return [f"{labels[int(row.argmax())]}\t{line}" if line.strip() else "" for row, line in zip(logits, lines)]
    split = (read_json_or_none(Path(model_dir) / "config.json") or {}).get("electramed_word_split")
    word = WORDS.get(split, WORDS["words"])  # a model made elsewhere: words keep their inner hyphens
    spans = [[m.span() for m in word.finditer(line)] for line in lines]
    sentences = [([line[a:b] for a, b in s], None) for line, s in zip(lines, spans)]
    features = benchmarks.ner_features(sentences, tokenizer, labels, max_length)
    tags = decode_tags(sentences, features, predict_logits(model, features, batch_size, device), labels)
    marked = []
    for line, line_spans, line_tags in zip(lines, spans, tags):
        pieces, cursor = [], 0
        for kind, start, end in metrics.entities(line_tags):
            char_start, char_end = line_spans[start][0], line_spans[end][1]
            pieces += [line[cursor:char_start], f"[[{line[char_start:char_end]}]]/{kind}"]
            cursor = char_end
        marked.append("".join(pieces) + line[cursor:])
    return marked


def predict_answers(model_dir, question, passage, top=5, device_name="cpu", max_length=None, batch_size=16):
    """The paper's Table 6 for QA: the `top` answers to `question` in `passage`, [(text, probability)] best first."""
    model, _, task = load_finetuned(model_dir)
    if task != "qa":
        raise InputError(f"{model_dir}: --question needs a question-answering model, this one is {task}")
    if not passage.strip():
        raise InputError("predict: the passage is empty")
    example = benchmarks.QAExample("--question", question, passage, [])
    config = read_config(model_dir, model, task, batch_size, max_length)
    device = setup_runtime(device_name).device
    features = qa.qa_featurize([example], WordPieceTokenizer(Path(model_dir) / "vocab.txt"), config)
    logits = predict_logits(model.to(device), features, config.batch_size, device)
    nbest = qa.qa_decode([example], features, logits)[example.id]
    return [(text, probability) for text, probability, _ in nbest[:top]]
