"""Fixtures of raw datasets in tmp folders, a published registry and fetch configs (tests.helpers.raw_data);
they serve every test package (`pytest_plugins` in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.raw_data import fetch_config, write_davidson, write_generic_csv, write_tweeteval


@pytest.fixture
def tweeteval_dir(tmp_path: Path) -> Path:
    return write_tweeteval(tmp_path / "raw" / "tweeteval_offensive")


@pytest.fixture
def davidson_dir(tmp_path: Path) -> Path:
    return write_davidson(tmp_path / "raw" / "davidson2017")


@pytest.fixture(scope="module")
def published_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding tweeteval_offensive/v1 (pretrained tokenizer), published once per module."""
    from cybulde.preparation.publish import publish

    root = tmp_path_factory.mktemp("published")
    raw = write_tweeteval(root / "raw")
    registry = root / "registry"
    publish("tweeteval_offensive", raw, str(registry), "v1", max_length=16, echo=None)
    return registry


@pytest.fixture
def make_fetch_config():
    return fetch_config


@pytest.fixture
def generic_csv(tmp_path: Path) -> Path:
    return write_generic_csv(tmp_path / "raw" / "mine.csv")
