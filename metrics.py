"""Evaluation metrics of the paper's benchmarks, each matching the scorer its numbers come from.

- NER (Table 7): entity-level micro precision/recall/F1 on exact (type, start, end) spans with CoNLL chunking
  (conlleval.pl), identical to seqeval's default mode (`seqeval.metrics.sequence_labeling.get_entities`) on any
  input: IOB1 and IOB2 both, `I-X` after `O` or after another type starts a chunk.
- RE (Table 8): micro P/R/F1 over the positive relation classes only, the negative class ('false', 'DDI-false')
  excluded, as BLUE evaluates ChemProt and DDI (electra-facts.md #22).
- SQuAD v1.1: exact match and token F1 of the official `evaluate-v1.1.py` (normalize_answer, max over gold answers).
- BioASQ factoid (Table 9): strict/lenient accuracy and MRR as BioASQ's Java evaluator
  (`EvaluatorTask1b -phaseB -e 5`, `QuestionAnswerEvaluator.*ForLists`; electra-facts.md #21).

Scores are fractions in [0, 1]; percentages are for printing only. Imports nothing of ours.
"""

import re
import string
from collections import Counter

import numpy as np


# ----------------------------------------------------------------------------------------------------------------------
# NER: CoNLL chunks, as seqeval's default mode

def _tag_and_type(tag):
    # seqeval: the first character is the chunk tag, the type is what follows the first '-' after it
    # ('B-Chemical' -> 'B', 'Chemical'; 'O' -> 'O', '_'; a bare 'I' -> 'I', '_')
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _chunk_ends(prev_tag, tag, prev_type, type_):
    # conlleval's endOfChunk (seqeval.end_of_chunk): a chunk ends before `tag`
    return (prev_tag in ("E", "S")
            or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag not in ("O", ".") and prev_type != type_))


def _chunk_starts(prev_tag, tag, prev_type, type_):
    # conlleval's startOfChunk (seqeval.start_of_chunk): `I-X` after `O` or after another type starts a chunk (IOB1)
    return (tag in ("B", "S")
            or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag not in ("O", ".") and prev_type != type_))


