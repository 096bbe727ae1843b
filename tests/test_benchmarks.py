"""NER and RE benchmark readers (data.py) on the real files in ../shared/data: the counts of its README, the DDI-2013
XML conversion against BLUE's own test.csv, the DDI train/dev split, and file:line errors on malformed input."""
import collections
import re
import xml.etree.ElementTree as ElementTree

import pytest
from seqeval.metrics.sequence_labeling import get_entities

import benchmarks
from tokenizer import InputError

# The data README's counts: split -> (sentences, tokens, entities).
NER_COUNTS = {
    "NCBI-disease": {"train": (5429, 135701, 5134), "dev": (923, 23969, 787), "test": (941, 24497, 960)},
    "BC5CDR": {"train": (3951, 95370, 9270), "dev": (3957, 94437, 9457), "test": (4145, 98691, 9662)},
    "JNLPBA": {"train": (16807, 445090, 46750), "dev": (1743, 47461, 4551), "test": (3869, 101039, 8664)},
    "BC5CDR-typed-MTL": {"train": (4560, 118170, 9385), "dev": (4581, 117453, 9593), "test": (4797, 124750, 9809)},
}
NER_LABELS = {
    "NCBI-disease": ["O", "B-Disease", "I-Disease"],
    "BC5CDR": ["O", "B-Entity", "I-Entity"],
    "JNLPBA": ["O"] + [f"{p}-{t}" for p in "BI" for t in ("DNA", "RNA", "cell_line", "cell_type", "protein")],
    "BC5CDR-typed-MTL": ["O", "B-Chemical", "B-Disease", "I-Chemical", "I-Disease"],
}
CHEMPROT_DEV = {"false": 9404, "CPR:4": 1094, "CPR:3": 550, "CPR:9": 457, "CPR:6": 199, "CPR:5": 116}
DDI_DEV = {"DDI-false": 6240, "DDI-effect": 396, "DDI-mechanism": 373, "DDI-advise": 193, "DDI-int": 42}
DDI_TEST = {"DDI-false": 4782, "DDI-effect": 360, "DDI-mechanism": 302, "DDI-advise": 221, "DDI-int": 96}
DDI_TEST_FOLDER = "Test/Test for DDI Extraction task"


def readme_entities(tags):
    """The README's count: a span starts at B- or at an I- after O or after a different type."""
    count, previous = 0, "O"
    for tag in tags:
        if tag.startswith("B-") or (tag.startswith("I-") and previous[2:] != tag[2:]):
            count += 1
        previous = tag
    return count


def collapse(text):
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def ner(data_dir):
    return {name: benchmarks.task_splits("ner", data_dir / "ner" / name) for name in NER_COUNTS}


@pytest.fixture(scope="module")
def ddi(data_dir):
    folder = data_dir / "re" / "ddi-2013"
    return {"splits": benchmarks.task_splits("re", folder),
            "xml_train": benchmarks.read_ddi_xml(folder / "original" / "DDICorpus" / "Train"),
            "xml_test": benchmarks.read_ddi_xml(folder / "original" / "DDICorpus" / DDI_TEST_FOLDER)}


@pytest.mark.parametrize("name", NER_COUNTS)
def test_ner_counts_equal_the_data_readme(ner, name):
    for split, (sentences, tokens, entities) in NER_COUNTS[name].items():
        examples = ner[name][split]
        assert len(examples) == sentences, split
        assert sum(len(s.words) for s in examples) == tokens, split
        assert all(len(s.words) == len(s.tags) for s in examples)
        assert sum(readme_entities(s.tags) for s in examples) == entities, split
        # seqeval's chunking (CoNLL) counts the same spans: an independent check of the README rule above
        assert len(get_entities([s.tags for s in examples])) == entities, split
    assert benchmarks.label_list(ner[name]["train"]) == NER_LABELS[name]


def test_ner_first_sentences_are_the_files_first_lines(ner):
    first = ner["BC5CDR"]["train"][0]
    assert first.words[:3] == ["Naloxone", "reverses", "the"] and first.tags[:3] == ["I-Entity", "O", "O"]
    first = ner["BC5CDR-typed-MTL"]["train"][0]
    assert first.words[:3] == ["Selegiline", "-", "induced"] and first.tags[:3] == ["B-Chemical", "O", "O"]


