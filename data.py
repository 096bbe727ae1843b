"""Pre-training data: biomedical text -> packed, sharded memmaps -> fixed-shape batches.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tokenizer import InputError, WordPieceTokenizer, pubmed_preprocess

SKIPPED_FILES = re.compile(r"^(README|LICENSE|OVERLAP)|\.md$", re.IGNORECASE)  # documentation beside the text
PUBTATOR_LINE = re.compile(r"^\d+\|[ta]\|")
# A sentence ends at . ? or ! followed by space and a capital letter (or a bracket and a capital): "Fig. 2" and
# "e.g. in" stay whole. Only used on lines that hold a whole
# abstract (PubTator, PubMedQA, BioNLP files): ELECTRA's builder drops what overflows a line, so a 300-token abstract on
# one line would lose most of its text at max length 128. The BlueBERT corpus is already one sentence per line.
SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=[(\[]?[A-Z])")
UNIT_BYTES = 4 << 20  # corpus bytes per shard: small enough for a useful progress bar, big enough for few files


# ---------------------------------------------------------------------------------------------------- reading corpora
def corpus_files(paths):
    """Every text file under the given files and folders, sorted so that a build is reproducible."""
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
    return files


def split_sentences(text):
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def file_format(path, head):
    """Guess a file's layout from its name and first lines (`head`)."""
    lines = [line for line in head.splitlines() if line.strip()]
    if path.suffix == ".json":
        return "pubmedqa-json"
    if lines and PUBTATOR_LINE.match(lines[0]):
        return "pubtator"
    if lines and all(len(line.split("\t")) == 2 and re.fullmatch(r"O|[BIES]-\S+", line.split("\t")[1].strip())
                     for line in lines[:50]):
        return "token-tag"
    if path.suffix == ".tokens":
        return "token-per-line"
    return "text"


