import csv
from pathlib import Path

import numpy as np
import pytest

from cybulde.preparation.sources import BY_HASH, RawBatch, load_source, read_lines
from cybulde.registry.errors import RawDataError


def all_rows(source, rows: int = 7) -> RawBatch:  # noqa: ANN001
    """Every row of a source, batched `rows` at a time and joined again."""
    batches = list(source.batches(rows))
    assert all(len(batch) <= rows for batch in batches)
    assert [batch.start for batch in batches] == list(np.cumsum([0] + [len(b) for b in batches])[:-1])
    return RawBatch([i for b in batches for i in b.ids], [t for b in batches for t in b.texts],
                    np.concatenate([b.labels for b in batches]), np.concatenate([b.splits for b in batches]),
                    [k for b in batches for k in (b.keys or [])] or None)


def test_tweeteval_empty_lines_keep_labels_aligned(tweeteval_dir: Path) -> None:
    source = load_source("tweeteval_offensive", tweeteval_dir)
    assert source.label_names == ["not-offensive", "offensive"] and source.official_splits
    rows = all_rows(source)
    train = [i for i, split in enumerate(rows.splits) if split == 0]
    assert len(train) == 40 and rows.splits.tolist().count(1) == 12 and rows.splits.tolist().count(2) == 10
    assert rows.texts[3] == "" and rows.texts[10] == ""
    for text, label in zip(rows.texts, rows.labels, strict=True):
        if text:
            assert f" is {source.label_names[label]} " in text
    assert rows.ids[11] == "train-12" and rows.ids[40] == "validation-1"  # 1-based line numbers of the raw files
    assert {p.name for p in source.source_files} >= {"mapping.txt", "train_text.txt", "test_labels.txt"}


def test_lines_split_on_newline_only(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a\u2028b\x0cc\n\nlast\n", encoding="utf-8")
    assert read_lines(path) == ["a\u2028b\x0cc", "", "last"]


def test_tweeteval_line_count_mismatch_is_an_error(tweeteval_dir: Path) -> None:
    (tweeteval_dir / "val_labels.txt").write_text("0\n1\n")
    with pytest.raises(RawDataError, match="val_text.txt has 12 lines but val_labels.txt has 2"):
        all_rows(load_source("tweeteval_offensive", tweeteval_dir))


def test_tweeteval_bad_label_is_an_error(tweeteval_dir: Path) -> None:
    labels = (tweeteval_dir / "test_labels.txt").read_text().splitlines()
    labels[4] = "7"
    (tweeteval_dir / "test_labels.txt").write_text("\n".join(labels) + "\n")
    with pytest.raises(RawDataError, match="line 5"):
        all_rows(load_source("tweeteval_offensive", tweeteval_dir))


def test_missing_raw_files_are_reported_when_opened(tweeteval_dir: Path, tmp_path: Path) -> None:
    (tweeteval_dir / "test_labels.txt").unlink()
    with pytest.raises(RawDataError, match="missing raw file .*test_labels.txt"):
        load_source("tweeteval_offensive", tweeteval_dir)
    with pytest.raises(RawDataError, match="missing raw file .*labeled_data.csv"):
        load_source("davidson2017", tmp_path)


def test_davidson_rows_quoted_newlines_and_hash_keys(davidson_dir: Path) -> None:
    source = load_source("davidson2017", davidson_dir)
    assert source.label_names == ["hate_speech", "offensive_language", "neither"] and not source.official_splits
    assert source.split_key == "id"
    rows = all_rows(source, rows=8)
    with open(davidson_dir / "labeled_data.csv", newline="", encoding="utf-8") as stream:
        expected = list(csv.DictReader(stream))  # the standard library's reader, an independent path
    assert len(rows.ids) == len(expected) == 90
    assert rows.ids == [f"row-{row['']}" for row in expected] and rows.keys == rows.ids
    assert rows.texts == [row["tweet"] for row in expected]
    assert rows.labels.tolist() == [int(row["class"]) for row in expected]
    assert set(rows.splits.tolist()) == {BY_HASH}
    assert "\n" in rows.texts[0] and "&amp;" in rows.texts[0]  # the original text, untouched


def test_davidson_bad_class_is_an_error(davidson_dir: Path) -> None:
    path = davidson_dir / "labeled_data.csv"
    path.write_text(path.read_text().replace(",3,0,0,0,", ",3,0,0,7,", 1))
    with pytest.raises(RawDataError, match="'class' must be 0, 1 or 2"):
        all_rows(load_source("davidson2017", davidson_dir))


def test_generic_csv_with_string_labels(generic_csv: Path) -> None:
    source = load_source("csv", generic_csv, text_column="comment", label_column="verdict")
    assert source.label_names == ["ok", "spam", "toxic"] and source.split_key == "text"
    rows = all_rows(source)
    assert len(rows.ids) == 60 and rows.ids[5] == "row-5" and rows.keys == rows.texts
    for text, label in zip(rows.texts, rows.labels, strict=True):
        assert text.endswith(source.label_names[label])


def test_generic_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("t,y\n" + "".join(f"x{i},{[10, 9, -1][i % 3]}\n" for i in range(9)))
    source = load_source("csv", path, text_column="t", label_column="y")
    assert source.label_names == ["-1", "9", "10"]
    assert all_rows(source).labels.tolist() == [2, 1, 0] * 3


def test_generic_folder_with_official_splits(tmp_path: Path) -> None:
    import pandas as pd

    for split, rows in (("train", 8), ("val", 4), ("test", 4)):
        pd.DataFrame({"t": [f"x{i}" for i in range(rows)], "y": [i % 2 for i in range(rows)]}).to_parquet(
            tmp_path / f"{split}.parquet")
    source = load_source("parquet", tmp_path, text_column="t", label_column="y")
    assert source.label_names == ["0", "1"] and source.official_splits
    rows = all_rows(source, rows=3)
    assert rows.splits.tolist() == [0] * 8 + [1] * 4 + [2] * 4
    assert rows.ids[:2] == ["train-0", "train-1"] and rows.ids[8] == "validation-0"
    assert rows.labels.tolist() == [i % 2 for i in range(8)] + [i % 2 for i in range(4)] * 2


def test_generic_sources_need_columns_and_labels(generic_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(RawDataError, match="needs --text-column"):
        load_source("csv", generic_csv)
    with pytest.raises(RawDataError, match="no column 'body'"):
        load_source("csv", generic_csv, text_column="body", label_column="verdict")
    empty_label = tmp_path / "e.csv"
    empty_label.write_text("t,y\na,1\nb,\n")
    with pytest.raises(RawDataError, match="column 'y' has empty labels"):
        load_source("csv", empty_label, text_column="t", label_column="y")
    one_label = tmp_path / "o.csv"
    one_label.write_text("t,y\na,1\nb,1\n")
    with pytest.raises(RawDataError, match="at least 2 distinct labels"):
        load_source("csv", one_label, text_column="t", label_column="y")
    with pytest.raises(RawDataError, match="needs one file per split; missing train.parquet"):
        load_source("parquet", tmp_path, text_column="t", label_column="y")
