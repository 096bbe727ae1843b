"""tokenizer.py is BERT's tokenizer: compared with transformers' pure-Python `BertTokenizerLegacy` and with the Rust
`tokenizers.BertWordPieceTokenizer`, with SciVocab and BERT-base-uncased, on the text of every data file.

Coverage of the data: `text_lines` reads the text of every file in ../shared/data by its format (NER, RE, QA and
pre-training; 13,295 files, 429,739 non-empty lines, 68M characters, 308,183 distinct lines). Left out: labels,
vocabularies, READMEs/licenses, the OHSUMED index, and the raw truncated SQuAD prefix (not JSON; its 11 articles are
the DERIVED file, which is read). BERT's rules never look across whitespace (both references cut the text at
whitespace first; special tokens hold none), so a line's tokens are its whitespace-free chunks' tokens in order:
`test_every_chunk_of_every_data_line` compares every distinct chunk of every line (278,613 chunks, 2.7M characters)
with both references. `test_whole_lines_and_offsets` checks whole lines (that locality included): tokens, ids and
offsets against the Rust tokenizer on every line holding a non-ASCII or control character (4,654 lines: accents,
Greek, CJK, U+FFFD, zero-width characters, odd spaces) and every 40th distinct line (7,705). Comparing all 308,183
distinct whole lines was done once and passes too (Rust: tokens, ids, offsets, ~45 s per vocabulary; Legacy: tokens,
~70 s per vocabulary on this 2-core machine), too long for every run.
"""
import json
import pickle
import random
import unicodedata
import xml.etree.ElementTree as ElementTree
from collections import Counter

import pytest

from tokenizer import (CHUNK, SPECIAL_TOKENS, InputError, WordPieceTokenizer, _is_cjk, _is_punctuation, basic_words,
                       pubmed_preprocess, read_vocab, train_vocab, write_vocab)


# ------------------------------------------------------------------------------------------ the data's text lines
def _json_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (dict, list)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _json_strings(item)


def _column_sentences(path, separator):
    """token<separator>label files, blank line (or ###MEDLINE:) between sentences: one line per sentence."""
    sentence = []
    for line in [*path.read_text(encoding="utf-8").split("\n"), ""]:
        line = line.rstrip("\r")
        if line and not line.startswith("###MEDLINE:"):
            sentence.append(line.rsplit(separator, 1)[0])
        elif sentence:
            yield " ".join(sentence)
            sentence = []


def text_lines(path):
    """The text of one data file, by format; None for files holding no text (labels, vocabularies, licenses)."""
    name = path.name
    if name in ("labels.txt", "vocab.txt", "ohsumed.txt", "OVERLAP_WITH_BENCHMARKS.tsv") or path.suffix == ".md" \
            or name.startswith(("README", "LICENSE")):
        return None
    if "truncated" in name:  # the raw 1.28 MB prefix of SQuAD train, not JSON; the DERIVED file has its articles
        return None
    if path.parent.parent.name == "ner" and path.suffix == ".txt":  # ELECTRAMed NER: "token label"
        return list(_column_sentences(path, " "))
    if path.suffix in (".tsv", ".iob2"):  # MTL, JNLPBA originals: token<TAB>label
        return list(_column_sentences(path, "\t"))
    if path.suffix == ".csv":  # BLUE: index<TAB>sentence<TAB>label with a header row
        return [row.split("\t")[1] for row in path.read_text(encoding="utf-8-sig").split("\n")[1:] if row]
    if path.parent.name == "chemprot-scibert":  # JSON lines
        return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line]
    if path.suffix == ".json":  # SQuAD-style QA, BioASQ golden, PubMedQA: every string in it
        return list(_json_strings(json.loads(path.read_text(encoding="utf-8"))))
    if path.suffix == ".xml":  # DDI corpus
        return [sentence.get("text") for sentence in ElementTree.parse(path).iter("sentence")]
    if "PubTator" in name:  # titles and abstracts; the annotation lines repeat their words
        return [line.split("|", 2)[2] for line in path.read_text(encoding="utf-8").splitlines()
                if line.split("|", 2)[1:2] in (["t"], ["a"])]
    if path.suffix == ".tokens":  # EBM-NLP: one token per line, the document is one line
        return [" ".join(path.read_text(encoding="utf-8").split("\n"))]
    return path.read_text(encoding="utf-8").split("\n")  # plain text: bionlp-st, hoc, OHSUMED


