"""PubMed baseline XML -> the BlueBERT pre-training text the paper used (`python train.py corpus`).

    python train.py corpus --pubmed https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/pubmed25n{0001..1274}.xml.gz \
        --out pubmed.txt --processes 8

ELECTRAMed pre-trains on BlueBERT's PubMed corpus (Peng et al. 2019: titles + abstracts of the PubMed baseline, one
sentence per line, a blank line between abstracts, lowercased, non-ASCII dropped, Treebank-tokenized). This module
rebuilds it from PubMed's own files:
- Each file is parsed as a stream (xml.etree iterparse, every citation cleared once read), so memory stays flat on a
  30,000-citation file. Per citation: MedlineCitation/PMID, Article/ArticleTitle and Article/Abstract/AbstractText.
  A structured abstract's labelled sections (BACKGROUND, METHODS, ...) are joined in order, without their labels
  (they are headings, not sentences). Inline markup (<i>, <sup>, ...) keeps its text.
- PubMed's update rules: a PMID is kept once, the version in the latest file given wins (give the files in PubMed's
  order: baseline, then updatefiles), and a <DeleteCitation> PMID is dropped from every earlier file. A citation whose
  winning version has no abstract is skipped (and counted): BlueBERT's corpus is abstracts.
- Text: data.split_sentences on the title and on each section, then tokenizer.pubmed_preprocess per sentence.
- Inputs are local files (.xml or .xml.gz) or URLs. A URL is downloaded into --download-dir; a stopped download
  resumes from the partial file's length (HTTP Range; file:// URLs seek), and every file is checked against the
  `.md5` file PubMed publishes beside it ("MD5(pubmed25n0001.xml.gz)= <hex>"; a local file is checked when one sits
  beside it).
Each input file is converted by one process into its own part file; the parts are then merged by the update rules into
`--out`, written under a temporary name and renamed at the end, so a stopped run leaves no half-written corpus.
"""
import gzip
import multiprocessing
import os
import shutil
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data import file_digest, split_sentences
from tokenizer import InputError, pubmed_preprocess

PROGRESS_EVERY = 1000  # citations between progress reports from a worker process
_progress = None  # a shared counter (multiprocessing.Value) in worker processes, a tqdm bar in-process


# ------------------------------------------------------------------------------------------------------------ text
def document_text(sentences):
    """One abstract in the BlueBERT layout: pre-processed sentences, one per line, then a blank line ('' if none)."""
    lines = [line for line in map(pubmed_preprocess, sentences) if line]
    return "".join(line + "\n" for line in lines) + "\n" if lines else ""


def _text(element):
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def citations(path):
    """Stream one PubMed XML file (.xml or .xml.gz): yield (pmid, title, [abstract sections]) per <PubmedArticle> and
    (pmid, None, None) per PMID of <DeleteCitation>, in file order."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            events = ET.iterparse(f, events=("start", "end"))
            _, root = next(events)
            for event, element in events:
                if event != "end":
                    continue
                if element.tag == "PubmedArticle":
                    citation = element.find("MedlineCitation")
                    pmid = _pmid(citation.findtext("PMID") if citation is not None else None, path,
                                 "<PubmedArticle> without a numeric <MedlineCitation><PMID>")
                    article = citation.find("Article")
                    title = _text(article.find("ArticleTitle")) if article is not None else ""
                    sections = [_text(part) for part in citation.iterfind("Article/Abstract/AbstractText")]
                    yield pmid, title, [s for s in sections if s]
                    root.clear()  # drop the citations read so far: memory stays flat
                elif element.tag == "DeleteCitation":
                    for pmid in element.iterfind("PMID"):
                        yield _pmid(pmid.text, path, "<DeleteCitation> with a PMID that is not a number"), None, None
                    root.clear()
    except ET.ParseError as error:
        line, column = error.position
        raise InputError(f"{path}:{line}: malformed XML ({str(error).split(':')[0]}, column {column})") from None
    except (gzip.BadGzipFile, EOFError) as error:
        raise InputError(f"{path}: not a complete gzip file ({error})") from None
    except zlib.error as error:  # bytes changed inside the compressed stream (a bad disk or copy)
        raise InputError(f"{path}: damaged gzip data ({error})") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error})") from None


# ------------------------------------------------------------------------------------------------------- downloads
def read_md5(text, name, where):
    """The hex digest for `name` in PubMed's md5 file format: 'MD5(pubmed25n0001.xml.gz)= 0123abcd...'."""
    for line in text.splitlines():
        label, _, digest = line.partition("=")
        if label.strip() == f"MD5({name})" and len(digest.strip()) == 32:
            return digest.strip().lower()
    raise InputError(f"{where}: no 'MD5({name})= <hex>' line")


