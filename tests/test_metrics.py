"""metrics.py against independent references: seqeval (NER), scikit-learn (RE), the SQuAD v1.1 formulas re-derived
here, and hand-computed BioASQ cases."""
import random
import statistics
import string
import warnings
from collections import Counter

import pytest

import metrics

seqeval_metrics = pytest.importorskip("seqeval.metrics")
sequence_labeling = pytest.importorskip("seqeval.metrics.sequence_labeling")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

# ----------------------------------------------------------------------------------------------------------------------
# NER vs seqeval (default mode)

WELL_FORMED = ["O", "O", "O", "B-A", "I-A", "B-B", "I-B", "B-C", "I-C"]
ILL_FORMED = ["E-A", "S-B", "E-C", "S-A", "B", "I", "E", "S", ".", ".-A", "I-_", "X-A", "B-A-x", "O-B", "Bfoo", "I-", "X"]


def random_tags(rng, n):
    # mostly B-/I-/O of three types (IOB1 and IOB2 and broken transitions arise by chance), with ill-formed tags mixed in
    alphabet = WELL_FORMED + (ILL_FORMED if rng.random() < 0.5 else [])
    return [rng.choice(alphabet) for _ in range(n)]


def random_corpus(rng):
    lengths = [rng.randint(0, 12) for _ in range(rng.randint(1, 5))]
    gold = [random_tags(rng, n) for n in lengths]
    pred = [random_tags(rng, n) if rng.random() < 0.5 else [t if rng.random() < 0.7 else rng.choice(WELL_FORMED)
                                                           for t in g] for g, n in zip(gold, lengths)]
    return gold, pred


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():  # seqeval warns on non-B/I/E/S tags and scikit-learn on zero division
        warnings.simplefilter("ignore")
        yield


def test_entities_examples():
    assert metrics.entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    # IOB1: I- after O or after another type starts a chunk; B- only separates two adjacent chunks of one type
    assert metrics.entities(["I-X", "I-X", "O", "I-X", "I-Y", "B-Y"]) == [("X", 0, 1), ("X", 3, 3), ("Y", 4, 4),
                                                                         ("Y", 5, 5)]
    assert metrics.entities([]) == [] and metrics.entities(["O", "O"]) == []


def test_entities_equal_seqeval_on_random_sequences():
    rng = random.Random(0)
    for _ in range(5000):
        tags = random_tags(rng, rng.randint(0, 15))
        assert metrics.entities(tags) == sequence_labeling.get_entities(tags), tags


def test_entity_prf_equals_seqeval_on_random_corpora():
    rng = random.Random(1)
    for _ in range(2000):
        gold, pred = random_corpus(rng)
        expected = (seqeval_metrics.precision_score(gold, pred), seqeval_metrics.recall_score(gold, pred),
                    seqeval_metrics.f1_score(gold, pred))
        assert metrics.entity_prf(gold, pred) == pytest.approx(expected, abs=1e-12), (gold, pred)


def test_entity_table_equals_seqeval_classification_report():
    rng = random.Random(2)
    checked = 0
    for _ in range(400):
        gold, pred = random_corpus(rng)
        table = metrics.entity_table(gold, pred)
        if not table:  # seqeval's report needs at least one type
            assert metrics.entity_prf(gold, pred) == (0.0, 0.0, 0.0)
            continue
        report = seqeval_metrics.classification_report(gold, pred, output_dict=True)
        report = {k: v for k, v in report.items() if not k.endswith(" avg")}
        assert sorted(table) == sorted(report)
        for type_, row in table.items():
            ref = report[type_]
            assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
                (ref["precision"], ref["recall"], ref["f1-score"]), abs=1e-12)
            assert row["support"] == ref["support"]
        checked += 1
    assert checked > 300