def entities(tags):
    """CoNLL chunks of one tag sequence: [(type, start, end_inclusive)], as seqeval.get_entities on any input."""
    chunks, begin = [], 0
    prev_tag, prev_type = "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):  # a final 'O' closes an open chunk
        tag, type_ = _tag_and_type(tag)
        if _chunk_ends(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _chunk_starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _entity_sets(gold, pred):
    """{type: set of (start, end)} for gold and pred, the sentences joined with an 'O' between them as seqeval does.
    With B-/I-/O tags no chunk crosses that 'O'; joining (rather than chunking each sentence) keeps seqeval's result
    on ill-formed tags too, where a chunk with no start of its own ('.-A I-A') reaches back to an earlier start."""
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise ValueError("gold and pred must have the same number of sentences and of tags per sentence")
    sets = []
    for sentences in (gold, pred):
        joined = [tag for sentence in sentences for tag in list(sentence) + ["O"]]
        by_type = {}
        for type_, start, end in entities(joined):
            by_type.setdefault(type_, set()).add((start, end))
        sets.append(by_type)
    return sets


def _prf(tp, n_pred, n_gold):
    # zero division gives 0, as seqeval's and scikit-learn's defaults
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_prf(gold, pred):
    """Micro (precision, recall, f1) over exact (type, start, end) entities; gold/pred are lists of tag sequences."""
    gold_sets, pred_sets = _entity_sets(gold, pred)
    tp = sum(len(spans & pred_sets.get(type_, set())) for type_, spans in gold_sets.items())
    return _prf(tp, sum(map(len, pred_sets.values())), sum(map(len, gold_sets.values())))


def entity_table(gold, pred):
    """{type: {"precision", "recall", "f1", "support"}} for every type in gold or pred (support = gold entities)."""
    gold_sets, pred_sets = _entity_sets(gold, pred)
    table = {}
    for type_ in sorted(set(gold_sets) | set(pred_sets)):
        g, p = gold_sets.get(type_, set()), pred_sets.get(type_, set())
        precision, recall, f1 = _prf(len(g & p), len(p), len(g))
        table[type_] = {"precision": precision, "recall": recall, "f1": f1, "support": len(g)}
    return table


# ----------------------------------------------------------------------------------------------------------------------
# RE: micro scores over the positive classes (BLUE)

def _negatives(gold, pred, negative):
    """`negative` as a set: one label ('false') or several ({'false', 'DDI-false'}); gold and pred must pair up."""
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels, pred {len(pred)}")
    return {negative} if isinstance(negative, str) else set(negative)


def re_prf(gold, pred, negative):
    """Micro (precision, recall, f1) over every label except `negative` (one label or a collection of labels): a
    prediction counts only if it is positive, a gold label only if positive -- scikit-learn's
    precision_recall_fscore_support(average='micro', labels=<the positive labels>)."""
    negatives = _negatives(gold, pred, negative)
    tp = sum(g == p and g not in negatives for g, p in zip(gold, pred))
    return _prf(tp, sum(p not in negatives for p in pred), sum(g not in negatives for g in gold))


def re_table(gold, pred, negative):
    """{label: {"precision", "recall", "f1", "support"}} for every positive label in gold or pred."""
    negatives = _negatives(gold, pred, negative)
    table = {}
    for label in sorted((set(gold) | set(pred)) - negatives):
        tp = sum(g == p == label for g, p in zip(gold, pred))
        n_gold = sum(g == label for g in gold)
        precision, recall, f1 = _prf(tp, sum(p == label for p in pred), n_gold)
        table[label] = {"precision": precision, "recall": recall, "f1": f1, "support": n_gold}
    return table


# ----------------------------------------------------------------------------------------------------------------------
# SQuAD v1.1 (official evaluate-v1.1.py)

_PUNCTUATION = set(string.punctuation)


def squad_normalize(text):
    """Lowercase, drop ASCII punctuation, drop the articles a/an/the as whole words, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _squad_f1(prediction, gold):
    pred_tokens, gold_tokens = squad_normalize(prediction).split(), squad_normalize(gold).split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:  # v1.1: two empty answers score F1 0 (but EM 1)
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_em_f1(prediction, gold_answers):
    """(exact match, F1) of one prediction, each the max over the gold answers (a list of strings)."""
    if isinstance(gold_answers, str):
        gold_answers = [gold_answers]
    if not gold_answers:
        raise ValueError("squad_em_f1 needs at least one gold answer")
    em = max(float(squad_normalize(prediction) == squad_normalize(gold)) for gold in gold_answers)
    return em, max(_squad_f1(prediction, gold) for gold in gold_answers)


# ----------------------------------------------------------------------------------------------------------------------
# BioASQ factoid (EvaluatorTask1b)

def _synonyms(exact_answer):
    # golden `exact_answer`: a list of lists of synonyms, or a flat list of synonyms; every string is accepted
    if isinstance(exact_answer, str):
        exact_answer = [exact_answer]
    flat = [s for item in exact_answer for s in ([item] if isinstance(item, str) else item)]
    return {s.lower() for s in flat}  # Task1bData lowercases every answer; no other normalisation


def bioasq_factoid(ranked, golden, max_answers=5):
    """{"sacc", "lacc", "mrr"} over every golden question. ranked: {qid: [answers, best first]}; golden: {qid:
    exact_answer}. Only the first `max_answers` count (BioASQ accepts 5 per factoid question); a golden question
    missing from `ranked` or with no answers scores 0; ranked ids absent from golden are ignored. Duplicates are
    not merged: each answer keeps its position, as in QuestionAnswerEvaluator.meanReciprocalRankForLists."""
    if not golden:
        raise ValueError("bioasq_factoid needs at least one golden question")
    sacc = lacc = mrr = 0.0
    for qid, exact_answer in golden.items():
        accepted = _synonyms(exact_answer)
        answers = [a.lower() for a in ranked.get(qid, [])[:max_answers]]
        rank = next((i + 1 for i, a in enumerate(answers) if a in accepted), None)
        if rank is not None:
            sacc += rank == 1
            lacc += 1.0
            mrr += 1.0 / rank
    n = len(golden)
    return {"sacc": sacc / n, "lacc": lacc / n, "mrr": mrr / n}


# ----------------------------------------------------------------------------------------------------------------------

def mean_std(values):
    """(mean, sample standard deviation) over seeds; std is 0.0 for a single value."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("mean_std needs at least one value")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std