@pytest.fixture(scope="module")
def data_lines(data_dir):
    """Every distinct text line of every data file, sorted; asserts that every data folder gave text."""
    lines, folders = set(), set()
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        text = text_lines(path)
        if text is not None:
            lines.update(line for line in text if line.strip())
            folders.add("/".join(path.relative_to(data_dir).parts[:2]))
    expected = {"ner/NCBI-disease", "ner/BC5CDR", "ner/BC5CDR-typed-MTL", "ner/JNLPBA", "re/chemprot",
                "re/chemprot-scibert", "re/ddi-2013", "qa/bioasq-7b", "qa/bioasq-7b-biobert-pytorch", "qa/squad-v1.1",
                *(f"pretrain/{name}" for name in ("bc5cdr-pubtator-abstracts", "bionlp-st-2013", "biored", "hoc",
                                                  "ebm-nlp-difficulty", "mtl-bioinformatics-2016-iob",
                                                  "ohsumed-textgcn", "pubmedqa-pqal"))}
    assert expected <= folders, f"no text read from {sorted(expected - folders)}"
    assert len(lines) > 300_000
    return sorted(lines)


# ------------------------------------------------------------------------------------------------ the references
@pytest.fixture(scope="module", params=["scivocab", "bert_vocab"])
def tokenizers_under_test(request):
    """(ours, BertTokenizerLegacy, Rust BertWordPieceTokenizer) on one vocabulary."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerLegacy
    vocab = str(request.getfixturevalue(request.param))
    legacy = BertTokenizerLegacy(vocab, do_lower_case=True)  # the vocab path is the first argument in 5.x
    rust = BertWordPieceTokenizer(vocab, lowercase=True)
    # the official tokenization.py splits words of up to 200 characters; transformers' default is 100
    legacy.wordpiece_tokenizer.max_input_chars_per_word = rust._tokenizer.model.max_input_chars_per_word = 200
    for reference in (legacy.tokenize("Protein"), rust.encode("Protein", add_special_tokens=False).tokens):
        assert reference == ["protein"], "reference tokenizer did not load the vocabulary"
    return WordPieceTokenizer(vocab), legacy, rust


def _first_difference(texts, ours, theirs):
    for text, a, b in zip(texts, ours, theirs):
        if a != b:
            k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return f"in {text!r}: ours {a[max(0, k - 3):k + 5]}, reference {b[max(0, k - 3):k + 5]}"


@pytest.fixture(scope="module")
def data_chunks(data_lines):
    """Every distinct whitespace-free chunk of the data lines, 200 to a line."""
    chunks = sorted({chunk for line in data_lines for chunk in CHUNK.findall(line)})
    assert len(chunks) > 250_000
    return [" ".join(chunks[i:i + 200]) for i in range(0, len(chunks), 200)]


def test_every_chunk_of_every_data_line(data_chunks, tokenizers_under_test):
    ours, legacy, rust = tokenizers_under_test
    texts = data_chunks
    # tokens and ids text by text: the ids then come from the chunks just cached by tokenize (the same _encode_chunk
    # entries that a miss would compute), so the 2.7M characters are WordPiece'd once, not twice
    our_tokens, our_ids = [], []
    for text in texts:
        our_tokens.append(ours.tokenize(text))
        our_ids.append(ours.tokenize_ids(text))
    rust_encodings = rust.encode_batch(texts, add_special_tokens=False)
    rust_tokens = [encoding.tokens for encoding in rust_encodings]
    assert our_tokens == rust_tokens, _first_difference(texts, our_tokens, rust_tokens)
    assert our_ids == [encoding.ids for encoding in rust_encodings]
    # Every chunk equals Rust's. BERT's own Python tokenizer (as slow as ours, 3.7 s for all of them) then adds
    # something only where it differs from Rust's, and a chunk where the two references differ fails whichever ours
    # follows: one text in 8 (35,000 chunks) keeps that check of the references against each other, the one that a new
    # version of either would trip.
    sampled = slice(None, None, 8)
    legacy_tokens = [legacy.tokenize(text) for text in texts[sampled]]
    assert our_tokens[sampled] == legacy_tokens, _first_difference(texts[sampled], our_tokens[sampled], legacy_tokens)
    assert sum(map(len, our_tokens)) > 500_000


def test_whole_lines_and_offsets(data_lines, tokenizers_under_test):
    ours, legacy, rust = tokenizers_under_test
    special = [line for line in data_lines if not (line.isascii() and line.isprintable())]
    assert len(special) > 4000 and any("\ufffd" in line for line in special) and any("α" in line for line in special)
    lines = special + data_lines[::40]
    encodings = [ours.encode(line) for line in lines]
    expected = rust.encode_batch(lines)  # with [CLS] and [SEP]
    for field in ("tokens", "ids", "type_ids", "offsets"):
        assert [getattr(e, field) for e in encodings] == [getattr(e, field) for e in expected], field
    sample = special + data_lines[::400]
    assert [ours.tokenize(line) for line in sample] == [legacy.tokenize(line) for line in sample]


def test_pairs_match_rust_and_truncation_matches_legacy(data_dir, tokenizers_under_test):
    """Question + context pairs from BioASQ (short snippets) and SQuAD (long paragraphs)."""
    ours, legacy, rust = tokenizers_under_test
    qa = data_dir / "qa"
    bioasq = json.loads((qa / "bioasq-7b-biobert-pytorch" / "BioASQ-train-factoid-7b.json").read_text())
    squad = json.loads((qa / "squad-v1.1" / "expmrc-dev-subset" / "expmrc-squad-dev.json").read_text())
    pairs = [(question["question"], paragraph["context"]) for dataset in (bioasq, squad)
             for article in dataset["data"] for paragraph in article["paragraphs"] for question in paragraph["qas"]]
    assert len(pairs) > 4500
    pairs = pairs[::2]
    expected = rust.encode_batch(pairs)
    for (question, context), rust_encoding in zip(pairs, expected):
        encoding = ours.encode(question, context)
        assert (encoding.tokens, encoding.ids, encoding.type_ids, encoding.offsets) == \
               (rust_encoding.tokens, rust_encoding.ids, rust_encoding.type_ids, rust_encoding.offsets)
    for (question, context), max_length in zip(pairs[::5], [8, 9, 16, 17, 32, 64, 128, 384] * 1000):
        assert ours.encode(question, context, max_length).ids == legacy.encode(
            question, context, truncation="longest_first", max_length=max_length)
        assert ours.encode(context, max_length=max_length).ids == legacy.encode(
            context, truncation=True, max_length=max_length)


HAND_WRITTEN = ["Ünïcode α-synuclein\x00 naïve\ufffd café", "cafe\u0301 au lait", "a\u0301b", "ab\x00cd", "İstanbul",
                "x\u2028y\u2029z", "x\x0by\x0cz\x1cw\x85v", "50\u00a0mg\u2009/\u202fkg", "zero\u200bwidth soft\u00adhyphen",
                "ab[CLS]cd [cls] [SEP][MASK] [UNK]x[PAD]", "ﬁne", "中国abc한국어", "e\u0301\u0301", "\u0301 lone mark",
                "IL-2–induced (p < 0.05) ≥ 5 µM ±2 °C", "$^`~|\\ ¿¡ «quoted» “curly”", "Ⅻ ½ ² ß ẞ ø ł",
                "\t\n  ", "", "a" * 200, "a" * 201, "tumour " * 50]


def test_hand_written_strings(tokenizers_under_test):
    ours, legacy, rust = tokenizers_under_test
    for text in HAND_WRITTEN:
        expected = rust.encode(text)
        assert (ours.encode(text).tokens, ours.encode(text).offsets) == (expected.tokens, expected.offsets), text
        assert ours.tokenize(text) == legacy.tokenize(text), text


def test_random_unicode_strings(tokenizers_under_test):
    """Random mixes of letters, marks, controls, spaces, punctuation, CJK and special tokens. Characters are those
    whose category is the same in Unicode 3.2 and in Python's: the Rust tokenizer's tables are older than Python's."""
    ours, legacy, rust = tokenizers_under_test
    rng = random.Random(0)
    pool = [*"abcXYZ019 .,-()[]'\"\t\n", *SPECIAL_TOKENS, "é", "e\u0301", "\u0301", "\x00", "\ufffd", "\x01", "\x0b",
            "\x85", "\u2028", "\u200b", "\u00a0", "α", "β", "Ω", "µ", "中", "가", "ｶ", "ﬁ", "²", "Å", "ǅ", "ö", "ł",
            "İ", "\u2126", "\u212a", "\uf900", "\u3000", "ᾈ", "\u05d0\u05b0", "\u0915\u093f"]
    stable = [char for char in map(chr, range(0x80, 0x30000)) if unicodedata.category(char) not in ("Cn", "Cs")
              and unicodedata.category(char) == unicodedata.ucd_3_2_0.category(char) and char != "Σ"]
    texts = ["".join(rng.choice(pool) if rng.random() < 0.7 else rng.choice(stable) for _ in range(rng.randint(1, 12)))
             for _ in range(3000)]
    expected = rust.encode_batch(texts, add_special_tokens=False)
    assert [ours.tokenize(text) for text in texts] == [e.tokens for e in expected]
    assert [ours.encode(text).offsets[1:-1] for text in texts] == [e.offsets for e in expected]
    assert [ours.tokenize(text) for text in texts] == [legacy.tokenize(text) for text in texts]


