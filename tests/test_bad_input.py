"""Bad input never gives a traceback or a silently wrong run (issue 13).

Malformed inputs of every kind the pre-training commands read -- flags, vocabularies, corpora of each format, shards,
run folders, checkpoints -- each built from a real file of ../shared/data with one fault put in. Every one must end in
exit code 2 and exactly one line on stderr, `error: <file>[:<line>]: what is wrong` (for a flag: the flag), with no
traceback, and must leave nothing that a later run would trust (no index.json, no vocab.txt, no export). Then the
faults of processes: a killed `prepare` takes its workers with it; Ctrl-C / SIGTERM stop after the step with a
checkpoint; SIGKILL in the middle of a checkpoint write resumes to a run equal to an uninterrupted one.

Most cases run the CLI in-process (train.main) to save the interpreter's start-up; signals need a subprocess.
"""
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import data
import runtime
import pretrain
import train

REPO = Path(__file__).resolve().parent.parent
PROGRESS = re.compile(r"\r|\d+%\||it/s|B/s|sent/s")  # tqdm's bars share stderr with the error line


def run(capsys, *args):
    """train.main in this process -> (exit code, stdout, the stderr lines that are not progress bars)."""
    capsys.readouterr()
    code = train.main([str(a) for a in args])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip() and not PROGRESS.search(line)]
    return code, captured.out, lines, captured.err


def assert_one_line_error(result, *names, pattern=None):
    code, _, lines, err = result
    assert "Traceback" not in err, err[-3000:]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    if pattern:
        assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def hoc(data_dir):
    return sorted((data_dir / "pretrain" / "hoc" / "text").glob("*.txt"))


@pytest.fixture(scope="module")
def good_text(hoc):
    return hoc[0]


