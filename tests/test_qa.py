"""Question answering (issue 11): SQuAD-format reading and windows, n-best decoding, BioASQ pooling, the QA head.

The feature tests run on the real files of ../shared/data/qa; the counts of answers that the tokens cannot give back
exactly were measured on them (each one is an answer that starts or ends inside a word, e.g. 'gold rush' in 'gold
rushes', '5' in '2015').
"""
import json
import re

import numpy as np
import pytest
import torch

import benchmarks
import inference
import qa
import tasks
from tokenizer import InputError, WordPieceTokenizer

SQUAD_DEV = "qa/squad-v1.1/expmrc-dev-subset/expmrc-squad-dev.json"
SQUAD_TRAIN = "qa/squad-v1.1/train-prefix-jupiter_bert/train-v1.1.first-complete-articles.DERIVED.json"
BIOASQ_TRAIN = "qa/bioasq-7b-biobert-pytorch/BioASQ-train-factoid-7b.json"
# file -> (questions, answers, answers the tokens can't give back exactly, of them first answers)
MEASURED = {SQUAD_DEV: (501, 1673, 4, 1), SQUAD_TRAIN: (3807, 3807, 20, 20), BIOASQ_TRAIN: (4231, 4231, 0, 0)}


def normalized(text):
    return " ".join(text.split())


@pytest.fixture(scope="module")
def sci_tokenizer(scivocab):
    return WordPieceTokenizer(scivocab)


