"""Corpus reading, ELECTRA packing, shards and the loader, on the real PubMed text in ../shared/data/pretrain."""
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

import data
from tokenizer import InputError, WordPieceTokenizer, pubmed_preprocess

MAX_LENGTH = 64
UNIT = 300_000  # corpus bytes per shard: several shards from the small test corpus


@pytest.fixture(scope="module")
def tokenizer(scivocab):
    return WordPieceTokenizer(scivocab)


@pytest.fixture(scope="module")
def real_corpus(data_dir):
    """A small slice of every layout: plain text per abstract, tokenized text, PubTator, PubMedQA JSON, token<TAB>tag."""
    pretrain = data_dir / "pretrain"
    return [*sorted((pretrain / "hoc" / "text").glob("*.txt"))[:60],
            *sorted((pretrain / "bionlp-st-2013" / "bionlp-st-2013_cg_train_devel_texts").glob("*.txt"))[:40],
            pretrain / "bc5cdr-pubtator-abstracts" / "CDR_TestSet.PubTator.txt",
            *sorted((pretrain / "ebm-nlp-difficulty").rglob("*.tokens"))[:20]]


def test_every_layout_is_read_as_documents_of_sentences(data_dir):
    pretrain = data_dir / "pretrain"
    pubtator = list(data.read_documents(pretrain / "bc5cdr-pubtator-abstracts" / "CDR_TestSet.PubTator.txt"))
    assert len(pubtator) == 500  # the README: 500 test abstracts
    assert pubtator[0][0].startswith("Famotidine-associated delirium")  # the title, then the abstract's sentences
    assert len(pubtator[0]) > 3 and not any("\t" in s for doc in pubtator for s in doc)  # no annotation lines
    pubmedqa = list(data.read_documents(pretrain / "pubmedqa-pqal" / "ori_pqal.json"))
    assert len(pubmedqa) == 1000
    tagged = list(data.read_documents(pretrain / "mtl-bioinformatics-2016-iob" / "Ex-PTM-IOB" / "train.tsv"))
    assert len(tagged) == 1 and all("\t" not in s and " O" not in s[-2:] for s in tagged[0])
    tokens = next(data.read_documents(next((pretrain / "ebm-nlp-difficulty").rglob("*.tokens"))))
    assert len(tokens) > 1 and all(s.endswith((".", "?", "!")) for s in tokens[:-1])


def test_split_sentences_splits_at_sentence_ends_only():
    text = "Aspirin (ASA) was given. It failed, e.g. in 3 cases? Yes! (Fig. 2) shows 1.5 mg. [Ref] ends."
    sentences = data.split_sentences(text)
    assert sentences == ["Aspirin (ASA) was given.", "It failed, e.g. in 3 cases?", "Yes!", "(Fig. 2) shows 1.5 mg.",
                         "[Ref] ends."]
    text = ("Dr. Smith and Prof. Jones gave St. John's wort (Figs. S1, Fig. S2) vs. Placebo. It failed, cf. Smith "
            "et al. The end.")
    assert data.split_sentences(text) == [
        "Dr. Smith and Prof. Jones gave St. John's wort (Figs. S1, Fig. S2) vs. Placebo.", "It failed, cf. Smith et al.",
        "The end."]


def made_of_sentences(segment, sentences):
    """True when segment = some of these sentences, whole and in document order (the last one possibly cut short)."""
    position = 0
    for sentence in sentences:
        if segment[position:position + len(sentence)] == sentence:
            position += len(sentence)
        elif position < len(segment) and sentence[:len(segment) - position] == segment[position:]:
            return True  # ELECTRA trims what overflows the maximum length
    return position == len(segment)


def test_packing_invariants_on_real_text(real_corpus, tokenizer):
    rng = random.Random(0)
    examples, lengths = [], []
    for path in real_corpus:
        for document in data.read_documents(path):
            sentences = [tokenizer.tokenize_ids(s) for s in document]
            for example in data.pack_documents([document], tokenizer, MAX_LENGTH, rng):
                assert 3 <= len(example) <= MAX_LENGTH and example[0] == tokenizer.cls_id
                assert example[-1] == tokenizer.sep_id and example.count(tokenizer.sep_id) in (1, 2)
                assert tokenizer.cls_id not in example[1:]
                first_sep = example.index(tokenizer.sep_id)
                # each segment is made of this document's sentences: no document mixing
                for segment in (example[1:first_sep], example[first_sep + 1:-1]):
                    assert made_of_sentences(segment, sentences)
                examples.append(example)
                lengths.append(len(example))
    assert len(examples) > 500
    assert np.mean(np.array(lengths) == MAX_LENGTH) > 0.5  # most examples are full
    other_document = [tokenizer.tokenize_ids("Completely different words about zebras and comets.")]
    assert not made_of_sentences(examples[0][1:examples[0].index(tokenizer.sep_id)], other_document)


