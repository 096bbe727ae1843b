"""Pre-training data: biomedical text -> packed, sharded memmaps -> fixed-shape batches.
(The fine-tuning benchmarks' files are read by benchmarks.py.)

    python train.py prepare --corpus PUBMED_DIR --vocab vocab.txt --out shards/     # (train.py pretrain runs it for you)

What it follows:
- Packing is ELECTRA's `build_pretraining_dataset.py` (`ExampleBuilder`, Clark et al. 2020, google-research/electra):
  sentences of one document accumulate until the target length, a document boundary flushes, `[CLS] A [SEP] B [SEP]`
  with 10% single-segment examples and 5% random shorter targets. No next-sentence label.
- The corpus of the ELECTRAMed paper (Miolo et al. 2021, from BlueBERT, Peng et al. 2019) is plain text with one sentence
  per line and a blank line between documents. We also read PubTator, PubMedQA JSON, token-per-line and token<TAB>tag
  files, so the real PubMed text in ../shared/data/pretrain can be used as it is.

On disk a built corpus is a folder of `shard_NNNNN.bin` files (raw [examples, max_length] token ids, uint16 when the
vocabulary fits) and an `index.json`. Only ids are stored: the attention mask is `ids != [PAD]` and the token types are
recomputed from the position of the first [SEP], so a shard is exactly the ELECTRA example and nothing else.
"""
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tokenizer import InputError, WordPieceTokenizer, pubmed_preprocess

SKIPPED_FILES = re.compile(r"^(README|LICENSE|OVERLAP)|\.md$", re.IGNORECASE)  # documentation beside the text
PUBTATOR_LINE = re.compile(r"^\d+\|[ta]\|")
PUBTATOR_TEXT = re.compile(r"^(\d+)\|([ta])\|(.*)$")  # PMID|t|title, PMID|a|abstract
PUBTATOR_ANNOTATION = re.compile(r"^(\d+)\t[^\t]*\t[^\t]*\t")  # PMID<TAB>start<TAB>end<TAB>... or a relation row
TAG = re.compile(r"O|[BIES]-\S+")  # the tag column of a token<TAB>tag file
# A sentence ends at . ? or ! followed by space and a capital letter (or a bracket and a capital): "Fig. 2" and
# "e.g. in" stay whole, and so do the titles and references that a capital follows: "Dr. Smith", "St. John's wort",
# "Fig. S1" (one look-behind per length: `re` needs fixed widths; "et al. The" stays a sentence end). Used only where
# a whole abstract or paragraph sits on one line or in one string (PubTator, PubMedQA, plain-text files of layout
# "paragraphs"): ELECTRA's builder takes a line as one sentence and drops what overflows an example, so a 300-token
# abstract on one line would lose most of its text at max length 128. Plain text in the BlueBERT layout is one
# sentence per line, and each line stays one sentence, as in the official builder.
SENTENCE_END = re.compile(r"(?<=[.?!])(?<!\b(?:Dr|Mr|Ms|St|vs|cf)\.)(?<!\b(?:Mrs|Fig|Ref)\.)(?<!\b(?:Prof|Figs|Refs)\.)"
                          r"\s+(?=[(\[]?[A-Z])")
UNIT_BYTES = 4 << 20  # corpus bytes per shard: small enough for a useful progress bar, big enough for few files


