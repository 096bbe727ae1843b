"""The fine-tuning benchmarks' files -> examples: NER, RE and QA as the paper evaluates them (Tables 2-4), and the
examples -> the model's inputs: QA's and NER's windows, RE's text cut to the max length.

    task_splits("ner", "../shared/data/ner/NCBI-disease")   # {"train": [NerSentence], "dev": [...], "test": [...]}
    task_splits("re", "../shared/data/re/ddi-2013")         # DDI's train rebuilt from the original XML corpus
    read_squad(path); qa_features(examples, tokenizer)      # SQuAD-format JSON (SQuAD v1.1, BioASQ) -> windows
    ner_features(sentences, tokenizer, labels, 128)         # word-aligned windows, a tag on each word's first piece

Every reader raises tokenizer.InputError naming file:line (or the question id) on malformed input; counts, and how
ours differ from the paper's, are in the README ("Fine-tuning data").
"""
import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from xml.parsers import expat

from tokenizer import InputError


# ---- question answering: SQuAD-format JSON -> windows
# SQuAD v1.1 (Rajpurkar et al. 2016) and BioBERT's SQuAD-like BioASQ files (one item per snippet, ids
# `<question id>_<nnn>`). Windows as BERT's run_squad.py (`convert_examples_to_features`, which ELECTRA's
# finetune/qa and BioBERT keep): `[CLS] question [SEP] window [SEP]`, windows `doc_stride` tokens apart, each token
# scored for the window where it has the most context (`_check_is_max_context`). Where BERT maps answers through
# whitespace words and `_improve_answer_span`, we map characters to tokens through the tokenizer's offsets, which
# gives the tightest token span directly; predictions are cut from the original context by the same offsets, so
# BERT's `get_final_text` re-alignment is not needed.
class QAExample(NamedTuple):
    id: str
    question: str
    context: str
    answers: list  # [(text, char_start)]; empty for test files


@dataclass
class QAFeature:
    example_index: int
    input_ids: list
    token_type_ids: list
    start_position: int  # token index in this window; 0 ([CLS]) when the window lacks the answer (SQuAD v1.1)
    end_position: int
    offsets: list  # per token (char_start, char_end) into the context; None for question and special tokens
    max_context: list  # per token: True where this window gives the token its maximal context


def _read_json(path):
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark, as some editors write, is not JSON's
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 (byte offset {error.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})") from None


def report_ids(path, what, ids):
    """One stderr line for a problem found in a data file: the count and the first question ids; nothing is dropped
    silently."""
    if ids:
        shown = ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")
        print(f"warning: {path}: {len(ids)} {what} ({shown})", file=sys.stderr)


def read_squad(path):
    """A SQuAD v1.1-format JSON file -> list[QAExample], in file order.

    Answers whose text is not the context at answer_start are reported (count and ids) and kept: scoring uses their
    text; `qa_features(training=True)` can't place them and leaves them out of training. Questions on an empty
    context are reported and kept: they get no window, so they score as unanswered, as the official script does."""
    data = _read_json(path)
    if isinstance(data, dict) and "questions" in data:  # e.g. finetune --task qa --data given the BioASQ folder
        raise InputError(f"{path}: a BioASQ golden file (top-level \"questions\"), not SQuAD-format training data; "
                         "golden files and test batches go to finetune --eval-data or evaluate --golden")
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InputError(f"{path}: not a SQuAD-format file (no top-level \"data\" list)")
    examples, misplaced, empty = [], [], []
    for article in data["data"]:
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        for paragraph in paragraphs if isinstance(paragraphs, list) else [None]:  # null or missing: said below
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str) \
                    or not isinstance(paragraph.get("qas"), list):
                raise InputError(f"{path}: a paragraph without a \"context\" string and a \"qas\" list "
                                 f"(after question {examples[-1].id if examples else 'none'})")
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                if not isinstance(qa, dict) or "id" not in qa or not isinstance(qa.get("question"), str):
                    raise InputError(f"{path}: a question without \"id\" and \"question\" "
                                     f"(after question {examples[-1].id if examples else 'none'})")
                answers = []
                if not isinstance(qa.get("answers", []), list):  # e.g. null from a converter: not "no answers"
                    raise InputError(f"{path}: question {qa['id']}: \"answers\" is not a list")
                for answer in qa.get("answers", []):
                    try:
                        text, start = answer["text"], int(answer["answer_start"])
                    except (TypeError, KeyError, ValueError):
                        text = None
                    if not isinstance(text, str):
                        raise InputError(f"{path}: question {qa['id']}: an answer without a \"text\" string and "
                                         f"an \"answer_start\" number")
                    if context[start:start + len(text)] != text:
                        misplaced.append(qa["id"])
                    answers.append((text, start))
                if not context.strip():
                    empty.append(qa["id"])
                examples.append(QAExample(str(qa["id"]), qa["question"], context, answers))
    if not examples:
        raise InputError(f"{path}: no questions")
    check_unique_ids(examples, path)
    report_ids(path, "answers whose text is not the context at answer_start (kept for scoring, not trained on)",
            misplaced)
    report_ids(path, "questions with an empty context (they score as unanswered)", empty)
    return examples