def read_lines(path, start=0, end=None):
    """Lines of a UTF-8 file between two byte offsets, with a bad byte reported as file:line."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read() if end is None else f.read(end - start)
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
        head = f.read(8192).decode("utf-8", errors="replace")
    layout = file_format(path, head)
    if layout == "pubmedqa-json":  # {PMID: {QUESTION (the title), CONTEXTS [...], LONG_ANSWER}}
        try:
            records = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: not a JSON file ({error})") from None
        if not isinstance(records, dict) or not all(isinstance(r, dict) and "CONTEXTS" in r for r in records.values()):
            raise InputError(f"{path}: JSON is not in the PubMedQA layout {{id: {{QUESTION, CONTEXTS, ...}}}}")
        for record in records.values():
            parts = [record.get("QUESTION", ""), *record["CONTEXTS"], record.get("LONG_ANSWER", "")]
            yield [s for part in parts for s in split_sentences(part)]
        return
    lines = read_lines(path, start, end)
    if layout == "pubtator":  # PMID|t|title, PMID|a|abstract, annotation lines; blank line between documents
        document = []
        for line in lines:
            if PUBTATOR_LINE.match(line):
                document += split_sentences(line.split("|", 2)[2])
            elif not line.strip() and document:
                yield document
                document = []
        if document:
            yield document
    elif layout in ("token-tag", "token-per-line"):  # one token per line; blank lines between sentences
        tokens, sentences = [], []
        for line in lines + [""]:
            token = line.split("\t")[0].strip()
            if token:
                tokens.append(token)
            if tokens and (not token or (layout == "token-per-line" and token in ".?!")):
                sentences.append(" ".join(tokens))
                tokens = []
        if sentences:
            yield sentences  # these files carry no document boundaries: the file is the document
    else:  # one sentence per line, blank line between documents (BlueBERT); a file without blanks is one document
        document = []
        for line in lines + [""]:
            if line.strip():
                document += split_sentences(line)
            elif document:
                yield document
                document = []


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
            splittable = file_format(path, f.read(8192).decode("utf-8", errors="replace")) == "text"
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
            ids = tokenizer.tokenize_ids(pubmed_preprocess(sentence) if preprocess else sentence)
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


def file_sha1(path):
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


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
    count, rows = 0, []
    with open(f"{name}.bin.partial", "wb") as f:
        for example in pack_documents(documents, tokenizer, spec.max_length, rng, spec.preprocess):
            rows.append(example + [tokenizer.pad_id] * (spec.max_length - len(example)))
            if len(rows) == 1024:
                f.write(np.asarray(rows, dtype=dtype).tobytes())
                count, rows = count + len(rows), []
        if rows:
            f.write(np.asarray(rows, dtype=dtype).tobytes())
            count += len(rows)
    os.replace(f"{name}.bin.partial", f"{name}.bin")
    write_json_atomic(f"{name}.json", {**spec.__dict__, "examples": count})
    return count


_tokenizers = {}


def _worker_tokenizer(vocab_path):
    """One tokenizer per process (its word cache is what makes it fast)."""
    if vocab_path not in _tokenizers:
        _tokenizers[vocab_path] = WordPieceTokenizer(vocab_path)
    return _tokenizers[vocab_path]


def _build_shard_task(task):
    spec, out_dir = task
    return spec.index, build_shard(spec, out_dir), sum(end - start for _, start, end, *_ in spec.sources)


def write_json_atomic(path, obj):
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(temporary, path)


def build_shards(corpus, vocab_path, out_dir, max_length=128, seed=12345, preprocess=False, processes=2,
                 unit_bytes=UNIT_BYTES):
    """Corpus files/folders -> out_dir/shard_*.bin + index.json. Reuses complete shards of an earlier (killed) build."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    WordPieceTokenizer(vocab_path)  # fail early, with a clear message, on a bad vocabulary
    vocab_sha1 = file_sha1(vocab_path)
    specs = []
    for index, unit in enumerate(work_units(corpus_files(corpus), unit_bytes)):
        sources = [(path, start, end, os.stat(path).st_size, os.stat(path).st_mtime_ns) for path, start, end in unit]
        specs.append(ShardSpec(index, sources, str(vocab_path), vocab_sha1, max_length, seed, preprocess))
    counts, todo = {}, []
    for spec in specs:
        sidecar = out_dir / f"shard_{spec.index:05d}.json"
        done = json.loads(sidecar.read_text()) if sidecar.exists() else None
        if done and {k: done[k] for k in spec.__dict__} == json.loads(json.dumps(spec.__dict__)):
            counts[spec.index] = done["examples"]
        else:
            todo.append(spec)
    for stale in out_dir.glob("shard_*"):  # leftovers of another build (other corpus or settings)
        if int(stale.name[6:11]) >= len(specs) or stale.name.endswith(".partial"):
            stale.unlink()
    total_bytes = sum(end - start for spec in todo for _, start, end, *_ in spec.sources)
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"shards -> {out_dir}", disable=not todo) as bar:
        tasks = [(spec, out_dir) for spec in todo]
        if processes > 1 and len(todo) > 1:
            with multiprocessing.get_context("spawn").Pool(min(processes, len(todo))) as pool:
                for index, count, nbytes in pool.imap_unordered(_build_shard_task, tasks):
                    counts[index] = count
                    bar.update(nbytes)
        else:
            for task in tasks:
                index, count, nbytes = _build_shard_task(task)
                counts[index] = count
                bar.update(nbytes)
    vocab_size = len(WordPieceTokenizer(vocab_path).ids)
    index = {"vocab_path": str(Path(vocab_path).resolve()), "vocab_sha1": vocab_sha1, "vocab_size": vocab_size,
             "max_length": max_length, "dtype": np.dtype(ids_dtype(vocab_size)).name, "seed": seed,
             "preprocess": preprocess, "examples": sum(counts.values()),
             "shards": [{"file": f"shard_{i:05d}.bin", "examples": counts[i]} for i in range(len(specs))],
             "sources": sorted({path for spec in specs for path, *_ in spec.sources})}
    write_json_atomic(out_dir / "index.json", index)  # written last: its presence means the build is complete
    return index


def shards_ready(out_dir, vocab_path, max_length):
    """True when out_dir holds a complete build for this vocabulary and length."""
    index_path = Path(out_dir) / "index.json"
    if not index_path.exists():
        return False
    index = json.loads(index_path.read_text())
    return index["vocab_sha1"] == file_sha1(vocab_path) and index["max_length"] == max_length


# ------------------------------------------------------------------------------------------------------------- loader
class PretrainingData:
    """Fixed-shape batches from the shards: every batch is [batch_size, max_length], drop_last, seeded shuffle.

    The order of epoch e is a permutation drawn from (seed, e); the loader's position is just (epoch, batch), which the
    training checkpoint stores, so a resumed run sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, shard_dir, pad_id=0, sep_id=None):
        shard_dir = Path(shard_dir)
        if not (shard_dir / "index.json").exists():
            raise InputError(f"{shard_dir}: no index.json (the shards are not built, or their build was interrupted)")
        self.index = json.loads((shard_dir / "index.json").read_text())
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
