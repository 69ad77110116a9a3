import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cybulde.cli import build_parser, main
from cybulde.data.errors import DataError, VersionExistsError
from cybulde.data.labels import LabelMappingError
from cybulde.data.manifest import Manifest
from cybulde.data.publish import add_publish_arguments, publish, run_publish
from cybulde.data.tokenizer import load_tokenizer
from cybulde.errors import UsageError

SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.int64()),
                    ("input_ids", pa.list_(pa.int32()))])


def test_published_tweeteval_version(published_registry: Path, tmp_path: Path) -> None:
    version = published_registry / "tweeteval_offensive" / "v1"
    manifest = Manifest.load(version)
    # 40/12/10 raw rows minus the empty tweets (2 in train, 1 in val), which are dropped and counted
    assert {s: m.rows for s, m in manifest.splits.items()} == {"train": 38, "validation": 11, "test": 10}
    assert manifest.splits["train"].dropped_empty_rows == 2
    assert manifest.label_names == ["not-offensive", "offensive"]
    assert manifest.tokenizer.kind == "pretrained" and manifest.tokenizer.vocab_size == 30522
    assert manifest.tokenizer.pad_token_id == 0 and manifest.tokenizer.cls_token_id == 101
    assert {source.path for source in manifest.sources} >= {"mapping.txt", "train_text.txt", "train_labels.txt"}
    assert manifest.publish_params["split"] == {"method": "official"}
    assert manifest.splits["train"].truncated_rows > 0  # max_length 16 truncates the long generated tweets

    table = pq.read_table(version / "train.parquet")
    assert table.schema.remove_metadata().equals(SCHEMA)
    rows = table.to_pylist()
    tokenizer = load_tokenizer(version)
    for row in rows:
        assert f" is {manifest.label_names[row['label']]} " in row["text"]  # labels did not shift
        assert "&amp;" in row["text"] and row["text"].endswith(" ")  # the original text is kept
        ids = row["input_ids"]
        assert ids[0] == 101 and ids[-1] == 102 and len(ids) <= 16
        assert "&" in tokenizer.decode(ids) and "amp" not in tokenizer.decode(ids)  # cleaned for the tokenizer
    counts = manifest.splits["train"].label_counts
    assert sum(counts.values()) == 38 and counts["offensive"] == sum(r["label"] for r in rows)


def test_second_publish_of_a_version_is_refused(published_registry: Path, tweeteval_dir: Path) -> None:
    with pytest.raises(VersionExistsError, match="tweeteval_offensive/v1 already exists"):
        publish("tweeteval_offensive", tweeteval_dir, str(published_registry), "v1", echo=None)


def test_publish_is_deterministic(tweeteval_dir: Path, tmp_path: Path) -> None:
    first = publish("tweeteval_offensive", tweeteval_dir, str(tmp_path / "r1"), "v1", echo=None)
    second = publish("tweeteval_offensive", tweeteval_dir, str(tmp_path / "r2"), "v1", echo=None)
    assert first.files == second.files and first.sha256 == second.sha256


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_trained_tokenizers(kind: str, davidson_dir: Path, tmp_path: Path) -> None:
    manifest = publish("davidson2017", davidson_dir, str(tmp_path / "reg"), "v1", tokenizer=kind, vocab_size=300,
                       max_length=32, seed=5, echo=None)
    again = publish("davidson2017", davidson_dir, str(tmp_path / "reg2"), "v1", tokenizer=kind, vocab_size=300,
                    max_length=32, seed=5, echo=None)
    assert manifest.tokenizer.sha256 == again.tokenizer.sha256
    assert manifest.tokenizer.kind == kind and manifest.tokenizer.vocab_size <= 300
    assert manifest.publish_params["split"]["seed"] == 5 and manifest.num_labels == 3
    version = tmp_path / "reg" / "davidson2017" / "v1"
    tokenizer = load_tokenizer(version)
    ids = pq.read_table(version / "test.parquet").column("input_ids").to_pylist()
    assert all(row[0] == tokenizer.cls_token_id and row[-1] == tokenizer.sep_token_id for row in ids)
    assert tokenizer.pad_token_id == manifest.tokenizer.pad_token_id