def read_bioasq_golden(path):
    """An official BioASQ golden file -> {question id: exact_answer} for its factoid questions (exact_answer is a
    list of lists of synonyms, as the file has it)."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise InputError(f"{path}: not a BioASQ golden file (no top-level \"questions\" list)")
    golden = {}
    for question in data["questions"]:
        if not isinstance(question, dict) or "id" not in question or "type" not in question:
            raise InputError(f"{path}: a question without \"id\" and \"type\"")
        if question["type"] == "factoid":
            answer = question.get("exact_answer")
            items = [answer] if isinstance(answer, str) else answer if isinstance(answer, list) else None
            # a string, or a list of strings or of lists of strings (synonyms): checked before any work is done
            if not items or not all(isinstance(item, str) or isinstance(item, list) and item and
                                    all(isinstance(s, str) for s in item) for item in items):
                raise InputError(f"{path}: factoid question {question['id']}: exact_answer is "
                                 f"{'missing' if 'exact_answer' not in question else 'not strings'} (a list of "
                                 "lists of synonyms)")
            golden[question["id"]] = answer
    if not golden:
        raise InputError(f"{path}: no factoid questions")
    return golden


def check_unique_ids(examples, where):
    """Predictions and scores are kept per question id: two questions under one id would score as one."""
    seen = set()
    for example in examples:
        if example.id in seen:
            raise InputError(f"{where}: question id {example.id!r} is used twice (each question needs its own id)")
        seen.add(example.id)


def _token_span(offsets, char_start, char_end):
    """The first and last context tokens overlapping the characters [char_start, char_end), or None."""
    start = next((i for i, (_, end) in enumerate(offsets) if end > char_start), None)
    end = next((i for i in range(len(offsets) - 1, -1, -1) if offsets[i][0] < char_end), None)
    return None if start is None or end is None or end < start else (start, end)


def qa_features(examples, tokenizer, max_length=384, doc_stride=128, max_query_length=64, training=False,
                stats=None):
    """Examples -> windows (list[QAFeature]), as BERT's convert_examples_to_features.

    Training uses each example's first answer that sits where answer_start says. Problems are reported on stderr
    with counts and ids, and added to `stats` when given: "truncated_questions", "unmappable_answers" (the token
    span's characters differ from the answer text after whitespace normalisation: the answer starts or ends inside
    a WordPiece token, 'gold rush' in 'gold rushes'; training uses the tokens that cover it, as BERT's whitespace
    words would), "untrainable" (training: no answer where answer_start says)."""
    stats = {} if stats is None else stats
    truncated, unmappable, untrainable = [], [], []
    context_tokens = {}  # many questions share a paragraph: tokenize each context once
    features = []
    for example_index, example in enumerate(examples):
        question = tokenizer.encode(example.question, specials=False)
        question_ids = question.ids[1:-1]
        if len(question_ids) > max_query_length:
            truncated.append(example.id)
            question_ids = question_ids[:max_query_length]
        if example.context not in context_tokens:
            encoding = tokenizer.encode(example.context, specials=False)
            context_tokens[example.context] = (encoding.ids[1:-1], encoding.offsets[1:-1])
        ids, offsets = context_tokens[example.context]

        answer_span = None  # (first, last) context token of the answer this example trains on
        for text, char_start in example.answers:
            span = _token_span(offsets, char_start, char_start + len(text))
            placed = example.context[char_start:char_start + len(text)] == text
            # (an answer not at its answer_start is reported by read_squad, not here as a WordPiece problem)
            if placed and (span is None or " ".join(example.context[offsets[span[0]][0]:offsets[span[1]][1]]
                                                    .split()) != " ".join(text.split())):
                unmappable.append(example.id)
            if training and placed and span is not None and answer_span is None:
                answer_span = span
        if training and answer_span is None:
            untrainable.append(example.id)
            continue

        # BERT: windows of up to max_tokens_for_doc context tokens, each starting doc_stride after the last
        max_tokens_for_doc = max_length - len(question_ids) - 3
        if max_tokens_for_doc < 1:  # BERT's loop would never advance (the official code hangs here too)
            raise InputError(f"--max-length {max_length}: no room for a passage after question {example.id} "
                             f"({len(question_ids)} pieces), [CLS] and two [SEP]; use at least {max_query_length + 4} "
                             f"(questions are cut at {max_query_length} pieces)")
        windows, window_start = [], 0
        while window_start < len(ids):
            length = min(len(ids) - window_start, max_tokens_for_doc)
            windows.append((window_start, length))
            if window_start + length == len(ids):
                break
            window_start += min(length, doc_stride)
        for window_index, (window_start, length) in enumerate(windows):
            prefix = len(question_ids) + 2  # [CLS] question [SEP]
            input_ids = [tokenizer.cls_id, *question_ids, tokenizer.sep_id, *ids[window_start:window_start + length],
                         tokenizer.sep_id]
            token_type_ids = [0] * prefix + [1] * (length + 1)
            token_offsets = [None] * prefix + offsets[window_start:window_start + length] + [None]
            max_context = [False] * prefix + [_is_max_context(windows, window_index, window_start + i)
                                              for i in range(length)] + [False]
            start_position = end_position = 0
            if answer_span is not None and window_start <= answer_span[0] and answer_span[1] < window_start + length:
                start_position = prefix + answer_span[0] - window_start
                end_position = prefix + answer_span[1] - window_start
            features.append(QAFeature(example_index, input_ids, token_type_ids, start_position, end_position,
                                      token_offsets, max_context))
    stats.update(truncated_questions=len(truncated), unmappable_answers=len(unmappable), untrainable=len(untrainable))
    report_ids("qa features", f"questions longer than {max_query_length} tokens, truncated", truncated)
    report_ids("qa features", "answers that the tokens can't give back exactly (they start or end inside a WordPiece)",
            unmappable)
    report_ids("qa features", "questions left out of training: no answer, or none where answer_start says",
            untrainable)
    return features


def _is_max_context(windows, window_index, position):
    """BERT's _check_is_max_context: is `window_index` the window where token `position` has the most context
    (min of left and right context, +0.01 per window token to prefer longer windows; the first best wins)?"""
    best_score, best_index = None, None
    for index, (start, length) in enumerate(windows):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_index = score, index
    return best_index == window_index


# ---- fine-tuning benchmarks: NER and RE
# The paper's NER and RE data (Tables 2 and 3) as ELECTRAMed's repository commits it (gmpoli/electramed data/NER,
# data/RE: the SciBERT/MTL token files and the BLUE TSV files), SciBERT's ChemProt JSON lines (the substitute for the
# missing BLUE ChemProt train/test), and the original DDI-2013 XML corpus, from which the missing BLUE DDI train set is
# rebuilt. Every reader raises InputError naming file:line on a malformed line.
NER_TAG = re.compile(r"O|[BI]-\S+")  # IOB1 and IOB2 both occur (BC5CDR is mostly IOB1 `I-Entity`)
NER_COLUMNS = re.compile(r"[ \t]+")  # space or TAB, not any Unicode space: a token may hold a no-break space
RE_LABEL = re.compile(r"\S+")
BLUE_HEADER = ["index", "sentence", "label"]
DDI_TYPES = ("advise", "effect", "int", "mechanism")
DDI_OFFSET = re.compile(r"\d+-\d+(;\d+-\d+)*")  # "a-b" or, for a discontinuous entity, "a-b;c-d" (ends inclusive)


class NerSentence(NamedTuple):
    words: list
    tags: list


class ReExample(NamedTuple):
    id: str
    text: str
    label: str


def _benchmark_lines(path):
    """(number, line) pairs of a UTF-8 file, a leading BOM dropped; split at \\n only (U+2028 in a sentence is text)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 ({error.reason})") from None
    return enumerate(text.removeprefix("\ufeff").split("\n"), 1)