def test_final_sigma_follows_python_lowercasing(bert_vocab):
    """The references disagree here: Legacy lowercases a word at once (final sigma ς), Rust per character (σ)."""
    from transformers import BertTokenizerLegacy
    ours, legacy = WordPieceTokenizer(bert_vocab), BertTokenizerLegacy(str(bert_vocab), do_lower_case=True)
    for text in ["ΑΣ ΣΑ", "ΟΔΟΣ.", "İΣ", "ẞΣα\x01\u200bΣ", "ΑΣ[SEP]Σ"]:
        assert ours.tokenize(text) == legacy.tokenize(text), text
    assert ours.tokenize("ΑΣ") == ["α", "##ς"]


# --------------------------------------------------------------------------------------------------- rule by rule
@pytest.fixture
def tiny(tmp_path):
    tokens = [*SPECIAL_TOKENS, "un", "##aff", "##able", "a", "##b", "##c", "ab", "abc", "cafe", "naive", "x", "##x",
              "中", "国", "il", "-", "2", "(", ")", ",", "$", "^", "`", "—", "¿", "±", "##±"]
    write_vocab(tokens, tmp_path / "vocab.txt")
    return WordPieceTokenizer(tmp_path / "vocab.txt")


def test_rules(tiny):
    assert tiny.tokenize("a\x00b\ufffdc\x01") == ["abc"]  # removed characters join the word around them
    assert tiny.tokenize("ab\tab\nab\u00a0ab\u2003ab") == ["ab"] * 5  # whitespace of every kind splits
    assert tiny.tokenize("中国abc") == ["中", "国", "abc"]  # spaces around CJK ideographs
    assert tiny.tokenize("CAFÉ Naïve") == ["cafe", "naive"]  # lowercase, NFD, drop combining marks
    assert tiny.tokenize("(IL-2),$^`") == ["(", "il", "-", "2", ")", ",", "$", "^", "`"]  # ASCII symbols split
    assert tiny.tokenize("¿x—x±x") == ["¿", "x", "—", "x", "##±", "##x"]  # Unicode P* splits, S* does not
    assert tiny.tokenize("x[CLS]x [cls]") == ["x", "[CLS]", "x", "[UNK]", "[UNK]", "[UNK]"]  # specials stay whole
    assert tiny.tokenize("unaffable abc abx") == ["un", "##aff", "##able", "abc", "ab", "##x"]  # longest match first
    assert tiny.tokenize("unaffablez") == ["[UNK]"]  # no segmentation: the whole word is [UNK]
    assert tiny.tokenize("x" * 200) == ["x"] + ["##x"] * 199 and tiny.tokenize("x" * 201) == ["[UNK]"]
    assert tiny.encode("Café, NAÏVE\x00!").offsets == [(0, 0), (0, 4), (4, 5), (6, 11), (12, 13), (0, 0)]