def test_entity_prf_edge_cases():
    assert metrics.entity_prf([["O"]], [["O"]]) == (0.0, 0.0, 0.0)  # nothing to find, nothing found: 0 as seqeval
    assert metrics.entity_prf([["B-A"], ["I-A"]], [["B-A", ], ["I-A"]]) == (1.0, 1.0, 1.0)
    # sentences never join: gold has two entities, a prediction spanning the boundary is impossible
    assert metrics.entity_prf([["B-A"], ["I-A"]], [["B-A"], ["O"]]) == pytest.approx((1.0, 0.5, 2 / 3))
    table = metrics.entity_table([["B-A", "O"]], [["B-A", "B-B"]])
    assert table["B"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    mismatch = "^gold and pred must have the same number of sentences and of tags per sentence$"
    with pytest.raises(ValueError, match=mismatch):
        metrics.entity_prf([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match=mismatch):
        metrics.entity_prf([["O"], ["O"]], [["O"]])


# ----------------------------------------------------------------------------------------------------------------------
# RE vs scikit-learn

CHEMPROT = ["false", "CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9"]


def sklearn_micro(gold, pred, negatives):
    positives = sorted((set(gold) | set(pred)) - negatives)
    if not positives:
        return (0.0, 0.0, 0.0)
    p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(gold, pred, average="micro", labels=positives,
                                                                  zero_division=0)
    return (p, r, f)


def test_re_prf_equals_sklearn_on_random_cases():
    rng = random.Random(3)
    for case in range(2000):
        # gold and pred draw from different label pools: pred may hold labels gold lacks and vice versa
        gold_pool = rng.sample(CHEMPROT + ["CPR:1"], rng.randint(1, 7))
        pred_pool = rng.sample(CHEMPROT + ["CPR:2", "X"], rng.randint(1, 8))
        n = rng.randint(1, 30)
        gold = [rng.choice(gold_pool) for _ in range(n)]
        pred = [g if rng.random() < 0.4 and g in pred_pool else rng.choice(pred_pool) for g in gold]
        negative = "false" if case % 3 else ["false", "CPR:9"]  # one negative label, or several
        negatives = {negative} if isinstance(negative, str) else set(negative)
        assert metrics.re_prf(gold, pred, negative) == pytest.approx(sklearn_micro(gold, pred, negatives),
                                                                     abs=1e-12), (gold, pred)


def test_re_table_equals_sklearn_per_class():
    rng = random.Random(4)
    for _ in range(300):
        n = rng.randint(1, 30)
        gold = [rng.choice(CHEMPROT) for _ in range(n)]
        pred = [rng.choice(CHEMPROT + ["X"]) for _ in range(n)]
        table = metrics.re_table(gold, pred, "false")
        labels = sorted((set(gold) | set(pred)) - {"false"})
        assert sorted(table) == labels
        if not labels:
            continue
        p, r, f, s = sklearn_metrics.precision_recall_fscore_support(gold, pred, average=None, labels=labels)
        for i, label in enumerate(labels):
            assert (table[label]["precision"], table[label]["recall"], table[label]["f1"]) == pytest.approx(
                (p[i], r[i], f[i]), abs=1e-12)
            assert table[label]["support"] == s[i]


def test_re_prf_hand_computed():
    gold = ["false", "DDI-effect", "DDI-advise", "DDI-false", "DDI-int"]
    pred = ["DDI-effect", "DDI-effect", "DDI-false", "DDI-false", "DDI-int"]
    # positives predicted 3 (2 correct), gold positives 3 (2 found); 'false'/'DDI-false' never count
    assert metrics.re_prf(gold, pred, ["false", "DDI-false"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert metrics.re_prf(["false"], ["false"], "false") == (0.0, 0.0, 0.0)
    for score in (metrics.re_prf, metrics.re_table):
        with pytest.raises(ValueError, match="^gold has 1 labels, pred 0$"):
            score(["a"], [], "false")


# ----------------------------------------------------------------------------------------------------------------------
# SQuAD v1.1: the official formulas, re-derived another way

def is_word_char(ch):
    # what Python's re `\w` matches in a str pattern (the official script's `\b` is defined by it)
    return ch.isalnum() or ch == "_"


def reference_normalize(s):
    s = s.lower().translate(str.maketrans("", "", string.punctuation))
    pieces, i = [], 0
    while i < len(s):  # walk maximal runs of word characters; a run that is an article becomes a space
        j = i
        while j < len(s) and is_word_char(s[j]):
            j += 1
        if j > i:
            pieces.append(" " if s[i:j] in {"a", "an", "the"} else s[i:j])
            i = j
        else:
            pieces.append(s[i])
            i += 1
    return " ".join("".join(pieces).split())


def reference_em_f1(prediction, golds):
    p = reference_normalize(prediction).split()
    best_em = best_f1 = 0.0
    for gold in golds:
        g = reference_normalize(gold).split()
        best_em = max(best_em, float(p == g))
        common = sum(min(c, g.count(t)) for t, c in Counter(p).items())
        if common:  # F1 = 2|P∩G| / (|P| + |G|); 0 when nothing is shared (two empty answers included, as v1.1)
            best_f1 = max(best_f1, 2 * common / (len(p) + len(g)))
    return best_em, best_f1


SQUAD_PIECES = ["a", "an", "the", "The", "A", "AN", "tHe", "cat", "Cat", "dog", "a1", "an_", "_the", "the-end", "...",
                "!", "(", "“", "”", "–", "½", "²", "é", "naïve", "İ", "x", "", "'s", "a.b", "ẞ"]
SEPARATORS = [" ", " ", "", "\t", "\n", "\u00a0", "\u2009", "-", ",", ".", "  "]


def random_answer(rng):
    words = [rng.choice(SQUAD_PIECES) for _ in range(rng.randint(0, 6))]
    return "".join(w + rng.choice(SEPARATORS) for w in words)


def test_squad_equals_rederived_formulas_on_random_pairs():
    rng = random.Random(5)
    for _ in range(5000):
        prediction = random_answer(rng)
        golds = [random_answer(rng) for _ in range(rng.randint(1, 3))]
        assert metrics.squad_normalize(prediction) == reference_normalize(prediction), repr(prediction)
        assert metrics.squad_em_f1(prediction, golds) == pytest.approx(reference_em_f1(prediction, golds),
                                                                       abs=1e-12), (prediction, golds)


def test_squad_examples():
    assert metrics.squad_normalize("  The  Cat's hat!\n") == "cats hat"
    assert metrics.squad_em_f1("the cat", ["A cat.", "dog"]) == (1.0, 1.0)
    assert metrics.squad_em_f1("", [""]) == (1.0, 0.0)  # v1.1: empty vs empty is an exact match with F1 0
    assert metrics.squad_em_f1("...", ["the"]) == (1.0, 0.0)  # both normalise to ""
    em, f1 = metrics.squad_em_f1("red big cat", ["big cat"])
    assert em == 0.0 and f1 == pytest.approx(0.8)  # precision 2/3, recall 1
    assert metrics.squad_em_f1("cat", "cat") == (1.0, 1.0)  # a single gold string is one answer, not characters
    with pytest.raises(ValueError, match="^squad_em_f1 needs at least one gold answer$"):
        metrics.squad_em_f1("cat", [])


# ----------------------------------------------------------------------------------------------------------------------
# BioASQ factoid, hand-computed

def test_bioasq_factoid_hand_computed():
    golden = {
        "q1": [["EGFR", "epidermal growth factor receptor"]],   # synonyms of one answer
        "q2": [["p53"], ["TP53"]],                               # every string is accepted
        "q3": ["BRCA1", "brca-1"],                               # a flat list of synonyms
        "q4": [["insulin"]],                                     # unanswered
        "q5": [["ace2"]],                                        # correct only at rank 6: does not count
        "q6": [["tnf"]],                                         # duplicates keep their positions
    }
    ranked = {
        "q1": ["Epidermal Growth Factor Receptor", "egfr"],     # rank 1, case-insensitive
        "q2": ["mdm2", "tp53"],                                  # rank 2
        "q3": ["brca 1", "BRCA-1", "brca1"],                     # rank 2: no normalisation beyond lowercase
        "q5": ["a", "b", "c", "d", "e", "ACE2"],
        "q6": ["il6", "il6", "TNF"],                             # rank 3
        "not-golden": ["whatever"],                              # ignored
    }
    scores = metrics.bioasq_factoid(ranked, golden)
    assert scores["sacc"] == pytest.approx(1 / 6)
    assert scores["lacc"] == pytest.approx(4 / 6)
    assert scores["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 2 + 0 + 0 + 1 / 3) / 6)


def test_bioasq_factoid_edge_cases():
    assert metrics.bioasq_factoid({}, {"q": [["x"]]}) == {"sacc": 0.0, "lacc": 0.0, "mrr": 0.0}
    assert metrics.bioasq_factoid({"q": []}, {"q": [["x"]]}) == {"sacc": 0.0, "lacc": 0.0, "mrr": 0.0}
    assert metrics.bioasq_factoid({"q": ["X "]}, {"q": [["x"]]})["lacc"] == 0.0  # whitespace is not stripped
    assert metrics.bioasq_factoid({"q": ["x"]}, {"q": [["x "]]})["lacc"] == 0.0
    assert metrics.bioasq_factoid({"q": ["X"]}, {"q": [["x"]]}) == {"sacc": 1.0, "lacc": 1.0, "mrr": 1.0}
    assert metrics.bioasq_factoid({"q": ["y", "X"]}, {"q": "x"})["mrr"] == 0.5  # a golden answer given as one string
    with pytest.raises(ValueError, match="^bioasq_factoid needs at least one golden question$"):
        metrics.bioasq_factoid({"q": ["x"]}, {})


# ----------------------------------------------------------------------------------------------------------------------

def test_mean_std():
    values = [0.81, 0.84, 0.79, 0.9]
    mean, std = metrics.mean_std(values)
    assert mean == pytest.approx(statistics.mean(values)) and std == pytest.approx(statistics.stdev(values))
    assert metrics.mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="^mean_std needs at least one value$"):
        metrics.mean_std([])