def read_ner(path, labels=None):
    """A `token label` file (space or TAB; blank line between sentences; -DOCSTART- skipped) -> [NerSentence].
    With `labels` (a fine-tuned model's), a tag outside them is an error naming file:line."""
    sentences, words, tags, good_tags, number, docstart = [], [], [], set(), 0, False
    for number, line in _benchmark_lines(path):
        line = line.rstrip("\r")
        columns = NER_COLUMNS.split(line.strip(" \t"))
        docstart = docstart or columns[0] == "-DOCSTART-"
        if columns[0] == "-DOCSTART-" or not line.strip(" \t"):
            if words:
                sentences.append(NerSentence(words, tags))
                words, tags = [], []
            continue
        if len(columns) != 2:
            raise InputError(f"{path}:{number}: expected 2 columns (token label), found {len(columns)}: {line!r}")
        if columns[1] not in good_tags:
            if not NER_TAG.fullmatch(columns[1]):
                raise InputError(f"{path}:{number}: tag {columns[1]!r} is not O, B-<type> or I-<type>")
            if labels is not None and columns[1] not in labels:
                raise InputError(f"{path}:{number}: tag {columns[1]!r} is not among the labels trained on "
                                 f"({', '.join(sorted(labels))})")
            good_tags.add(columns[1])
        words.append(columns[0])
        tags.append(columns[1])
    if words:
        sentences.append(NerSentence(words, tags))
    if not sentences:
        raise InputError(f"{path}: no sentences (" + ("only -DOCSTART- and blank lines" if docstart else
                                                      "only blank lines" if number > 1 or line else "empty file") + ")")
    return sentences