@pytest.fixture(scope="module")
def shards(hoc, scivocab, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    data.build_shards(hoc[:60], scivocab, out, max_length=64, processes=1)
    return out


def run_args(out, scivocab, shards, *extra):
    return ["pretrain", "--preset", "tiny", "--vocab", scivocab, "--shards", shards, "--out", out, "--device", "cpu",
            *extra]


# ------------------------------------------------------------------------------------------------------------- flags
FLAG_CASES = [  # (command, flag, value): each outside the flag's allowed range, or not a number at all
    *[("pretrain", flag, value) for flag in ("--batch-size", "--accumulation-steps", "--log-every", "--save-every",
                                             "--train-steps", "--keep-checkpoints", "--processes")
      for value in ("0", "-1", "x")],
    *[("pretrain", "--mask-prob", value) for value in ("0", "1", "1.5", "-0.1", "nan")],
    *[("pretrain", "--max-length", value) for value in ("0", "4", "513", "100000")],
    *[("pretrain", "--learning-rate", value) for value in ("0", "-1e-4", "inf", "nan")],
    *[("pretrain", flag, "-1") for flag in ("--warmup-steps", "--weight-decay", "--seed", "--gen-weight",
                                            "--disc-weight")],
    ("pretrain", "--adam-beta1", "1"), ("pretrain", "--adam-beta2", "-0.5"), ("pretrain", "--adam-epsilon", "0"),
    ("pretrain", "--clip-norm", "0"), ("pretrain", "--generator-size", "0"), ("pretrain", "--generator-size", "3"), ("pretrain", "--max-predictions", "0"),
    *[("pretrain", "--vocab-size", value) for value in ("0", "5", "-3")],
    *[(command, "--seed", str(2 ** 31)) for command in ("pretrain", "prepare")],  # torch's seeds overflowed at 2^63
    *[("prepare", "--max-length", value) for value in ("3", "513")], ("prepare", "--processes", "0"),
    *[("vocab", "--vocab-size", value) for value in ("0", "2")],
]


@pytest.mark.parametrize("command, flag, value", FLAG_CASES, ids=[" ".join(c) for c in FLAG_CASES])
def test_a_flag_out_of_range_is_refused_while_parsing(command, flag, value, tmp_path, capsys):
    required = {"pretrain": [], "prepare": ["--corpus", "c", "--vocab", "v", "--out", tmp_path / "o"],
                "vocab": ["--corpus", "c", "--out", tmp_path / "v.txt"]}[command]
    line = assert_one_line_error(run(capsys, command, *required, f"{flag}={value}"), f"argument {flag}")
    assert "allowed" in line or "not a" in line  # the message says what is allowed
    assert not list(tmp_path.iterdir())


def test_a_flag_another_command_takes_points_at_this_commands_help(tmp_path, capsys):
    """reproduce has no --learning-rate (Table 5 is its point): the line points at `train.py reproduce --help`."""
    line = assert_one_line_error(run(capsys, "reproduce", "--init", "m", "--out", tmp_path / "r", "--learning-rate", 1),
                                 "unrecognized arguments: --learning-rate 1")
    assert line.endswith("(see: train.py reproduce --help)") and not list(tmp_path.iterdir())


EMPTY_PATH_CASES = [("pretrain", "--out", ""), ("pretrain", "--corpus", " "),
                    ("export", "--checkpoint", "c.pt", "--out", ""),
                    ("finetune", "--task", "ner", "--data", "d", "--init", "", "--out", "o"),
                    ("evaluate", "--model", "", "--data", "d"), ("predict", "--model", "m", ""),
                    ("reproduce", "--init", "m", "--out", "r", "--data-root", ""),
                    ("corpus", "--pubmed", "", "--out", "c.txt")]


def test_vocab_out_is_never_its_own_record(good_text, tmp_path, capsys):
    """vocab --out v.json: the record of what it was trained on (X.json beside X.txt) would overwrite it."""
    line = assert_one_line_error(run(capsys, "vocab", "--corpus", good_text, "--out", tmp_path / "v.json"),
                                 tmp_path / "v.json")
    assert "a .json name is the vocabulary's record" in line and not list(tmp_path.iterdir())


def test_file_outputs_never_replace_their_inputs(good_text, tmp_path, capsys):
    corpus = tmp_path / "pq.txt"
    corpus.write_bytes(good_text.read_bytes())
    other = tmp_path / "pq.json"  # e.g. the PubMedQA file the user keeps beside it: not a vocabulary's record
    other.write_text('{"12345": {"QUESTION": "?"}}')
    before = {path: path.read_bytes() for path in (corpus, other)}
    line = assert_one_line_error(run(capsys, "vocab", "--corpus", corpus, "--out", corpus), corpus)
    assert line.endswith("is also an input; pass another --out")
    line = assert_one_line_error(run(capsys, "vocab", "--corpus", tmp_path, "--out", tmp_path / "pq.txt"), corpus)
    assert "is also an input" in line  # named through its folder
    line = assert_one_line_error(run(capsys, "vocab", "--corpus", good_text, "--out", corpus), other)
    assert "exists and is not a vocabulary's record" in line
    xml = tmp_path / "b.xml"
    xml.write_text("<PubmedArticleSet/>")
    assert_one_line_error(run(capsys, "corpus", "--pubmed", xml, "--out", xml), xml)
    assert {path: path.read_bytes() for path in (corpus, other)} == before and xml.read_text() == "<PubmedArticleSet/>"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["b.xml", "pq.json", "pq.txt"]


@pytest.mark.parametrize("case", EMPTY_PATH_CASES, ids=[" ".join(c) for c in EMPTY_PATH_CASES])
def test_an_empty_path_is_refused_while_parsing(case, tmp_path, capsys, monkeypatch):
    """`--out "$OUT"` with OUT unset: "" is the current folder to pathlib, and pretrain wrote a run into it."""
    monkeypatch.chdir(tmp_path)
    line = assert_one_line_error(run(capsys, *case), "an empty path (an unset shell variable?)")
    assert line.endswith(f"(see: train.py {case[0]} --help)") and not list(tmp_path.iterdir())


CROSS_FLAG_CASES = [  # valid one by one, wrong together: found before anything is read or written
    (["--max-length", "64", "--max-predictions", "65"], "--max-predictions 65"),
    (["--batch-size", "10", "--accumulation-steps", "3"], "--batch-size 10"),
    (["--max-length", "5", "--mask-prob", "0.1"], "--max-length 5"),
]


@pytest.mark.parametrize("flags, name", CROSS_FLAG_CASES, ids=[c[1] for c in CROSS_FLAG_CASES])
def test_flags_that_contradict_each_other(flags, name, tmp_path, capsys):
    assert_one_line_error(run(capsys, "pretrain", "--preset", "tiny", "--out", tmp_path / "run", *flags), name)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------------ vocabularies
SPECIALS = b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"
VOCAB_CASES = {  # name -> (content or a callable making the path, expected message pattern)
    "missing": (None, "not found"),
    "folder": ("folder", "folder"),
    "empty": (b"", "empty"),
    "no [MASK]": (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nword\n", r"\[MASK\]"),
    "duplicate": (SPECIALS + b"word\nword\n", r":7: duplicate"),
    "latin-1 byte": (SPECIALS + b"w\xe9rd\n", r":6: not UTF-8"),
    "trailing space": (SPECIALS + b"the \nof\n", r":6: .*whitespace"),
    "leading space": (SPECIALS + b"the\n of\n", r":7: .*whitespace"),
    "trailing tab": (SPECIALS + b"the\t\n", r":6: .*whitespace"),
    "every entry padded": (b"".join(t + b" \n" for t in SPECIALS.split()), r":1: .*whitespace"),
    "byte-order mark": (b"\xef\xbb\xbf" + SPECIALS, r":1: starts with a byte-order mark"),
}


def make_vocab(tmp_path, content):
    vocab = tmp_path / "vocab.txt"
    if content == "folder":
        vocab.mkdir()
    elif content is not None:
        vocab.write_bytes(content)
    return vocab


@pytest.mark.parametrize("command", ["prepare", "pretrain", "export"])
@pytest.mark.parametrize("case", VOCAB_CASES)
def test_a_bad_vocabulary(case, command, tmp_path, good_text, capsys, request):
    content, pattern = VOCAB_CASES[case]
    vocab = make_vocab(tmp_path, content)
    out = tmp_path / "out"
    if command == "export":
        args = ["export", "--checkpoint", request.getfixturevalue("trained") / "checkpoints" / "step_0000004.pt",
                "--out", out, "--vocab", vocab]
        assert_one_line_error(run(capsys, *args), vocab, pattern=pattern)
        assert not out.exists()
        return
    args = [command, "--corpus", good_text, "--vocab", vocab, "--out", out]
    if command == "pretrain":
        args += ["--preset", "tiny"]
    assert_one_line_error(run(capsys, *args), vocab, pattern=pattern)
    assert not out.exists() or not (out / "index.json").exists() and not (out / "shards" / "index.json").exists()


def test_a_corpus_on_one_line_is_one_example_and_says_why(tmp_path, good_text, scivocab, capsys):
    one_line = tmp_path / "one-line.txt"  # a whole corpus with its line ends (and sentence ends) lost: one sentence
    one_line.write_text(" ".join(good_text.read_text().replace(".", " ").split()) + "\n")
    line = assert_one_line_error(run(capsys, "pretrain", "--preset", "tiny", "--corpus", one_line, "--vocab", scivocab,
                                     "--out", tmp_path / "run", "--device", "cpu", "--batch-size", 4),
                                 tmp_path / "run" / "shards")
    assert ": 1 example, fewer than one batch of 4 (ELECTRA's packing never splits a sentence across examples" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_good_vocabulary_with_windows_line_ends_is_read(tmp_path, scivocab):
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(scivocab.read_bytes().replace(b"\n", b"\r\n"))
    assert data.WordPieceTokenizer(vocab).ids == data.WordPieceTokenizer(scivocab).ids


# ----------------------------------------------------------------------------------------------------------- corpora
def pubtator(data_dir, documents=2):
    lines = (data_dir / "pretrain" / "biored" / "Train.PubTator").read_text().splitlines()
    blanks = [i for i, line in enumerate(lines) if not line.strip()]
    return lines[:blanks[documents - 1] + 1]


def token_tag(data_dir):
    return (data_dir / "pretrain" / "mtl-bioinformatics-2016-iob" / "BC2GM-IOB" / "devel.tsv").read_text(
        ).splitlines()[:60]


def pubmedqa(data_dir):
    records = json.loads((data_dir / "pretrain" / "pubmedqa-pqal" / "ori_pqal.json").read_text())
    return dict(list(records.items())[:2])


def with_line(lines, number, text):  # replace line `number` (1-based)
    return "\n".join(lines[:number - 1] + [text] + lines[number:]) + "\n"


def corpus_cases(data_dir):
    """name -> (file name, bytes, expected pattern). Each is a real file with one fault."""
    pt, tt, qa = pubtator(data_dir), token_tag(data_dir), pubmedqa(data_dir)
    first = next(iter(qa))

    def qa_with(**fields):
        return json.dumps({**qa, first: {**qa[first], **fields}}).encode()

    cases = {
        "pubtator: a garbage line": ("a.PubTator", with_line(pt, 5, "this line is not PubTator"), r":5: not a PubTator"),
        "pubtator: broken first line": ("a.txt", with_line(pt, 1, pt[0].replace("|t|", "|t ")), r":1: not a PubTator"),
        "pubtator: broken abstract line": ("a.txt", with_line(pt, 2, pt[1].replace("|a|", "a|")), r":2: not a PubTator"),
        "pubtator: annotation of another PMID": ("a.txt", with_line(pt, 4, "999\t1\t5\tx\tGene\t1"), r":4: .*PMID 999"),
        "pubtator: annotation before its title": ("a.txt", "\n".join([pt[2]] + pt) + "\n", r":1: .*annotation"),
        "pubtator: a line cut short": ("a.txt", with_line(pt, 3, pt[2].split("\t")[0]), r":3: not a PubTator"),
        "token-tag: 3 columns": ("a.tsv", "\n".join(f"{line}\tNN" if line else line for line in tt) + "\n",
                                 r":1: .*found 3 column"),
        "token-tag: CoNLL token POS tag": ("a.tsv", "\n".join(line.replace("\t", "\tNN\t") for line in tt) + "\n",
                                           r":1: .*found 3 column"),
        "token-tag: 3 columns on one line": ("a.tsv", with_line(tt, 7, tt[6] + "\tNN"), r":7: .*found 3 column"),
        "token-tag: space separated, 3 columns": ("a.txt", "\n".join(line.replace("\t", " NN ") for line in tt) + "\n",
                                                  r":1: .*found 3 column"),
        "token-tag: a missing tag": ("a.tsv", with_line(tt, 9, tt[8].split("\t")[0]), r":9: .*found 1 column"),
        "token-tag: not a tag": ("a.tsv", with_line(tt, 4, tt[3].split("\t")[0] + "\tX-Gene"), r":4: .*tag"),
        "tokens: two columns": ("a.tokens", "Triple\ntherapy\tNN\nregimens\n", r":2: .*one token per line"),
        "pubmedqa: CONTEXTS a number": ("a.json", qa_with(CONTEXTS=3), rf"record {first}: CONTEXTS is int"),
        "pubmedqa: CONTEXTS a string": ("a.json", qa_with(CONTEXTS="text"), rf"record {first}: CONTEXTS is str"),
        "pubmedqa: CONTEXTS holds a number": ("a.json", qa_with(CONTEXTS=["a.", 5]), rf"record {first}: .*non-string"),
        "pubmedqa: no CONTEXTS": ("a.json", json.dumps({first: {"QUESTION": "q?"}}).encode(), rf"record {first}"),
        "pubmedqa: QUESTION a list": ("a.json", qa_with(QUESTION=["q"]), rf"record {first}: QUESTION is list"),
        "pubmedqa: a list, not a dict": ("a.json", json.dumps(list(qa.values())).encode(), "PubMedQA layout"),
        "pubmedqa: cut short": ("a.json", json.dumps(qa, indent=1).encode()[:500], r"a.json:\d+: not valid JSON"),
        "pubmedqa: latin-1": ("a.json", json.dumps(qa).encode().replace(b"The", b"Th\xe9", 1), "not UTF-8"),
        "text: latin-1 byte": ("a.txt", b"A first sentence.\n\nA second \xe9 one.\n", r":3: not UTF-8"),
        "text: NUL bytes": ("a.txt", b"A first sentence.\nBinary\x00\x01\x02 data.\n", r":2: .*NUL"),
        "text: empty file": ("a.txt", b"", "no text to pre-train on|no words"),
        "text: only blank lines": ("a.txt", b"\n\n  \n\t\n", "no text to pre-train on|no words"),
        "PubMed XML": ("pubmed25n0001.xml", b'<?xml version="1.0"?>\n<PubmedArticleSet>\n</PubmedArticleSet>\n',
                       r"xml: XML, not text \(PubMed's XML files become the pre-training text with `train.py corpus`\)"),
        "PubMed XML, gzip": ("pubmed25n0001.xml.gz", gzip.compress(b"<PubmedArticleSet/>"), r"gz: gzip-compressed, not"),
    }
    return {name: (file, content.encode() if isinstance(content, str) else content, pattern)
            for name, (file, content, pattern) in cases.items()}


CORPUS_CASE_NAMES = [
    "pubtator: a garbage line", "pubtator: broken first line", "pubtator: broken abstract line",
    "pubtator: annotation of another PMID", "pubtator: annotation before its title", "pubtator: a line cut short",
    "token-tag: 3 columns", "token-tag: CoNLL token POS tag", "token-tag: 3 columns on one line", "token-tag: space separated, 3 columns",
    "token-tag: a missing tag", "token-tag: not a tag", "tokens: two columns", "pubmedqa: CONTEXTS a number",
    "pubmedqa: CONTEXTS a string", "pubmedqa: CONTEXTS holds a number", "pubmedqa: no CONTEXTS",
    "pubmedqa: QUESTION a list", "pubmedqa: a list, not a dict", "pubmedqa: cut short", "pubmedqa: latin-1",
    "text: latin-1 byte", "text: NUL bytes", "text: empty file", "text: only blank lines", "PubMed XML",
    "PubMed XML, gzip"]


@pytest.mark.parametrize("command", ["prepare", "vocab"])
@pytest.mark.parametrize("case", CORPUS_CASE_NAMES)
def test_a_bad_corpus_file(case, command, data_dir, scivocab, tmp_path, capsys):
    name, content, pattern = corpus_cases(data_dir)[case]
    folder = tmp_path / "corpus"
    folder.mkdir()
    corpus = folder / name
    corpus.write_bytes(content)
    out = tmp_path / ("shards" if command == "prepare" else "vocab.txt")
    args = (["prepare", "--corpus", folder, "--vocab", scivocab, "--out", out, "--processes", "1"]
            if command == "prepare" else ["vocab", "--corpus", folder, "--out", out, "--vocab-size", "200"])
    names = [corpus] if "no text" not in pattern else [folder]
    line = assert_one_line_error(run(capsys, *args), *names, pattern=pattern)
    assert line.count(str(names[0])) == 1  # named once (vocab once said "FILE: FILE:6: not UTF-8")
    assert not out.exists()  # prepare: no shard cut short (.partial), and no empty folder, left behind


def test_prepare_says_what_becomes_of_an_earlier_build(hoc, scivocab, tmp_path, capsys):
    """Run again on the same --out: kept (said so), or built again with the reason, as pretrain says it."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in hoc[:3]:
        shutil.copyfile(path, corpus / path.name)
    files, out = sorted(corpus.iterdir()), tmp_path / "shards"
    args = ["--vocab", scivocab, "--out", out, "--processes", "1", "--max-length", 64]
    code, first, _, err = run(capsys, "prepare", "--corpus", *files, *args)
    assert code == 0 and len(first.splitlines()) == 1 and first.endswith(f"-> {out}\n"), err[-2000:]
    kept = f"{out}: 1 of 1 shards already built from this corpus with these settings, reused\n{first}"
    assert run(capsys, "prepare", "--corpus", *files, *args)[1] == kept
    assert run(capsys, "prepare", "--corpus", *files[::-1], *args)[1] == kept  # the same files, named in another order
    for flag, value, why in (("--seed", 7, "built with --seed 12345, not 7"),
                             ("--max-length", 32, "built for --max-length 64, not 32")):
        code, said, _, err = run(capsys, "prepare", "--corpus", *files, *args, flag, value)  # the last one counts
        assert code == 0 and said.startswith(f"{out}: {why}: building the shards again\n"), (said, err[-2000:])
        assert "reused" not in said
        run(capsys, "prepare", "--corpus", *files, *args)  # back to the first build
    with open(files[0], "a") as text:
        text.write("One more sentence about a tumour.\n")
    said = run(capsys, "prepare", "--corpus", *files, *args)[1]
    assert said.startswith(f"{out}: built from other corpus files (1 changed since): building the shards again\n")
    (out / "index.json").unlink()  # as a build stopped before its end leaves it; then run with another seed
    said = run(capsys, "prepare", "--corpus", *files, *args, "--seed", 7)[1]
    assert said.startswith(f"{out}: a stopped build's shards cannot be reused (another corpus or settings, or "
                           "damaged): building them again\n")
    # a pre-training run's own shards: repaired in place (a damaged shard is built again, byte for byte), never
    # replaced by another build under its checkpoints; nothing goes into a run or model folder
    run(capsys, "prepare", "--corpus", *files, *args, "--seed", 7)
    run_folder = tmp_path / "run"
    (run_folder / "checkpoints").mkdir(parents=True)
    (run_folder / "checkpoints" / "step_0000004.pt").write_bytes(b"trained on the shards")
    (run_folder / "config.json").write_text(json.dumps({"pretrain": {}}))
    shutil.copytree(out, run_folder / "shards")
    good = (run_folder / "shards" / "shard_00000.bin").read_bytes()
    (run_folder / "shards" / "shard_00000.bin").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit flipped
    code, said, _, err = run(capsys, "prepare", "--corpus", *files, *args[:2], "--out", run_folder / "shards",
                             *args[4:], "--seed", 7)
    assert code == 0 and said.startswith(f"{run_folder / 'shards'}: shard_00000.bin: its SHA-1 differs"), err[-2000:]
    assert (run_folder / "shards" / "shard_00000.bin").read_bytes() == good
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"architectures": ["ElectraForPreTraining"]}))
    for where, said in ((run_folder / "shards", f"{run_folder / 'shards'}: built with --seed 7, not 12345, and the "
                                                f"checkpoints in {run_folder / 'checkpoints'} were trained on them"),
                        (run_folder / "vocab", f"{run_folder / 'vocab'}: inside a pre-training run ({run_folder})"),
                        (run_folder, f"{run_folder}: holds a pre-training run, not packed shards"),
                        (tmp_path / "model", f"{tmp_path / 'model'}: holds a model directory, not packed shards")):
        line = assert_one_line_error(run(capsys, "prepare", "--corpus", *files, *args[:2], "--out", where, *args[4:]),
                                     where)
        assert line.startswith(f"error: {said}"), line
    assert (run_folder / "shards" / "shard_00000.bin").read_bytes() == good and not (run_folder / "vocab").exists()


def test_the_good_versions_of_those_files_are_read(data_dir, tmp_path):
    """The control: the same real files without the fault read without an error, in the format they claim."""
    files = {"a.PubTator": "\n".join(pubtator(data_dir)) + "\n", "b.tsv": "\n".join(token_tag(data_dir)) + "\n",
             "c.json": json.dumps(pubmedqa(data_dir)), "d.tokens": "Triple\ntherapy\nregimens\n.\n"}
    formats = {}
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        formats[name] = data.file_format(path, text[:8192])
        assert list(data.read_documents(path)), name
    assert formats == {"a.PubTator": "pubtator", "b.tsv": "token-tag", "c.json": "pubmedqa-json",
                       "d.tokens": "token-per-line"}


CORPUS_PATH_CASES = ["missing file", "empty folder", "folder of documentation only"]


@pytest.mark.parametrize("command", ["prepare", "vocab", "pretrain"])
@pytest.mark.parametrize("case", CORPUS_PATH_CASES)
def test_a_corpus_path_with_no_text(case, command, scivocab, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    if case != "missing file":
        corpus.mkdir()
    if case == "folder of documentation only":
        (corpus / "README.md").write_text("# about\n")
    out = tmp_path / "out"
    args = {"prepare": ["prepare", "--corpus", corpus, "--vocab", scivocab, "--out", out],
            "vocab": ["vocab", "--corpus", corpus, "--out", out / "vocab.txt"],
            "pretrain": ["pretrain", "--preset", "tiny", "--corpus", corpus, "--out", out]}[command]
    assert_one_line_error(run(capsys, *args), corpus)
    assert not list(out.rglob("index.json")) and not list(out.rglob("vocab.txt"))


def test_vocab_reports_the_size_it_really_wrote_into_a_new_folder(good_text, tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "vocab.txt"  # the folder does not exist yet
    code, stdout, _, _ = run(capsys, "vocab", "--corpus", good_text, "--out", out, "--vocab-size", "5000")
    written = len(out.read_text(encoding="utf-8").splitlines())
    assert code == 0 and written < 5000 and f"wrote {written} tokens" in stdout


def test_a_vocab_size_below_the_alphabet_names_the_minimum(good_text, tmp_path, capsys):
    line = assert_one_line_error(run(capsys, "vocab", "--corpus", good_text, "--out", tmp_path / "v.txt",
                                     "--vocab-size", "20"), good_text, pattern=r"use at least \d+")
    assert not (tmp_path / "v.txt").exists(), line


# ------------------------------------------------------------------------------------------------------------ shards
def damage_shards(shards, tmp_path, case):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    first = copy / "shard_00000.bin"
    index = copy / "index.json"
    if case == "truncated .bin":
        first.write_bytes(first.read_bytes()[:-128])
    elif case == "missing .bin":
        first.unlink()
    elif case == "zero-filled .bin":
        first.write_bytes(bytes(first.stat().st_size))
    elif case == "one byte changed":
        raw = bytearray(first.read_bytes())
        raw[1000] ^= 0xFF
        first.write_bytes(bytes(raw))
    elif case == "index.json cut short":
        index.write_text(index.read_text()[:100])
    elif case == "index.json empty":
        index.write_text("")
    elif case == "index.json missing":
        index.unlink()
    elif case == "index.json of an older version":
        old = json.loads(index.read_text())
        old["shards"] = [{"file": s["file"], "examples": s["examples"]} for s in old["shards"]]
        index.write_text(json.dumps(old))
    elif case == "index.json a list":
        index.write_text("[]")
    return copy


SHARD_CASES = ["truncated .bin", "missing .bin", "zero-filled .bin", "one byte changed", "index.json cut short",
               "index.json empty", "index.json missing", "index.json of an older version", "index.json a list"]


@pytest.mark.parametrize("case", SHARD_CASES)
def test_damaged_shards_are_never_trained_on(case, shards, scivocab, tmp_path, capsys):
    damaged = damage_shards(shards, tmp_path, case)
    out = tmp_path / "run"
    assert_one_line_error(run(capsys, *run_args(out, scivocab, damaged, "--train-steps", "1")), damaged)
    assert not (out / "checkpoints").exists()
    with pytest.raises(data.InputError, match=re.escape(str(damaged))):  # the loader checks them too
        data.PretrainingData(damaged, 0, 3)


@pytest.mark.parametrize("case", ["truncated .bin", "one byte changed", "index.json cut short"])
def test_prepare_rebuilds_a_damaged_build_and_says_so(case, shards, hoc, scivocab, tmp_path, capsys):
    damaged = damage_shards(shards, tmp_path, case)
    code, stdout, _, _ = run(capsys, "prepare", "--corpus", *hoc[:60], "--vocab", scivocab, "--out", damaged,
                             "--max-length", "64", "--processes", "1", "--seed", "12345")
    assert code == 0
    if "bin" in case or "byte" in case:
        assert "shard_00000.bin" in stdout and "building it again" in stdout
    assert data.shards_problem(damaged, scivocab, 64) is None
    assert json.loads((damaged / "index.json").read_text())["shards"] == json.loads(
        (shards / "index.json").read_text())["shards"]  # the same build, bit for bit (sizes and SHA-1s)


def test_shards_of_another_vocabulary_or_length_are_refused(shards, scivocab, bert_vocab, tmp_path, capsys):
    line = assert_one_line_error(run(capsys, *run_args(tmp_path / "a", bert_vocab, shards)), shards)
    assert "another vocabulary" in line
    line = assert_one_line_error(run(capsys, *run_args(tmp_path / "b", scivocab, shards, "--max-length", "128")),
                                 shards)
    assert "max-length 64" in line


def test_the_index_records_its_sources_and_a_new_corpus_is_a_rebuild(shards, hoc, scivocab):
    index = json.loads((shards / "index.json").read_text())
    assert [s["path"] for s in index["sources"]] == [str(p.resolve()) for p in hoc[:60]]
    assert all(s["bytes"] == Path(s["path"]).stat().st_size for s in index["sources"])
    assert data.shards_problem(shards, scivocab, 64, hoc[:60], False) is None
    assert data.shards_problem(shards, scivocab, 64, hoc[1:61], False) == "built from other corpus files (1 added, " \
        "1 removed since)"
    assert data.shards_problem(shards, scivocab, 64, hoc[59::-1], False) is None  # the same files in another order


def test_pretrain_with_a_new_corpus_into_an_old_folder_rebuilds_out_loud(hoc, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["pretrain", "--preset", "tiny", "--out", out, "--vocab-size", "600", "--train-steps", "1",
              "--processes", "1", "--batch-size", "2"]
    assert run(capsys, *common, "--corpus", *hoc[:20])[0] == 0
    old_vocab = (out / "vocab.txt").read_text()
    # the checkpoints were trained with that vocabulary: it is not replaced under them
    line = assert_one_line_error(run(capsys, *common, "--corpus", *hoc[20:40], "--resume"), out / "vocab.txt")
    assert "trained on other corpus files" in line and (out / "vocab.txt").read_text() == old_vocab
    # a fresh folder with the old shards' folder name: the vocabulary and the shards are rebuilt, said out loud
    shutil.rmtree(out / "checkpoints")
    code, stdout, _, _ = run(capsys, *common, "--corpus", *hoc[20:40])
    assert code == 0 and "vocab.txt: trained on other corpus files" in stdout and "training it again" in stdout
    assert "building the shards again" in stdout and (out / "vocab.txt").read_text() != old_vocab
    index = json.loads((out / "shards" / "index.json").read_text())
    assert [s["path"] for s in index["sources"]] == [str(p.resolve()) for p in hoc[20:40]]


def test_a_leftover_vocab_of_a_stopped_run_is_not_reused(hoc, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")  # what a failed run once left
    (tmp_path / "empty").mkdir()
    line = assert_one_line_error(run(capsys, "pretrain", "--preset", "tiny", "--out", out, "--shards",
                                     tmp_path / "empty"), out / "vocab.txt")
    assert "no record" in line
    code, stdout, _, _ = run(capsys, "pretrain", "--preset", "tiny", "--out", out, "--corpus", *hoc[:20],
                             "--vocab-size", "600", "--train-steps", "1", "--processes", "1", "--batch-size", "2")
    assert code == 0 and "training it again" in stdout
    assert len((out / "vocab.txt").read_text().splitlines()) > 100
    # edited since (two lines swapped): said so, and never trained again under the run's checkpoints
    tokens = (out / "vocab.txt").read_text().splitlines()
    tokens[100], tokens[101] = tokens[101], tokens[100]
    (out / "vocab.txt").write_text("\n".join(tokens) + "\n")
    for corpus in ([], ["--corpus", *hoc[:20]]):
        line = assert_one_line_error(run(capsys, "pretrain", "--preset", "tiny", "--out", out, "--resume", *corpus,
                                         "--vocab-size", "600", "--train-steps", "2", "--batch-size", "2"),
                                     out / "vocab.txt")
        assert "changed since its record (vocab.json) was written, and the checkpoints in " in line
        assert line.endswith("were trained with it; put back the one they were trained with, or another --out")


FILE_OUT = ("vocab", "corpus")  # --out names a file; the other five commands' --out is a folder
OUT_CASES = [(command, "folder" if command in FILE_OUT else "file") for command in
             ("prepare", "pretrain", "export", "vocab", "corpus", "finetune", "reproduce")]
OUT_CASES += [(command, "below a file") for command, _ in OUT_CASES] + [(command, "a/") for command in FILE_OUT]


@pytest.mark.parametrize("command, kind", OUT_CASES, ids=[f"{c} --out {k}" for c, k in OUT_CASES])
def test_an_out_path_of_the_wrong_kind(command, kind, good_text, scivocab, tmp_path, capsys):
    """Every command that writes says so before any work: an existing file where a folder goes (or the reverse), or
    a path below a file (nothing can be made there)."""
    out = tmp_path / "out"
    if kind == "below a file":
        (tmp_path / "file").write_text("keep me\n")
        out = tmp_path / "file" / "out"
    elif kind == "a/":  # a file's name ending in "/": a folder that is not there (nothing written at "out")
        out = f"{out}/"
    else:
        out.mkdir() if kind == "folder" else out.write_text("keep me\n")
    args = {"prepare": ["prepare", "--corpus", good_text, "--vocab", scivocab],
            "pretrain": ["pretrain", "--preset", "tiny", "--corpus", good_text],
            "export": ["export", "--checkpoint", good_text], "vocab": ["vocab", "--corpus", good_text],
            "corpus": ["corpus", "--pubmed", good_text],
            "finetune": ["finetune", "--task", "ner", "--data", good_text, "--init", good_text],
            "reproduce": ["reproduce", "--init", good_text]}[command]
    line = assert_one_line_error(run(capsys, *args, "--out", out), out)
    if kind == "below a file":
        assert line.endswith(f"cannot be made: {tmp_path / 'file'} is a file, not a folder")
        assert (tmp_path / "file").read_text() == "keep me\n"
    elif kind == "a/":
        assert line.endswith("names a folder (--out names the file to write)") and not os.listdir(tmp_path)
    else:
        assert (out.read_text() == "keep me\n") if kind == "file" else not list(out.iterdir())


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where nothing can be made")
def test_a_file_system_that_refuses_the_output_is_one_line(good_text, capsys):
    """The OS refuses what --out asks for (here /proc, where no folder can be made; a read-only or full disk alike):
    one line with the path and the reason, exit 2, not a traceback."""
    line = assert_one_line_error(run(capsys, "vocab", "--corpus", good_text, "--out", "/proc/electramed/vocab.txt",
                                     "--vocab-size", "300"), "/proc/electramed")
    assert line == "error: /proc/electramed: No such file or directory"


@pytest.mark.parametrize("command", ["pretrain", "finetune", "reproduce"])
def test_a_second_run_into_a_folder_in_use_is_refused(command, good_text, tmp_path, capsys):
    """Two runs started into one --out at once (the second while the first still builds its vocabulary: no checkpoint
    yet to refuse it by) would interleave their logs and checkpoints: the second one is refused while the first holds
    the folder's lock, and a folder the refused run made is not left behind."""
    import fcntl

    out = tmp_path / "busy"
    out.mkdir()
    args = {"finetune": ["finetune", "--task", "ner", "--data", good_text, "--init", good_text],
            "pretrain": ["pretrain", "--preset", "tiny", "--corpus", good_text],
            "reproduce": ["reproduce", "--init", good_text]}[command]
    holder = os.open(out, os.O_RDONLY)  # what the first run holds
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = assert_one_line_error(run(capsys, *args, "--out", out), out)
        assert line.endswith("another run is writing into it now; wait for it to end, or pass another --out")
        assert not list(out.iterdir())
    finally:
        os.close(holder)
    missing = [str(tmp_path / "missing.txt") if a == good_text else a for a in args]  # input that does not check out
    assert_one_line_error(run(capsys, *missing, "--out", tmp_path / "new"), tmp_path / "missing.txt")
    assert not (tmp_path / "new").exists()  # the folder made to lock it is removed again


RUNS = {"pretrain": {"pretrain": {}, "model": {}}, "finetune": {"task": "ner", "finetune": {}},
        "model": {"architectures": ["ElectraForTokenClassification"], "model_type": "electra"}}
RUN_CASES = [("finetune", "pretrain"), ("finetune", "model"), ("pretrain", "finetune"), ("pretrain", "model"),
             ("reproduce", "pretrain"), ("reproduce", "finetune")]


@pytest.mark.parametrize("command, holds", RUN_CASES, ids=[f"{c} --out a {h} folder" for c, h in RUN_CASES])
def test_a_run_is_never_written_over_another_kind_of_run_or_a_model(command, holds, good_text, tmp_path, capsys):
    """`finetune --out runs/quickstart` would replace the pre-training run's config.json and metrics.jsonl; `--out`
    given the --init folder would make the model unreadable (its config.json replaced by the run's)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(RUNS[holds]))
    (out / "metrics.jsonl").write_text("{}\n")
    args = {"finetune": ["finetune", "--task", "ner", "--data", good_text, "--init", good_text],
            "pretrain": ["pretrain", "--preset", "tiny", "--corpus", good_text],
            "reproduce": ["reproduce", "--init", good_text]}[command]
    kind = {"pretrain": "a pre-training run", "finetune": "a fine-tuning run", "model": "a model directory"}[holds]
    line = assert_one_line_error(run(capsys, *args, "--out", out), out)
    assert line.endswith(f"holds {kind}, not {train.RUN_FOLDERS[command]}; pass another --out")
    assert json.loads((out / "config.json").read_text()) == RUNS[holds] and sorted(os.listdir(out)) == \
        ["config.json", "metrics.jsonl"]


@pytest.mark.parametrize("command", ["finetune", "pretrain", "reproduce"])
@pytest.mark.parametrize("holds, file", [("a pre-training run's checkpoints", "step_0000100.pt"),
                                         ("packed shards (index.json)", "index.json")])
def test_a_run_is_never_written_into_a_runs_checkpoints_or_shards(command, holds, file, good_text, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / file).write_bytes(b"x")
    args = {"finetune": ["finetune", "--task", "ner", "--data", good_text, "--init", good_text],
            "pretrain": ["pretrain", "--preset", "tiny", "--corpus", good_text],
            "reproduce": ["reproduce", "--init", good_text]}[command]
    line = assert_one_line_error(run(capsys, *args, "--out", out), out)
    assert line.endswith(f"holds {holds}, not {train.RUN_FOLDERS[command]}; pass another --out")
    assert os.listdir(out) == [file]


def test_another_runs_shards_are_never_rebuilt_under_its_checkpoints(good_text, scivocab, tmp_path, capsys):
    """--shards given a run's own shards folder with another --max-length and a --corpus: building them again would
    leave that run's checkpoints without the shards they were trained on (its --resume then refused, wrongly)."""
    first = tmp_path / "first"
    common = ["pretrain", "--preset", "tiny", "--vocab", scivocab, "--corpus", good_text, "--device", "cpu",
              "--train-steps", "2", "--save-every", "2", "--batch-size", "2"]
    assert run(capsys, *common, "--max-length", "32", "--out", first)[0] == 0
    index = (first / "shards" / "index.json").read_bytes()
    line = assert_one_line_error(run(capsys, *common, "--max-length", "64", "--shards", first / "shards", "--out",
                                     tmp_path / "second"), first / "shards")
    assert line.endswith(f"the checkpoints in {first.resolve() / 'checkpoints'} were trained on them; build new ones "
                         "in another --shards folder")
    assert (first / "shards" / "index.json").read_bytes() == index


# ------------------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def trained(shards, scivocab, tmp_path_factory):
    """A finished tiny run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("trained")
    assert train.main([str(a) for a in run_args(out, scivocab, shards, "--train-steps", "4", "--save-every", "2",
                                                "--log-every", "1", "--batch-size", "4")]) == 0
    return out


def not_a_checkpoint(tmp_path, trained, case):
    path = tmp_path / "step_0000004.pt"
    good = trained / "checkpoints" / "step_0000004.pt"
    if case == "text file":
        path.write_text("hello\n")
    elif case == "zero-filled":
        path.write_bytes(bytes(good.stat().st_size))
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "folder":
        path.mkdir()
    elif case == "a dict without weights":
        torch.save({"step": 3}, path)
    elif case == "a bare tensor":
        torch.save(torch.zeros(3), path)
    elif case == "a HuggingFace state dict":
        torch.save(torch.load(good, weights_only=False)["model"], path)
    elif case == "non-finite weights":  # what 0xff bytes written over a stored tensor read as: NaN
        state = torch.load(good, weights_only=False)
        name = sorted(state["model"])[-1]
        state["model"][name].view(-1)[:16] = float("nan")
        torch.save(state, path)
    elif case == "a config of another version":
        state = torch.load(good, weights_only=False)
        state["model_config"]["no_such_field"] = 1
        torch.save(state, path)
    return path


CHECKPOINT_CASES = ["missing", "text file", "zero-filled", "truncated", "empty", "folder", "a dict without weights",
                    "a bare tensor", "a HuggingFace state dict", "a config of another version", "non-finite weights"]


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_export_of_anything_but_our_checkpoint(case, trained, tmp_path, capsys):
    path = not_a_checkpoint(tmp_path, trained, case)
    assert_one_line_error(run(capsys, "export", "--checkpoint", path, "--out", tmp_path / "hf"), path)
    assert not (tmp_path / "hf").exists()


def test_export_writes_the_checkpoints_weights_with_the_runs_vocabulary(trained, scivocab, tmp_path, capsys):
    """`export` without --vocab copies the run's vocabulary (its config.json records it): a folder finetune --init
    takes, with the checkpoint's weights."""
    checkpoint = trained / "checkpoints" / "step_0000002.pt"
    code, stdout, _, err = run(capsys, "export", "--checkpoint", checkpoint, "--out", tmp_path / "hf")
    assert code == 0, err[-2000:]
    assert f"vocabulary: {scivocab} (the run's" in stdout and stdout.strip().endswith(f"exported step 2 -> {tmp_path / 'hf'}")
    assert (tmp_path / "hf" / "discriminator" / "vocab.txt").read_bytes() == scivocab.read_bytes()
    import tasks

    encoder, _, vocab, _ = tasks.load_init(tmp_path / "hf")
    weights = torch.load(checkpoint, weights_only=False)["model"]
    assert vocab == tmp_path / "hf" / "discriminator" / "vocab.txt"
    assert torch.equal(encoder.embeddings.word_embeddings.weight, weights["embeddings.word_embeddings.weight"])
    # a vocabulary beside the run that is not the one it trained with is refused, and so is such a --vocab (the same
    # size, another digest: the model would read other words); without any vocabulary beside it, a note
    moved = tmp_path / "moved"
    shutil.copytree(trained, moved)
    (moved / "config.json").write_text(json.dumps({"vocab": str(tmp_path / "gone.txt")}))
    (moved / "vocab.txt").write_text(scivocab.read_text().replace("protein\n", "zzz-not-a-word\n", 1))
    moved_checkpoint = moved / "checkpoints" / "step_0000002.pt"
    line = assert_one_line_error(run(capsys, "export", "--checkpoint", moved_checkpoint, "--out", tmp_path / "hf2"),
                                 moved / "vocab.txt")
    assert "not the vocabulary" in line and "pass --vocab" in line and not (tmp_path / "hf2").exists()
    line = assert_one_line_error(run(capsys, "export", "--checkpoint", checkpoint, "--vocab", moved / "vocab.txt",
                                     "--out", tmp_path / "hf2"), moved / "vocab.txt")
    assert "digest differs" in line and not (tmp_path / "hf2").exists()
    (moved / "vocab.txt").unlink()
    code, stdout, _, err = run(capsys, "export", "--checkpoint", moved_checkpoint, "--out", tmp_path / "hf2")
    assert code == 0, err[-2000:]
    assert f"(looked for {moved / 'vocab.txt'} and its run's config.json): none copied" in stdout
    assert not (tmp_path / "hf2" / "discriminator" / "vocab.txt").exists()
    # export never writes into a run folder or another model's folder, and vocab never replaces a run's vocabulary
    fine_tuned = tmp_path / "fine-tuned"
    fine_tuned.mkdir()
    (fine_tuned / "config.json").write_text(json.dumps(RUNS["model"]))
    for out, kind in ((trained, "a pre-training run"), (fine_tuned, "a model directory")):
        line = assert_one_line_error(run(capsys, "export", "--checkpoint", checkpoint, "--out", out), out)
        assert f"holds {kind}, not an exported pre-trained model" in line
    assert not (trained / "discriminator").exists() and sorted(os.listdir(fine_tuned)) == ["config.json"]
    code, _, _, err = run(capsys, "export", "--checkpoint", checkpoint, "--out", tmp_path / "hf")  # again: replaced
    assert code == 0, err[-2000:]
    other_run = tmp_path / "other-run"  # but another run's export (its electramed-hf/) is never replaced
    (other_run / "electramed-hf").mkdir(parents=True)
    (other_run / "config.json").write_text(json.dumps({"pretrain": {}}))
    line = assert_one_line_error(run(capsys, "export", "--checkpoint", checkpoint, "--out",
                                     other_run / "electramed-hf"), other_run / "electramed-hf")
    assert f"inside another pre-training run ({other_run})" in line
    assert not list((other_run / "electramed-hf").iterdir())
    vocab = (trained / "vocab.txt").read_bytes() if (trained / "vocab.txt").exists() else None
    for command in (["vocab", "--corpus", scivocab], ["corpus", "--pubmed", "pubmed25n0001.xml.gz"]):  # nor corpus
        line = assert_one_line_error(run(capsys, *command, "--out", trained / "vocab.txt"), trained / "vocab.txt")
        assert "inside a pre-training run" in line
    assert ((trained / "vocab.txt").read_bytes() if (trained / "vocab.txt").exists() else None) == vocab


def test_export_with_a_vocabulary_of_another_size(trained, bert_vocab, tmp_path, capsys):
    line = assert_one_line_error(run(capsys, "export", "--checkpoint", trained / "checkpoints" / "step_0000004.pt",
                                     "--out", tmp_path / "hf", "--vocab", bert_vocab), bert_vocab)
    assert "30522 tokens" in line and "31090 rows" in line
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("case", ["zero-filled", "truncated", "non-finite weights"])
def test_resume_falls_back_from_a_damaged_newest_checkpoint(case, trained, shards, scivocab, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    damaged = not_a_checkpoint(out / "checkpoints", trained, case)  # replaces step 4
    (out / "checkpoints" / "step_0000006.pt.tmp").write_bytes(b"half a checkpoint")  # a killed save's leftover
    code, stdout, _, err = run(capsys, *run_args(out, scivocab, shards, "--train-steps", "5", "--save-every", "2",
                                                 "--log-every", "1", "--batch-size", "4", "--resume"))
    assert code == 0, err[-2000:]
    assert f"skipping {damaged}" in stdout and "resumed from" in stdout and "step_0000002.pt at step 2" in stdout
    assert "step_0000006.pt.tmp" in stdout and not (out / "checkpoints" / "step_0000006.pt.tmp").exists()
    assert (out / "checkpoints" / "step_0000004.pt.damaged").exists()  # kept to look at, never taken for the newest
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_a_second_damaged_copy_of_a_step_keeps_the_first(tmp_path, capsys):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    torch.save({"model": {"w": torch.ones(2)}, "step": 2}, checkpoints / "step_0000002.pt")
    for crash in (b"first crash", b"second crash"):  # the run crashed twice while writing step 4
        (checkpoints / "step_0000004.pt").write_bytes(crash)
        path, state = runtime.latest_valid_checkpoint(checkpoints)
        assert path.name == "step_0000002.pt" and state["step"] == 2
    assert (checkpoints / "step_0000004.pt.damaged").read_bytes() == b"first crash"
    assert (checkpoints / "step_0000004.pt.damaged.2").read_bytes() == b"second crash"
    assert "renamed it to step_0000004.pt.damaged.2;" in capsys.readouterr().out


def test_resume_takes_the_runs_own_vocab_and_shards_and_refuses_other_examples(hoc, shards, scivocab, tmp_path,
                                                                                 capsys):
    mine, out = tmp_path / "shards", tmp_path / "run"
    shutil.copytree(shards, mine)
    code, _, _, err = run(capsys, *run_args(out, scivocab, mine, "--train-steps", "2", "--batch-size", "4"))
    assert code == 0, err[-2000:]
    # --resume without --vocab and --shards: the run's own (its config.json), nothing trained or built in its folder
    code, stdout, _, err = run(capsys, "pretrain", "--preset", "tiny", "--out", out, "--device", "cpu", "--train-steps",
                               "3", "--batch-size", "4", "--resume")
    assert code == 0, err[-2000:]
    assert f"--vocab {scivocab.resolve()}: the run's own" in stdout and f"--shards {mine.resolve()}: the run's" in stdout
    assert "resumed from" in stdout and not (out / "vocab.txt").exists() and not (out / "shards").exists()
    # the shard folder built again with another packing seed: other examples than the checkpoint was trained on
    code, _, _, err = run(capsys, "prepare", "--corpus", *hoc[:60], "--vocab", scivocab, "--out", mine, "--max-length",
                          "64", "--seed", "7")
    assert code == 0, err[-2000:]
    line = assert_one_line_error(run(capsys, *run_args(out, scivocab, mine, "--train-steps", "4", "--batch-size", "4",
                                                       "--resume")), out / "checkpoints" / "step_0000003.pt")
    assert f"trained on other examples than {mine} holds now" in line
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == ["step_0000002.pt", "step_0000003.pt"]


def test_resume_without_a_checkpoint_says_it_starts_from_scratch(shards, scivocab, tmp_path, capsys):
    code, stdout, _, _ = run(capsys, *run_args(tmp_path, scivocab, shards, "--train-steps", "1", "--batch-size", "4",
                                               "--resume"))
    assert code == 0 and "no checkpoint" in stdout and "starting from scratch" in stdout


@pytest.mark.parametrize("flags, named", [(["--preset", "small", "--max-length", "64"], "hidden_size 64 -> 256"),
                                          (["--objective", "mlm"], "objective electra -> mlm"),
                                          (["--generator-size", "1"], "generator_hidden_size 32 -> 64")])
def test_resume_with_another_model_is_one_line_naming_the_difference(flags, named, trained, shards, scivocab,
                                                                     tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    args = run_args(out, scivocab, shards, "--train-steps", "6", "--batch-size", "4", "--resume")
    args[args.index("--preset"):args.index("--preset") + 2] = []
    args += flags if "--preset" in flags else ["--preset", "tiny", *flags]
    line = assert_one_line_error(run(capsys, *args), "step_0000004.pt")
    assert named in line


def test_resume_with_another_length_leaves_the_runs_own_shards_alone(hoc, scivocab, tmp_path, capsys):
    """--resume with the wrong --preset (here: another sequence length) and --corpus, as the shards' error once
    advised: the run's shards are not rebuilt under its checkpoints; the line says what to do instead."""
    out = tmp_path / "run"
    common = ["pretrain", "--corpus", *hoc[:20], "--vocab", scivocab, "--out", out, "--processes", "1"]
    code, _, _, _ = run(capsys, *common, "--preset", "tiny", "--train-steps", "2", "--batch-size", "4")
    assert code == 0
    index = (out / "shards" / "index.json").read_bytes()
    line = assert_one_line_error(run(capsys, *common, "--preset", "small", "--resume"), out / "shards",
                                 out / "checkpoints")
    assert "built for --max-length 64, not 128" in line and "resume with the run's own --preset and flags" in line
    assert (out / "shards" / "index.json").read_bytes() == index
    # a damaged shard (the settings right): the line says how to build it again, and that way the run resumes
    good = (out / "shards" / "shard_00000.bin").read_bytes()
    (out / "shards" / "shard_00000.bin").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    line = assert_one_line_error(run(capsys, *common, "--preset", "tiny", "--train-steps", "3", "--batch-size", "4",
                                     "--resume"), out / "shards")
    assert line.endswith(f"`train.py prepare` with the run's corpus, vocabulary and length into {out / 'shards'} "
                         "builds the damaged shard again, byte for byte")
    code, _, _, err = run(capsys, "prepare", "--corpus", *hoc[:20], "--vocab", scivocab, "--out", out / "shards",
                          "--max-length", 64, "--processes", "1")
    assert code == 0 and (out / "shards" / "shard_00000.bin").read_bytes() == good, err[-2000:]
    code, _, _, err = run(capsys, *common, "--preset", "tiny", "--train-steps", "3", "--batch-size", "4", "--resume")
    assert code == 0, err[-2000:]


def test_a_run_folder_with_checkpoints_needs_resume(trained, shards, scivocab, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    line = assert_one_line_error(run(capsys, *run_args(out, scivocab, shards, "--train-steps", "2")), "checkpoints")
    assert "--resume" in line


def test_resume_past_the_last_step_is_refused_and_a_long_warm_up_is_noted(trained, shards, scivocab, tmp_path,
                                                                          capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    config = (out / "config.json").read_bytes()
    line = assert_one_line_error(run(capsys, *run_args(out, scivocab, shards, "--train-steps", "3", "--resume")),
                                 "step_0000004.pt", "--train-steps 3", "--train-steps 4 or more")
    assert "at step 4" in line and (out / "config.json").read_bytes() == config
    # tiny's warm-up is 20 steps: over a 4-step run the rate stays far below its peak (at most T/4W of it), said once
    code, stdout, lines, _ = run(capsys, *run_args(out, scivocab, shards, "--train-steps", "4", "--resume"))
    assert code == 0 and lines == []
    assert "note: --warmup-steps 20 is more than --train-steps 4: the learning rate never exceeds 5.0% of" in stdout
    args = train.build_parser().parse_args([str(a) for a in run_args(out, scivocab, shards, "--train-steps", "4")])
    args.world_size = 1
    config = pretrain.resolve_config(args)
    assert max(pretrain.learning_rate_at(step, config) for step in range(4)) <= 0.05 * config.learning_rate
    code, stdout, _, _ = run(capsys, *run_args(out, scivocab, shards, "--train-steps", "20", "--resume"))
    assert code == 0 and "--warmup-steps" not in stdout


@pytest.mark.parametrize("flag", [["--generator-size", "0.5"], ["--gen-weight", "3"], ["--disc-weight", "10"],
                                  ["--disc-prior-bias"]])
def test_discriminator_and_generator_flags_are_refused_with_the_mlm_objective(flag, shards, scivocab, tmp_path,
                                                                             capsys):
    line = assert_one_line_error(run(capsys, *run_args(tmp_path / "run", scivocab, shards, "--objective", "mlm", *flag)),
                                 flag[0], "--objective mlm")
    assert "no effect" in line and not (tmp_path / "run").exists()


def test_a_metrics_log_cut_short_by_a_kill_is_read(trained, shards, scivocab, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    log = out / "metrics.jsonl"
    log.write_text(log.read_text()[:-10])  # the kill came in the middle of the last line
    (out / "checkpoints" / "step_0000004.pt").unlink()
    code, _, _, err = run(capsys, *run_args(out, scivocab, shards, "--train-steps", "4", "--save-every", "2",
                                            "--log-every", "1", "--batch-size", "4", "--resume"))
    assert code == 0, err[-2000:]
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]


# --------------------------------------------------------------------------------------- processes, signals, kills
def children(pid):
    """Live processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


PREPARE = """
import sys, data
files = sorted(__import__("pathlib").Path(sys.argv[1]).glob("*.txt"))
data.build_shards(files, sys.argv[2], sys.argv[3], max_length=64, processes=2, unit_bytes=200_000)
"""


def writing_a_shard(pid):
    try:
        return any(".bin.partial" in os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def both_workers_writing(parent):
    """The pids of `parent`'s two pool workers, once both are seen writing a shard (fails after 5 minutes)."""
    deadline, working = time.time() + 300, set()
    while time.time() < deadline and parent.poll() is None and len(working) < 2:
        workers = [pid for pid in children(parent.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        working |= {pid for pid in workers if writing_a_shard(pid)}
        time.sleep(0.005)
    assert len(working) == 2 and parent.poll() is None, "the two workers were not seen at work"
    return working


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_prepare_kills_its_workers(data_dir, scivocab, tmp_path):
    """Both workers are caught writing a shard and frozen (SIGSTOP), then the parent is SIGKILLed: a worker that does
    not die with its parent would stay frozen for ever; ours get the kernel's SIGKILL (PR_SET_PDEATHSIG)."""
    parent = subprocess.Popen([sys.executable, "-c", PREPARE, str(data_dir / "pretrain" / "hoc" / "text"),
                               str(scivocab), str(tmp_path / "shards")], cwd=REPO, stderr=subprocess.DEVNULL)
    working = set()
    try:
        working = both_workers_writing(parent)
        for pid in working:
            os.kill(pid, signal.SIGSTOP)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(alive(pid) for pid in working):
            time.sleep(0.1)
        survivors = [pid for pid in working if alive(pid)]
    finally:
        for pid in children(parent.pid) + [pid for pid in working if alive(pid)]:
            os.kill(pid, signal.SIGKILL)
    assert not survivors
    assert not (tmp_path / "shards" / "index.json").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_in_prepare_is_one_line_from_the_parent_alone(data_dir, scivocab, tmp_path):
    """The terminal sends Ctrl-C's SIGINT to the whole process group, workers included: they ignore it and the parent
    stops the pool, so the user sees one line and exit 130, not a KeyboardInterrupt traceback from every worker."""
    out = tmp_path / "shards"
    parent = subprocess.Popen([sys.executable, str(REPO / "train.py"), "prepare", "--corpus", data_dir / "pretrain",
                               "--vocab", scivocab, "--out", out, "--max-length", "64"], cwd=REPO,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    working = set()
    try:
        working = both_workers_writing(parent)
        os.killpg(parent.pid, signal.SIGINT)  # what Ctrl-C does
        _, stderr = parent.communicate(timeout=60)
    finally:
        for pid in children(parent.pid) + [pid for pid in working if alive(pid)]:
            os.kill(pid, signal.SIGKILL)
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and not PROGRESS.search(line)]
    assert parent.returncode == 130 and lines == ["error: interrupted; nothing half-written is trusted by the next "
                                                  "run"], stderr[-3000:]
    assert "Traceback" not in stderr and "PoolWorker" not in stderr, stderr[-3000:]  # not even after a bar
    assert not (out / "index.json").exists() and not list(out.glob("*.partial"))


HOOK = """
import os, signal, sys, torch, pretrain, train
when, what = int(os.environ["HOOK_STEP"]), os.environ["HOOK"]
schedule, sent = pretrain.learning_rate_at, []
def learning_rate_at(step, config):  # the hook fires as step `when` + 1 begins
    if step == when and not sent and what in ("SIGINT", "SIGTERM", "SIGINT twice"):
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM if what == "SIGTERM" else signal.SIGINT)
        if what == "SIGINT twice":
            os.kill(os.getpid(), signal.SIGINT)
    return schedule(step, config)
pretrain.learning_rate_at = learning_rate_at
save = torch.save
def save_then_die(obj, f, *args, **kwargs):  # SIGKILL in the middle of writing checkpoint `when`
    save(obj, f, *args, **kwargs)
    if what == "SIGKILL in save" and str(getattr(f, "name", "")).endswith(f"step_{when:07d}.pt.tmp"):
        f.flush()
        f.truncate(f.tell() // 2)
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = save_then_die
sys.exit(train.main(sys.argv[1:]))
"""
STEPS = ["--train-steps", "8", "--log-every", "3", "--save-every", "4", "--batch-size", "4"]  # 4 is no multiple of 3


def hooked(out, scivocab, shards, hook, step):
    return subprocess.run([sys.executable, "-c", HOOK, *map(str, run_args(out, scivocab, shards, *STEPS))], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "HOOK": hook, "HOOK_STEP": str(step)},
                          timeout=600)


@pytest.fixture(scope="module")
def whole(shards, scivocab, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    assert train.main([str(a) for a in run_args(out, scivocab, shards, *STEPS)]) == 0
    return out


def assert_same_run(whole, resumed):
    def log(out):
        return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
                for line in (out / "metrics.jsonl").read_text().splitlines()]

    assert [r["step"] for r in log(resumed)] == [3, 6, 8]
    assert log(whole) == log(resumed)  # bit for bit, the window across the checkpoint included
    a = torch.load(whole / "checkpoints" / "step_0000008.pt", weights_only=False)["model"]
    b = torch.load(resumed / "checkpoints" / "step_0000008.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("failure", ["disk full", "a second Ctrl-C"])
def test_a_checkpoint_save_that_fails_is_one_line_and_leaves_no_temporary(failure, shards, scivocab, tmp_path, capsys,
                                                                         monkeypatch):
    """torch.save wraps what stopped it in a RuntimeError of its own (inline_container.cc), after writing part of the
    file: the path and the reason in one line (exit 2), or a stop at once (exit 130); no step_*.pt.tmp is left."""
    import errno

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"part of a checkpoint")
        try:
            if failure == "disk full":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise KeyboardInterrupt
        except BaseException:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 22272 vs 22166")

    monkeypatch.setattr(torch, "save", failing_save)
    out = tmp_path / "run"
    code, _, lines, err = run(capsys, *run_args(out, scivocab, shards, *STEPS))
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    if failure == "disk full":
        assert code == 2 and lines[0] == f"error: {out / 'checkpoints' / 'step_0000004.pt'}: No space left on device"
    else:
        assert code == 130 and lines[0].startswith("error: interrupted")
    assert not list((out / "checkpoints").iterdir())


@pytest.mark.parametrize("hook, step, code", [("SIGINT", 4, 130), ("SIGTERM", 1, 143)])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_resume_equals_a_whole_run(
        hook, step, code, whole, shards, scivocab, tmp_path, capsys):
    out = tmp_path / "run"
    child = hooked(out, scivocab, shards, hook, step)
    assert child.returncode == code, child.stderr[-3000:]
    assert "Traceback" not in child.stderr
    assert f"stopped at step {step + 1}; `--resume` continues" in child.stderr.splitlines()[-1]
    assert (out / "checkpoints" / f"step_{step + 1:07d}.pt").exists()
    assert not (out / "electramed-hf").exists()
    assert train.main([str(a) for a in run_args(out, scivocab, shards, *STEPS, "--resume")]) == 0
    assert_same_run(whole, out)


def test_a_second_ctrl_c_stops_at_once(shards, scivocab, tmp_path):
    child = hooked(tmp_path, scivocab, shards, "SIGINT twice", 2)
    assert child.returncode == -signal.SIGINT, child.stderr[-3000:]
    assert not list((tmp_path / "checkpoints").glob("step_*.pt"))  # nothing saved: it stopped at once


def test_a_worker_starting_ignores_ctrl_c_from_its_first_import():
    """`prepare`/`corpus` workers (spawned) import train.py as __mp_main__, torch with it (seconds): a Ctrl-C then
    printed a KeyboardInterrupt traceback from each. They ignore it from the start; the parent says one line."""
    probe = ("import runpy, signal, sys; sys.argv = ['train.py']; runpy.run_path(sys.argv[0], run_name='__mp_main__'); "
             "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)")
    child = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert child.stdout.strip() == "True", child.stderr[-2000:]


def test_ctrl_c_while_torch_loads_ends_quietly(tmp_path):
    """Ctrl-C in the first seconds, while `import torch` runs: the process ends by the signal, without a traceback
    of the imports (signalled once torch's libraries are being mapped, i.e. inside train.py's imports)."""
    child = subprocess.Popen([sys.executable, str(REPO / "train.py"), "--help"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{child.pid}/maps")
    deadline = time.monotonic() + 60
    while child.poll() is None and "libtorch" not in maps.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert "Traceback" not in stderr and child.returncode in (-signal.SIGINT, 130), (child.returncode, stderr[-2000:])


def test_sigkill_in_the_middle_of_a_checkpoint_write_resumes_to_the_same_run(whole, shards, scivocab, tmp_path,
                                                                             capsys):
    out = tmp_path / "run"
    child = hooked(out, scivocab, shards, "SIGKILL in save", 8)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000004.pt", "step_0000008.pt.tmp"]
    code, stdout, _, err = run(capsys, *run_args(out, scivocab, shards, *STEPS, "--resume"))
    assert code == 0, err[-2000:]
    assert "removed" in stdout and "step_0000008.pt.tmp" in stdout and "at step 4" in stdout
    assert_same_run(whole, out)