def test_single_segment_and_short_target_shares():
    """ELECTRA: 10% single-segment examples, 5% of examples followed by a random shorter target length."""

    class FakeTokenizer:
        cls_id, sep_id = 1, 2

        def tokenize_ids(self, sentence, specials=True):
            return [5] * 10  # every sentence is 10 tokens: without the 10% rule an example always has two segments

    documents = [["s"] * 200_000]
    examples = list(data.pack_documents(documents, FakeTokenizer(), 128, random.Random(1)))
    single = np.mean([e.count(2) == 1 for e in examples])
    short = np.mean([len(e) < 118 for e in examples])  # a full example has >= 128 - 10 tokens before trimming
    assert len(examples) > 15_000
    assert 0.09 < single < 0.11, single
    assert 0.035 < short < 0.055, short  # randint(5, 128) lands >= 118 about 9% of the time: 5% x 0.91


def test_pack_documents_preprocesses_only_when_asked_and_keeps_literal_specials_as_text(tokenizer):
    """--pubmed-preprocess applies the paper's pre-processing before WordPiece, and only then (the default is off);
    either way a literal "[SEP]" in the text is text, never the packer's separator."""
    document = ["The patient's α-synuclein… naïve [SEP] cells.", "Über 5 μg of β-blockers were given."]
    expected = {preprocess: [i for sentence in document for i in tokenizer.tokenize_ids(
        pubmed_preprocess(sentence) if preprocess else sentence, specials=False)] for preprocess in (False, True)}
    assert expected[False] != expected[True]
    for preprocess, examples in ((False, data.pack_documents([document], tokenizer, 128, random.Random(0))),
                                 (True, data.pack_documents([document], tokenizer, 128, random.Random(0), True))):
        (example,) = list(examples)
        assert example[0] == tokenizer.cls_id and example[-1] == tokenizer.sep_id
        assert [i for i in example if i not in (tokenizer.cls_id, tokenizer.sep_id)] == expected[preprocess]


def test_shards_round_trip_and_token_types(real_corpus, tokenizer, scivocab, tmp_path):
    index = data.build_shards(real_corpus, scivocab, tmp_path, MAX_LENGTH, seed=7, processes=1, unit_bytes=UNIT)
    assert index["dtype"] == "uint16" and index["examples"] > 500
    loader = data.PretrainingData(tmp_path, tokenizer.pad_id, tokenizer.sep_id)
    # the memmaps hold exactly what the packer produced, shard by shard
    expected = []
    for i, unit in enumerate(data.work_units(data.corpus_files(real_corpus), UNIT)):
        documents = (d for path, start, end in unit for d in data.read_documents(path, start, end))
        expected += list(data.pack_documents(documents, tokenizer, MAX_LENGTH, random.Random(f"7-{i}")))
    rows = loader.rows(np.arange(len(loader)))
    assert len(rows) == len(expected)
    for row, example in zip(rows, expected):
        assert row[:len(example)].tolist() == example and not row[len(example):].any()
    batch = loader.batch(epoch=0, number=0, batch_size=32, seed=3)
    ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    assert ids.shape == (32, MAX_LENGTH) and ids.dtype == types.dtype == mask.dtype
    for row_ids, row_types, row_mask in zip(ids.tolist(), types.tolist(), mask.tolist()):
        seps = [i for i, t in enumerate(row_ids) if t == tokenizer.sep_id]
        length = sum(row_mask)
        assert row_types == [0] * (seps[0] + 1) + [1] * (length - seps[0] - 1) + [0] * (MAX_LENGTH - length)


def test_one_and_two_processes_build_the_same_shards(real_corpus, scivocab, tmp_path):
    one = data.build_shards(real_corpus, scivocab, tmp_path / "one", MAX_LENGTH, processes=1, unit_bytes=UNIT)
    two = data.build_shards(real_corpus, scivocab, tmp_path / "two", MAX_LENGTH, processes=2, unit_bytes=UNIT)
    assert one["shards"] == two["shards"]
    for shard in one["shards"]:
        assert (tmp_path / "one" / shard["file"]).read_bytes() == (tmp_path / "two" / shard["file"]).read_bytes()