def read_re(path, labels=None):
    """A relation file -> [ReExample]; with `labels`, a label outside them is an error (file:line).

    Two layouts, told apart by the first line: BLUE TSV (`index<TAB>sentence<TAB>label` header, entities replaced by
    @CHEMICAL$ / @GENE$ / @DRUG$; a field that starts with a quote is CSV-quoted, as Python's csv writer made these
    files: `"a ""b"" c"` reads `a "b" c`) and SciBERT's ChemProt JSON lines (`{"text", "label", "metadata"}`, the
    entities kept and marked `<< gene >>` / `[[ chemical ]]`; id = line number).
    """
    lines = [(number, line.rstrip("\r")) for number, line in _benchmark_lines(path)]
    if not any(line.strip() for _, line in lines):
        why = "only blank lines" if len(lines) > 1 or lines[0][1] else "empty file"
        raise InputError(f"{path}: no examples ({why})")
    lines = [(number, line) for number, line in lines if line.strip()]
    examples = []
    if lines[0][1].lstrip().startswith("{"):
        for number, line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: not a JSON object ({error.msg})") from None
            if not isinstance(record, dict) or not all(isinstance(record.get(key), str) for key in ("text", "label")):
                raise InputError(f"{path}:{number}: expected a JSON object with string fields text and label")
            examples.append((number, ReExample(str(number), record["text"], record["label"])))
    else:
        if lines[0][1].split("\t") != BLUE_HEADER:
            raise InputError(f"{path}:{lines[0][0]}: expected the BLUE header 'index<TAB>sentence<TAB>label' or "
                             f"a JSON line, found {lines[0][1][:80]!r}")
        for number, line in lines[1:]:
            try:
                row = next(csv.reader([line], delimiter="\t", strict=True))
            except csv.Error as error:
                raise InputError(f"{path}:{number}: bad quoting ({error})") from None
            if len(row) != 3:
                raise InputError(f"{path}:{number}: expected 3 TAB-separated columns (index, sentence, label), "
                                 f"found {len(row)}")
            examples.append((number, ReExample(*row)))
    if not examples:
        raise InputError(f"{path}: no examples (only a header)")
    for number, example in examples:
        if not example.text.strip():
            raise InputError(f"{path}:{number}: empty sentence")
        if not RE_LABEL.fullmatch(example.label):
            raise InputError(f"{path}:{number}: bad label {example.label!r} (empty or with spaces)")
        if labels is not None and example.label not in labels:
            raise InputError(f"{path}:{number}: unknown label {example.label!r} (known: {', '.join(sorted(labels))})")
    return [example for _, example in examples]