# ---------------------------------------------------------------------------------------------------- reading corpora
def corpus_files(paths):
    """Every text file under the given files and folders, once each, sorted by path: a build depends on which files
    it reads, not on the order (or the number of times) they were named."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                            and not SKIPPED_FILES.search(p.name))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    if not files:
        raise InputError(f"{', '.join(map(str, paths))}: no text files found")
    return sorted({str(file.resolve()): file for file in files}.values(), key=lambda file: str(file.resolve()))


def split_sentences(text):
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def token_columns(line):
    """The columns of a token-per-line row: TAB-separated, or space-separated when there is no TAB."""
    return line.split("\t") if "\t" in line else line.split()


def file_format(path, head):
    """Guess a file's layout from its name and first lines (`head`). A file is taken for a layout when most of its
    first lines look like it, so that one broken line is reported by the reader (file:line) instead of turning the
    whole file into plain text."""
    lines = [line for line in head.splitlines() if line.strip()][:50]
    if path.suffix.lower() == ".json":
        return "pubmedqa-json"
    if path.suffix.lower() == ".pubtator" or any(PUBTATOR_LINE.match(line) for line in lines[:10]):
        return "pubtator"
    tagged = [2 <= len(columns) <= 4 and any(TAG.fullmatch(column.strip()) for column in columns[1:])
              for columns in map(token_columns, lines)]  # token<TAB>tag; CoNLL's token POS tag too, to be refused by line
    if len(lines) >= 3 and sum(map(bool, tagged)) >= 0.8 * len(lines):
        return "token-tag"
    if path.suffix == ".tokens":
        return "token-per-line"
    # Plain text: one line = one sentence (BlueBERT; the official rule), unless the first lines hold 1.5 sentences or
    # more each on average (sentence-per-line text has ~1): then each line is a paragraph (BioNLP-ST files: a title
    # line, then the abstract on one line).
    if lines and sum(len(split_sentences(line)) for line in lines) >= 1.5 * len(lines):
        return "paragraphs"
    return "text"


def read_lines(path, start=0, end=None):
    """Lines of a UTF-8 file between two byte offsets, with a bad byte reported as file:line."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read() if end is None else f.read(end - start)
    if (nul := data.find(b"\0")) >= 0:  # UTF-8 allows NUL, text does not: a binary file would be trained on
        line = data[:nul].count(b"\n") + 1
        where = f"{path}:{line}" if start == 0 else f"{path}: byte {start + nul}"
        raise InputError(f"{where}: a NUL byte: a binary file, not text")
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        where = f"{path}:{line}" if start == 0 else f"{path}: byte {start + error.start}"
        raise InputError(f"{where}: not UTF-8 text ({error.reason})") from None


