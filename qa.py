"""Question answering, the paper's Table 9: SQuAD v1.1 then BioASQ 7b factoid.

N-best decoding and BioASQ
pooling as BERT's run_squad.py (`write_predictions`) and BioBERT's `transform_n2b_factoid` (facts #19-#20): top 20
starts x top 20 ends of each window, end >= start, at most 30 tokens, both in the context, the start token scored
only in the window where it has its maximal context; candidates of all a question's windows merged, the 20 best
distinct texts kept, probabilities a softmax over them. Texts are cut from the original context by character
offsets (no get_final_text re-alignment needed).

    python train.py finetune --task qa --data SQUAD_TRAIN.json --init MODEL --out runs/squad
    python train.py finetune --task qa --data BIOASQ_TRAIN.json --eval-data ../shared/data/qa/bioasq-7b \
        --init runs/squad/best --out runs/bioasq          # the SQuAD model, its answer layer included

The loop and the head (tasks.SpanQA, whose loss is the mean of the start and end cross-entropies) are tasks.py's;
this file turns windows' logits into ranked answers and scores them.
"""
import re
from pathlib import Path

import numpy as np

import benchmarks
import metrics
from tokenizer import InputError

QA_N_BEST, QA_MAX_ANSWER_TOKENS = 20, 30
BIOASQ_TOP, BIOASQ_MAX_ANSWER_CHARS = 5, 100


def qa_nbest(example, windows, n_best=QA_N_BEST, max_answer_tokens=QA_MAX_ANSWER_TOKENS):
    """One question's n-best answers over its windows: [(text, probability, start+end logit)], best first.

    `windows` = [(QAFeature, start_logits, end_logits)], logits as 1-D numpy arrays over the window's tokens."""
    candidates = []  # (score, char_start, char_end)
    for feature, start_logits, end_logits in windows:
        length = len(feature.input_ids)
        start_logits, end_logits = np.asarray(start_logits)[:length], np.asarray(end_logits)[:length]
        best_starts = np.argsort(-start_logits, kind="stable")[:n_best]  # BERT's _get_best_indexes
        best_ends = np.argsort(-end_logits, kind="stable")[:n_best]
        for start in best_starts:
            if feature.offsets[start] is None or not feature.max_context[start]:
                continue
            for end in best_ends:
                if feature.offsets[end] is None or end < start or end - start + 1 > max_answer_tokens:
                    continue
                candidates.append((float(start_logits[start] + end_logits[end]),
                                   feature.offsets[start][0], feature.offsets[end][1]))
    candidates.sort(key=lambda candidate: -candidate[0])  # stable: ties keep BERT's loop order
    nbest, seen = [], set()
    for score, char_start, char_end in candidates:
        text = example.context[char_start:char_end]
        if text in seen:  # BERT keeps the best-scored copy of each final text
            continue
        seen.add(text)
        nbest.append((text, score))
        if len(nbest) == n_best:
            break
    if not nbest:
        return []
    scores = np.array([score for _, score in nbest])
    probabilities = np.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    return [(text, float(p), score) for (text, score), p in zip(nbest, probabilities)]


def textrip(text):
    """BioBERT's answer clean-up (utils_qa.py `textrip`), one rule at most: drop one trailing ',', '.' or ' '; else
    unwrap "(x)" holding one pair of parentheses; else drop ("") a text with a parenthesis left unbalanced."""
    if text == "":
        return text
    if text[-1] in ",. ":
        return text[:-1]
    if len(text) > 2 and text[0] == "(" and text[-1] == ")" and text.count("(") == 1 and text.count(")") == 1:
        return text[1:-1]
    if ("(" in text) != (")" in text):
        return ""
    return text


def bioasq_question_id(snippet_id):
    """`<24-char BioASQ question id>_<nnn>` -> the question id (BioBERT strips the last 4 characters)."""
    question_id, _, number = snippet_id.rpartition("_")
    return question_id if question_id and number.isdigit() else snippet_id


def bioasq_ranked(nbest_by_id, top=BIOASQ_TOP):
    """BioBERT's transform_n2b_factoid: pool the n-best answers of all snippets of a question, clean them with
    textrip, drop empty ones and those over 100 characters, merge case-insensitively by summing probabilities (the
    best-scored spelling is kept) and rank.
    {snippet id: [(text, probability, ...)]} -> {question id: [(text, summed probability)], best first}."""
    pooled = {}
    for snippet_id, nbest in nbest_by_id.items():
        pooled.setdefault(bioasq_question_id(snippet_id), []).extend(nbest)
    ranked = {}
    for question_id, answers in pooled.items():
        summed, spelling = {}, {}  # lowercased text -> summed probability, first (most probable) spelling
        for text, probability, *_ in sorted(answers, key=lambda answer: -answer[1]):
            text = textrip(text)
            if not text or len(text) > BIOASQ_MAX_ANSWER_CHARS:
                continue
            key = text.lower()
            spelling.setdefault(key, text)
            summed[key] = summed.get(key, 0.0) + probability
        order = sorted(summed, key=lambda key: -summed[key])
        ranked[question_id] = [(spelling[key], summed[key]) for key in order[:top]]
    return ranked