def _ddi_sentences(path):
    """One DDI-2013 XML document -> [(sentence attrs, {entity id: (attrs, line)}, [(pair attrs, line)])]."""
    sentences = []
    parser = expat.ParserCreate()

    def start(tag, attrs):
        line = parser.CurrentLineNumber
        if tag == "sentence":
            sentences.append((attrs, {}, []))
        elif tag in ("entity", "pair") and not sentences:
            raise InputError(f"{path}:{line}: <{tag}> outside a <sentence>")
        elif tag == "entity":
            sentences[-1][1][attrs.get("id")] = (attrs, line)
        elif tag == "pair":
            sentences[-1][2].append((attrs, line))

    parser.StartElementHandler = start
    try:
        parser.Parse(Path(path).read_bytes(), True)
    except expat.ExpatError as error:
        raise InputError(f"{path}:{error.lineno}: not well-formed XML ({expat.ErrorString(error.code)})") from None
    return sentences


def _ddi_span(path, text, attrs, line):
    """(start, end) covered by an entity, end exclusive. A discontinuous entity ("nonheme iron" = 117-123;157-160)
    covers everything from its first to its last character: replacing that whole span reproduces BLUE's test.csv
    (replacing only the first part, as BLUE's published script reads charOffset, would miss 28 of its rows)."""
    offset = attrs.get("charOffset", "")
    if not DDI_OFFSET.fullmatch(offset):
        raise InputError(f"{path}:{line}: bad charOffset {offset!r} (expected a-b or a-b;c-d)")
    bounds = [int(x) for x in re.findall(r"\d+", offset)]
    start, end = min(bounds), max(bounds) + 1
    if end > len(text):
        raise InputError(f"{path}:{line}: charOffset {offset} is beyond the sentence ({len(text)} characters)")
    return start, end


def read_ddi_xml(folder):
    """The DDI-2013 XML corpus under `folder` (e.g. DDICorpus/Train) -> [ReExample], converted as BLUE did.

    BLUE (Peng et al. 2019, create_ddi_bert): one example per <pair>; the two pair entities are replaced by @DRUG$ (two
    overlapping or touching entities together by one @DRUG-DRUG$); label DDI-<type> for ddi="true", else DDI-false;
    id = the pair id. The sentence is stripped of the space the XML leaves at its end. On the Test folder this
    reproduces 5,716 of BLUE's 5,761 test.csv rows exactly (id, text and label); the other 45 are one MedLine abstract
    (DrugDDI.d21928724) that is not in the released corpus. One Train pair (DDI-DrugBank.d236.s29.p0) is ddi="true"
    with no type: it has no class to learn and is skipped (BLUE's code would have labelled it DDI-None).
    """
    files = sorted(Path(folder).rglob("*.xml"))
    if not files:
        raise InputError(f"{folder}: no DDI-2013 XML files")
    examples = []
    for path in files:
        for sentence, entities, pairs in _ddi_sentences(path):
            text = sentence.get("text", "")
            spans = {key: _ddi_span(path, text, attrs, line) for key, (attrs, line) in entities.items()}
            for pair, line in pairs:
                if pair.get("e1") not in spans or pair.get("e2") not in spans:
                    raise InputError(f"{path}:{line}: pair {pair.get('id')} names an entity not in its sentence")
                if pair.get("ddi") == "false":
                    label = "DDI-false"
                elif pair.get("ddi") != "true":
                    raise InputError(f"{path}:{line}: pair {pair.get('id')}: ddi={pair.get('ddi')!r}, not true/false")
                elif pair.get("type") is None:
                    continue  # see the docstring
                elif pair.get("type") in DDI_TYPES:
                    label = f"DDI-{pair['type']}"
                else:
                    raise InputError(f"{path}:{line}: pair {pair.get('id')}: unknown type {pair['type']!r} "
                                     f"(expected one of {', '.join(DDI_TYPES)})")
                (start1, end1), (start2, end2) = sorted((spans[pair["e1"]], spans[pair["e2"]]))
                if start2 <= end1:
                    marked = text[:start1] + "@DRUG-DRUG$" + text[max(end1, end2):]
                else:
                    marked = text[:start1] + "@DRUG$" + text[end1:start2] + "@DRUG$" + text[end2:]
                examples.append(ReExample(pair.get("id", f"{path.name}:{line}"), marked.strip(), label))
    return examples