def read_documents(path, start=0, end=None):
    """Yield the documents of one corpus file as lists of sentences (strings).

    `start`/`end` select a byte range of a plain-text file, cut at blank lines by `work_units`.
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(8192)
    if raw.startswith(b"\x1f\x8b") or raw.lstrip().startswith(b"<?xml") or b"<PubmedArticleSet" in raw:
        raise InputError(f"{path}: " + ("gzip-compressed" if raw.startswith(b"\x1f\x8b") else "XML") + ", not text "
                         "(PubMed's XML files become the pre-training text with `train.py corpus`)")
    head = raw.decode("utf-8", errors="replace")
    layout = file_format(path, head)
    if layout == "pubmedqa-json":  # {PMID: {QUESTION (the title), CONTEXTS [...], LONG_ANSWER}}
        for record in pubmedqa_records(path):
            parts = [record.get("QUESTION", ""), *record["CONTEXTS"], record.get("LONG_ANSWER", "")]
            yield [s for part in parts for s in split_sentences(part)]
        return
    lines = read_lines(path, start, end)

    def where(number):  # line numbers are exact for a whole file; a byte range of a split file gives its offset
        return f"{path}:{number}" if start == 0 else f"{path}: line {number} after byte {start}"

    if layout == "pubtator":  # PMID|t|title, PMID|a|abstract, annotation lines; blank line between documents
        document, pmid = [], None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                if document:
                    yield document
                document, pmid = [], None
            elif text := PUBTATOR_TEXT.match(line):
                if pmid is not None and text[1] != pmid:  # a new document without the blank line before it
                    if document:
                        yield document
                    document = []
                pmid = text[1]
                document += split_sentences(text[3])
            elif annotation := PUBTATOR_ANNOTATION.match(line):
                if annotation[1] != pmid:
                    raise InputError(f"{where(number)}: PubTator annotation of PMID {annotation[1]} outside that "
                                     f"document ({'no title/abstract line before it' if pmid is None else 'in ' + pmid})")
            else:
                raise InputError(f"{where(number)}: not a PubTator line (expected PMID|t|title, PMID|a|abstract or "
                                 f"PMID<TAB>annotation): {line[:60]!r}")
        if document:
            yield document
    elif layout in ("token-tag", "token-per-line"):  # one token per line; blank lines between sentences
        tokens, sentences = [], []
        for number, line in enumerate(lines + [""], 1):
            columns = token_columns(line)
            if layout == "token-tag" and columns and not columns[0].startswith("-DOCSTART-"):
                if len(columns) != 2 or not TAG.fullmatch(columns[1].strip()):
                    raise InputError(f"{where(number)}: expected 'token<TAB>tag' (2 columns, a tag like O or "
                                     f"B-Gene), found {len(columns)} column(s): {line[:60]!r}")
            elif layout == "token-per-line" and len(columns) > 1:
                raise InputError(f"{where(number)}: expected one token per line, found {len(columns)} columns: "
                                 f"{line[:60]!r}")
            token = columns[0].strip() if columns and not columns[0].startswith("-DOCSTART-") else ""
            if token:
                tokens.append(token)
            if tokens and (not token or (layout == "token-per-line" and token in ".?!")):
                sentences.append(" ".join(tokens))
                tokens = []
        if sentences:
            yield sentences  # these files carry no document boundaries: the file is the document
    else:  # "text": one sentence per line, blank line between documents (BlueBERT); a file without blanks is one
        document = []  # document. "paragraphs": the same, each line split into sentences.
        for line in lines + [""]:
            if line.strip():
                document += split_sentences(line) if layout == "paragraphs" else [line.strip()]
            elif document:
                yield document
                document = []


def pubmedqa_records(path):
    """The records of a PubMedQA JSON file {PMID: {QUESTION, CONTEXTS: [str], LONG_ANSWER}}, each one checked."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})") from None
    if not isinstance(records, dict):
        raise InputError(f"{path}: JSON is not in the PubMedQA layout {{id: {{QUESTION, CONTEXTS, ...}}}}")
    for pmid, record in records.items():
        if not isinstance(record, dict) or "CONTEXTS" not in record:
            raise InputError(f"{path}: record {pmid}: not in the PubMedQA layout {{QUESTION, CONTEXTS, ...}}")
        contexts = record["CONTEXTS"]
        if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
            kind = type(contexts).__name__ if not isinstance(contexts, list) else "a list with a non-string item"
            raise InputError(f"{path}: record {pmid}: CONTEXTS is {kind}, expected a list of strings")
        for field in ("QUESTION", "LONG_ANSWER"):
            if not isinstance(record.get(field, ""), str):
                raise InputError(f"{path}: record {pmid}: {field} is {type(record[field]).__name__}, expected a string")
    return list(records.values())


def work_units(files, unit_bytes=UNIT_BYTES):
    """Cut the corpus into units of about `unit_bytes`: [(path, start, end), ...] per unit.

    Small files are grouped; a big plain-text file (the BlueBERT corpus is one 26 GB file) is cut at blank lines, i.e.
    at document boundaries. Each unit becomes one shard with its own random seed, so the result does not depend on the
    number of processes.
    """
    units, current, current_bytes = [], [], 0
    for path in files:
        size = path.stat().st_size
        with open(path, "rb") as f:
            splittable = file_format(path, f.read(8192).decode("utf-8", errors="replace")) in ("text", "paragraphs")
            start = 0
            while splittable and size - start > unit_bytes:
                f.seek(start + unit_bytes)
                f.readline()  # finish the current line, then look for a blank one
                while (line := f.readline()) and line.strip():
                    pass
                end = f.tell()
                units.append([(str(path), start, end)])
                start = end
        if start < size:
            current.append((str(path), start, size))
            current_bytes += size - start
        if current_bytes >= unit_bytes:
            units.append(current)
            current, current_bytes = [], 0
    if current:
        units.append(current)
    return units


