"""WordPiece tokenization exactly as BERT's, with character offsets, and a WordPiece vocabulary trainer.

References followed:
- BERT (Devlin et al. 2019), google-research/bert `tokenization.py`: BasicTokenizer (clean text, CJK spacing,
  lowercase + NFD accent stripping, punctuation split) then WordpieceTokenizer (greedy longest-match-first with `##`
  continuations, [UNK] for a word with no segmentation or over 200 characters). The tests prove token-for-token and
  id-for-id equality with transformers' pure-Python `BertTokenizerLegacy` and with `tokenizers`' Rust
  `BertWordPieceTokenizer`, and offset equality with the Rust one.
- ELECTRAMed (Miolo, Mantoan, Orsenigo 2021) tokenizes with BERT's WordPiece and SciVocab, the uncased 31,090-entry
  vocabulary of SciBERT (Beltagy et al. 2019); its corpus is the PubMed text of Peng et al. 2019 (BlueBERT),
  pre-processed as in `pubmed_preprocess` below. A vocabulary built on the pre-training corpus itself is the paper's
  future work: `train_vocab`.

How it is fast in pure Python: text is cut at whitespace with one `regex` call; BERT's rules never look across
whitespace, so each whitespace-free chunk ("(IL-2)-induced," say) is tokenized once and cached with its pieces, ids
and chunk-relative offsets. Plain ASCII chunks skip the per-character Unicode work.

Where the two references disagree, we follow the one named: a word ending in capital sigma lowercases to final
sigma as Python's str.lower does (Legacy; Rust gives σ); a special token spelled with a removed character inside,
"[C\\x00LS]", is not special (Rust; Legacy keeps it whole); with lowercase=False there is no NFC step (Rust and the
original BERT code; Legacy applies NFC). Characters are classified with Python's unicodedata, as Legacy does; the
Rust tokenizer's Unicode tables are older, so a character assigned or re-categorized since can differ there (none
occurs in ../shared/data).
"""
import heapq
import os
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import regex
from tqdm import tqdm

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 200  # BERT's and ELECTRA's tokenization.py: longer words become [UNK] (transformers' default: 100)
CACHE_SIZE = 1 << 18  # chunks (and words) remembered before a cache is cleared

# Whitespace as both references split on it: BERT's _is_whitespace (space, \t, \n, \r, Unicode Zs) plus the line
# and paragraph separators U+2028/U+2029, which Python's str.split (Legacy) and Rust's char::is_whitespace split on.
# Other control characters, \x0b \x0c \x1c-\x1f \x85 included, are removed, not split on (BERT's _clean_text).
WHITESPACE = " \t\n\r\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
CHUNK = regex.compile(f"[^{WHITESPACE}]+")
ASCII_PUNCTUATION = r"!-/:-@\[-`{-~"  # BERT counts every non-alphanumeric printable ASCII character as punctuation
ASCII_WORD = regex.compile(f"[{ASCII_PUNCTUATION}]|[^{ASCII_PUNCTUATION}]+")
SPECIAL = regex.compile("(" + "|".join(regex.escape(token) for token in SPECIAL_TOKENS) + ")")


class InputError(ValueError):
    """Bad input file. The message names the file and, where known, the line: `vocab.txt:17: duplicate entry`."""


def _is_punctuation(char):
    code = ord(char)
    return 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126 or \
        unicodedata.category(char).startswith("P")


def _is_cjk(code):
    # BERT: the CJK Unified Ideographs blocks get spaces around them (Hangul, kana are ordinary letters)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF or \
        0x2A700 <= code <= 0x2B73F or 0x2B740 <= code <= 0x2B81F or 0x2B820 <= code <= 0x2CEAF or \
        0xF900 <= code <= 0xFAFF or 0x2F800 <= code <= 0x2FA1F


