"""The command line as a user meets it: --help for every flag, and bad input as one line with exit code 2."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

import train

REPO = Path(__file__).resolve().parent.parent


def test_every_flag_of_every_subcommand_has_help(cli):
    parser = train.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, train.argparse._SubParsersAction))
    assert {"pretrain", "prepare", "vocab", "export"} <= set(subparsers.choices)
    for name, subparser in subparsers.choices.items():
        for action in subparser._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"
    assert "--learning-rate" in cli("pretrain", "--help").stdout


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    (b"", "empty"),
    (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nword\n", r"\[MASK\]"),
    (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nword\nword\n", r":7: duplicate"),
    (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nw\xffrd\n", r":6: .*UTF-8"),
])
def test_a_bad_vocabulary_is_one_line_naming_the_file_and_exit_2(cli, tmp_path, data_dir, content, message):
    vocab = tmp_path / "vocab.txt"
    if content is not None:
        vocab.write_bytes(content)
    result = cli("prepare", "--corpus", data_dir / "pretrain" / "hoc" / "text" / "11724768.txt",
                     "--vocab", vocab, "--out", tmp_path / "shards")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "vocab.txt" in lines[0] and "Traceback" not in result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "shards" / "index.json").exists()


def test_a_corpus_file_that_is_not_utf8_is_one_line_with_its_line_and_exit_2(cli, tmp_path, scivocab):
    corpus = tmp_path / "abstracts.txt"
    corpus.write_bytes(b"A first sentence.\n\nA second document.\nWith a bad \xe9 byte.\n")
    result = cli("prepare", "--corpus", corpus, "--vocab", scivocab, "--out", tmp_path / "shards")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # the progress bar may have drawn before the bad line was reached; the error is the one last line
    assert result.stderr.strip().splitlines()[-1] == f"error: {corpus}:4: not UTF-8 text (invalid continuation byte)"
    assert not (tmp_path / "shards" / "index.json").exists()  # no build that looks complete


def test_prepare_without_a_corpus_exits_2():
    """A real `python train.py` process (the other tests run train.main in this one): its exit code is main's."""
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "prepare", "--vocab", "v.txt", "--out", "x"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--corpus" in result.stderr
