"""Shared test fixtures.

The real benchmark data lives outside the repository (never copy it in). Tests find it through the environment variable
ELECTRAMED_DATA (default ../shared/data, beside the checkout). A test that needs it skips with a clear reason when it is
absent, except under CI=true, where a missing data folder is a failure: CI must exercise the real data.
"""
import os
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
