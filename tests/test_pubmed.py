"""`python train.py corpus`: PubMed XML -> BlueBERT-layout text, PubMed's update rules, resumable checked downloads.
Every input is a small XML file written here; downloads go through file:// URLs and a local HTTP server (no network)."""
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

import data
import pubmed
import train
from tokenizer import InputError, pubmed_preprocess


def article(pmid, title, *sections, labels=None):
    """One <PubmedArticle> as PubMed writes it (abbreviated: the elements we read, and some we must skip)."""
    labels = labels or [None] * len(sections)
    texts = "".join(f'<AbstractText{f" Label={label!r}" if label else ""}>{text}</AbstractText>'
                    for label, text in zip(labels, sections))
    abstract = f"<Abstract>{texts}</Abstract>" if sections else ""
    return (f'<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">{pmid}</PMID>'
            f"<Article><Journal><Title>J Test</Title></Journal><ArticleTitle>{title}</ArticleTitle>{abstract}"
            f"</Article><CommentsCorrectionsList><CommentsCorrections><PMID>999</PMID></CommentsCorrections>"
            f"</CommentsCorrectionsList></MedlineCitation><PubmedData><ArticleIdList>"
            f'<ArticleId IdType="pubmed">{pmid}</ArticleId></ArticleIdList></PubmedData></PubmedArticle>\n')


def xml_file(path, *articles, deleted=()):
    pmids = "".join(f'<PMID Version="1">{pmid}</PMID>' for pmid in deleted)
    text = ('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE PubmedArticleSet>\n<PubmedArticleSet>\n'
            + "".join(articles) + (f"<DeleteCitation>{pmids}</DeleteCitation>\n" if deleted else "")
            + "</PubmedArticleSet>\n").encode("utf-8")
    path = Path(path)
    path.write_bytes(gzip.compress(text, mtime=0) if path.suffix == ".gz" else text)
    return path


def documents(path):
    return Path(path).read_text(encoding="utf-8").split("\n\n")[:-1]


@pytest.fixture
def baseline(tmp_path):
    """Two files as PubMed publishes them: a baseline file, then an update that revises, deletes and adds."""
    first = xml_file(tmp_path / "pubmed25n0001.xml.gz",
                     article(101, "Naloxone reverses the effect of clonidine.",
                             "Clonidine lowers blood pressure. Naloxone blocks this!", "It was done in rats.",
                             labels=["BACKGROUND", "RESULTS"]),
                     article(102, "A title only."),  # no abstract: skipped and counted
                     article(103, "Le <i>cœur</i> – α-synuclein (Ω ≥ 2).",
                             "Über 5 μg of β-blockers were given. Results followed."),
                     article(104, "Old version.", "This text is replaced by the update."),
                     article(105, "Deleted later.", "This citation is deleted by the update."))
    second = xml_file(tmp_path / "pubmed25n0002.xml.gz",
                      article(104, "New version.", "The update's text wins."),
                      article(106, "Added by the update.", "A new abstract."),
                      deleted=[105])
    return first, second


def test_titles_and_abstracts_in_the_bluebert_layout_with_pubmeds_update_rules(baseline, tmp_path):
    out = tmp_path / "pubmed.txt"
    summary = pubmed.build_corpus([str(p) for p in baseline], out, processes=1, download_dir=tmp_path / "dl")
    docs = documents(out)
    assert docs == [  # file order; 102 has no abstract, 104 is the update's, 105 deleted, 106 added
        "naloxone reverses the effect of clonidine .\nclonidine lowers blood pressure .\nnaloxone blocks this !\n"
        "it was done in rats .",  # a structured abstract: sections joined in order, labels left out
        f"{pubmed_preprocess('Le cœur – α-synuclein (Ω ≥ 2).')}\n"
        f"{pubmed_preprocess('Über 5 μg of β-blockers were given.')}"
        "\nresults followed .",  # inline markup keeps its text; non-ASCII dropped by the paper's pre-processing
        "new version .\nthe update's text wins .",
        "added by the update .\na new abstract ."]
    assert docs[1].startswith("le c ur -synuclein") and docs[1].isascii()
    assert summary == {"files": 2, "citations_read": 7, "citations": 5, "deleted": 1, "abstracts": 4,
                       "sentences": 11, "without_abstract": 1, "bytes": out.stat().st_size}
    assert not list(tmp_path.glob(".*parts*")) and not list(tmp_path.glob("*.partial"))
    # the output is a corpus `prepare`/`pretrain` read as it is: the same documents and sentences
    assert list(data.read_documents(out)) == [d.split("\n") for d in docs]