def ddi_train_without_dev(train, dev):
    """DDI train examples (from the XML Train folder) minus every sentence that BLUE's dev.csv uses.

    BLUE cut its DDI dev set from the XML Train documents (renumbering them, so ids cannot be matched): we match by
    text. A dev example is found in the XML by its marked text with runs of whitespace collapsed (51 dev rows differ
    from the XML only by a doubled space); then every pair of that XML sentence leaves the train set, so no dev
    sentence is trained on, not even with another entity pair marked. On the real data: 27,791 pairs -> 7,494
    removed (1,016 sentences) -> 20,297 train examples (the paper's BLUE train: 18,779).
    """
    normalize = lambda text: " ".join(text.split())
    dev_texts = {normalize(example.text) for example in dev}
    sentence_of = lambda example: example.id.rsplit(".p", 1)[0]  # DDI-DrugBank.d236.s29.p0 -> DDI-DrugBank.d236.s29
    dev_sentences = {sentence_of(example) for example in train if normalize(example.text) in dev_texts}
    return [example for example in train if sentence_of(example) not in dev_sentences]


def word_split(sentences):
    """How a NER corpus split its words, for `predict` to split raw text the same way (config.json
    "electramed_word_split"): "punctuation" when no word holds a punctuation mark between letters or digits
    (NCBI-disease, BC5CDR-typed: "cancer", "-", "prone"), else "words" (JNLPBA, BC5CDR: "IL-2", "B-NHL")."""
    inner = re.compile(r"\w[^\w\s]+\w")
    return "words" if any(inner.search(word) for sentence in sentences for word in sentence.words) else "punctuation"


def label_list(examples):
    """The sorted label set of NER sentences ('O' first) or RE examples: what a fine-tuned model stores (QA: none)."""
    if not examples or isinstance(examples[0], QAExample):
        return []
    if isinstance(examples[0], NerSentence):
        tags = {tag for sentence in examples for tag in sentence.tags}
        return ["O"] * ("O" in tags) + sorted(tags - {"O"})
    return sorted({example.label for example in examples})


def check_labels(examples, labels, where):
    """A dev or test label that training never showed the model (it could never be predicted) is an error."""
    if unknown := sorted(set(label_list(examples)) - set(labels)):
        raise InputError(f"{where}: label(s) {', '.join(unknown[:5])} not among the training labels "
                         f"({', '.join(labels)})")


def _split_file(folder, split, suffixes):
    """The one file of a split (train/dev/test + suffix; MTL's `devel` counts as dev), or None."""
    names = [split, "devel"] if split == "dev" else [split]
    found = [path for name in names for suffix in suffixes if (path := folder / f"{name}{suffix}").is_file()]
    if len(found) > 1:
        raise InputError(f"{folder}: more than one {split} file ({', '.join(p.name for p in found)})")
    return found[0] if found else None


def _missing(folder, files, suffixes):
    missing = [split for split, path in files.items() if path is None]
    if missing:
        return f"{folder}: no {' or '.join(missing)} file (looked for <split>{'|'.join(suffixes)})"
    return None