def test_loader_is_deterministic_and_each_epoch_is_a_permutation(real_corpus, scivocab, tokenizer, tmp_path):
    data.build_shards(real_corpus, scivocab, tmp_path, MAX_LENGTH, processes=1, unit_bytes=UNIT)
    loader = data.PretrainingData(tmp_path, tokenizer.pad_id, tokenizer.sep_id)
    again = data.PretrainingData(tmp_path, tokenizer.pad_id, tokenizer.sep_id)
    first = loader.batch(0, 3, 16, seed=5)["input_ids"]
    assert (first == again.batch(0, 3, 16, seed=5)["input_ids"]).all()
    assert not (first == loader.batch(1, 3, 16, seed=5)["input_ids"]).all()
    # an epoch walks one seeded permutation of all examples, batch after batch (drop_last)
    seen = np.concatenate([loader.batch(0, n, 16, seed=5)["input_ids"].numpy() for n in range(len(loader) // 16)])
    order = np.random.default_rng([5, 0]).permutation(len(loader))
    assert (seen == loader.rows(order[:len(seen)])).all() and len(seen) == len(loader) // 16 * 16
    # two ranks each get their half of the same global batch
    halves = [loader.batch(0, 3, 16, seed=5, rank=r, world_size=2)["input_ids"] for r in (0, 1)]
    assert (np.concatenate(halves) == first.numpy()).all()


def test_an_interrupted_build_is_detected_and_resumed(real_corpus, scivocab, tokenizer, tmp_path, capsys):
    clean = data.build_shards(real_corpus, scivocab, tmp_path / "clean", MAX_LENGTH, processes=1, unit_bytes=UNIT)
    out = tmp_path / "killed"
    data.build_shards(real_corpus, scivocab, out, MAX_LENGTH, processes=1, unit_bytes=UNIT)
    assert len(clean["shards"]) >= 2
    # simulate a kill during shard 1: its sidecar never got written, a partial file is left, no index.json yet
    (out / "index.json").unlink()
    (out / "shard_00001.json").unlink()
    (out / "shard_00001.bin").rename(out / "shard_00001.bin.partial")
    assert data.shards_problem(out, scivocab, MAX_LENGTH) is not None
    with pytest.raises(InputError, match="index.json"):
        data.PretrainingData(out, 0, 3)
    kept = (out / "shard_00000.bin").stat().st_mtime_ns
    capsys.readouterr()
    resumed = data.build_shards(real_corpus, scivocab, out, MAX_LENGTH, processes=1, unit_bytes=UNIT)
    assert (out / "shard_00000.bin").stat().st_mtime_ns == kept  # complete shards are reused, not rebuilt
    assert capsys.readouterr().out == (f"{out}: {len(clean['shards']) - 1} of {len(clean['shards'])} shards already "
                                       "built from this corpus with these settings, reused\n")
    assert resumed["shards"] == clean["shards"] and not list(out.glob("*.partial"))
    for shard in clean["shards"]:
        assert (out / shard["file"]).read_bytes() == (tmp_path / "clean" / shard["file"]).read_bytes()
    assert data.shards_problem(out, scivocab, MAX_LENGTH) is None and data.shards_problem(out, scivocab, 128) is not None
    data.build_shards(real_corpus, scivocab, tmp_path / "seven", MAX_LENGTH, seed=7, processes=1, unit_bytes=UNIT)
    assert data.shards_problem(tmp_path / "seven", scivocab, MAX_LENGTH, seed=12345) == "built with --seed 7, not 12345"


def test_bad_corpus_files_name_the_file_and_line(tmp_path, scivocab):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"A fine sentence.\nAnother one.\nBroken \xff byte here.\n")
    with pytest.raises(InputError, match=r"bad\.txt:3: not UTF-8"):
        list(data.read_documents(bad))
    with pytest.raises(InputError, match="no such file"):
        data.corpus_files([tmp_path / "missing"])
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(InputError, match=r"x\.json: record a: not in the PubMedQA layout"):
        list(data.read_documents(tmp_path / "x.json"))


def test_big_plain_text_files_are_cut_at_document_boundaries(tmp_path):
    documents = [[f"Document {d} sentence {s}." for s in range(20)] for d in range(300)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join("\n".join(doc) for doc in documents) + "\n")
    units = data.work_units([path], unit_bytes=10_000)
    assert len(units) > 5
    read_back = [doc for unit in units for p, start, end in unit for doc in data.read_documents(p, start, end)]
    assert read_back == documents  # every document whole, in order, exactly once
