"""Small raw datasets shaped like the real ones (TweetEval, Davidson, a generic CSV), and a staged
registry version, generated in tmp folders; the config that fetches a registry version."""

from __future__ import annotations

import csv
from pathlib import Path

from cybulde.config.schema import Config

TWEETEVAL_NAMES = ["not-offensive", "offensive"]
# Positions (0-based, per split) of empty tweets, as in TweetEval hate's text files.
EMPTY_LINES = {"train": [3, 10], "val": [2], "test": []}
TWEETEVAL_SIZES = {"train": 40, "val": 12, "test": 10}


def tweeteval_text(split: str, position: int, label: int, names: list[str] = TWEETEVAL_NAMES) -> str:
    """A tweet that names its own label, so a shifted label is visible in the output."""
    words = " ".join(["word"] * (position % 7 * 4))  # varied lengths for length grouping
    return f"@user {split} tweet {position} is {names[label]} &amp; {words} "


def write_tweeteval(folder: Path, names: list[str] = TWEETEVAL_NAMES) -> Path:
    """TweetEval's layout with labels `names` (default: offensive's; ["not-hate", "hate"] for hate's)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mapping.txt").write_text("".join(f"{index}\t{name}\n" for index, name in enumerate(names)))
    for split, size in TWEETEVAL_SIZES.items():
        labels = [(position * 5 + len(split)) % 3 % 2 for position in range(size)]
        texts = ["" if position in EMPTY_LINES[split] else tweeteval_text(split, position, label, names)
                 for position, label in enumerate(labels)]
        (folder / f"{split}_text.txt").write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")
        (folder / f"{split}_labels.txt").write_text("".join(f"{label}\n" for label in labels))
    return folder


def write_davidson(folder: Path, rows: int = 90) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "labeled_data.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["", "count", "hate_speech", "offensive_language", "neither", "class", "tweet"])
        for row in range(rows):
            label = 0 if row % 10 == 0 else (1 if row % 3 else 2)
            votes = [0, 0, 0]
            votes[label] = 3
            text = f"!!! RT @someone: tweet {row} of class {label} &amp; more\nsecond line {'x ' * (row % 9)}"
            writer.writerow([row, 3, *votes, label, text])
    return folder


def write_generic_csv(path: Path, rows: int = 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["comment", "verdict", "other"])
        for row in range(rows):
            verdict = ["toxic", "ok", "spam"][row % 3]
            writer.writerow([f"comment {row} looks {verdict}", verdict, row])
    return path


def write_staged_version(folder: Path, payload: str = "data") -> Path:
    """A folder ready for `Registry.write_version`: two files and a valid format-2 manifest."""
    from cybulde.registry.manifest import Manifest, TokenizerInfo, hash_files

    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(payload)
    (folder / "sub" / "b.txt").write_text(payload * 2)
    tokenizer = TokenizerInfo(name="none", kind="pretrained", sha256="", vocab_size=1, pad_token_id=0,
                              cls_token_id=0, sep_token_id=0)
    Manifest(dataset="ds", version="v", label_names=["a", "b"], splits={}, tokenizer=tokenizer, max_length=8,
             sources=[], publish_params={"payload": payload}, files=hash_files(folder), shards={}).write(folder)
    return folder


def fetch_config(registry: str | Path, fetched_dir: Path, dataset: str = "tweeteval_offensive",
                 version: str = "v1") -> Config:
    cfg = Config()
    cfg.data.registry = str(registry)
    cfg.data.dataset = dataset
    cfg.data.version = version
    cfg.data.fetched_dir = str(fetched_dir)
    cfg.data.manifest_sha256 = ""  # the schema's default pins the project's default version
    return cfg