def task_splits(task, data_dir):
    """{"train", "dev", "test"} example lists of a benchmark folder, for task "ner" or "re".

    NER: train/dev/test with .txt or .tsv. RE: train/dev/test with .csv, .tsv or .txt. Dev/test labels must occur in
    train (an error names the file and line). DDI-2013 (a folder with dev.csv, test.csv and original/DDICorpus, but
    no train file): train is built from the XML Train folder minus the sentences of dev.csv
    (`ddi_train_without_dev`); dev and test are BLUE's files.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: " + ("is a file: --data names the benchmark's folder (train, dev and test)"
                                            if data_dir.exists() else "no such folder"))
    splits = ("train", "dev", "test")
    if task == "ner":
        suffixes = (".txt", ".tsv")
        files = {split: _split_file(data_dir, split, suffixes) for split in splits}
        if problem := _missing(data_dir, files, suffixes):
            raise InputError(problem)
        train = read_ner(files["train"])
        tags = set(label_list(train))  # a dev/test tag the model never saw is an error (file:line), as for RE; one
        tags = tags if len(tags) > 1 else None  # tag alone (only O) is nothing to learn, which finetune says first
        return {"train": train, "dev": read_ner(files["dev"], tags), "test": read_ner(files["test"], tags)}
    if task == "re":
        suffixes = (".csv", ".tsv", ".txt")
        files = {split: _split_file(data_dir, split, suffixes) for split in splits}
        xml_train = data_dir / "original" / "DDICorpus" / "Train"
        if files["train"] is None and files["dev"] and files["test"] and xml_train.is_dir():  # DDI-2013
            train = ddi_train_without_dev(read_ddi_xml(xml_train), read_re(files["dev"]))
        elif problem := _missing(data_dir, files, suffixes):
            if files["dev"] and any(e.label.startswith("CPR:") for e in read_re(files["dev"])):
                problem += (f"; ChemProt's BLUE train (19,460) and test (16,943) are missing from this data: use "
                            f"{data_dir.parent / 'chemprot-scibert'} (SciBERT's ChemProt) instead, whose scores are "
                            f"not comparable with the paper's 72.94")
            raise InputError(problem)
        else:
            train = read_re(files["train"])
        labels = set(label_list(train))  # a dev/test label the model never saw is an error (file:line); one label
        labels = labels if len(labels) > 1 else None  # alone (only the negative) is finetune's "nothing to learn"
        return {"train": train, "dev": read_re(files["dev"], labels), "test": read_re(files["test"], labels)}
    # task "qa": qa.qa_splits (SQuAD / BioASQ files, test batches paired with their golden files)
    raise InputError(f"unknown task {task!r} (expected ner or re)")


# ---- NER and RE: examples -> features (QA's windows are above)
def word_windows(lengths, budget):
    """Word-aligned windows [(first word, end word)] of at most `budget` pieces that cover every word.

    Stride rule: each window holds as many whole words as fit; the next one starts at the first word at least
    budget // 2 pieces after this one's start (so consecutive windows overlap by about half), and never after this
    one's end (no gap). A word longer than the budget gets a window of its own, its pieces cut to the budget."""
    windows, start, stride = [], 0, max(1, budget // 2)
    while True:
        end, used = start, 0
        while end < len(lengths) and (end == start or used + lengths[end] <= budget):
            used, end = used + lengths[end], end + 1
        windows.append((start, end))
        if end >= len(lengths):
            return windows
        next_start, offset = start, 0
        while next_start < end and offset < stride:
            offset, next_start = offset + lengths[next_start], next_start + 1
        start = next_start


def best_windows(lengths, windows, budget):
    """For each word, the window where it has the most context: max of min(pieces left, pieces right), ties to the
    longer window, then the earlier (BERT run_squad's _check_is_max_context, per word)."""
    best = [(-1.0, -1)] * len(lengths)
    for k, (start, end) in enumerate(windows):
        pieces = [min(length, budget) for length in lengths[start:end]]
        total, left = sum(pieces), 0
        for word, size in zip(range(start, end), pieces):
            score = min(left, total - left - size) + 0.01 * total
            if score > best[word][0]:
                best[word] = (score, k)
            left += size
    return [k for _, k in best]


def ner_features(sentences, tokenizer, labels, max_length):
    """[CLS] word pieces [SEP] per window; `labels` holds the tag id on the first piece of each word this window
    predicts and -100 elsewhere; `words` = [(token position, word index)] for decoding. Tags may be None (predict)."""
    label_ids, budget, features = {label: i for i, label in enumerate(labels)}, max_length - 2, []
    for index, (words, tags) in enumerate(sentences):
        pieces = [tokenizer.tokenize_ids(word, specials=False)[:budget] or [tokenizer.unk_id] for word in words]
        lengths = [len(p) for p in pieces]
        windows = word_windows(lengths, budget) if words else []
        owner = best_windows(lengths, windows, budget)
        for k, (start, end) in enumerate(windows):
            ids, targets, positions = [tokenizer.cls_id], [-100], []
            for word in range(start, end):
                if owner[word] == k:
                    positions.append((len(ids), word))
                    targets += [label_ids[tags[word]] if tags is not None else -100] + [-100] * (lengths[word] - 1)
                else:
                    targets += [-100] * lengths[word]
                ids += pieces[word]
            features.append({"input_ids": ids + [tokenizer.sep_id], "labels": targets + [-100],
                             "example_index": index, "words": positions})
    return features


def re_features(examples, tokenizer, labels, max_length):
    """[CLS] text [SEP], cut to max_length as BERT does, and the label's id (0 when there is none: predict, where it
    is not read). One feature per example, in order. As in NER and QA, a literal "[SEP]" in the text is text
    (specials=False), as the official FullTokenizer splits it."""
    label_ids = {label: i for i, label in enumerate(labels)}
    return [{"input_ids": tokenizer.encode(example[1], max_length=max_length, specials=False).ids,
             "labels": label_ids.get(example[2], 0)} for example in examples]