def test_generic_csv_small_version(generic_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = publish("csv", generic_csv, str(tmp_path / "reg"), "small", dataset="mine", text_column="comment",
                       label_column="verdict", max_rows_per_split=9)
    assert manifest.dataset == "mine" and manifest.label_names == ["ok", "spam", "toxic"]
    assert manifest.splits["train"].rows == 9 and manifest.splits["train"].label_counts == {
        "ok": 3, "spam": 3, "toxic": 3}
    out = capsys.readouterr().out
    assert "published mine/small" in out and "train" in out and "p50" in out and "toxic 3" in out


def test_cli_arguments_and_errors(tweeteval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = build_parser()
    argv = ["publish", "--source", "tweeteval_offensive", "--raw-dir", str(tweeteval_dir), "--registry",
            str(tmp_path / "reg"), "--version", "v1", "--max-length", "32", "--max-rows-per-split", "5"]
    args = parser.parse_args(argv)
    assert args.handler is run_publish and args.max_length == 32 and args.tokenizer == "pretrained"
    assert main(argv) == 0
    assert main(argv) == 1
    assert main([*argv, "--if-missing"]) == 0  # the first-run setup accepts an existing version
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cybulde publish: error:") and "already exists" in err
    standalone = add_publish_arguments(argparse.ArgumentParser()).parse_args(
        ["--source", "csv", "--version", "v1", "--registry", str(tmp_path / "reg")])
    with pytest.raises(UsageError, match="--raw-dir is required"):
        run_publish(standalone)
    with pytest.raises(SystemExit) as exit_info:
        main(["publish", "--source", "csv", "--version", "v1", "--registry", str(tmp_path / "reg")])
    assert exit_info.value.code == 2 and "--raw-dir is required" in capsys.readouterr().err


def test_extra_training_data_joins_the_train_split_only(tweeteval_dir: Path, davidson_dir: Path,
                                                        tmp_path: Path) -> None:
    from cybulde.data.sources import ExtraTraining

    extra = ExtraTraining("davidson2017", davidson_dir, {"hate_speech": "offensive", "offensive_language": "offensive",
                                                         "neither": "not-offensive"})
    alone = publish("tweeteval_offensive", tweeteval_dir, str(tmp_path / "reg"), "v1", echo=None)
    mixed = publish("tweeteval_offensive", tweeteval_dir, str(tmp_path / "reg"), "v2", extra_training=[extra],
                    echo=None)
    davidson = publish("davidson2017", davidson_dir, str(tmp_path / "reg"), "v1", echo=None).splits["train"]
    assert mixed.label_names == alone.label_names
    assert mixed.splits["train"].rows == alone.splits["train"].rows + davidson.rows == alone.splits["train"].rows + 72
    assert mixed.splits["validation"] == alone.splits["validation"] and mixed.splits["test"] == alone.splits["test"]
    added = {name: mixed.splits["train"].label_counts[name] - alone.splits["train"].label_counts[name]
             for name in mixed.label_names}
    assert added == {"not-offensive": davidson.label_counts["neither"],
                     "offensive": davidson.label_counts["hate_speech"] + davidson.label_counts["offensive_language"]}
    assert mixed.publish_params["extra_training"] == [extra.describe()]
    assert "extra_training" not in alone.publish_params
    assert {source.path for source in mixed.sources} >= {"davidson2017/labeled_data.csv",
                                                          "tweeteval_offensive/train_text.txt"}
    train = pq.read_table(tmp_path / "reg" / "tweeteval_offensive" / "v2" / "train.parquet").to_pydict()
    assert sum(row_id.startswith("davidson2017:") for row_id in train["id"]) == 72
    assert len(set(train["id"])) == len(train["id"])


@pytest.mark.parametrize(("label_map", "message"), [
    ({"hate_speech": "offensive", "neither": "not-offensive"},
     r"davidson2017 labels \['offensive_language'\] are not mapped.*--add-train davidson2017:\.\.\.,offensive_language="),
    ({"hate_speech": "offensive", "offensive_language": "offensive", "neither": "not-offensive", "spam": "offensive"},
     r"names davidson2017 labels \['spam'\] that the davidson2017 does not have"),
    ({"hate_speech": "hate", "offensive_language": "offensive", "neither": "not-offensive"},
     r"\['hate'\] are not labels of the dataset"),
])
def test_extra_training_label_map_must_be_total_and_valid(tweeteval_dir: Path, davidson_dir: Path, tmp_path: Path,
                                                          label_map: dict, message: str) -> None:
    from cybulde.data.sources import ExtraTraining

    with pytest.raises(LabelMappingError, match=message):
        publish("tweeteval_offensive", tweeteval_dir, str(tmp_path / "reg"), "v1",
                extra_training=[ExtraTraining("davidson2017", davidson_dir, label_map)], echo=None)
    assert not (tmp_path / "reg" / "tweeteval_offensive").exists()


def test_add_train_argument_is_parsed_strictly(tmp_path: Path) -> None:
    from cybulde.data.sources import ExtraTraining

    extra = ExtraTraining.parse("tweeteval_offensive:offensive=hate, not-offensive=not-hate", tmp_path)
    assert extra.raw_dir == tmp_path / "tweeteval_offensive"
    assert extra.label_map == {"offensive": "hate", "not-offensive": "not-hate"}
    for bad in ("nosuch:a=b", "tweeteval_offensive", "tweeteval_offensive:a", "tweeteval_offensive:a=b,a=c"):
        with pytest.raises(DataError):
            ExtraTraining.parse(bad, tmp_path)
