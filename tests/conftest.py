"""Shared test fixtures.

The real benchmark data lives outside the repository (never copy it in). Tests find it through the environment variable
ELECTRAMED_DATA (default ../shared/data, beside the checkout). A test that needs it skips with a clear reason when it is
absent, except under CI=true, where a missing data folder is a failure: CI must exercise the real data.

The same rule keeps `pytest` around two minutes here: the end-to-end runs marked `slow` (the quick start as written,
XLA, torchrun, the benchmarks, a killed process resumed; 10-45 s each) skip with that reason unless `--slow` is given or
CI=true. CI runs every test, and mutation testing (which passes --slow, pyproject.toml) every test of its selection.
"""
import gc
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ELECTRAMED_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        message = f"benchmark data not found at {DATA} (set ELECTRAMED_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": CI must run the data tests")
        pytest.skip(message)
    return DATA


@pytest.fixture(scope="session")
def scivocab(data_dir) -> Path:
    return data_dir / "vocab" / "scivocab_uncased" / "vocab.txt"


@pytest.fixture(scope="session")
def bert_vocab(data_dir) -> Path:
    return data_dir / "vocab" / "bert-base-uncased" / "vocab.txt"


@pytest.fixture
def tiny_init(tmp_path, scivocab):
    """A `tiny` model with seeded random weights and SciVocab, saved as our pre-training exports it (HuggingFace
    directories): the --init of the fine-tuning tests."""
    import torch

    import electramed as em

    torch.manual_seed(0)
    model = em.ElectraForPretraining(em.preset("tiny", vocab_size=31090, **em._special_ids(scivocab.parent)))
    em.save_pretrained(model, tmp_path / "init", vocab_path=scivocab)
    return tmp_path / "init"


@pytest.fixture
def cli(capsys, monkeypatch):
    """`python train.py ARGS` run in this process, as train.main: -> CompletedProcess(args, exit code, stdout, stderr).
    In-process saves the ~2 s a fresh interpreter takes to import torch; that `python train.py` turns main's return
    value into its exit code is checked by test_cli.py and the README quick start, which start real processes."""
    import train

    def run(*args, stdin=""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = train.main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)
    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped test is a failed one: a missing test dependency (pytest.importorskip), git or data must
    not turn a test into a quiet skip that `bash .ci/run` passes."""
    report = (yield).get_result()
    if os.environ.get("CI") == "true" and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome, report.longrepr = "failed", f"skipped under CI=true, where every test must run: {reason}"


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the end-to-end tests marked slow (always run under CI=true)")


# --------------------------------------------------------- mutation testing (python -m mutmut run, README "Testing")
# mutmut runs each mutant's tests with -x in a child of its fork server, with MUTANT_UNDER_TEST set. Two things its fork
# runner does and its fork-server runner (ours: torch is not fork-safe) does not, as of mutmut 3.8.1, done here instead:
def pytest_configure(config):
    if os.environ.get("MUTANT_UNDER_TEST"):
        # freeze what the child inherited (torch, transformers, the test modules): pytest's closing garbage collections
        # otherwise walk all of it, 0.4-2.7 s per mutant here
        gc.freeze()


def pytest_collection_modifyitems(config, items):
    if not (config.getoption("--slow") or os.environ.get("CI") == "true"):
        skip = pytest.mark.skip(reason="slow end-to-end run: `pytest --slow` runs it (and CI=true does)")
        for item in items:
            if item.get_closest_marker("slow"):
                item.add_marker(skip)
    # fastest tests first, by mutmut's own timings, so that -x stops at the first cheap test that kills the mutant;
    # handed over in set order, the 10-30 s torchrun test often ran first (10 of 21 linear_schedule mutants took ~30 s)
    stats = Path("mutmut-stats.json")
    if os.environ.get("MUTANT_UNDER_TEST") and stats.is_file():
        durations = json.loads(stats.read_text())["duration_by_test"]
        items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
