"""A tiny dataset published with the MiniLM tokenizer, for the benchmark scripts' tests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def published(tmp_path_factory) -> Path:
    """A tiny TweetEval-shaped dataset published with the MiniLM tokenizer (80/30/30 rows)."""
    from cybulde.preparation.publish import publish

    root = tmp_path_factory.mktemp("ttq")
    raw = root / "raw"
    raw.mkdir()
    (raw / "mapping.txt").write_text("0\tnot-offensive\n1\toffensive\n")
    rng = random.Random(0)
    bad, good = "idiot stupid loser trash moron".split(), "lovely great thanks friend sunny".split()
    filler = "you are the a today really so this is what game show".split()
    for split, rows in {"train": 80, "val": 30, "test": 30}.items():
        labels = [int(index % 3 == 0) for index in range(rows)]
        texts = [" ".join(rng.sample(filler, 4) + rng.sample(bad if label else good, 2)) for label in labels]
        (raw / f"{split}_text.txt").write_text("".join(f"{text}\n" for text in texts))
        (raw / f"{split}_labels.txt").write_text("".join(f"{label}\n" for label in labels))
    publish("tweeteval_offensive", raw, str(root / "registry"), "v1", max_length=16, echo=None)
    return root / "registry" / "tweeteval_offensive" / "v1"