# ------------------------------------------------------------------------------------------------------------ packing
class ExampleBuilder:
    """ELECTRA's example packing (build_pretraining_dataset.py:ExampleBuilder), sentence by sentence."""

    def __init__(self, max_length, cls_id, sep_id, rng):
        self.max_length, self.cls_id, self.sep_id, self.rng = max_length, cls_id, sep_id, rng
        self.target_length = max_length
        self.sentences, self.length = [], 0

    def add_sentence(self, ids):
        """Add one tokenized sentence; returns a finished example once the target length is reached."""
        self.sentences.append(ids)
        self.length += len(ids)
        return self.flush() if self.length >= self.target_length else None

    def flush(self):
        """End the current example (a document boundary calls this too). Returns [CLS] A [SEP] (B [SEP]) or None."""
        if not self.length:
            return None
        # ELECTRA: 10% of examples are a single segment; otherwise segment A aims at half the target length.
        first_target = 100000 if self.rng.random() < 0.1 else (self.target_length - 3) // 2
        first, second = [], []
        for sentence in self.sentences:
            if (not first or len(first) + len(sentence) < first_target
                    or (not second and len(first) < first_target and self.rng.random() < 0.5)):
                first += sentence
            else:
                second += sentence
        first = first[:self.max_length - 2]  # what overflows is dropped, as in ELECTRA
        second = second[:max(0, self.max_length - len(first) - 3)]
        self.sentences, self.length = [], 0
        # ELECTRA: 5% of the time the next example aims at a random shorter length.
        self.target_length = self.rng.randint(5, self.max_length) if self.rng.random() < 0.05 else self.max_length
        example = [self.cls_id, *first, self.sep_id]
        return example + [*second, self.sep_id] if second else example


def pack_documents(documents, tokenizer, max_length, rng, preprocess=False):
    """Yield packed examples (lists of ids) from documents (lists of sentences); never mixes two documents."""
    builder = ExampleBuilder(max_length, tokenizer.cls_id, tokenizer.sep_id, rng)
    for document in documents:
        for sentence in document:
            # specials=False: a literal "[SEP]" in the text is text (as the official builder's tokenizer splits it)
            ids = tokenizer.tokenize_ids(pubmed_preprocess(sentence) if preprocess else sentence, specials=False)
            if ids and (example := builder.add_sentence(ids)):
                yield example
        if example := builder.flush():
            yield example


# ------------------------------------------------------------------------------------------------------------- shards
@dataclass
class ShardSpec:
    """Everything that determines one shard's content: a shard on disk is reused only if its spec is identical."""
    index: int
    sources: list  # [(path, start, end, size, mtime_ns)]
    vocab_path: str
    vocab_sha1: str
    max_length: int
    seed: int
    preprocess: bool


def file_digest(path, algorithm="sha1"):
    """The hex digest of a file, read in blocks (shards are GBs; PubMed's baseline files are checked by md5)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            digest.update(block)
    return digest.hexdigest()


_verified = {}  # (path, size, mtime_ns) -> sha1: a shard hashed once in a process is not hashed again


def shard_problem(path, expected_bytes, expected_sha1):
    """What is wrong with a shard file compared with its index entry, or None. Size first (a cut file), then the
    checksum (a file damaged or replaced in place)."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    stat = path.stat()
    if stat.st_size != expected_bytes:
        return f"{stat.st_size:,} bytes where the index says {expected_bytes:,} (cut short or replaced)"
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        _verified[key] = file_digest(path)
    if _verified[key] != expected_sha1:
        return "its SHA-1 differs from the index's (the file was changed or damaged)"
    return None


def source_files(files):
    """What a build was made from, to tell a later run whether its corpus is the same: [{path, bytes, mtime_ns}]."""
    return [{"path": str(Path(f).resolve()), "bytes": os.stat(f).st_size, "mtime_ns": os.stat(f).st_mtime_ns}
            for f in files]


def ids_dtype(vocab_size):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


def build_shard(spec: ShardSpec, out_dir):
    """Tokenize and pack one work unit into out_dir/shard_NNNNN.bin; returns its number of examples.

    Written as `.partial`, then renamed, then its `.json` sidecar written atomically: a shard counts as complete only
    when the sidecar exists, so a killed build never leaves a shard that looks finished.
    """
    tokenizer = _worker_tokenizer(spec.vocab_path)
    dtype = ids_dtype(len(tokenizer.ids))
    name = Path(out_dir) / f"shard_{spec.index:05d}"
    rng = random.Random(f"{spec.seed}-{spec.index}")  # one seed per unit: results independent of process count
    documents = (doc for path, start, end, *_ in spec.sources for doc in read_documents(path, start, end))
    count, rows, digest, size = 0, [], hashlib.sha1(), 0
    with open(f"{name}.bin.partial", "wb") as f:
        for example in pack_documents(documents, tokenizer, spec.max_length, rng, spec.preprocess):
            rows.append(example + [tokenizer.pad_id] * (spec.max_length - len(example)))
            if len(rows) == 1024:
                count, size = count + len(rows), size + _write_rows(f, rows, dtype, digest)
                rows = []
        if rows:
            count, size = count + len(rows), size + _write_rows(f, rows, dtype, digest)
    os.replace(f"{name}.bin.partial", f"{name}.bin")
    # the size and SHA-1 let every later use check the .bin against its index (a cut or damaged shard is not used)
    write_json_atomic(f"{name}.json", {**spec.__dict__, "examples": count, "bytes": size, "sha1": digest.hexdigest()})
    return count