def qa_featurize(examples, tokenizer, config, training=False):
    """benchmarks.qa_features as the loop's feature dicts; "window" keeps the QAFeature (offsets, max_context)."""
    windows = benchmarks.qa_features(examples, tokenizer, config.max_length, config.doc_stride,
                                     config.max_query_length, training)
    return [{"input_ids": w.input_ids, "token_type_ids": w.token_type_ids, "start_positions": w.start_position,
             "end_positions": w.end_position, "example_index": w.example_index, "window": w} for w in windows]


def qa_decode(examples, features, logits):
    """{example id: n-best} from the loop's per-window logits ([tokens, 2] each); a question without a window (empty
    context) gets an empty n-best, i.e. no answer."""
    windows = [[] for _ in examples]
    for feature, row in zip(features, logits):
        windows[feature["example_index"]].append((feature["window"], row[:, 0].numpy(), row[:, 1].numpy()))
    return {example.id: qa_nbest(example, example_windows) for example, example_windows in zip(examples, windows)}


def check_golden(examples, golden):
    """Report the golden factoid questions without a snippet among `examples` (they score 0) and the questions
    that no golden file scores; InputError when a golden file shares no question with them (the wrong batch)."""
    asked = {bioasq_question_id(example.id) for example in examples}
    for batch, answers in golden.items():
        if not asked & set(answers):
            raise InputError(f"{batch}: none of its {len(answers)} factoid questions is in the test data "
                             f"(the golden file of another batch?)")
        benchmarks.report_ids(batch, "factoid questions without a snippet in the test data (scored as wrong)",
                              sorted(set(answers) - asked))
    scored = set().union(*golden.values())
    benchmarks.report_ids("bioasq", "test questions in no golden file (not scored)", sorted(asked - scored))


def qa_evaluate(examples, features, logits, golden=None):
    """(scores, n-best by id). SQuAD: the official v1.1 EM and F1 averaged over the questions, as fractions.
    BioASQ (`golden` = {batch: {question id: exact_answer}}, checked by check_golden when read): SAcc, LAcc, MRR
    per batch and their mean (Table 9)."""
    nbest = qa_decode(examples, features, logits)
    if golden is None:
        scored = [metrics.squad_em_f1(nbest[e.id][0][0] if nbest[e.id] else "", [text for text, _ in e.answers])
                  for e in examples if e.answers]
        if not scored:
            raise InputError("qa: no gold answers to score (a BioASQ test file needs its golden file: --golden)")
        return {"em": sum(em for em, _ in scored) / len(scored), "f1": sum(f1 for _, f1 in scored) / len(scored)}, \
            nbest
    ranked = {question: [text for text, _ in answers] for question, answers in bioasq_ranked(nbest).items()}
    batches = {batch: metrics.bioasq_factoid(ranked, answers) for batch, answers in golden.items()}
    scores = {key: sum(b[key] for b in batches.values()) / len(batches) for key in ("sacc", "lacc", "mrr")}
    return {**scores, "batches": batches}, nbest


def pair_golden(goldens, tests):
    """{batch name: golden} for BioASQ test batches ({batch name: examples}) and golden files ({path: golden}): each
    golden file goes with the batch whose questions it shares most (7B1_golden.json <-> BioASQ-test-factoid-7b-1.json).
    """
    asked = {batch: {bioasq_question_id(e.id) for e in examples} for batch, examples in tests.items()}
    batches = {}
    for path, golden in goldens.items():
        batch = max(asked, key=lambda batch: len(asked[batch] & set(golden)))
        check_golden(tests[batch], {f"{path} (batch {batch})": golden})
        batches[batch] = golden
    return batches


def first_per_batch(tests, golden, limit):
    """The first `limit` snippets of EACH BioASQ test batch ({batch: golden}): cutting the batches' concatenation
    would leave the later batches without questions, and score them 0."""
    if limit is None:
        return tests
    kept = {batch: [] for batch in golden}
    for example in tests:
        question = bioasq_question_id(example.id)
        batch = next((b for b, answers in golden.items() if question in answers), None)
        if batch is not None and len(kept[batch]) < limit:
            kept[batch].append(example)
    return [example for batch in kept.values() for example in batch]


def bioasq_batch(path):
    """A test batch's name: its number for BioASQ-test-factoid-7b-N.json, else the file name."""
    match = re.search(r"-(\d+)\.json$", str(path))
    return match.group(1) if match else Path(path).stem


# Paper Table 9: ELECTRAMed on the BioASQ 7b factoid test batches, SAcc / LAcc / MRR in %.
PAPER_BIOASQ = {"1": (44.62, 51.28, 47.95), "2": (46.40, 62.40, 53.16), "3": (37.93, 58.62, 46.62),
                "4": (61.18, 82.35, 69.55), "5": (24.57, 44.00, 31.42)}