def download(url, directory):
    """Fetch `url` into `directory` (resuming a partial download) and check it against `url + '.md5'`."""
    name = Path(urllib.parse.urlparse(url).path).name
    target, partial = Path(directory) / name, Path(directory) / (name + ".partial")
    try:
        with urllib.request.urlopen(url + ".md5", timeout=60) as response:
            expected = read_md5(response.read().decode("ascii", errors="replace"), name, url + ".md5")
    except (urllib.error.URLError, OSError) as error:
        raise InputError(f"{url}.md5: cannot fetch ({error})") from None
    target.parent.mkdir(parents=True, exist_ok=True)  # only once the server answers: a wrong URL leaves no folder
    if not target.exists():
        for attempt in range(5):  # network drops: continue where the partial file stopped
            try:
                _fetch(url, partial)
                break
            except (urllib.error.URLError, OSError, TimeoutError) as error:
                if attempt == 4:
                    raise InputError(f"{url}: download failed after 5 attempts ({error}); run again to resume "
                                     f"from {partial}") from None
                time.sleep(2 ** attempt)
        os.replace(partial, target)
    actual = file_digest(target, "md5")
    if actual != expected:
        target.unlink()  # a corrupt file cannot be resumed: the next run downloads it again
        raise InputError(f"{target}: MD5 {actual} does not match {url}.md5 ({expected}); deleted, run again to "
                         "download it again")
    return target


def _fetch(url, partial):
    """Append the rest of `url` to `partial`, from its current length."""
    start = partial.stat().st_size if partial.exists() else 0
    if urllib.parse.urlparse(url).scheme == "file":  # no Range header for file://: seek instead
        with open(urllib.request.url2pathname(urllib.parse.urlparse(url).path), "rb") as source, \
                open(partial, "ab") as out:
            source.seek(start)
            shutil.copyfileobj(source, out, 1 << 20)
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code != 416:  # 416: nothing left to fetch, the partial file is complete
            raise
        return
    with response, open(partial, "ab" if response.status == 206 else "wb") as out:  # 200: the server restarted
        shutil.copyfileobj(response, out, 1 << 20)
    if response.length:  # http.client ends a body cut short by a closed connection without an error: resume it
        raise ConnectionError(f"the connection closed with {response.length} of the file's bytes still to come")


def local_input(source, download_dir):
    """A local path for one --pubmed input: a URL is downloaded and checked; a local file is checked when a .md5 file
    sits beside it."""
    if urllib.parse.urlparse(source).scheme in ("http", "https", "ftp", "file"):
        return download(source, download_dir)
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    md5 = path.with_name(path.name + ".md5")
    if md5.is_file() and file_digest(path, "md5") != read_md5(md5.read_text(errors="replace"), path.name, md5):
        raise InputError(f"{path}: MD5 does not match {md5}")
    return path


def input_files(sources):
    """Expand folders into their sorted *.xml / *.xml.gz files; URLs and files stay as given, in the given order."""
    expanded = []
    for source in sources:
        if Path(source).is_dir():
            found = sorted(p for p in Path(source).iterdir() if p.name.endswith((".xml", ".xml.gz")))
            if not found:
                raise InputError(f"{source}: no .xml or .xml.gz files")
            expanded += map(str, found)
        elif urllib.parse.urlparse(str(source)).scheme in ("http", "https", "ftp", "file") or Path(source).is_file():
            expanded.append(str(source))
        else:  # now, not after hours of converting the files before it
            raise InputError(f"{source}: no such file")
    return expanded


# ------------------------------------------------------------------------------------------------------ conversion
def convert_file(task):
    """One input file -> its part file (abstracts in the BlueBERT layout, in file order). Returns per-citation
    arrays: every PMID in file order, the PMIDs written to the part file in order, and the deleted PMIDs."""
    index, source, download_dir, part = task
    path = local_input(source, download_dir)
    seen, written, written_at, deleted = [], [], [], []
    citations_read = 0
    with open(part, "w", encoding="utf-8") as out:
        for pmid, title, sections in citations(path):
            if sections is None:
                deleted.append(pmid)
                continue
            citations_read += 1
            if citations_read % PROGRESS_EVERY == 0:
                _report(PROGRESS_EVERY)
            seen.append(pmid)
            if not sections:
                continue  # no abstract: BlueBERT's corpus has none of these
            text = document_text(split_sentences(title) + [s for section in sections for s in split_sentences(section)])
            if text:
                out.write(text)
                written.append(pmid)
                written_at.append(len(seen) - 1)  # its place among the file's citations
    _report(citations_read % PROGRESS_EVERY)
    as_array = lambda pmids: np.asarray(pmids, dtype=np.int64)  # noqa: E731
    return index, {"seen": as_array(seen), "written": as_array(written), "written_at": as_array(written_at),
                   "deleted": as_array(deleted)}


def _report(count):
    if isinstance(_progress, tqdm):
        _progress.update(count)
    elif _progress is not None:
        with _progress.get_lock():
            _progress.value += count


def _init_worker(counter):
    """Pool initializer. Ctrl-C reaches the whole process group: workers ignore it and the parent stops the pool, so
    the user sees one line, not a traceback from every worker."""
    global _progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _progress = counter