def test_encode_decode_and_fast_path(tiny):
    assert tiny.encode("").tokens == ["[CLS]", "[SEP]"] and tiny.encode(" \t\n").ids == [tiny.cls_id, tiny.sep_id]
    pair = tiny.encode("ab x", "abc")
    assert pair.tokens == ["[CLS]", "ab", "x", "[SEP]", "abc", "[SEP]"] and pair.type_ids == [0, 0, 0, 0, 1, 1]
    assert pair.offsets == [(0, 0), (0, 2), (3, 4), (0, 0), (0, 3), (0, 0)]
    # BERT's longest-first: pop from the longer segment, from the pair on a tie: 5 + 10 tokens into 7 -> 4 + 3
    truncated = tiny.encode("x " * 5, "ab " * 10, max_length=10)
    assert truncated.tokens.count("x") == 4 and truncated.tokens.count("ab") == 3 and len(truncated.ids) == 10
    assert tiny.encode("x " * 9, max_length=4).tokens == ["[CLS]", "x", "x", "[SEP]"]
    with pytest.raises(ValueError):
        tiny.encode("x", "x", max_length=2)
    ids = tiny.encode("unaffable [MASK] zzz, ab").ids + [tiny.pad_id]
    assert tiny.decode(ids) == "unaffable [MASK] [UNK] , ab"
    text = "Un-affable (ab), abc zz 中 " * 3
    assert tiny.tokenize_ids(text) == [tiny.vocab[token] for token in tiny.tokenize(text)]
    assert tiny.tokenize_ids(text) == tiny.encode(text).ids[1:-1]
    clone = pickle.loads(pickle.dumps(tiny))  # worker processes get a copy
    assert clone.tokenize(text) == tiny.tokenize(text) and clone.vocab_path == tiny.vocab_path