def _write_rows(f, rows, dtype, digest):
    block = np.asarray(rows, dtype=dtype).tobytes()
    f.write(block)
    digest.update(block)
    return len(block)


_tokenizers = {}


def _worker_tokenizer(vocab_path):
    """One tokenizer per process (its word cache is what makes it fast)."""
    if vocab_path not in _tokenizers:
        _tokenizers[vocab_path] = WordPieceTokenizer(vocab_path)
    return _tokenizers[vocab_path]


def _die_with_parent(parent_pid):
    """Pool initializer: a worker ends when the process that started it dies, so that killing `prepare` does not leave
    its workers running to the end. Linux: the kernel sends SIGKILL (prctl PR_SET_PDEATHSIG); elsewhere a thread
    polls the parent's pid. Ctrl-C reaches the whole process group: workers ignore it, the parent stops the pool (no
    traceback from each worker)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1 (<linux/prctl.h>)
    else:
        import threading
        import time

        def watch():
            while os.getppid() == parent_pid:
                time.sleep(1)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def _build_shard_task(task):
    spec, out_dir = task
    return spec.index, build_shard(spec, out_dir), sum(end - start for _, start, end, *_ in spec.sources)


def write_text_atomic(path, text):
    """Write beside, fsync, rename: a crash leaves the old file or the new one, never half of one."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=1) + "\n")