@pytest.fixture
def word_tokenizer(tmp_path):
    """A vocabulary where each of the words w0..w99 is one token: positions are easy to reason about."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "?"] +
                               [f"w{i}" for i in range(100)]) + "\n")
    return WordPieceTokenizer(vocab)


# ------------------------------------------------------------------------------------------------------- features
@pytest.mark.parametrize("name", list(MEASURED))
def test_features_give_every_gold_answer_back(data_dir, sci_tokenizer, name, capsys):
    examples = benchmarks.read_squad(data_dir / name)
    questions, answers, unmappable, unmappable_first = MEASURED[name]
    assert (len(examples), sum(len(e.answers) for e in examples)) == (questions, answers)
    stats = {}
    features = benchmarks.qa_features(examples, sci_tokenizer, training=True, stats=stats)
    assert stats == {"truncated_questions": 0, "unmappable_answers": unmappable, "untrainable": 0}
    if unmappable:
        assert f"{unmappable} answers that the tokens can't give back" in capsys.readouterr().err

    placed, inexact = set(), set()
    for feature in features:
        example = examples[feature.example_index]
        assert len(feature.input_ids) == len(feature.token_type_ids) == len(feature.offsets) <= 384
        assert feature.input_ids[0] == sci_tokenizer.cls_id and feature.input_ids[-1] == sci_tokenizer.sep_id
        if feature.start_position == 0:
            assert feature.end_position == 0
            continue
        text, char_start = example.answers[0]
        start, end = feature.offsets[feature.start_position], feature.offsets[feature.end_position]
        span = example.context[start[0]:end[1]]
        # the token span covers the answer (less surrounding whitespace: one BioASQ answer is ' fewer than 100');
        # it equals it except for answers cut inside a word
        first, last = char_start + len(text) - len(text.lstrip()), char_start + len(text.rstrip())
        assert start[0] <= first and last <= end[1]
        if normalized(span) != normalized(text):
            inexact.add(feature.example_index)
        placed.add(feature.example_index)
    assert placed == set(range(len(examples)))  # every answer lies in some window
    assert len(inexact) == unmappable_first


def test_an_answer_past_its_context_is_untrainable_not_a_wordpiece_problem(sci_tokenizer, capsys):
    example = benchmarks.QAExample("q1", "Which gene?", "BRCA1 is mutated.", [("BRCA1", 40)])  # past the context
    stats = {}
    assert benchmarks.qa_features([example], sci_tokenizer, training=True, stats=stats) == []
    assert stats == {"truncated_questions": 0, "unmappable_answers": 0, "untrainable": 1}
    assert "WordPiece" not in capsys.readouterr().err


def test_windows_and_max_context(word_tokenizer):
    context = " ".join(f"w{i}" for i in range(30))
    example = benchmarks.QAExample("q1", "what ?", context, [("w20 w21", context.index("w20"))])
    features = benchmarks.qa_features([example], word_tokenizer, max_length=16, doc_stride=4, training=True)
    # 16 - 2 question tokens - 3 specials = 11 context tokens per window, windows 4 apart: 0, 4, ..., 16, 20 (20+11 > 30)
    starts = [int(context[f.offsets[4][0]:f.offsets[4][1]][1:]) for f in features]
    assert starts == [0, 4, 8, 12, 16, 20]
    owners = {}
    for index, feature in enumerate(features):
        assert feature.token_type_ids == [0] * 4 + [1] * (len(feature.input_ids) - 4)
        assert feature.offsets[:4] == [None] * 4 and feature.offsets[-1] is None
        for offset, is_max in zip(feature.offsets, feature.max_context):
            if is_max:
                owners.setdefault(offset, []).append(index)
    assert len(owners) == 30 and all(len(o) == 1 for o in owners.values())  # each token: exactly one best window
    for feature in features:  # the answer in every window that holds it whole, else [CLS]
        words = [context[o[0]:o[1]] for o in feature.offsets if o]
        if "w20" in words and "w21" in words:
            assert context[feature.offsets[feature.start_position][0]:feature.offsets[feature.end_position][1]] \
                == "w20 w21"
        else:
            assert feature.start_position == feature.end_position == 0


def test_max_context_as_bert_docstring():
    # BERT's _check_is_max_context example: "the man went to the store and bought a gallon of milk", spans
    # A = tokens 0-4, B = 3-7, C = 6-10: 'bought' (7) has its maximal context in C (1 left, 3 right).
    windows = [(0, 5), (3, 5), (6, 5)]
    assert [benchmarks._is_max_context(windows, w, 7) for w in range(3)] == [False, False, True]
    assert [benchmarks._is_max_context(windows, w, 4) for w in range(3)] == [False, True, False]


def test_long_question_truncated_and_counted(word_tokenizer, capsys):
    context = "w1 w2 w3"
    examples = [benchmarks.QAExample("long", " ".join(["w5"] * 70), context, []),
                benchmarks.QAExample("short", "what ?", context, [])]
    stats = {}
    features = benchmarks.qa_features(examples, word_tokenizer, stats=stats)
    assert stats["truncated_questions"] == 1
    assert features[0].token_type_ids.count(0) == 64 + 2
    assert "1 questions longer than 64 tokens, truncated (long)" in capsys.readouterr().err
    # a --max-length that leaves a question no passage: one line (BERT's window loop would never end)
    short = benchmarks.qa_features(examples[1:], word_tokenizer, max_length=7)  # 2-piece question: 2 passage pieces
    assert short and all(len(feature.input_ids) <= 7 for feature in short)
    with pytest.raises(InputError, match=r"^--max-length 20: no room for a passage after question long \(64 pieces\)"
                                         r".*use at least 68"):
        benchmarks.qa_features(examples, word_tokenizer, max_length=20)


# --------------------------------------------------------------------------------------------------- bad input
def test_read_squad_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [\n{"paragraphs": [}\n]}')
    with pytest.raises(InputError, match=r"bad\.json:2: not valid JSON"):
        benchmarks.read_squad(bad)
    off = tmp_path / "off.json"
    off.write_text(json.dumps({"data": [{"paragraphs": [
        {"context": "Aspirin inhibits COX-1.", "qas": [{"id": "a1", "question": "What?", "answers": [
            {"text": "COX-1", "answer_start": 17}, {"text": "COX-1", "answer_start": 3}]}]},
        {"context": " ", "qas": [{"id": "e1", "question": "What?", "answers": []}]}]}]}))
    examples = benchmarks.read_squad(off)
    assert [e.id for e in examples] == ["a1", "e1"] and len(examples[0].answers) == 2  # nothing dropped
    err = capsys.readouterr().err
    assert "1 answers whose text is not the context at answer_start" in err and "(a1)" in err
    assert "1 questions with an empty context" in err and "(e1)" in err



def test_untrainable_questions_counted(word_tokenizer, capsys):
    context = "w1 w2 w3"
    examples = [benchmarks.QAExample("ok", "what ?", context, [("w3", 6), ("w2", 0)]),  # second answer misplaced
                benchmarks.QAExample("off", "what ?", context, [("w2", 0)]),
                benchmarks.QAExample("none", "what ?", context, [])]
    stats = {}
    features = benchmarks.qa_features(examples, word_tokenizer, training=True, stats=stats)
    assert [f.example_index for f in features] == [0] and (features[0].start_position, features[0].end_position) == (6, 6)
    assert stats["untrainable"] == 2 and "2 questions left out of training" in capsys.readouterr().err
    assert len(benchmarks.qa_features(examples, word_tokenizer)) == 3  # for prediction every question gets its window


def test_read_bioasq_golden(data_dir, tmp_path):
    golden = benchmarks.read_bioasq_golden(data_dir / "qa/bioasq-7b/7B1_golden.json")
    assert len(golden) == 39 and golden["5be48c39133db5eb7800001d"] == [["PD-L1 status"]]
    bad = tmp_path / "golden.json"
    bad.write_text('{"questions": [{"id": "x", "type": "factoid"}]}')
    with pytest.raises(InputError, match="factoid question x: exact_answer is missing"):
        benchmarks.read_bioasq_golden(bad)
    for answer in (None, [[5]], [], [[]], [["ok"], 3]):  # refused before a model runs, not in scoring after it
        bad.write_text(json.dumps({"questions": [{"id": "y", "type": "factoid", "exact_answer": answer}]}))
        with pytest.raises(InputError, match=f"^{bad}: factoid question y: exact_answer is not strings"):
            benchmarks.read_bioasq_golden(bad)


@pytest.mark.parametrize("change, message", [
    ({"answers": None}, 'question q: "answers" is not a list'),
    ({"answers": [{"text": 5, "answer_start": 0}]}, 'question q: an answer without a "text" string'),
    ({"answers": [{"text": "A"}]}, 'question q: an answer without a "text" string and an "answer_start" number'),
    ({"paragraphs": None}, 'a paragraph without a "context" string and a "qas" list')])
def test_read_squad_refuses_nulls_in_one_line(tmp_path, change, message):
    question = {"id": "q", "question": "What?", "answers": [{"text": "A", "answer_start": 0}]}
    article = {"paragraphs": [{"context": "A b.", "qas": [{**question, **change} if "answers" in change else question]}]}
    bad = tmp_path / "squad.json"
    bad.write_text(json.dumps({"data": [{**article, **change} if "paragraphs" in change else article]}))
    with pytest.raises(InputError, match=f"^{re.escape(str(bad))}: {re.escape(message)}"):
        benchmarks.read_squad(bad)


# ------------------------------------------------------------------------------------------------------- decoding
def reference_nbest(example, windows, n_best=20, max_answer_tokens=30):
    """The n-best re-derived from BERT's run_squad.py with Python's sorts (stable, as BERT's): each window's top-n
    starts x top-n ends in rank order, kept when both are in the context, ordered, short enough and the start is
    max-context; ranked by score, ties in that order; one entry per text, its best score."""
    candidates = []
    for feature, start_logits, end_logits in windows:
        top_starts = sorted(range(len(start_logits)), key=lambda i: -start_logits[i])[:n_best]
        top_ends = sorted(range(len(end_logits)), key=lambda i: -end_logits[i])[:n_best]
        for start in top_starts:
            for end in top_ends:
                if feature.offsets[start] and feature.offsets[end] \
                        and start <= end < start + max_answer_tokens and feature.max_context[start]:
                    text = example.context[feature.offsets[start][0]:feature.offsets[end][1]]
                    candidates.append((start_logits[start] + end_logits[end], text))
    best = {}
    for score, text in candidates:
        best[text] = max(score, best.get(text, -np.inf))
    ranked = sorted(best.items(), key=lambda item: -item[1])[:n_best]
    scores = np.array([score for _, score in ranked])
    return [text for text, _ in ranked], np.exp(scores) / np.exp(scores).sum()


def windows_of(word_tokenizer, words=30, max_length=16, doc_stride=4):
    context = " ".join(f"w{i}" for i in range(words))
    example = benchmarks.QAExample("q", "what ?", context, [])
    return example, benchmarks.qa_features([example], word_tokenizer, max_length=max_length, doc_stride=doc_stride)


def test_nbest_equals_brute_force_on_random_logits(word_tokenizer):
    example, features = windows_of(word_tokenizer)
    rng = np.random.default_rng(0)
    for trial in range(30):
        windows = [(f, rng.normal(size=len(f.input_ids)), rng.normal(size=len(f.input_ids))) for f in features]
        n_best, max_tokens = [(20, 30), (5, 3), (3, 1)][trial % 3]
        nbest = qa.qa_nbest(example, windows, n_best=n_best, max_answer_tokens=max_tokens)
        texts, probabilities = reference_nbest(example, windows, n_best, max_tokens)
        assert [text for text, _, _ in nbest] == texts
        np.testing.assert_allclose([p for _, p, _ in nbest], probabilities, rtol=1e-9)


def test_nbest_keeps_berts_order_for_tied_logits(word_tokenizer):
    """Tied logits (a model that has learnt little gives many): BERT's sorts keep ties in token order, which numpy's
    default argsort does not on a window this long."""
    example, features = windows_of(word_tokenizer, words=100, max_length=128, doc_stride=64)
    rng = np.random.default_rng(1)
    for _ in range(5):
        windows = [(f, *rng.integers(0, 3, (2, len(f.input_ids))).astype(float)) for f in features]
        texts, _ = reference_nbest(example, windows)
        assert [text for text, _, _ in qa.qa_nbest(example, windows)] == texts


def test_nbest_ignores_padding_logits_and_survives_large_ones(word_tokenizer):
    """On XLA every batch is padded to --max-length: logits past a window's tokens are never an answer. Logits in the
    thousands still give probabilities (the softmax subtracts the largest score first)."""
    example, features = windows_of(word_tokenizer)
    rng = np.random.default_rng(2)
    windows = [(f, *rng.normal(size=(2, len(f.input_ids))) * 1000) for f in features]
    nbest = qa.qa_nbest(example, windows)
    assert np.isfinite([p for _, p, _ in nbest]).all() and sum(p for _, p, _ in nbest) == pytest.approx(1.0)
    padded = [(f, np.concatenate([start, np.full(8, 1e4)]), np.concatenate([end, np.full(8, 1e4)]))
              for f, start, end in windows]
    assert qa.qa_nbest(example, padded) == nbest


def test_the_same_text_at_two_places_is_one_answer_with_its_best_score(word_tokenizer):
    example = benchmarks.QAExample("q", "what ?", "w1 w2 w1 w3", [])
    [feature] = benchmarks.qa_features([example], word_tokenizer, max_length=16, doc_stride=4)
    first, w2, second = (i for i, o in enumerate(feature.offsets) if o and o[0] in (0, 3, 6))
    start_logits, end_logits = np.full(len(feature.input_ids), -10.0), np.full(len(feature.input_ids), -10.0)
    for position, value in ((first, 5.0), (second, 4.0), (w2, 1.5)):
        start_logits[position] = end_logits[position] = value
    nbest = qa.qa_nbest(example, [(feature, start_logits, end_logits)])
    texts = [text for text, _, _ in nbest]
    # "w1" from the first place (10) and again from the second (8): kept once, at 10; the texts ranked below the
    # repeat are all still there
    assert texts[:3] == ["w1", "w1 w2 w1", "w1 w2"] and nbest[0][2] == 10.0
    assert texts.count("w1") == 1 and "w2" in texts and len(texts) == len(set(texts))


def test_nbest_rules_on_hand_made_logits(word_tokenizer):
    example, features = windows_of(word_tokenizer)  # windows start at words 0, 4, 8, 12, 16, 20
    low = -10.0

    def logits(feature, starts=(), ends=()):
        start_logits, end_logits = np.full(len(feature.input_ids), low), np.full(len(feature.input_ids), low)
        for word, value in starts:
            start_logits[position(feature, word)] = value
        for word, value in ends:
            end_logits[position(feature, word)] = value
        return feature, start_logits, end_logits

    def position(feature, word):
        return next(i for i, o in enumerate(feature.offsets) if o and example.context[o[0]:o[1]] == f"w{word}")

    first, second = features[0], features[1]  # words 0-10 and 4-14: word 9 has its max context in the second
    assert not first.max_context[position(first, 9)] and second.max_context[position(second, 9)]
    # a start that is not max-context in its window is skipped there; the same span from its max-context window counts
    nbest = qa.qa_nbest(example, [logits(first, [(9, 8.0), (5, 1.0)], [(10, 8.0)]), logits(second)])
    assert nbest[0][0] == "w5 w6 w7 w8 w9 w10"
    nbest = qa.qa_nbest(example, [logits(first, [(9, 8.0)], [(10, 8.0)]), logits(second, [(9, 3.0)], [(10, 3.0)])])
    assert nbest[0][0] == "w9 w10" and nbest[0][2] == 6.0
    # end before start and spans over the length limit are never proposed
    # (words 8-11 have their max context in the second window)
    nbest = qa.qa_nbest(example, [logits(second, [(10, 9.0)], [(8, 9.0), (11, 1.0)])])
    assert nbest[0][:1] == ("w10 w11",) and nbest[0][2] == 10.0
    nbest = qa.qa_nbest(example, [logits(second, [(8, 9.0)], [(14, 9.0), (9, 0.0)])], max_answer_tokens=3)
    assert nbest[0][0] == "w8 w9" and nbest[0][2] == 9.0
    assert qa.qa_nbest(example, [logits(second, [(8, 9.0)], [(14, 9.0), (9, 0.0)])])[0][0] == "w8 w9 w10 w11 w12 w13 w14"
    # question tokens and [CLS]/[SEP] never start or end an answer, whatever their logits
    feature, start_logits, end_logits = logits(first, [(2, 1.0)], [(3, 1.0)])
    start_logits[:4], end_logits[:4], end_logits[-1] = 50.0, 50.0, 50.0
    assert qa.qa_nbest(example, [(feature, start_logits, end_logits)])[0][0] == "w2 w3"
    # merged over windows: one softmax over both windows' distinct texts
    nbest = qa.qa_nbest(example, [logits(first, [(1, 2.0)], [(1, 2.0)]), logits(features[5], [(25, 1.0)], [(26, 1.0)])])
    probabilities = dict((text, p) for text, p, _ in nbest)
    assert probabilities["w1"] / probabilities["w25 w26"] == pytest.approx(np.exp(4.0 - 2.0))
    assert sum(probabilities.values()) == pytest.approx(1.0) and len(set(probabilities)) == len(nbest)


def test_textrip_as_biobert():
    assert qa.textrip("IL-2.") == "IL-2"
    assert qa.textrip("IL-2 ,") == "IL-2 "  # one rule per call, as BioBERT
    assert qa.textrip("(CNS)") == "CNS"
    assert qa.textrip("(a) or (b)") == "(a) or (b)"  # balanced, two pairs: kept
    assert qa.textrip("CNS) depressants") == ""
    assert qa.textrip("central (CNS") == ""
    assert qa.textrip("") == "" and qa.textrip("()") == "()"


def test_bioasq_pooling():
    nbest = {"5c5f56501a4c55d80b00002a_000": [("PD-L1", 0.5, 0.0), ("pd-l1.", 0.2, 0.0), ("(tumor", 0.3, 0.0)],
             "5c5f56501a4c55d80b00002a_001": [("Hand2", 0.6, 0.0), ("PD-L1", 0.1, 0.0), ("x" * 101, 0.3, 0.0)],
             "5c34ad63da8336e21a000007_000": [("a", 1.0, 0.0)]}
    ranked = qa.bioasq_ranked(nbest)
    assert set(ranked) == {"5c5f56501a4c55d80b00002a", "5c34ad63da8336e21a000007"}
    # PD-L1: 0.5 + 0.2 ("pd-l1." cleaned, merged case-insensitively) + 0.1 = 0.8; the unbalanced and the long one drop
    assert ranked["5c5f56501a4c55d80b00002a"] == [("PD-L1", pytest.approx(0.8)), ("Hand2", 0.6)]
    many = {"q_000": [(f"a{i}", 1 / (i + 2), 0.0) for i in range(8)]}
    assert [text for text, _ in qa.bioasq_ranked(many)["q"]] == ["a0", "a1", "a2", "a3", "a4"]


# --------------------------------------------------------------------------------------------------- fine-tuning
def golden_of(examples):
    """A BioASQ golden dict made from the snippets' own answers (each question's snippet answers as synonyms)."""
    golden = {}
    for example in examples:
        golden.setdefault(qa.bioasq_question_id(example.id), []).extend([text] for text, _ in example.answers)
    return golden


def test_tiny_model_overfits_20_questions(tmp_path, data_dir, tiny_init):
    # one snippet of each of 20 questions (a question's snippets share their answer: too easy)
    examples = list({qa.bioasq_question_id(e.id): e for e in benchmarks.read_squad(data_dir / BIOASQ_TRAIN)}.values())[:20]
    test = [benchmarks.QAExample(e.id, e.question, e.context, []) for e in examples]  # a test batch has no answers
    splits = {"train": examples, "dev": examples, "test": test, "golden": {"1": golden_of(examples)}}
    config = tasks.FinetuneConfig(learning_rate=3e-3, epochs=10, batch_size=10, max_length=128, doc_stride=64,
                                  warmup_proportion=0.05, seed=1)
    result = tasks.finetune("qa", data_dir / "qa", tiny_init, tmp_path / "out", config, splits=splits)
    assert result["dev"]["em"] > 0.9 and result["dev"]["f1"] > 0.9, result["dev"]
    assert result["test"]["sacc"] > 0.9 and result["test"]["batches"]["1"]["mrr"] > 0.9, result["test"]
    lines = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and max(line["dev_f1"] for line in lines) == result["dev"]["f1"]
    # predict (the paper's Table 6): the top answers with probabilities, best first
    answers = inference.predict_answers(tmp_path / "out" / "best", examples[0].question, examples[0].context)
    assert answers[0][0] == examples[0].answers[0][0] and len(answers) == 5
    assert answers[0][1] > answers[1][1] and sum(p for _, p in answers) <= 1.0 + 1e-9


def test_bioasq_from_a_squad_model_keeps_its_answer_head_and_trains_on_max_length_batches(tmp_path, data_dir,
                                                                                            tiny_init, monkeypatch):
    """SQuAD -> BioASQ starts from the whole SQuAD model, its output layer included (BioBERT's run_factoid restores
    it with the encoder); QA training batches are padded to max_length on every device, as run_squad's softmax over
    all positions (padding included) is the official loss."""
    encoder, config, vocab, _ = tasks.load_init(tiny_init)
    squad_model = tasks.build_model("qa", encoder, config, [])
    torch.nn.init.constant_(squad_model.qa_outputs.weight, 0.5)
    torch.nn.init.constant_(squad_model.qa_outputs.bias, 0.25)
    tasks.save_finetuned(squad_model, tmp_path / "squad", [], vocab, tasks.DEFAULTS["squad"])
    seen = []

    def recording_step(model, optimizer, batch, lr, clip_norm):
        seen.append((batch["input_ids"].shape[1], batch["attention_mask"].sum(1).max().item(),
                     model.qa_outputs.weight.detach().clone(), model.qa_outputs.bias.detach().clone()))
        return train_step(model, optimizer, batch, lr, clip_norm)

    train_step = tasks.train_step
    monkeypatch.setattr(tasks, "train_step", recording_step)
    examples = benchmarks.read_squad(data_dir / BIOASQ_TRAIN)[:8]
    finetune_config = tasks.FinetuneConfig(epochs=1, batch_size=4, max_length=128, doc_stride=64, seed=1)
    tasks.finetune("qa", data_dir / "qa", tmp_path / "squad", tmp_path / "bioasq", finetune_config,
                   splits={"train": examples, "dev": [], "test": []})
    assert len(seen) == 2 and all(length == 128 for length, *_ in seen)
    assert min(longest for _, longest, _, _ in seen) < 128  # shorter batches: padded all the same
    _, _, weight, bias = seen[0]
    assert (weight == 0.5).all() and (bias == 0.25).all()


# ----------------------------------------------------------------------------------------------- BioASQ batches
def test_qa_splits_pair_batches_with_their_golden_files(data_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    splits = qa.qa_splits([data_dir / BIOASQ_TRAIN], [data_dir / "qa" / "bioasq-7b"])
    assert len(splits["train"]) == 4231 and splits["dev"] == []
    assert len(splits["test"]) == 98 + 56 + 84 + 90 + 79  # snippets of batches 1-5 (data README)
    assert {batch: len(golden) for batch, golden in splits["golden"].items()} == \
        {"1": 39, "2": 25, "3": 29, "4": 34, "5": 35}
    assert "5be48c39133db5eb7800001d" in splits["golden"]["1"]
    with pytest.raises(InputError, match=r"^\S*7B1_golden.json: a BioASQ golden file .*; golden files and test "
                                         r"batches go to finetune --eval-data or evaluate --golden$"):
        qa.qa_splits([data_dir / "qa" / "bioasq-7b"])  # every --data file is training data
    with pytest.raises(InputError, match=r"^\S*empty: no SQuAD-format training file$"):
        qa.qa_splits([tmp_path / "empty"])
    batch = data_dir / "qa/bioasq-7b/BioASQ-test-factoid-7b-1.json"
    with pytest.raises(InputError, match=r"BioASQ-test-factoid-7b-1.json: no answers to score it by, .*golden"):
        qa.qa_splits([data_dir / BIOASQ_TRAIN], [batch])  # a test batch without its golden file
    with pytest.raises(InputError, match=r"7B2_golden.json: no --eval-data test batch shares their questions$"):
        qa.qa_splits([data_dir / BIOASQ_TRAIN], [data_dir / "qa/bioasq-7b/7B2_golden.json"])


def test_qa_files_are_used_as_their_flag_says_whatever_their_names(tmp_path, data_dir):
    """--data is training data and --eval-data is scored, never trained on: a held-out file named `heldout.json` is a
    dev file, a training file named `latest.json` (it holds "test") or `devices.json` ("dev") is trained on."""
    examples = benchmarks.read_squad(data_dir / BIOASQ_TRAIN)
    latest = write_squad(tmp_path / "latest.json", examples[:6])
    devices = write_squad(tmp_path / "medical_devices.json", examples[6:10])
    heldout = write_squad(tmp_path / "heldout.json", examples[10:13])
    heldout.write_bytes(b"\xef\xbb\xbf" + heldout.read_bytes())  # a byte-order mark, as some editors save JSON
    splits = qa.qa_splits([latest, devices], [heldout])
    assert [e.id for e in splits["train"]] == [e.id for e in examples[:10]]
    assert [e.id for e in splits["dev"]] == [e.id for e in examples[10:13]] and splits["test"] == []
    assert splits["golden"] is None


def test_golden_ids_that_do_not_match_are_counted(capsys):
    examples = [benchmarks.QAExample(f"{qid}_000", "q", "c", []) for qid in ("a" * 24, "b" * 24, "c" * 24)]
    qa.check_golden(examples, {"7B1_golden.json": {"a" * 24: [["x"]], "d" * 24: [["y"]], "e" * 24: [["z"]]}})
    err = capsys.readouterr().err
    assert "7B1_golden.json: 2 factoid questions without a snippet in the test data" in err
    assert "2 test questions in no golden file (not scored)" in err
    with pytest.raises(InputError, match="7B7_golden.json: none of its 1 factoid questions is in the test data"):
        qa.check_golden(examples, {"7B7_golden.json": {"f" * 24: [["x"]]}})


def test_table_9_layout():
    def result(shift):
        return {"test": {"batches": {b: {"sacc": 0.4 + shift, "lacc": 0.5, "mrr": 0.45} for b in "12345"}}}
    summary = qa.qa_summary([result(0.0), result(0.1)])
    assert summary["1"]["sacc"]["mean"] == pytest.approx(0.45) and summary["1"]["sacc"]["std"] == \
        pytest.approx(np.std([0.4, 0.5], ddof=1))
    table = qa.qa_table(summary, 2)
    assert "| 1 | SACC | 44.62 | 45.00 ± 7.07 | +0.38 |" in table
    assert "|  | MRR | 31.42 | 45.00 ± 0.00 | +13.58 |" in table  # batch 5
    paper_sacc = (44.62 + 46.40 + 37.93 + 61.18 + 24.57) / 5
    assert f"| average | SACC | {paper_sacc:.2f} | 45.00 |" in table


def test_squad_scores_are_the_official_average(word_tokenizer):
    context = "w1 w2 w3 w4"
    examples = [benchmarks.QAExample("a", "what ?", context, [("w2", 3), ("w2 w3", 3)]),
                benchmarks.QAExample("b", "what ?", context, [("w4", 9)])]
    features = qa.qa_featurize(examples, word_tokenizer, tasks.DEFAULTS["squad"])
    logits = []
    for feature, (start, end) in zip(features, [(5, 6), (6, 7)]):  # "w2 w3" (exact) and "w3 w4" (F1 2/3)
        row = torch.zeros(len(feature["input_ids"]), 2)
        row[start, 0] = row[end, 1] = 10.0
        logits.append(row)
    scores, nbest = qa.qa_evaluate(examples, features, logits)
    assert nbest["a"][0][0] == "w2 w3" and nbest["b"][0][0] == "w3 w4"
    assert scores == {"em": pytest.approx(0.5), "f1": pytest.approx((1 + 2 / 3) / 2)}


# ---------------------------------------------------------------------------------------------------------- CLI
def write_squad(path, examples):
    paragraphs = [{"context": e.context, "qas": [{"id": e.id, "question": e.question, "answers": [
        {"text": text, "answer_start": start} for text, start in e.answers]}]} for e in examples]
    path.write_text(json.dumps({"version": "test", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def test_cli_finetune_evaluate_predict_qa(cli, tmp_path, data_dir, tiny_init):
    train = write_squad(tmp_path / "bioasq-train.json", benchmarks.read_squad(data_dir / BIOASQ_TRAIN)[:8])
    batch = tmp_path / "batches"
    batch.mkdir()
    test_file = write_squad(batch / "BioASQ-test-factoid-7b-1.json",
                            benchmarks.read_squad(data_dir / "qa/bioasq-7b/BioASQ-test-factoid-7b-1.json")[:6])
    golden = data_dir / "qa/bioasq-7b/7B1_golden.json"
    (batch / "7B1_golden.json").write_text(golden.read_text())
    out = tmp_path / "run"
    result = cli("finetune", "--task", "qa", "--data", train, "--eval-data", batch, "--init", tiny_init,
                     "--out", out, "--epochs", 1, "--max-length", 128, "--seeds", 2)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| 1 | SACC | 44.62 |" in result.stdout and "factoid questions without a snippet" in result.stderr
    saved = json.loads((out / "seed_0" / "result.json").read_text())
    assert saved["finetune"]["learning_rate"] == 5e-6 and saved["finetune"]["batch_size"] == 16  # Table 5 BioASQ
    assert set(saved["test"]["batches"]["1"]) == {"sacc", "lacc", "mrr"}
    assert (out / "summary.md").read_text() == qa.qa_table(json.loads((out / "summary.json").read_text())["test"], 2)

    model = out / "seed_0" / "best"
    result = cli("evaluate", "--model", model, "--data", test_file, "--golden", golden)
    assert result.returncode == 0 and "batch 1: SAcc/LAcc/MRR" in result.stdout, result.stderr[-2000:]
    result = cli("evaluate", "--model", model, "--data", train)  # a file with answers: SQuAD EM/F1
    assert result.returncode == 0 and "EM/F1" in result.stdout, result.stderr[-2000:]
    assert "note: --max-length" not in result.stderr
    # the windows it was fine-tuned with travel with the model (the scores above read with them); --max-length
    # sets another window length
    windows = json.loads((model / "config.json").read_text())["electramed_windows"]
    assert windows == {"max_length": 128, "doc_stride": 128, "max_query_length": 64}
    windowed = cli("evaluate", "--model", model, "--data", train, "--max-length", 8)
    assert windowed.returncode == 2 and "error: --max-length 8: no room for a passage after question" in windowed.stderr
    windowed = cli("predict", "--model", model, "--question", "Which syndrome is it?", "--max-length", 8,
                   stdin="Acrokeratosis paraneoplastica (Bazex syndrome): report of a case.")
    assert windowed.stderr == "error: --max-length 8: no room for a passage after question --question (5 pieces), " \
        "[CLS] and two [SEP]; use at least 68 (questions are cut at 64 pieces)\n"
    result = cli("predict", "--model", model, "--question", "Which syndrome is it?",
                     stdin="Acrokeratosis paraneoplastica (Bazex syndrome): report of a case.")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout.strip().split("\n")
    assert len(printed) == 5 and printed[0].startswith("1. ") and 0 < float(printed[0].split("\t")[1]) <= 1

    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [\n{"paragraphs": [}\n]}')
    other_golden = data_dir / "qa/bioasq-7b/7B2_golden.json"
    for case in [("evaluate", "--model", model, "--data", bad),
                 ("evaluate", "--model", model, "--data", test_file, "--golden", other_golden),
                 ("evaluate", "--model", model, "--data", test_file),  # no answers, no golden file
                 ("finetune", "--task", "qa", "--data", bad, "--init", tiny_init, "--out", tmp_path / "none"),
                 ("predict", "--model", model), ("predict", "--model", model, "--question", ""),
                 ("predict", "--model", model, "--question", "   ")]:
        result = cli(*case, stdin="some text")
        assert result.returncode == 2, (case, result.stderr[-1500:])
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
        assert case[-1] != bad or "bad.json:2: not valid JSON" in result.stderr
        assert str(case[-1]).strip() or result.stderr == "error: --question: empty\n"
    assert not (tmp_path / "none").exists()


def test_qa_bad_training_and_scoring_files_are_one_line_and_write_nothing(cli, tmp_path, data_dir, tiny_init):
    """Training questions none of which has its answer where answer_start says (a BioASQ test batch given as --data,
    answer_start -1): nothing to learn from, said before anything is written (it was a ZeroDivisionError). Two
    questions under one id would be scored as one (the n-best lists are kept per id): refused in one file and across
    the --eval-data files."""
    examples = benchmarks.read_squad(data_dir / BIOASQ_TRAIN)[:6]
    unplaced = write_squad(tmp_path / "unplaced.json", [benchmarks.QAExample(e.id, e.question, e.context,
                                                                             [(e.answers[0][0], -1)])
                                                        for e in examples])
    twice = write_squad(tmp_path / "twice.json", [examples[0], examples[1]._replace(id=examples[0].id)])
    good = write_squad(tmp_path / "good.json", examples[:3])
    other = write_squad(tmp_path / "other.json", examples[2:4])  # shares examples[2]'s id with good.json
    out = tmp_path / "out"
    said = {("--data", unplaced): f"{unplaced}: no training example left to learn from",
            ("--data", twice): f"{twice}: question id {examples[0].id!r} is used twice",
            ("--data", good, "--eval-data", good, other): f"--eval-data files: question id {examples[2].id!r} is used "
                                                          "twice"}
    for flags, line in said.items():
        result = cli("finetune", "--task", "qa", *flags, "--init", tiny_init, "--out", out, "--max-length", 128)
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(f"error: {line}"), \
            result.stderr[-1500:]
    assert not out.exists()


def test_first_per_batch_keeps_the_first_snippets_of_each_test_batch(data_dir):
    splits = qa.qa_splits([data_dir / BIOASQ_TRAIN], [data_dir / "qa" / "bioasq-7b"])
    kept = qa.first_per_batch(splits["test"], splits["golden"], 2)
    batch_of = {qa.bioasq_question_id(e.id): b for b, golden in splits["golden"].items() for e in splits["test"]
                if qa.bioasq_question_id(e.id) in golden}
    assert [batch_of[qa.bioasq_question_id(e.id)] for e in kept] == ["1", "1", "2", "2", "3", "3", "4", "4", "5", "5"]
    first = {b: [e for e in splits["test"] if batch_of.get(qa.bioasq_question_id(e.id)) == b][:2] for b in "12345"}
    assert kept == [e for b in "12345" for e in first[b]]
    assert qa.first_per_batch(splits["test"], splits["golden"], None) == splits["test"]