def test_whitespace_set_is_bert_whitespace_plus_line_separators():
    separators = {chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Zs"} | set(" \t\n\r\u2028\u2029")
    assert {chr(c) for c in range(0x110000) if not CHUNK.fullmatch(chr(c))} == separators


# ------------------------------------------------------------------------------------------------------ bad input
def _vocab_file(tmp_path, content):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    return path


GOOD = "\n".join(SPECIAL_TOKENS).encode() + b"\nab\n##s\n"


@pytest.mark.parametrize("content, message", [
    (b"", r"vocab.txt: vocabulary file is empty"),
    (GOOD.replace(b"[MASK]\n", b""), r"vocab.txt: missing special token\(s\) \[MASK\]"),
    (GOOD + b"x\n##s\n", r"vocab.txt:9: duplicate entry '##s' \(first on line 7\)"),
    (GOOD + b"caf\xe9\n", r"vocab.txt:8: not UTF-8 \(byte 0xe9 at column 4\)"),
])
def test_bad_vocab_files(tmp_path, content, message):
    with pytest.raises(InputError, match=message):
        WordPieceTokenizer(_vocab_file(tmp_path, content))


def test_missing_vocab_file(tmp_path):
    with pytest.raises(InputError, match=r"nothing\.txt: vocabulary file not found"):
        read_vocab(tmp_path / "nothing.txt")
    assert read_vocab(_vocab_file(tmp_path, GOOD))[-1] == "##s"


# -------------------------------------------------------------------------------------------------- vocab training
CORPUS = ["The tumour suppressor p53 binds DNA.", "Tumour cells divide; the cells of a tumour spread.",
          "Mutations of p53 occur in many tumours (Vogelstein et al., 2000).", "Naïve T-cells, α-synuclein!"] * 20


def test_train_vocab_on_a_small_corpus(tmp_path):
    tokens = train_vocab(iter(CORPUS), vocab_size=120)  # a one-pass iterator: training streams
    assert tokens[:5] == list(SPECIAL_TOKENS) and len(tokens) == 120 and len(set(tokens)) == 120
    assert tokens == train_vocab(CORPUS, vocab_size=120)  # deterministic
    write_vocab(tokens, tmp_path / "vocab.txt")
    trained = WordPieceTokenizer(tmp_path / "vocab.txt")
    assert trained.tokenize("tumour") == ["tumour"]  # a frequent word becomes one piece
    assert "[UNK]" not in [token for line in CORPUS for token in trained.tokenize(line)]
    assert "α" in tokens and not any("ï" in token or "T" in token for token in tokens)  # normalized as BERT does


def test_train_vocab_merges_most_frequent_pair_first():
    tokens = train_vocab(["ab"] * 5 + ["abc"] * 3, vocab_size=5 + 3 + 2)  # pairs: (a, ##b) 8, (##b, ##c) 3
    assert tokens[5:8] == ["##b", "##c", "a"] and tokens[8:] == ["ab", "abc"]
    assert len(train_vocab(["ab"] * 5 + ["abc"], vocab_size=100, min_frequency=2)) == 9  # "abc" seen once: no merge
    with pytest.raises(ValueError, match="smaller than"):
        train_vocab(CORPUS, vocab_size=10)


def _merges_by_full_recount(word_counts, vocab_size, min_frequency):
    """The same BPE-on-## algorithm done the slow, obvious way: recount every pair before every merge."""
    words = {tuple([word[0], *("##" + char for char in word[1:])]): count for word, count in word_counts.items()}
    tokens = [*SPECIAL_TOKENS, *sorted({symbol for word in words for symbol in word})]
    while len(tokens) < vocab_size:
        pair_counts = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break
        # most frequent pair; on a tie the one whose tokens came first (the order train_vocab's heap uses)
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], tokens.index(pair[0]), tokens.index(pair[1])))
        if pair_counts[best] < min_frequency:
            break
        merged = best[0] + best[1].removeprefix("##")
        if merged not in tokens:
            tokens.append(merged)
        new_words = Counter()
        for word, count in words.items():
            symbols, position = [], 0
            while position < len(word):
                if word[position:position + 2] == best:
                    symbols.append(merged)
                    position += 2
                else:
                    symbols.append(word[position])
                    position += 1
            new_words[tuple(symbols)] += count
        words = new_words
    return tokens