def build_corpus(sources, out, processes=2, download_dir="pubmed-baseline"):
    """PubMed XML files or URLs -> `out` in the BlueBERT layout; returns the summary counts."""
    global _progress
    sources, out = input_files(sources), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts_dir = out.with_name(f".{out.name}.parts")
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir()
    tasks = [(i, source, download_dir, str(parts_dir / f"{i:05d}.txt")) for i, source in enumerate(sources)]
    results = {}
    bar = tqdm(desc="pubmed: citations", unit=" cit", dynamic_ncols=True)
    try:
        if processes > 1 and len(tasks) > 1:
            counter = multiprocessing.get_context("spawn").Value("q", 0)
            with multiprocessing.get_context("spawn").Pool(min(processes, len(tasks)), _init_worker,
                                                           (counter,)) as pool:
                pending = pool.map_async(convert_file, tasks, chunksize=1)
                while not pending.ready():
                    pending.wait(0.5)
                    bar.update(counter.value - bar.n)
                results = dict(pending.get())
                bar.update(counter.value - bar.n)
        else:
            _progress = bar
            results = dict(map(convert_file, tasks))
        empty = next((source for i, source, *_ in tasks if not len(results[i]["seen"]) + len(results[i]["deleted"])),
                     None)
        if empty is not None:  # well-formed XML, but not PubMed's: say so rather than write an empty corpus
            raise InputError(f"{empty}: no <PubmedArticle> or <DeleteCitation> in it (not a PubMed baseline or update "
                             "XML file)")
        summary = merge_parts(tasks, results, out)
    finally:  # stopped or failed: nothing half-written stays behind
        _progress = None
        bar.close()
        shutil.rmtree(parts_dir, ignore_errors=True)
        out.with_name(out.name + ".partial").unlink(missing_ok=True)
    return summary


MAX_PMID = 10 ** 9  # PubMed's PMIDs have 8 digits (about 40 million in 2025); merge_parts sizes a table by the largest


def _pmid(text, path, what):
    """A PMID as an int, or a one-line error naming the file: `what` when it is not a number."""
    text = (text or "").strip()
    if not text.isdigit():
        raise InputError(f"{path}: a {what}: {text[:20]!r}")
    if int(text) >= MAX_PMID:
        raise InputError(f"{path}: PMID {text} is not a PubMed PMID (they stay below {MAX_PMID:,})")
    return int(text)


def merge_parts(tasks, results, out):
    """Apply PubMed's update rules over the files in order, then copy each winning abstract once into `out`."""
    top = max([int(r[key].max()) for r in results.values() for key in ("seen", "deleted") if len(r[key])] + [0])
    winner = np.full(top + 1, -1, dtype=np.int32)  # PMID -> index of the file whose version counts; -1 none/deleted
    last_position = {}  # file -> per written abstract, True if it is that PMID's last version within the file (a
    # later version without an abstract wins over it, as one in a later file does)
    for index in range(len(tasks)):
        winner[results[index]["seen"]] = index
        winner[results[index]["deleted"]] = -1  # <DeleteCitation> comes after the file's citations
        seen, written = results[index]["seen"], results[index]["written"]
        pmids, last_from_end = np.unique(seen[::-1], return_index=True)  # sorted PMIDs, their last place in `seen`
        last_place = len(seen) - 1 - last_from_end
        last_position[index] = last_place[np.searchsorted(pmids, written)] == results[index]["written_at"]
    deleted = sum(len(r["deleted"]) for r in results.values())
    summary = {"files": len(tasks), "citations_read": sum(len(r["seen"]) for r in results.values()),
               "citations": int((winner >= 0).sum()), "deleted": deleted, "abstracts": 0, "sentences": 0}
    temporary = out.with_name(out.name + ".partial")
    with open(temporary, "w", encoding="utf-8") as f:
        for index, _, _, part in tasks:
            keep = (winner[results[index]["written"]] == index) & last_position[index]
            for number, document in enumerate(_documents(part)):
                if keep[number]:
                    f.write(document)
                    summary["abstracts"] += 1
                    summary["sentences"] += document.count("\n") - 1
    os.replace(temporary, out)
    summary["without_abstract"] = summary["citations"] - summary["abstracts"]
    summary["bytes"] = out.stat().st_size
    return summary


def _documents(part):
    """The documents of a part file, each as its text including the blank line that ends it."""
    lines = []
    with open(part, encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            if line == "\n":
                yield "".join(lines)
                lines = []


def _counted(count, noun):
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def corpus_command(args):
    summary = build_corpus(args.pubmed, args.out, args.processes, args.download_dir)
    print(f"pubmed: {_counted(summary['files'], 'file')}, {_counted(summary['citations_read'], 'citation')} read, "
          f"{summary['citations']:,} after PubMed's updates and {_counted(summary['deleted'], 'deletion')}; "
          f"{_counted(summary['abstracts'], 'abstract')} written, {_counted(summary['without_abstract'], 'citation')} "
          f"without an abstract skipped; {_counted(summary['sentences'], 'sentence')}, "
          f"{_counted(summary['bytes'], 'byte')} -> {args.out}")