def test_two_processes_write_the_same_file_as_one(baseline, tmp_path):
    pubmed.build_corpus([str(p) for p in baseline], tmp_path / "one.txt", processes=1)
    pubmed.build_corpus([str(p) for p in baseline], tmp_path / "two.txt", processes=2)
    assert (tmp_path / "one.txt").read_bytes() == (tmp_path / "two.txt").read_bytes()


def test_a_pmid_repeated_in_a_later_file_or_within_a_file_is_written_once(tmp_path):
    a = xml_file(tmp_path / "a.xml", article(7, "First.", "One."), article(7, "Second.", "Two."))
    b = xml_file(tmp_path / "b.xml", article(8, "Other.", "Three."), article(7, "Third.", "Four."))
    pubmed.build_corpus([str(a)], tmp_path / "a.txt", processes=1)
    assert documents(tmp_path / "a.txt") == ["second .\ntwo ."]  # the later version within the file
    pubmed.build_corpus([str(a), str(b)], tmp_path / "ab.txt", processes=1)
    assert documents(tmp_path / "ab.txt") == ["other .\nthree .", "third .\nfour ."]
    # a later version without an abstract removes the earlier abstract: the citation no longer has one
    c = xml_file(tmp_path / "c.xml", article(7, "Abstract withdrawn."))
    summary = pubmed.build_corpus([str(a), str(c)], tmp_path / "ac.txt", processes=1)
    assert documents(tmp_path / "ac.txt") == [] and summary["without_abstract"] == 1
    # ... within one file too
    d = xml_file(tmp_path / "d.xml", article(9, "Kept.", "Five."), article(7, "First.", "One."),
                 article(7, "Abstract withdrawn."))
    summary = pubmed.build_corpus([str(d)], tmp_path / "d.txt", processes=1)
    assert documents(tmp_path / "d.txt") == ["kept .\nfive ."] and summary["without_abstract"] == 1