def test_train_vocab_incremental_counts_equal_full_recount():
    rng = random.Random(1)
    word_counts = Counter({"".join(rng.choice("aabbcde") for _ in range(rng.randint(1, 9))): rng.randint(1, 30)
                           for _ in range(400)})
    lines = [" ".join(word for word, count in word_counts.items() for _ in range(count))]
    for vocab_size, min_frequency in [(120, 2), (400, 1), (400, 25)]:
        assert train_vocab(lines, vocab_size, min_frequency=min_frequency) == \
               _merges_by_full_recount(word_counts, vocab_size, min_frequency)


# ------------------------------------------------------------------------------------------ PubMed pre-processing
def test_pubmed_preprocess():
    # NLTK TreebankWordTokenizer's own examples, lowercased; BlueBERT first joins lines, so only the final period
    assert pubmed_preprocess("Good muffins cost $3.88\nin New York.  Please buy me\ntwo of them.\nThanks.") == \
           "good muffins cost $ 3.88 in new york. please buy me two of them. thanks ."
    assert pubmed_preprocess("They'll save and invest more.") == "they 'll save and invest more ."
    assert pubmed_preprocess("hi, my name can't hello,") == "hi , my name ca n't hello ,"
    assert pubmed_preprocess('He said "IL-2 (p<0.05)" -- twice; 2,500 cells: ok?') == \
           "he said `` il-2 ( p < 0.05 ) '' -- twice ; 2,500 cells : ok ?"
    assert pubmed_preprocess("The patient's α-synuclein… naïve") == "the patient's -synuclein na ve"
    assert pubmed_preprocess("We cannot") == "we can not"


def test_punctuation_and_cjk_classes_equal_berts_on_every_code_point():
    """The two character classes that split words, against BERT's own functions on all of Unicode (0..0x10FFFF)."""
    from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer, _is_punctuation as berts_punctuation
    berts_cjk = BasicTokenizer()._is_chinese_char
    punctuation = [code for code in range(0x110000) if _is_punctuation(chr(code)) != berts_punctuation(chr(code))]
    cjk = [code for code in range(0x110000) if _is_cjk(code) != berts_cjk(code)]
    assert punctuation == [] and cjk == []


@pytest.mark.parametrize("lowercase", [True, False])
def test_basic_words_equal_berts_basic_tokenizer_cased_and_uncased(lowercase):
    """basic_words is BERT's BasicTokenizer on one whitespace-free chunk, on both paths (ASCII fast path, the rest),
    and lowercases by default; compared with transformers' pure-Python BasicTokenizer."""
    from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer
    reference = BasicTokenizer(do_lower_case=lowercase)
    chunks = ["IL-2(p<0.05)", "TNF-alpha,", "CAFÉ", "Naïve-Übermensch", "ΣΊΣΥΦΟΣ", "İstanbul", "x\u00adY\u200bZ",
              "中文ABC", "Äpfel.Birnen",  # precomposed: cased, this BasicTokenizer applies NFC, BERT does not
              "\u0c95\u0cc0\u0cb2"]  # Kannada KII: NFD gives a combining mark, then a spacing one that is kept
    for chunk in chunks:
        ours = [word for word, _ in (basic_words(chunk) if lowercase else basic_words(chunk, lowercase=False))]
        assert ours == reference.tokenize(chunk), chunk