def basic_words(chunk, lowercase=True):
    """BERT's basic tokenization of one whitespace-free chunk (no special tokens in it).

    Returns a list of (word, positions): positions[k] is the index in `chunk` of the character that word[k] came
    from, so offsets survive lowercasing, accent stripping (NFD can lengthen a character) and removed characters.
    """
    if chunk.isascii() and chunk.isprintable():  # fast path: no control, accent or CJK character can be in it
        text = chunk.lower() if lowercase else chunk
        return [(m.group(), range(m.start(), m.end())) for m in ASCII_WORD.finditer(text)]
    kept = [(index, char) for index, char in enumerate(chunk)  # BERT: drop NUL, U+FFFD and control characters
            if char != "\x00" and char != "\ufffd" and not unicodedata.category(char).startswith("C")]
    text = "".join(char for _, char in kept)
    # Lowercase the kept text at once, as str.lower does final sigma from context; "İ" -> "I" keeps one character
    # per character ("İ".lower() is "i" + a combining dot, which accent stripping drops anyway).
    lowered = text.replace("\u0130", "I").lower() if lowercase else text
    words, word, positions = [], [], []

    def end_word():
        if word:
            words.append(("".join(word), positions.copy()))
            word.clear()
            positions.clear()

    for (index, char), lower_char in zip(kept, lowered):
        is_cjk = _is_cjk(ord(char))
        if is_cjk:  # BERT: a CJK ideograph is a word of its own
            end_word()
        for piece in unicodedata.normalize("NFD", lower_char) if lowercase else char:
            if lowercase and unicodedata.category(piece) == "Mn":
                continue  # BERT: strip accents (combining marks) when lowercasing
            if _is_punctuation(piece) and not is_cjk:
                end_word()
                words.append((piece, [index]))
            else:
                word.append(piece)
                positions.append(index)
        if is_cjk:
            end_word()
    end_word()
    return words


@dataclass
class Encoding:
    tokens: list  # [CLS] text [SEP] (pair [SEP])
    ids: list
    type_ids: list  # 0 for [CLS], the text and its [SEP]; 1 for the pair and its [SEP]
    offsets: list  # (start, end) character span in the original string the token comes from; (0, 0) for specials