def test_the_cli_prints_a_summary_and_a_malformed_file_is_one_line_exit_2_with_nothing_written(cli, baseline, tmp_path,
                                                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "pubmed.txt"
    done = cli("corpus", "--pubmed", *baseline, "--out", out, "--processes", 1)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        f"pubmed: 2 files, 7 citations read, 5 after PubMed's updates and 1 deletion; 4 abstracts written, "
        f"1 citation without an abstract skipped; 11 sentences, {out.stat().st_size:,} bytes -> {out}")
    assert "citations" in done.stderr  # the progress bar counts citations

    broken = tmp_path / "pubmed25n0003.xml"
    broken.write_text('<?xml version="1.0"?>\n<PubmedArticleSet>\n<PubmedArticle><MedlineCitation>\n'
                      "<PMID>5</PMID></Article>\n</PubmedArticleSet>\n")
    out2 = tmp_path / "broken.txt"
    for processes in ("1", "2"):
        done = cli("corpus", "--pubmed", baseline[0], broken, "--out", out2, "--processes", processes)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(f"error: {broken}:4: malformed XML (mismatched tag")
        assert not out2.exists() and not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*parts"))
    # well-formed XML that is not PubMed's (a saved web page): an error, not an empty corpus and "0 citations read"
    page = tmp_path / "pubmed25n0004.xml"
    page.write_text("<html><body><p>Not a PubMed file.</p></body></html>\n")
    done = cli("corpus", "--pubmed", baseline[0], page, "--out", out2, "--processes", 1)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == \
        f"error: {page}: no <PubmedArticle> or <DeleteCitation> in it (not a PubMed baseline or update XML file)"
    assert not out2.exists() and not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*parts"))
    # a missing input is named before any file is converted
    done = cli("corpus", "--pubmed", baseline[0], tmp_path / "missing.xml", "--out", out2, "--processes", 1)
    assert done.returncode == 2 and done.stderr == f"error: {tmp_path / 'missing.xml'}: no such file\n"
    # PMIDs that are not PubMed's: a deletion of "abc" (was a ValueError traceback), 14 digits (merge_parts sized a
    # table by it: a 364 TiB allocation)
    xml_file(tmp_path / "pubmed25n0005.xml", article(7, "T."), deleted=["abc"])
    xml_file(tmp_path / "pubmed25n0006.xml", article(99999999999999, "T.", "A."))
    for name, said in (("pubmed25n0005.xml", "<DeleteCitation> with a PMID that is not a number: 'abc'"),
                       ("pubmed25n0006.xml", "PMID 99999999999999 is not a PubMed PMID")):
        for processes in ("1", "2"):
            done = cli("corpus", "--pubmed", baseline[0], tmp_path / name, "--out", out2, "--processes", processes)
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
            assert done.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / name}: ")
            assert said in done.stderr and not out2.exists()


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_while_two_workers_convert_is_one_line_from_the_parent(tmp_path):
    """Ctrl-C's SIGINT goes to the whole process group: the workers ignore it, the parent stops the pool and says one
    line (exit 130), and no corpus file is left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def reading_xml(pid):  # a worker of `parent` with an input file open: started, past its initializer
        try:
            parent_pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            return parent_pid == parent.pid and any(os.readlink(fd).endswith(".xml") for fd in
                                                    Path(f"/proc/{pid}/fd").iterdir())
        except (OSError, ValueError):
            return False

    abstract = "Clonidine lowers blood pressure in rats. " * 20
    files = [xml_file(tmp_path / f"pubmed25n000{n}.xml", *(article(n * 100_000 + i, "A title.", abstract)
                                                          for i in range(20_000))) for n in (1, 2)]
    out = tmp_path / "corpus.txt"
    parent = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent.parent / "train.py"), "corpus",
                               "--pubmed", *map(str, files), "--out", str(out), "--processes", "2"],
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline, seen = time.time() + 120, 0
    while time.time() < deadline and parent.poll() is None and seen < 2:
        seen = sum(reading_xml(int(pid.name)) for pid in Path("/proc").glob("[0-9]*"))
        time.sleep(0.01)
    assert seen == 2 and parent.poll() is None, "the two workers were not seen reading"
    os.killpg(parent.pid, signal.SIGINT)  # what Ctrl-C does
    _, stderr = parent.communicate(timeout=60)
    assert parent.returncode == 130 and "Traceback" not in stderr and "PoolWorker" not in stderr, stderr[-3000:]
    assert stderr.endswith("\nerror: interrupted; nothing half-written is trusted by the next run\n") and \
        stderr.count("error:") == 1, stderr[-3000:]  # the progress bar's lines above it are closed
    assert not out.exists()


def test_a_truncated_gzip_file_is_an_error_naming_it(tmp_path):
    whole = xml_file(tmp_path / "whole.xml.gz", article(1, "T.", "A."))
    cut = tmp_path / "cut.xml.gz"
    cut.write_bytes(whole.read_bytes()[:40])
    with pytest.raises(InputError, match=f"^{cut}"):
        pubmed.build_corpus([str(cut)], tmp_path / "out.txt", processes=1)
    # bytes flipped inside the compressed stream: zlib's own error, as one line naming the file
    text = " ".join(f"word{i % 97} kinase{i % 13}." for i in range(3000))
    damaged = bytearray(xml_file(tmp_path / "long.xml.gz", article(2, "T.", text)).read_bytes())
    damaged[len(damaged) // 2:len(damaged) // 2 + 50] = bytes(b ^ 255 for b in damaged[len(damaged) // 2:][:50])
    (tmp_path / "damaged.xml.gz").write_bytes(damaged)
    with pytest.raises(InputError, match=f"^{tmp_path / 'damaged.xml.gz'}: damaged gzip data"):
        pubmed.build_corpus([str(tmp_path / "damaged.xml.gz")], tmp_path / "out.txt", processes=1)
    assert not (tmp_path / "out.txt").exists()


def md5_file(path, name=None):
    """PubMed's .md5 beside a file: 'MD5(pubmed25n0001.xml.gz)= <hex>'."""
    digest = hashlib.md5(Path(path).read_bytes()).hexdigest()
    Path(f"{path}.md5").write_text(f"MD5({name or Path(path).name})= {digest}\n")


