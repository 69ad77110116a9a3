from pathlib import Path

import numpy as np
import pytest

from cybulde.data.errors import RawDataError
from cybulde.data.sources import load_source, read_lines, stratified_split, stratified_subsample


def test_tweeteval_empty_lines_keep_labels_aligned(tweeteval_dir: Path) -> None:
    raw = load_source("tweeteval_offensive", tweeteval_dir)
    assert raw.label_names == ["not-offensive", "offensive"]
    train = raw.splits["train"]
    assert len(train) == 40 and train.loc[3, "text"] == "" and train.loc[10, "text"] == ""
    for text, label in zip(train["text"], train["label"], strict=True):
        if text:
            assert f" is {raw.label_names[label]} " in text
    assert train.loc[11, "id"] == "train-12"  # ids are 1-based line numbers of the raw files
    assert {p.name for p in raw.source_files} >= {"mapping.txt", "train_text.txt", "test_labels.txt"}


def test_lines_split_on_newline_only(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a\u2028b\x0cc\n\nlast\n", encoding="utf-8")
    assert read_lines(path) == ["a\u2028b\x0cc", "", "last"]


def test_tweeteval_line_count_mismatch_is_an_error(tweeteval_dir: Path) -> None:
    (tweeteval_dir / "val_labels.txt").write_text("0\n1\n")
    with pytest.raises(RawDataError, match="val_text.txt has 12 lines but val_labels.txt has 2"):
        load_source("tweeteval_offensive", tweeteval_dir)


def test_tweeteval_bad_label_is_an_error(tweeteval_dir: Path) -> None:
    labels = (tweeteval_dir / "test_labels.txt").read_text().splitlines()
    labels[4] = "7"
    (tweeteval_dir / "test_labels.txt").write_text("\n".join(labels) + "\n")
    with pytest.raises(RawDataError, match="line 5"):
        load_source("tweeteval_offensive", tweeteval_dir)


def test_davidson_split_is_stratified_seeded_and_recorded(davidson_dir: Path) -> None:
    raw = load_source("davidson2017", davidson_dir, seed=7)
    again = load_source("davidson2017", davidson_dir, seed=7)
    other = load_source("davidson2017", davidson_dir, seed=8)
    assert raw.label_names == ["hate_speech", "offensive_language", "neither"]
    assert raw.split_method == {"method": "stratified", "seed": 7,
                                "fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}}
    sizes = {split: len(frame) for split, frame in raw.splits.items()}
    assert sizes == {"train": 72, "validation": 9, "test": 9}
    all_ids = sorted(id_ for frame in raw.splits.values() for id_ in frame["id"])
    assert len(set(all_ids)) == 90
    assert all(raw.splits[s]["id"].tolist() == again.splits[s]["id"].tolist() for s in raw.splits)
    assert raw.splits["test"]["id"].tolist() != other.splits["test"]["id"].tolist()
    for frame in raw.splits.values():  # every class in every split, in proportion
        assert sorted(frame["label"].unique()) == [0, 1, 2]
    text = raw.splits["train"]["text"].iloc[0]
    assert "\n" in text and "&amp;" in text  # the original text, untouched


def test_generic_csv_with_string_labels(generic_csv: Path) -> None:
    raw = load_source("csv", generic_csv, text_column="comment", label_column="verdict")
    assert raw.label_names == ["ok", "spam", "toxic"]
    for frame in raw.splits.values():
        for text, label in zip(frame["text"], frame["label"], strict=True):
            assert text.endswith(raw.label_names[label])


def test_generic_folder_with_official_splits(tmp_path: Path) -> None:
    import pandas as pd

    for split, rows in (("train", 8), ("val", 4), ("test", 4)):
        pd.DataFrame({"t": [f"x{i}" for i in range(rows)], "y": [i % 2 for i in range(rows)]}).to_parquet(
            tmp_path / f"{split}.parquet")
    raw = load_source("parquet", tmp_path, text_column="t", label_column="y")
    assert raw.label_names == ["0", "1"] and raw.split_method == {"method": "official"}
    assert [len(raw.splits[s]) for s in ("train", "validation", "test")] == [8, 4, 4]


def test_generic_csv_needs_columns(generic_csv: Path) -> None:
    with pytest.raises(RawDataError, match="needs --text-column"):
        load_source("csv", generic_csv)
    with pytest.raises(RawDataError, match="no column 'body'"):
        load_source("csv", generic_csv, text_column="body", label_column="verdict")


def test_stratified_helpers() -> None:
    import pandas as pd

    labels = np.array([0] * 95 + [1] * 5)
    rows = stratified_subsample(labels, 10, seed=1)
    assert len(rows) == 10 and set(labels[rows]) == {0, 1} and list(rows) == sorted(rows)
    assert list(stratified_subsample(labels, 500, seed=1)) == list(range(100))
    splits = stratified_split(pd.DataFrame({"id": range(100), "text": "t", "label": labels}), seed=3)
    assert [int((splits[s]["label"] == 1).sum()) for s in ("train", "validation", "test")] == [4, 0, 1]