def test_re_counts_and_labels_equal_the_data_readme(data_dir):
    chemprot = benchmarks.read_re(data_dir / "re" / "chemprot" / "dev.csv")  # starts with a BOM
    assert collections.Counter(e.label for e in chemprot) == CHEMPROT_DEV
    assert chemprot[0] == ("10064839.T49.T56", "Binding of dimemorfan to @CHEMICAL$ and its anticonvulsant and "
                           "locomotor effects in mice, compared with @GENE$ and dextrorphan.", "false")
    # CSV quoting as Python's csv writer made it: `"To probe into the ""logic"" ..."` is `To probe into the "logic" ...`
    quoted = [e for e in chemprot if e.id == "16359899.T3.T12"]
    assert quoted[0].text.startswith('To probe into the "logic" of this enigma') and quoted[0].text.endswith(".")
    assert not any(e.text.startswith('"') for e in chemprot)

    scibert = benchmarks.task_splits("re", data_dir / "re" / "chemprot-scibert")
    assert {split: len(examples) for split, examples in scibert.items()} == {"train": 4169, "dev": 2427, "test": 3469}
    assert len(benchmarks.label_list(scibert["train"])) == 13
    assert collections.Counter(e.label for e in scibert["train"])["INHIBITOR"] == 1642
    first = scibert["train"][0]
    assert first.id == "1" and first.label == "INHIBITOR"
    assert first.text.startswith("<< Epidermal growth factor receptor >> inhibitors") and "[[ gefitinib ]]" in first.text


def test_ddi_dev_test_equal_the_data_readme(ddi):
    assert collections.Counter(e.label for e in ddi["splits"]["dev"]) == DDI_DEV
    assert collections.Counter(e.label for e in ddi["splits"]["test"]) == DDI_TEST


def test_ddi_xml_pair_counts(data_dir, ddi):
    corpus = data_dir / "re" / "ddi-2013" / "original" / "DDICorpus"

    def pairs(folder):  # independent count with ElementTree
        return [p for f in sorted(folder.rglob("*.xml")) for p in ElementTree.parse(f).iter("pair")]

    train_pairs, test_pairs = pairs(corpus / "Train"), pairs(corpus / DDI_TEST_FOLDER)
    assert (len(train_pairs), len(test_pairs)) == (27792, 5716)
    untyped = [p.get("id") for p in train_pairs if p.get("ddi") == "true" and p.get("type") is None]
    assert untyped == ["DDI-DrugBank.d236.s29.p0"]  # skipped by the reader: no class to learn
    assert len(ddi["xml_train"]) == 27792 - 1 and len(ddi["xml_test"]) == 5716
    positives = collections.Counter(p.get("type") for p in test_pairs if p.get("ddi") == "true")
    assert collections.Counter(e.label for e in ddi["xml_test"] if e.label != "DDI-false") == \
        {f"DDI-{t}": n for t, n in positives.items()}


def test_ddi_xml_conversion_reproduces_blue_test_csv(ddi):
    """Each of our 5,716 converted Test pairs is a row of BLUE's test.csv, id, text and label; BLUE's 45 other rows are
    one MedLine abstract that the released XML corpus lacks."""
    blue = ddi["splits"]["test"]
    assert len(blue) == 5761
    assert not collections.Counter(ddi["xml_test"]) - collections.Counter(blue)
    missing = collections.Counter(blue) - collections.Counter(ddi["xml_test"])
    assert sum(missing.values()) == 45
    assert {e.id.split(".s")[0] for e in missing} == {"DrugDDI.d21928724"}
    assert sum("@DRUG-DRUG$" in e.text for e in ddi["xml_test"]) == 7  # overlapping pairs, as BLUE marks them


def test_ddi_train_never_holds_a_dev_sentence(ddi):
    train, dev, xml_train = ddi["splits"]["train"], ddi["splits"]["dev"], ddi["xml_train"]
    dev_texts = {collapse(e.text) for e in dev}
    xml_texts = {collapse(e.text) for e in xml_train}
    assert all(text in xml_texts for text in dev_texts)  # every dev row is found in the XML Train folder
    assert not any(collapse(e.text) in dev_texts for e in train)
    sentence = lambda e: e.id.rsplit(".p", 1)[0]
    dev_sentences = {sentence(e) for e in xml_train if collapse(e.text) in dev_texts}
    assert len(dev_sentences) == 1016
    assert not any(sentence(e) in dev_sentences for e in train)  # not even another pair of a dev sentence
    assert len(train) == 20297 and len(xml_train) - len(train) == 7494
    assert set(train) <= set(xml_train)
    assert benchmarks.label_list(train) == ["DDI-advise", "DDI-effect", "DDI-false", "DDI-int", "DDI-mechanism"]