def test_downloads_through_file_urls_are_checked_against_pubmeds_md5_and_resume(cli, baseline, tmp_path, monkeypatch):
    for path in baseline:
        md5_file(path)
    urls = [path.as_uri() for path in baseline]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    # a download stopped half-way: the rest is appended to the partial file, not fetched from the start
    whole = baseline[0].read_bytes()
    partial = downloads / (baseline[0].name + ".partial")
    partial.write_bytes(whole[:len(whole) // 2])
    pubmed.build_corpus(urls, tmp_path / "from-urls.txt", processes=1, download_dir=downloads)
    pubmed.build_corpus([str(p) for p in baseline], tmp_path / "from-files.txt", processes=1)
    assert (tmp_path / "from-urls.txt").read_bytes() == (tmp_path / "from-files.txt").read_bytes()
    assert (downloads / baseline[0].name).read_bytes() == whole and not partial.exists()
    # that resuming really appends: a partial file with wrong bytes gives an MD5 mismatch naming the file
    (downloads / baseline[0].name).unlink()
    partial.write_bytes(b"x" * 10)
    with pytest.raises(InputError, match=rf"^{downloads / baseline[0].name}: MD5 [0-9a-f]{{32}} does not match "
                                         rf"{urls[0]}\.md5"):
        pubmed.build_corpus(urls[:1], tmp_path / "bad.txt", processes=1, download_dir=downloads)
    assert not (downloads / baseline[0].name).exists() and not (tmp_path / "bad.txt").exists()
    # a file that changed on the server after its .md5 was written: the same error, through the CLI as one line
    md5_file(baseline[1])
    baseline[1].write_bytes(baseline[1].read_bytes() + b"\n")
    fresh = tmp_path / "fresh-downloads"
    monkeypatch.chdir(tmp_path)
    done = cli("corpus", "--pubmed", urls[1], "--out", tmp_path / "cli.txt", "--download-dir", fresh, "--processes", 1)
    assert done.returncode == 2 and not (tmp_path / "cli.txt").exists()
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {fresh / baseline[1].name}: MD5 ")
    # a URL that cannot be reached: one line naming it, and no --download-dir made for nothing
    missing = (tmp_path / "nowhere" / baseline[0].name).as_uri()
    done = cli("corpus", "--pubmed", missing, "--out", tmp_path / "none.txt", "--download-dir", tmp_path / "unused")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(f"error: {missing}.md5: cannot fetch")
    assert not (tmp_path / "unused").exists() and not (tmp_path / "none.txt").exists()
    # a local file with a .md5 beside it is checked too
    with pytest.raises(InputError, match=f"^{baseline[1]}: MD5 does not match"):
        pubmed.build_corpus([str(baseline[1])], tmp_path / "local.txt", processes=1)


class FlakyServer(http.server.BaseHTTPRequestHandler):
    """Serves `files` (name -> bytes) with HTTP Range as an FTP-over-HTTPS mirror does. `cut` names files whose next
    response ends after half its body and closes the connection (a clean close: no error on the client's side);
    `ignore_range` answers every request with the whole file (200). Every request's (path, Range) goes to `requests`."""
    files, cut, ignore_range, requests = {}, set(), False, []

    def do_GET(self):
        name, ranged = self.path.lstrip("/"), self.headers.get("Range")
        self.requests.append((self.path, ranged))
        if name not in self.files:
            return self.send_error(404)
        body = self.files[name]
        start = int(ranged.split("=")[1].rstrip("-")) if ranged and not self.ignore_range else 0
        if start >= len(body) and ranged:
            return self.send_error(416)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if name in self.cut:
            self.cut.discard(name)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(baseline):
    FlakyServer.files = {path.name: path.read_bytes() for path in baseline}
    for path in baseline:
        md5_file(path)
        FlakyServer.files[path.name + ".md5"] = Path(f"{path}.md5").read_bytes()
    FlakyServer.cut, FlakyServer.ignore_range, FlakyServer.requests = set(), False, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", baseline
    server.shutdown()
    server.server_close()


def test_http_downloads_resume_with_range_after_a_connection_closes_mid_file(mirror, tmp_path):
    url, baseline = mirror
    name, whole = baseline[0].name, baseline[0].read_bytes()
    # the connection closes after half the file: the rest is asked for with a Range header and appended (206)
    FlakyServer.cut = {name}
    assert pubmed.download(url + name, tmp_path / "a").read_bytes() == whole
    assert [r for r in FlakyServer.requests if r[0] == "/" + name] == [("/" + name, None),
                                                                       ("/" + name, f"bytes={len(whole) // 2}-")]
    assert not (tmp_path / "a" / (name + ".partial")).exists()
    # a partial file left by an earlier run, a server that ignores Range (200): the file is fetched from the start
    FlakyServer.ignore_range = True
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / (name + ".partial")).write_bytes(b"x" * 10)
    assert pubmed.download(url + name, tmp_path / "b").read_bytes() == whole
    # a partial file that is already whole: the server answers 416 (nothing left), and the file is kept
    FlakyServer.ignore_range, FlakyServer.requests = False, []
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / (name + ".partial")).write_bytes(whole)
    assert pubmed.download(url + name, tmp_path / "c").read_bytes() == whole
    assert ("/" + name, f"bytes={len(whole)}-") in FlakyServer.requests


def test_read_md5_takes_pubmeds_format_only():
    digest = "0123456789abcdef0123456789abcdef"
    assert pubmed.read_md5(f"MD5(pubmed25n0001.xml.gz)= {digest}\n", "pubmed25n0001.xml.gz", "x") == digest
    with pytest.raises(InputError, match="^x.md5: no 'MD5"):
        pubmed.read_md5(f"MD5(pubmed25n0002.xml.gz)= {digest}\n", "pubmed25n0001.xml.gz", "x.md5")


def test_the_corpus_subcommand_is_in_the_cli():
    assert "corpus" in train.build_parser().format_help()