def qa_summary(results):
    """Mean and sample std over seeds of the test scores, per BioASQ batch (or of SQuAD EM/F1)."""
    test = [r["test"] for r in results if r.get("test")]
    if not test:
        return {}
    if "batches" not in test[0]:
        return {key: dict(zip(("mean", "std"), metrics.mean_std([t[key] for t in test]))) for key in ("em", "f1")}
    return {batch: {key: dict(zip(("mean", "std"), metrics.mean_std([t["batches"][batch][key] for t in test])))
                    for key in ("sacc", "lacc", "mrr")} for batch in test[0]["batches"]}


def qa_table(summary, seeds):
    """Paper Table 9 layout: a row per batch and metric, the paper's ELECTRAMed beside ours, and the average."""
    if not summary:
        return "No test scores: no test data was given.\n"
    def cell(scores):  # one seed has no sample std: its score alone, as in Tables 7 and 8
        return f"{100 * scores['mean']:.2f}" + (f" ± {100 * scores['std']:.2f}" if scores["std"] is not None
                                                and seeds > 1 else "")

    if "em" in summary:
        over = "one seed" if seeds == 1 else f"mean ± sample std over {seeds} seeds"
        return f"SQuAD v1.1, {over}: EM {cell(summary['em'])}, F1 {cell(summary['f1'])}\n"
    over = "one seed" if seeds == 1 else f"mean ± sample std over {seeds} seeds"
    lines = [f"BioASQ 7b factoid test batches in %, Table 9 layout; ours: {over}.", "",
             "| Batch | Metrics | ELECTRAMed (paper) | ours | difference |", "|---|---|---|---|---|"]
    rows = {**summary, "average": {key: {"mean": sum(s[key]["mean"] for s in summary.values()) / len(summary),
                                         "std": None} for key in ("sacc", "lacc", "mrr")}}
    paper_average = [sum(p[i] for p in PAPER_BIOASQ.values()) / 5 for i in range(3)]
    for batch, scores in rows.items():
        paper = paper_average if batch == "average" and set(summary) == set(PAPER_BIOASQ) else PAPER_BIOASQ.get(batch)
        for row, (name, key) in enumerate((("SACC", "sacc"), ("LACC", "lacc"), ("MRR", "mrr"))):
            mean, ours = 100 * scores[key]["mean"], cell(scores[key])
            theirs, difference = (f"{paper[row]:.2f}", f"{mean - paper[row]:+.2f}") if paper else ("—", "—")
            lines.append(f"| {batch if row == 0 else ''} | {name} | {theirs} | {ours} | {difference} |")
    return "\n".join(lines) + "\n"


def qa_column(path):
    """Which of Table 5's QA columns `finetune --task qa --data PATH` takes: BioASQ's (lr 5e-6) for a path that
    names BioASQ, else SQuAD's (lr 3e-5, 2 epochs)."""
    return "bioasq" if "bioasq" in str(path).lower() else "squad"


def qa_splits(train_paths, eval_paths=()):
    """`finetune --task qa --data PATH --eval-data PATH...`: SQuAD-format files, or folders of them (*.json, sorted).
    What a file is for comes from the flag that names it, never from its name alone: every --data file is training
    data (a held-out file given as --eval-data is never trained on). Among the --eval-data files, `*golden*` ones are
    BioASQ golden files; a SQuAD-format file sharing questions with one is a BioASQ test batch (scored per batch by
    SAcc/LAcc/MRR at the end), any other a SQuAD dev file (EM/F1 each epoch, best epoch kept). Without a dev file the
    last epoch is kept (the paper gives no BioASQ dev set)."""
    def json_files(paths):
        return [file for path in map(Path, paths)
                for file in (sorted(path.glob("*.json")) if path.is_dir() else [path])]

    train = [e for file in json_files(train_paths) for e in benchmarks.read_squad(file)]
    if not train:
        raise InputError(f"{', '.join(map(str, train_paths))}: no SQuAD-format training file")
    eval_files = json_files(eval_paths)
    golden_files = [file for file in eval_files if "golden" in file.name.lower()]
    goldens = {file: benchmarks.read_bioasq_golden(file) for file in golden_files}
    asked_in_golden = set().union(*goldens.values())
    tests, dev = {}, []
    for file in (file for file in eval_files if file not in goldens):
        examples = benchmarks.read_squad(file)
        if asked_in_golden & {bioasq_question_id(e.id) for e in examples}:
            tests[bioasq_batch(file)] = examples
        elif not any(e.answers for e in examples):
            raise InputError(f"{file}: no answers to score it by, and no --eval-data golden file shares its "
                             "questions (a BioASQ test batch needs its *golden*.json)")
        else:
            dev += examples
    if goldens and not tests:
        raise InputError(f"{', '.join(map(str, golden_files))}: no --eval-data test batch shares their questions")
    benchmarks.check_unique_ids(dev + [e for examples in tests.values() for e in examples], "--eval-data files")
    return {"train": train, "dev": dev, "test": [e for examples in tests.values() for e in examples],
            "golden": pair_golden(goldens, tests) if tests else None}