class WordPieceTokenizer:
    """BERT's tokenizer over a vocab.txt (one token per line, id = line number - 1)."""

    def __init__(self, vocab_path, lowercase=True):
        self.vocab_path = Path(vocab_path)
        self.lowercase = lowercase
        self.ids = read_vocab(vocab_path)
        self.vocab = {token: index for index, token in enumerate(self.ids)}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self.vocab[t] for t in SPECIAL_TOKENS)
        self.max_piece_chars = max(len(t[2:]) if t.startswith("##") else len(t) for t in self.ids)
        self._chunk_cache, self._word_cache = {}, {}

    def __getstate__(self):  # pickle (e.g. to worker processes) without the caches
        return {**self.__dict__, "_chunk_cache": {}, "_word_cache": {}}

    # ------------------------------------------------------------------------------------------------ WordPiece
    def wordpiece(self, word):
        """WordPiece pieces of one word: a tuple of (piece, start, end), start/end indexing `word`; cached."""
        pieces = self._word_cache.get(word)
        if pieces is None:
            pieces = self._longest_match_first(word) if len(word) <= MAX_WORD_CHARS else None
            if pieces is None:  # BERT: a word over 200 characters, or with no segmentation, is one [UNK]
                pieces = ((SPECIAL_TOKENS[1], 0, len(word)),)
            if len(self._word_cache) >= CACHE_SIZE:
                self._word_cache.clear()
            self._word_cache[word] = pieces
        return pieces

    def _longest_match_first(self, word):
        """BERT's greedy segmentation: the longest vocabulary piece at each position, `##` after the first."""
        pieces, start = [], 0
        while start < len(word):
            for end in range(min(len(word), start + self.max_piece_chars), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    pieces.append((piece, start, end))
                    start = end
                    break
            else:
                return None  # no piece matches at `start`
        return tuple(pieces)

    def _encode_chunk(self, chunk, specials=True):
        """Tokens, ids and chunk-relative offsets of one whitespace-free chunk; cached (with specials=False, a chunk
        holding a literal special token is not: it is rare, and its entry differs)."""
        tokens, offsets = [], []
        parts = SPECIAL.split(chunk) if specials and "[" in chunk else [chunk]  # odd positions: the special tokens
        part_start = 0
        for index, part in enumerate(parts):
            if index % 2:  # a special token in the text stays whole (BERT never splits special tokens)
                tokens.append(part)
                offsets.append((part_start, part_start + len(part)))
            else:
                for word, positions in basic_words(part, self.lowercase):
                    for piece, start, end in self.wordpiece(word):
                        tokens.append(piece)
                        offsets.append((part_start + positions[start], part_start + positions[end - 1] + 1))
            part_start += len(part)
        # tuples of strings and ints: the garbage collector stops tracking them, so a full cache costs it little
        entry = (tuple(tokens), tuple(map(self.vocab.__getitem__, tokens)), tuple(offsets))
        if specials:
            if len(self._chunk_cache) >= CACHE_SIZE:
                self._chunk_cache.clear()
            self._chunk_cache[chunk] = entry
        return entry

    # ----------------------------------------------------------------------------------------------- public API
    def tokenize(self, text):
        """The WordPiece tokens of `text`, no special tokens added."""
        tokens, cache = [], self._chunk_cache
        for chunk in CHUNK.findall(text):
            entry = cache.get(chunk) or self._encode_chunk(chunk)
            tokens += entry[0]
        return tokens

    def tokenize_ids(self, text, specials=True):
        """The WordPiece ids of `text`, no special tokens added, no offsets: the fast path for pre-training shards.

        specials=False: a literal "[SEP]", "[CLS]", "[PAD]" or "[MASK]" in the text is split like any other text
        ("[", "sep", "]"), as the official pre-training data builder's tokenizer (BERT's FullTokenizer) does, so that
        a shard holds special ids only where the packer put them (the loader rebuilds the attention mask and token
        types from those ids)."""
        ids, cache = [], self._chunk_cache
        for chunk in CHUNK.findall(text):
            literal = not specials and "[" in chunk and SPECIAL.search(chunk)  # rare: not cached
            ids += (self._encode_chunk(chunk, specials=False) if literal else
                    cache.get(chunk) or self._encode_chunk(chunk))[1]
        return ids

    def _encode_segment(self, text, specials=True):
        tokens, ids, offsets, cache = [], [], [], self._chunk_cache
        for match in CHUNK.finditer(text):
            chunk = match.group()
            literal = not specials and "[" in chunk and SPECIAL.search(chunk)
            chunk_tokens, chunk_ids, chunk_offsets = (self._encode_chunk(chunk, specials=False) if literal else
                                                      cache.get(chunk) or self._encode_chunk(chunk))
            if chunk_tokens:
                chunk_start = match.start()
                tokens += chunk_tokens
                ids += chunk_ids
                offsets += [(chunk_start + start, chunk_start + end) for start, end in chunk_offsets]
        return tokens, ids, offsets

    def encode(self, text, pair=None, max_length=None, specials=True):
        """[CLS] text [SEP] (pair [SEP]), truncated to max_length tokens as BERT does. specials=False: a literal
        "[SEP]" (or [CLS], [PAD], [MASK]) in the text is text, as in tokenize_ids."""
        first = self._encode_segment(text, specials)
        second = self._encode_segment(pair, specials) if pair is not None else ([], [], [])
        first_length, second_length = len(first[0]), len(second[0])
        if max_length is not None:
            budget = max_length - (3 if pair is not None else 2)
            if budget < 0:
                raise ValueError(f"max_length {max_length} leaves no room for the special tokens")
            # BERT's _truncate_seq_pair (longest first): drop the last token of the longer segment, of the pair
            # on a tie. (The Rust tokenizer's longest_first gives the odd token to the other side on some ties.)
            while first_length + second_length > budget:
                if first_length > second_length:
                    first_length -= 1
                else:
                    second_length -= 1
        cls, sep = SPECIAL_TOKENS[2], SPECIAL_TOKENS[3]
        tokens = [cls, *first[0][:first_length], sep]
        ids = [self.cls_id, *first[1][:first_length], self.sep_id]
        offsets = [(0, 0), *first[2][:first_length], (0, 0)]
        type_ids = [0] * len(tokens)
        if pair is not None:
            tokens += [*second[0][:second_length], sep]
            ids += [*second[1][:second_length], self.sep_id]
            offsets += [*second[2][:second_length], (0, 0)]
            type_ids += [1] * (second_length + 1)
        return Encoding(tokens, ids, type_ids, offsets)

    def decode(self, ids):
        """Join the pieces, merging `##` continuations; [PAD], [CLS] and [SEP] are dropped."""
        skip = (self.pad_id, self.cls_id, self.sep_id)
        return " ".join(self.ids[i] for i in ids if i not in skip).replace(" ##", "")


# ------------------------------------------------------------------------------------------------------ files
def _read_lines(path):
    """Yield the lines of a UTF-8 text file (newline stripped); InputError naming file and line on bad bytes."""
    path = Path(path)
    try:
        file = open(path, "rb")
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    with file:
        for number, raw in enumerate(file, 1):
            try:
                yield raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise InputError(f"{path}:{number}: not UTF-8 (byte {raw[error.start]:#04x} "
                                 f"at column {error.start + 1})") from None


def read_vocab(path):
    """The tokens of a vocab.txt, in id order, after checking it (InputError names the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: is a folder, not a vocabulary file" if path.is_dir() else
                         f"{path}: vocabulary file not found")
    tokens, first_line = list(_read_lines(path)), {}
    if not tokens:
        raise InputError(f"{path}: vocabulary file is empty")
    if tokens[0].startswith("\ufeff"):  # not whitespace to str.strip: "[PAD]" would read as missing
        raise InputError(f"{path}:1: starts with a byte-order mark (U+FEFF); save it as UTF-8 without one")
    for number, token in enumerate(tokens, 1):
        if token != token.strip():  # "word " never matches a word: the text would silently become [UNK]
            raise InputError(f"{path}:{number}: entry {token!r} has leading or trailing whitespace")
        if token in first_line:
            raise InputError(f"{path}:{number}: duplicate entry {token!r} (first on line {first_line[token]})")
        first_line[token] = number
    missing = [token for token in SPECIAL_TOKENS if token not in first_line]
    if missing:
        raise InputError(f"{path}: missing special token(s) {' '.join(missing)}")
    return tokens


def write_vocab(tokens, path):
    """Write atomically (temporary file, then rename): a vocab.txt that exists is always a complete one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------- vocab training
def train_vocab(lines, vocab_size, lowercase=True, min_frequency=2, limit_alphabet=1000):
    """Build a WordPiece vocabulary of `vocab_size` tokens from an iterable of text lines (streamed once).

    Algorithm: the one of HuggingFace `tokenizers`' WordPieceTrainer, i.e. BPE merges on `##`-marked symbols
    (Sennrich et al. 2016): split every word (after BERT's basic tokenization) into its first character and
    `##`-prefixed following characters, then repeatedly merge the most frequent adjacent pair ("##e" + "##s" ->
    "##es"; "t" + "##he" -> "the") until the vocabulary is full or no pair occurs `min_frequency` times. We take it
    over Google's likelihood-based WordPiece (never released) and SentencePiece (how SciVocab was built): it is
    simple, deterministic, and its output is a BERT vocabulary that greedy WordPiece segments without [UNK] on the
    training text. The alphabet is the `limit_alphabet` most frequent characters; words with other characters are
    left out (WordPiece can only make them [UNK]). On the PubMed text in ../shared/data it gives 99.9% the same
    31,090 tokens as `tokenizers`' WordPieceTrainer (whose order among equally frequent pairs differs).
    Order of the result: the five special tokens, the initial symbols (sorted), then merged tokens in merge order.
    """
    chunk_counts = Counter()
    for line in lines:  # streaming: only the counts are kept
        chunk_counts.update(CHUNK.findall(line))
    word_counts = Counter()
    for chunk, count in chunk_counts.items():
        for part in SPECIAL.split(chunk)[::2]:
            for word, _ in basic_words(part, lowercase):
                word_counts[word] += count
    del chunk_counts
    char_counts = Counter()
    for word, count in word_counts.items():
        for char in word:
            char_counts[char] += count
    alphabet = {char for char, _ in char_counts.most_common(limit_alphabet)}
    word_counts = {word: count for word, count in word_counts.items() if alphabet.issuperset(word)}
    # the initial symbols: each word's first character as is, the following ones marked as continuations
    symbols = {symbol for word in word_counts for symbol in (word[0], *("##" + char for char in word[1:]))}
    tokens = [*SPECIAL_TOKENS, *sorted(symbols)]
    if len(tokens) > vocab_size:
        raise InputError(f"--vocab-size {vocab_size} is smaller than the {len(tokens)} special tokens and characters "
                         f"of the corpus: use at least {len(tokens)}")
    token_id = {token: index for index, token in enumerate(tokens)}
    words = [[token_id[word[0]], *(token_id["##" + char] for char in word[1:])] for word in word_counts]
    counts = list(word_counts.values())
    del word_counts

    # pair -> summed count of the words it occurs in, and pair -> the words it may occur in (a superset)
    pair_counts, pair_words = defaultdict(int), defaultdict(set)
    for index, (symbols, count) in enumerate(zip(words, counts)):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += count
            pair_words[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]  # max-heap of (count, pair); ties: smaller ids
    heapq.heapify(heap)
    bar = tqdm(total=vocab_size, initial=len(tokens), desc="vocab: merging pairs", unit=" token", dynamic_ncols=True)
    while len(tokens) < vocab_size and heap:
        negative_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -negative_count:  # stale entry: the count changed since it was pushed
            if count >= min_frequency:
                heapq.heappush(heap, (-count, pair))
            continue
        if count < min_frequency:
            break
        left, right = pair
        merged_token = tokens[left] + tokens[right].removeprefix("##")
        if merged_token not in token_id:  # two merges can spell the same token ("ab"+"##c", "a"+"##bc")
            token_id[merged_token] = len(tokens)
            tokens.append(merged_token)
            bar.update(1)
        merged_id = token_id[merged_token]
        changed = set()
        for index in pair_words.pop(pair):  # incremental update: only the words that hold the pair
            symbols, new_symbols, position = words[index], [], 0
            while position < len(symbols):
                if position + 1 < len(symbols) and symbols[position] == left and symbols[position + 1] == right:
                    new_symbols.append(merged_id)
                    position += 2
                else:
                    new_symbols.append(symbols[position])
                    position += 1
            if len(new_symbols) == len(symbols):
                continue
            count = counts[index]
            for old_pair in zip(symbols, symbols[1:]):
                pair_counts[old_pair] -= count
                changed.add(old_pair)
            for new_pair in zip(new_symbols, new_symbols[1:]):
                pair_counts[new_pair] += count
                pair_words[new_pair].add(index)
                changed.add(new_pair)
            words[index] = new_symbols
        for changed_pair in changed:
            if pair_counts[changed_pair] <= 0:
                del pair_counts[changed_pair]
                pair_words.pop(changed_pair, None)
            elif changed_pair != pair:
                heapq.heappush(heap, (-pair_counts[changed_pair], changed_pair))
    bar.close()
    return tokens


# ------------------------------------------------------------------------------------------- PubMed pre-processing
# The ELECTRAMed corpus is BlueBERT's PubMed text (Peng et al. 2019), prepared as: lowercase, replace each run of
# non-ASCII characters by a space, NLTK's TreebankWordTokenizer, then re-attach "'s". The Treebank rules below are
# those of NLTK 3.9's TreebankWordTokenizer (itself a port of R. MacIntyre's Penn Treebank sed script), applied in
# NLTK's order and written for lowercased ASCII input (so the upper-case variants are left out). Differences from
# NLTK: none on lowercased ASCII text that we know of; not applied: the optional -LRB-/-RRB- bracket conversion (off
# by default in NLTK too). Like NLTK, only a period at the very end of the text is split off.
_TREEBANK_START = [(r'^"', "``"), (r"(``)", r" \1 "), (r"([ (\[{<])(\"|'{2})", r"\1 `` "),  # opening quotes
                   (r"([:,])([^\d])", r" \1 \2"), (r"([:,])$", r" \1 "),  # , and : except inside numbers
                   (r"\.\.\.", " ... "), (r"[;@#$%&]", r" \g<0> "),
                   (r"([^\.])(\.)([\]\)}>\"']*)\s*$", r"\1 \2\3 "),  # the final period
                   (r"[?!]", r" \g<0> "), (r"([^'])' ", r"\1 ' "),
                   (r"[\]\[(){}<>]", r" \g<0> "), (r"--", " -- ")]  # brackets, double dashes
_TREEBANK_END = [(r"''", " '' "), (r'"', " '' "),  # closing quotes, then clitics
                 (r"([^' ])('s|'m|'d|') ", r"\1 \2 "), (r"([^' ])('ll|'re|'ve|n't) ", r"\1 \2 "),
                 *((rf"\b({first})({second})\b", r" \1 \2 ") for first, second in  # MacIntyre's contractions
                   [("can", "not"), ("d", "'ye"), ("gim", "me"), ("gon", "na"), ("got", "ta"), ("lem", "me"),
                    ("more", "'n")]),
                 (r"\b(wan)(na)(?=\s)", r" \1 \2 "), (r" ('t)(is)\b", r" \1 \2 "), (r" ('t)(was)\b", r" \1 \2 ")]
_TREEBANK_START = [(regex.compile(pattern), replacement) for pattern, replacement in _TREEBANK_START]
_TREEBANK_END = [(regex.compile(pattern), replacement) for pattern, replacement in _TREEBANK_END]


def pubmed_preprocess(text):
    """The paper's PubMed pre-processing (BlueBERT's recipe): a lowercased, ASCII-only, Treebank-tokenized line."""
    text = regex.sub(r"[^\x00-\x7F]+", " ", regex.sub(r"[\r\n]+", " ", text.lower()))
    for pattern, replacement in _TREEBANK_START:
        text = pattern.sub(replacement, text)
    text = " " + text + " "
    for pattern, replacement in _TREEBANK_END:
        text = pattern.sub(replacement, text)
    return regex.sub(r"\s's\b", "'s", " ".join(text.split()))