def test_missing_splits_are_one_clear_error(data_dir, tmp_path):
    with pytest.raises(InputError, match=r"chemprot: no train or test file.*chemprot-scibert.*72\.94") as error:
        benchmarks.task_splits("re", data_dir / "re" / "chemprot")
    assert "\n" not in str(error.value)
    (tmp_path / "train.txt").write_text("a O\n")
    with pytest.raises(InputError, match=r": no dev or test file"):
        benchmarks.task_splits("ner", tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        benchmarks.task_splits("ner", tmp_path / "absent")
    with pytest.raises(InputError, match="unknown task"):
        benchmarks.task_splits("parse", tmp_path)


# ----------------------------------------------------------------------------------------------------- small files
def raises_at(where, message):
    """pytest.raises(InputError) whose one-line message starts with `where: ` and contains `message`."""
    return pytest.raises(InputError, match=rf"^{re.escape(str(where))}: [^\n]*{re.escape(message)}[^\n]*$")


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_read_ner_layouts(tmp_path):
    path = write(tmp_path / "a.txt", "-DOCSTART- -X- -X- O\n\nIL-2 B-DNA\ngene\tI-DNA\r\n\n\n\nNaloxone I-Entity\n"
                                     "reverses O")  # TAB or space, CRLF, several blank lines, no final newline
    assert benchmarks.read_ner(path) == [(["IL-2", "gene"], ["B-DNA", "I-DNA"]), (["Naloxone", "reverses"], ["I-Entity", "O"])]
    assert benchmarks.read_ner(write(tmp_path / "bom.txt", "\ufeffa O\n"))[0].words == ["a"]
    assert benchmarks.read_ner(write(tmp_path / "nbsp.txt", "5\u00a0mg O\n"))[0].words == ["5\u00a0mg"]  # only space/TAB split
    sentences = benchmarks.read_ner(path)
    assert benchmarks.label_list(sentences) == ["O", "B-DNA", "I-DNA", "I-Entity"]


@pytest.mark.parametrize("text, line, message", [
    ("a O\nb\tc\tO\n", 2, "expected 2 columns"),     # 3 columns (MTL files are token<TAB>label)
    ("a O\n\nb c O\n", 3, "expected 2 columns"),
    ("a O\nlonely\n", 2, "expected 2 columns"),
    ("a O\nb B_Disease\n", 2, "tag 'B_Disease' is not O, B-<type> or I-<type>"),
    ("a O\nb E-Disease\n", 2, "is not O"),
    ("a O\nb B-\n", 2, "is not O"),
    (b"a O\nb\xff O\n", 2, "not UTF-8"),
])
def test_read_ner_rejects_malformed_lines(tmp_path, text, line, message):
    path = write(tmp_path / "bad.txt", text)
    with raises_at(f"{path}:{line}", message):
        benchmarks.read_ner(path)


@pytest.mark.parametrize("text, why", [("", "empty file"), ("\n\n", "only blank lines"), ("\ufeff \n", "only blank lines"),
                                       (" ", "only blank lines"),
                                       ("-DOCSTART- O\n\n", "only -DOCSTART- and blank lines")])
def test_read_ner_rejects_empty_files(tmp_path, text, why):
    path = write(tmp_path / "empty.txt", text)
    with raises_at(path, f"no sentences ({why})"):
        benchmarks.read_ner(path)


def test_read_re_layouts(tmp_path):
    tsv = write(tmp_path / "dev.csv", "\ufeffindex\tsentence\tlabel\r\nx.1\t\"A \"\"quoted\"\" @DRUG$\"\tDDI-int\r\n"
                                      "x.2\tSay \"no\" to @DRUG$.\tDDI-false\r\n")
    assert benchmarks.read_re(tsv) == [("x.1", 'A "quoted" @DRUG$', "DDI-int"), ("x.2", 'Say "no" to @DRUG$.', "DDI-false")]
    jsonl = write(tmp_path / "train.txt", '{"text": "<< a >> [[ b ]]", "label": "AGONIST", "metadata": []}\n\n'
                                          '{"text": "c", "label": "INHIBITOR", "metadata": []}\n')
    assert benchmarks.read_re(jsonl) == [("1", "<< a >> [[ b ]]", "AGONIST"), ("3", "c", "INHIBITOR")]
    assert benchmarks.label_list(benchmarks.read_re(jsonl)) == ["AGONIST", "INHIBITOR"]


HEADER = "index\tsentence\tlabel\n"


@pytest.mark.parametrize("text, line, message", [
    (HEADER + "a\tsentence\tfalse\nb\tsentence\n", 3, "expected 3 TAB-separated columns"),
    (HEADER + "a\tsentence\tfalse\textra\n", 2, "expected 3 TAB-separated columns"),
    (HEADER + "a\tsentence\t\n", 2, "bad label ''"),
    (HEADER + "a\tsentence\tCPR 3\n", 2, "bad label"),
    (HEADER + "a\t \tfalse\n", 2, "empty sentence"),
    ("\ufeffid\ttext\tlabel\na\tb\tc\n", 1, "expected the BLUE header"),
    ("a O\n", 1, "expected the BLUE header"),
    ('{"text": "a", "label": "X"}\n{"text": "b"\n', 2, "not a JSON object"),
    ('{"text": "a", "label": "X"}\n{"text": "b", "label": 3}\n', 2, "expected a JSON object with string fields"),
    ('{"text": "a", "label": ""}\n', 1, "bad label"),
    (b"index\tsentence\tlabel\na\tb\xe9\tfalse\n", 2, "not UTF-8"),
])
def test_read_re_rejects_malformed_rows(tmp_path, text, line, message):
    path = write(tmp_path / "bad.csv", text)
    with raises_at(f"{path}:{line}", message):
        benchmarks.read_re(path)


@pytest.mark.parametrize("text, why", [("", "(empty file)"), (HEADER, ""), ("\ufeff\n\n", "(only blank lines)"),
                                       ("\t", "(only blank lines)"),
                                       ("\ufeffindex\tsentence\tlabel\r\n\r\n", "")])
def test_read_re_rejects_empty_files(tmp_path, text, why):
    path = write(tmp_path / "empty.csv", text)
    with raises_at(path, "no examples " + why):
        benchmarks.read_re(path)


def test_unknown_relation_label_names_file_and_line(tmp_path):
    write(tmp_path / "train.csv", HEADER + "a\tx @DRUG$\tDDI-false\nb\ty @DRUG$\tDDI-int\n")
    write(tmp_path / "dev.csv", HEADER + "c\tz @DRUG$\tDDI-int\n")
    write(tmp_path / "test.csv", HEADER + "d\tz @DRUG$\tDDI-false\ne\tw @DRUG$\tDDI-advise\n")
    with raises_at(f"{tmp_path / 'test.csv'}:3", "unknown label 'DDI-advise'"):
        benchmarks.task_splits("re", tmp_path)
    with raises_at(f"{tmp_path / 'dev.csv'}:2", "unknown label 'DDI-int' (known: DDI-false)"):
        benchmarks.read_re(tmp_path / "dev.csv", labels={"DDI-false"})


def test_a_dev_tag_training_never_showed_is_named(tmp_path):
    """A benchmark folder's dev and test tags are checked against its training tags line by line, as RE's labels;
    splits given as examples (finetune(splits=...)) by check_labels, which names the split and every tag it lacks."""
    write(tmp_path / "train.tsv", "a\tB-X\nb\tO\n")
    write(tmp_path / "dev.tsv", "a\tO\n\nb\tI-Z\nc\tB-X\n")
    write(tmp_path / "test.tsv", "a\tO\n")
    with raises_at(f"{tmp_path / 'dev.tsv'}:3", "tag 'I-Z' is not among the labels trained on (B-X, O)"):
        benchmarks.task_splits("ner", tmp_path)
    write(tmp_path / "dev.tsv", "a\tB-X\n")
    splits = benchmarks.task_splits("ner", tmp_path)
    splits["dev"] = [benchmarks.NerSentence(["a", "b", "c"], ["B-Y", "I-Z", "B-X"])]
    labels = benchmarks.label_list(splits["train"])
    assert labels == ["O", "B-X"]
    with pytest.raises(InputError, match=r"^where: label\(s\) B-Y, I-Z not among the training labels \(O, B-X\)$"):
        benchmarks.check_labels(splits["dev"], labels, "where")
    benchmarks.check_labels(splits["train"], labels, "where")  # its own labels
    question = benchmarks.QAExample("q", "Which?", "It.", [("It", 0)])
    assert benchmarks.label_list([question]) == [] and benchmarks.check_labels([question], [], "where") is None


def test_ner_splits_accept_mtl_devel_and_reject_two_dev_files(tmp_path):
    for name in ("train.tsv", "devel.tsv", "test.tsv"):
        write(tmp_path / name, "a\tB-X\nb\tI-X\n")
    assert {k: len(v) for k, v in benchmarks.task_splits("ner", tmp_path).items()} == {"train": 1, "dev": 1, "test": 1}
    write(tmp_path / "dev.txt", "a O\n")
    with pytest.raises(InputError, match=r"more than one dev file"):
        benchmarks.task_splits("ner", tmp_path)


# -------------------------------------------------------------------------------------------------------- DDI XML
def ddi_document(sentences):
    return '<?xml version="1.0" encoding="UTF-8"?>\n<document id="DDI-DrugBank.d9">\n' + sentences + "</document>\n"


def test_ddi_conversion_rules(tmp_path):
    text = "Aspirin and nonheme or heme iron alter warfarin-like drugs. "
    xml = ddi_document(
        f'<sentence id="d9.s0" text="{text}">\n'
        '<entity id="e0" charOffset="0-6" type="drug" text="Aspirin"/>\n'
        '<entity id="e1" charOffset="12-18;28-31" type="drug" text="nonheme iron"/>\n'  # discontinuous
        '<entity id="e2" charOffset="23-31" type="drug" text="heme iron"/>\n'
        '<entity id="e3" charOffset="39-46" type="drug" text="warfarin"/>\n'
        '<entity id="e4" charOffset="39-57" type="group" text="warfarin-like drugs"/>\n'
        '<pair id="d9.s0.p0" e1="e0" e2="e1" ddi="true" type="effect"/>\n'
        '<pair id="d9.s0.p1" e1="e3" e2="e0" ddi="false"/>\n'
        '<pair id="d9.s0.p2" e1="e1" e2="e2" ddi="false"/>\n'
        '<pair id="d9.s0.p3" e1="e3" e2="e4" ddi="true" type="int"/>\n'
        '<pair id="d9.s0.p4" e1="e0" e2="e2" ddi="true"/>\n'  # true without a type: skipped
        '</sentence>\n')
    write(tmp_path / "doc.xml", xml)
    assert benchmarks.read_ddi_xml(tmp_path) == [
        ("d9.s0.p0", "@DRUG$ and @DRUG$ alter warfarin-like drugs.", "DDI-effect"),
        ("d9.s0.p1", "@DRUG$ and nonheme or heme iron alter @DRUG$-like drugs.", "DDI-false"),
        ("d9.s0.p2", "Aspirin and @DRUG-DRUG$ alter warfarin-like drugs.", "DDI-false"),
        ("d9.s0.p3", "Aspirin and nonheme or heme iron alter @DRUG-DRUG$.", "DDI-int")]


@pytest.mark.parametrize("body, line, message", [
    ('<sentence id="s" text="a b">\n<entity id="e0" charOffset="0-0" text="a"/>\n'
     '<entity id="e1" charOffset="2" text="b"/>\n</sentence>\n', 5, "bad charOffset '2'"),
    ('<sentence id="s" text="a b">\n<entity id="e0" charOffset="0-0" text="a"/>\n'
     '<entity id="e1" charOffset="2-9" text="b"/>\n<pair id="p" e1="e0" e2="e1" ddi="false"/>\n</sentence>\n', 5,
     "charOffset 2-9 is beyond the sentence"),
    ('<sentence id="s" text="a b">\n<entity id="e0" charOffset="0-0" text="a"/>\n'
     '<entity id="e1" charOffset="2-2" text="b"/>\n<pair id="p" e1="e0" e2="e1" ddi="true" type="synergy"/>\n'
     '</sentence>\n', 6, "pair p: unknown type 'synergy'"),
    ('<sentence id="s" text="a b">\n<entity id="e0" charOffset="0-0" text="a"/>\n'
     '<pair id="p" e1="e0" e2="e9" ddi="false"/>\n</sentence>\n', 5, "pair p names an entity not in its sentence"),
    ('<sentence id="s" text="a b">\n<entity id="e0" charOffset="0-0" text="a"/>\n'
     '<pair id="p" e1="e0" e2="e0" ddi="maybe"/>\n</sentence>\n', 5, "pair p: ddi='maybe'"),
    ('<sentence id="s" text="a < b"/>\n', 3, "not well-formed XML"),
    ('<entity id="e0" charOffset="0-0" text="a"/>\n', 3, "<entity> outside a <sentence>"),
])
def test_ddi_xml_errors_name_file_and_line(tmp_path, body, line, message):
    path = write(tmp_path / "doc.xml", ddi_document(body))
    with raises_at(f"{path}:{line}", message):
        benchmarks.read_ddi_xml(tmp_path)


def test_ddi_xml_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no DDI-2013 XML files"):
        benchmarks.read_ddi_xml(tmp_path)