def read_json_or_none(path):
    """A JSON file written by write_json_atomic, or None when it is missing or damaged (e.g. cut short by hand)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_shards(corpus, vocab_path, out_dir, max_length=128, seed=12345, preprocess=False, processes=2,
                 unit_bytes=UNIT_BYTES):
    """Corpus files/folders -> out_dir/shard_*.bin + index.json. Reuses complete shards of an earlier (killed) build."""
    out_dir = Path(out_dir)
    WordPieceTokenizer(vocab_path)  # fail early, with a clear message, on a bad vocabulary
    files = corpus_files(corpus)
    created, had_index = not out_dir.exists(), (out_dir / "index.json").exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "index.json").unlink(missing_ok=True)  # until the build is complete again, it is not complete
    vocab_sha1 = file_digest(vocab_path)
    specs = []
    for index, unit in enumerate(work_units(files, unit_bytes)):
        sources = [(path, start, end, os.stat(path).st_size, os.stat(path).st_mtime_ns) for path, start, end in unit]
        specs.append(ShardSpec(index, sources, str(vocab_path), vocab_sha1, max_length, seed, preprocess))
    counts, todo, done_shards = {}, [], {}
    for spec in specs:
        sidecar = out_dir / f"shard_{spec.index:05d}.json"
        done = read_json_or_none(sidecar) if sidecar.exists() else None
        if (isinstance(done, dict) and {"examples", "bytes", "sha1"} <= set(done)
                and {k: done.get(k) for k in spec.__dict__} == json.loads(json.dumps(spec.__dict__))):
            problem = shard_problem(out_dir / f"shard_{spec.index:05d}.bin", done["bytes"], done["sha1"])
            if not problem:
                counts[spec.index], done_shards[spec.index] = done["examples"], done
                continue
            print(f"{out_dir / f'shard_{spec.index:05d}.bin'}: {problem}: building it again")
        todo.append(spec)
    if done_shards:  # an earlier (killed) build's work: say so, a quick second run is no silent no-op
        print(f"{out_dir}: {len(done_shards)} of {len(specs)} shards already built from this corpus with these "
              "settings, reused")
    elif not had_index and any(out_dir.glob("shard_*.json")):  # (a complete build's replacement is said by callers)
        print(f"{out_dir}: a stopped build's shards cannot be reused (another corpus or settings, or damaged): "
              "building them again")
    for stale in out_dir.glob("shard_*"):  # leftovers of another build (other corpus or settings) or of a kill
        number = re.match(r"shard_(\d+)\.", stale.name)
        if stale.is_file() and (stale.name.endswith((".partial", ".tmp")) or number and int(number[1]) >= len(specs)):
            stale.unlink()
    try:
        total_bytes = sum(end - start for spec in todo for _, start, end, *_ in spec.sources)
        with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"shards -> {out_dir}", disable=not todo) as bar:
            tasks = [(spec, out_dir) for spec in todo]
            if processes > 1 and len(todo) > 1:
                with multiprocessing.get_context("spawn").Pool(min(processes, len(todo)), _die_with_parent,
                                                               (os.getpid(),)) as pool:
                    for index, count, nbytes in pool.imap_unordered(_build_shard_task, tasks):
                        counts[index] = count
                        bar.update(nbytes)
            else:
                for task in tasks:
                    index, count, nbytes = _build_shard_task(task)
                    counts[index] = count
                    bar.update(nbytes)
        if not sum(counts.values()):  # no index.json: an empty build must not look like a finished one
            raise InputError(f"{', '.join(map(str, corpus))}: no text to pre-train on (0 examples from {len(files)} "
                             "file(s))")
    except BaseException as error:  # no shard is left cut short; a Ctrl-C'd build's complete ones are reused
        for partial in out_dir.glob("shard_*.partial"):
            partial.unlink(missing_ok=True)
        if created and isinstance(error, InputError):  # bad input: nothing of a folder this build made is worth keeping
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    vocab_size = len(WordPieceTokenizer(vocab_path).ids)
    sidecars = {i: done_shards.get(i) or read_json_or_none(out_dir / f"shard_{i:05d}.json") for i in range(len(specs))}
    index = {"vocab_path": str(Path(vocab_path).resolve()), "vocab_sha1": vocab_sha1, "vocab_size": vocab_size,
             "max_length": max_length, "dtype": np.dtype(ids_dtype(vocab_size)).name, "seed": seed,
             "preprocess": preprocess, "examples": sum(counts.values()),
             "shards": [{"file": f"shard_{i:05d}.bin", "examples": counts[i], "bytes": sidecars[i]["bytes"],
                         "sha1": sidecars[i]["sha1"]} for i in range(len(specs))],
             "sources": source_files(files)}  # what it was built from: a run with another corpus rebuilds
    write_json_atomic(out_dir / "index.json", index)  # written last: its presence means the build is complete
    return index


INDEX_KEYS = {"vocab_sha1", "vocab_size", "max_length", "dtype", "preprocess", "examples", "shards", "sources"}


def read_index(out_dir):
    """index.json of a shard folder, checked for its keys; InputError naming it when missing or damaged."""
    path = Path(out_dir) / "index.json"
    if not path.exists():
        raise InputError(f"{path}: missing (the shards are not built, or their build was interrupted)")
    index = read_json_or_none(path)
    if not isinstance(index, dict) or not INDEX_KEYS <= set(index) or not all(
            isinstance(s, dict) and {"file", "examples", "bytes", "sha1"} <= set(s) for s in index["shards"]):
        raise InputError(f"{path}: damaged or from an older version (cut short, or keys missing); rebuild with "
                         "'train.py prepare'")
    return index


def shards_digest(out_dir):
    """What a build's examples are, in one SHA-1: its shards' digests and counts (not the corpus files' mtimes, so a
    damaged shard built again byte for byte is the same build)."""
    return hashlib.sha1(json.dumps(read_index(out_dir)["shards"], sort_keys=True).encode()).hexdigest()


def shards_problem(out_dir, vocab_path, max_length, corpus=None, preprocess=None, seed=None, check_files=True):
    """Why out_dir is not a complete build for this vocabulary, length (and corpus, preprocessing, packing seed, when
    given), or None.

    Every shard's size and SHA-1 are checked against the index (unless `check_files` is False: the settings only), so
    a cut or damaged .bin is never trained on."""
    try:
        index = read_index(out_dir)
    except InputError as error:
        return str(error).split(": ", 1)[1]
    if index["vocab_sha1"] != file_digest(vocab_path):
        return f"built with another vocabulary than {vocab_path}"
    if index["max_length"] != max_length:
        return f"built for --max-length {index['max_length']}, not {max_length}"
    if preprocess is not None and index["preprocess"] != preprocess:
        return f"built {'with' if index['preprocess'] else 'without'} --pubmed-preprocess"
    if seed is not None and index["seed"] != seed:
        return f"built with --seed {index['seed']}, not {seed}"
    if corpus is not None:
        now, then = ({source["path"]: source for source in sources}
                     for sources in (source_files(corpus_files(corpus)), index["sources"]))
        if now != then:
            counts = {"added": len(now.keys() - then.keys()), "removed": len(then.keys() - now.keys()),
                      "changed": sum(now[path] != then[path] for path in now.keys() & then.keys())}
            return "built from other corpus files (" + ", ".join(f"{count} {what}" for what, count in counts.items()
                                                                  if count) + " since)"
    for shard in index["shards"] if check_files else []:
        if problem := shard_problem(Path(out_dir) / shard["file"], shard["bytes"], shard["sha1"]):
            return f"{shard['file']} is {problem}" if problem == "missing" else f"{shard['file']}: {problem}"
    return None


# ------------------------------------------------------------------------------------------------------------- loader
class PretrainingData:
    """Fixed-shape batches from the shards: every batch is [batch_size, max_length], drop_last, seeded shuffle.

    The order of epoch e is a permutation drawn from (seed, e); the loader's position is just (epoch, batch), which the
    training checkpoint stores, so a resumed run sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, shard_dir, pad_id, sep_id):
        shard_dir = Path(shard_dir)
        self.index = read_index(shard_dir)
        for shard in self.index["shards"]:  # never train on a cut or damaged shard (hashed once per process)
            if problem := shard_problem(shard_dir / shard["file"], shard["bytes"], shard["sha1"]):
                raise InputError(f"{shard_dir / shard['file']}: {problem}; rebuild with 'train.py prepare'")
        self.max_length = self.index["max_length"]
        self.pad_id, self.sep_id = pad_id, sep_id
        self.shards = [np.memmap(shard_dir / s["file"], dtype=self.index["dtype"], mode="r").reshape(-1, self.max_length)
                       for s in self.index["shards"] if s["examples"]]
        self.offsets = np.cumsum([0] + [len(shard) for shard in self.shards])  # global row -> (shard, row)
        self.num_examples = int(self.offsets[-1])
        self._order = (None, None)  # (epoch key, permutation): one permutation per epoch, not per batch

    def __len__(self):
        return self.num_examples

    def rows(self, indices):
        """Gather examples by global index -> int64 array [len(indices), max_length]."""
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        out = np.empty((len(indices), self.max_length), dtype=np.int64)
        for shard in np.unique(shard_of):
            where = shard_of == shard
            out[where] = self.shards[shard][indices[where] - self.offsets[shard]]
        return out

    def batches_per_epoch(self, batch_size):
        return self.num_examples // batch_size

    def batch(self, epoch, number, batch_size, seed, rank=0, world_size=1):
        """Batch `number` of `epoch` as a dict of int64 tensors; with world_size > 1, this rank's contiguous slice."""
        import torch  # only the loader needs torch; the shard builder runs without it

        if self._order[0] != (seed, epoch):
            self._order = ((seed, epoch), np.random.default_rng([seed, epoch]).permutation(self.num_examples))
        order = self._order[1]
        per_rank = batch_size // world_size
        start = number * batch_size + rank * per_rank
        input_ids = torch.from_numpy(self.rows(order[start:start + per_rank]))  # [per_rank, max_length]
        attention_mask = (input_ids != self.pad_id).long()
        is_sep = (input_ids == self.sep_id).long()
        # BERT: token type 1 from just after the first [SEP] through the last one; padding keeps 0.
        token_type_ids = ((is_sep.cumsum(1) - is_sep) >= 1).long() * attention_mask
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
