import argparse
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cybulde.cli import build_parser, main
from cybulde.errors import UsageError
from cybulde.preparation.labels import LabelMappingError
from cybulde.preparation.publish import add_publish_arguments, publish, run_publish
from cybulde.registry.errors import DataError, VersionExistsError
from cybulde.registry.manifest import Manifest, files_dir, tokenizer_dir
from cybulde.registry.splits import read_split_columns
from cybulde.text.tokenizer import load_tokenizer
from tests.helpers.raw_data import write_generic_csv

SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.int64()),
                    ("input_ids", pa.list_(pa.int32()))])
REFERENCE = Path(__file__).parent / "fixtures" / "format1-tweeteval-reference"


def version_files(registry: Path, dataset: str, version: str) -> dict[str, bytes]:
    """Every file of a published version, manifest.json included, by its path in a fetched copy."""
    folder = registry / dataset / version
    files = {p.relative_to(files_dir(folder)).as_posix(): p.read_bytes()
             for p in sorted(files_dir(folder).rglob("*")) if p.is_file()}
    return {**files, "manifest.json": (folder / "manifest.json").read_bytes()}


def test_published_tweeteval_version(published_registry: Path) -> None:
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

    table = pq.read_table(files_dir(version) / "train-00000-of-00001.parquet")
    assert table.schema.remove_metadata().equals(SCHEMA)
    rows = table.to_pylist()
    tokenizer = load_tokenizer(tokenizer_dir(version))
    for row in rows:
        assert f" is {manifest.label_names[row['label']]} " in row["text"]  # labels did not shift
        assert "&amp;" in row["text"] and row["text"].endswith(" ")  # the original text is kept
        ids = row["input_ids"]
        assert ids[0] == 101 and ids[-1] == 102 and len(ids) <= 16
        assert "&" in tokenizer.decode(ids) and "amp" not in tokenizer.decode(ids)  # cleaned for the tokenizer
    counts = manifest.splits["train"].label_counts
    assert sum(counts.values()) == 38 and counts["offensive"] == sum(r["label"] for r in rows)


def test_rows_and_summaries_equal_the_single_file_publisher(published_registry: Path) -> None:
    """Streaming changed how rows are produced, not which: same rows and summaries as the stored
    output of the publisher that held whole splits in memory (tests/preparation/fixtures/README.md)."""
    version = published_registry / "tweeteval_offensive" / "v1"
    reference = json.loads((REFERENCE / "manifest.json").read_text())
    manifest = Manifest.load(version)
    for split in ("train", "validation", "test"):
        expected = pq.read_table(REFERENCE / f"{split}.parquet").to_pydict()
        assert read_split_columns(version, split, ("id", "text", "label", "input_ids")) == expected
        assert manifest.to_dict()["splits"][split] == reference["splits"][split]


def test_second_publish_of_a_version_is_refused(published_registry: Path, tweeteval_dir: Path) -> None:
    with pytest.raises(VersionExistsError, match="tweeteval_offensive/v1 already exists"):
        publish("tweeteval_offensive", tweeteval_dir, str(published_registry), "v1", echo=None)


def test_publish_is_deterministic_across_publishes_and_worker_counts(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import cybulde.preparation.publish as publish_module
    from cybulde.preparation.engine import LocalEngine

    monkeypatch.setattr(publish_module, "BATCH_ROWS", 64)  # 15 batches: the 2 workers' pool is used
    pools = []
    start_pool = LocalEngine._start_pool
    monkeypatch.setattr(LocalEngine, "_start_pool", lambda self: pools.append(self.workers) or start_pool(self))
    raw = write_generic_csv(tmp_path / "raw" / "big.csv", rows=900)
    options = dict(text_column="comment", label_column="verdict", rows_per_shard=100, echo=None)
    publish("csv", raw, str(tmp_path / "r1"), "v1", dataset="d", workers=1, **options)
    publish("csv", raw, str(tmp_path / "r2"), "v1", dataset="d", workers=1, **options)
    publish("csv", raw, str(tmp_path / "r3"), "v1", dataset="d", workers=2, **options)
    first = version_files(tmp_path / "r1", "d", "v1")
    assert len([name for name in first if name.startswith("train-")]) == 8  # ~720 train rows, 100 per shard
    assert version_files(tmp_path / "r2", "d", "v1") == first
    assert version_files(tmp_path / "r3", "d", "v1") == first
    assert pools == [2]  # only the workers=2 publish ran in a pool of processes


def test_shards_hold_the_rows_in_order_and_the_manifest_says_so(tmp_path: Path) -> None:
    raw = write_generic_csv(tmp_path / "raw" / "mine.csv", rows=300)
    options = dict(dataset="d", text_column="comment", label_column="verdict", echo=None)
    one = publish("csv", raw, str(tmp_path / "one"), "v1", **options)
    many = publish("csv", raw, str(tmp_path / "many"), "v1", rows_per_shard=7, **options)
    folder = files_dir(tmp_path / "many" / "d" / "v1")
    for split in ("train", "validation", "test"):
        shards = many.split_shards(split)
        rows = many.splits[split].rows
        assert [shard.path for shard in shards] == [f"{split}-{i:05d}-of-{len(shards):05d}.parquet"
                                                     for i in range(len(shards))]
        assert [shard.rows for shard in shards] == [7] * (rows // 7) + ([rows % 7] if rows % 7 else [])
        for shard in shards:
            assert pq.ParquetFile(folder / shard.path).metadata.num_rows == shard.rows
        assert (read_split_columns(tmp_path / "many" / "d" / "v1", split, ("id", "input_ids"))
                == read_split_columns(tmp_path / "one" / "d" / "v1", split, ("id", "input_ids")))
        assert many.splits[split] == one.splits[split]
    assert many.publish_params["layout"]["rows_per_shard"] == 7


def test_hash_split_is_recorded_and_roughly_80_10_10(tmp_path: Path) -> None:
    raw = write_generic_csv(tmp_path / "raw" / "mine.csv", rows=3000)
    manifest = publish("csv", raw, str(tmp_path / "reg"), "v1", dataset="d", text_column="comment",
                       label_column="verdict", seed=9, echo=None)
    assert manifest.publish_params["split"] == {
        "method": "seeded-sha256/v1", "key": "text", "seed": 9,
        "fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}}
    for label in ("ok", "spam", "toxic"):  # 1000 rows each; 5 binomial standard deviations
        counts = [manifest.splits[split].label_counts[label] for split in ("train", "validation", "test")]
        assert sum(counts) == 1000
        assert abs(counts[0] - 800) < 5 * 12.7 and abs(counts[1] - 100) < 5 * 9.5 and abs(counts[2] - 100) < 5 * 9.5


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_trained_tokenizers(kind: str, davidson_dir: Path, tmp_path: Path) -> None:
    manifest = publish("davidson2017", davidson_dir, str(tmp_path / "reg"), "v1", tokenizer=kind, vocab_size=300,
                       max_length=32, seed=5, echo=None)
    again = publish("davidson2017", davidson_dir, str(tmp_path / "reg2"), "v1", tokenizer=kind, vocab_size=300,
                    max_length=32, seed=5, workers=2, echo=None)
    assert manifest.tokenizer.sha256 == again.tokenizer.sha256 and manifest.sha256 == again.sha256
    assert manifest.tokenizer.kind == kind and manifest.tokenizer.vocab_size <= 300
    assert manifest.publish_params["split"]["seed"] == 5 and manifest.num_labels == 3
    version = tmp_path / "reg" / "davidson2017" / "v1"
    tokenizer = load_tokenizer(tokenizer_dir(version))
    rows = read_split_columns(version, "test", ("text", "input_ids"))
    assert all(row[0] == tokenizer.cls_token_id and row[-1] == tokenizer.sep_token_id for row in rows["input_ids"])
    assert tokenizer.pad_token_id == manifest.tokenizer.pad_token_id
    # the stored ids are what the saved tokenizer gives (for rows short enough not to be truncated)
    from cybulde.text.cleaning import clean_text

    for text, ids in zip(rows["text"], rows["input_ids"], strict=True):
        encoded = tokenizer(clean_text(text))["input_ids"]
        assert ids == (encoded if len(encoded) <= 32 else encoded[:31] + [tokenizer.sep_token_id])


def test_generic_csv_small_version(generic_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = publish("csv", generic_csv, str(tmp_path / "reg"), "small", dataset="mine", text_column="comment",
                       label_column="verdict", max_rows_per_split=9)
    assert manifest.dataset == "mine" and manifest.label_names == ["ok", "spam", "toxic"]
    assert manifest.splits["train"].rows == 9 and manifest.splits["train"].label_counts == {
        "ok": 3, "spam": 3, "toxic": 3}
    out = capsys.readouterr().out
    assert "published mine/small" in out and "train" in out and "p50" in out and "toxic 3" in out


def test_sample_is_stratified_deterministic_and_a_subset(tmp_path: Path) -> None:
    raw = write_generic_csv(tmp_path / "raw" / "mine.csv", rows=600)
    options = dict(dataset="d", text_column="comment", label_column="verdict", echo=None)
    full = publish("csv", raw, str(tmp_path / "full"), "v1", **options)
    small = publish("csv", raw, str(tmp_path / "a"), "v1", max_rows_per_split=20, **options)
    again = publish("csv", raw, str(tmp_path / "b"), "v1", max_rows_per_split=20, **options)
    assert small.sha256 == again.sha256
    for split in ("train", "validation", "test"):
        counts, population = small.splits[split].label_counts, full.splits[split].label_counts
        assert small.splits[split].rows == 20
        for label, count in counts.items():  # each label's share of the split, rounded up or down
            assert abs(count - 20 * population[label] / full.splits[split].rows) < 1
        rows = read_split_columns(tmp_path / "a" / "d" / "v1", split, ("id",))["id"]
        everything = read_split_columns(tmp_path / "full" / "d" / "v1", split, ("id",))["id"]
        assert set(rows) <= set(everything) and rows == [row for row in everything if row in set(rows)]
    assert full.splits["train"].rows > 400


def test_cli_arguments_and_errors(tweeteval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = build_parser()
    argv = ["publish", "--source", "tweeteval_offensive", "--raw-dir", str(tweeteval_dir), "--registry",
            str(tmp_path / "reg"), "--version", "v1", "--max-length", "32", "--max-rows-per-split", "5",
            "--rows-per-shard", "3", "--workers", "1"]
    args = parser.parse_args(argv)
    assert args.handler is run_publish and args.max_length == 32 and args.tokenizer == "pretrained"
    assert args.engine == "local" and args.rows_per_shard == 3
    assert main(argv) == 0
    assert len(Manifest.load(tmp_path / "reg" / "tweeteval_offensive" / "v1").split_shards("train")) == 2
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
    for extra, message in ((["--engine", "dask"], "--engine dask needs --scheduler"),
                           (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler is an option of --engine dask"),
                           (["--rows-per-shard", "0"], "rows_per_shard must be >= 1")):
        with pytest.raises(SystemExit) as exit_info:  # option errors are usage errors: usage, exit 2
            main([*argv[:8], "v2", *argv[9:], *extra])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "reg" / "tweeteval_offensive" / "v2").exists()


def test_extra_training_data_joins_the_train_split_only(tweeteval_dir: Path, davidson_dir: Path,
                                                        tmp_path: Path) -> None:
    from cybulde.preparation.sources import ExtraTraining

    extra = ExtraTraining("davidson2017", davidson_dir, {"hate_speech": "offensive", "offensive_language": "offensive",
                                                         "neither": "not-offensive"})
    alone = publish("tweeteval_offensive", tweeteval_dir, str(tmp_path / "reg"), "v1", echo=None)
    mixed = publish("tweeteval_offensive", tweeteval_dir, str(tmp_path / "reg"), "v2", extra_training=[extra],
                    echo=None)
    davidson = publish("davidson2017", davidson_dir, str(tmp_path / "reg"), "v1", echo=None).splits["train"]
    assert mixed.label_names == alone.label_names
    assert mixed.splits["train"].rows == alone.splits["train"].rows + davidson.rows
    assert mixed.splits["validation"] == alone.splits["validation"] and mixed.splits["test"] == alone.splits["test"]
    added = {name: mixed.splits["train"].label_counts[name] - alone.splits["train"].label_counts[name]
             for name in mixed.label_names}
    assert added == {"not-offensive": davidson.label_counts["neither"],
                     "offensive": davidson.label_counts["hate_speech"] + davidson.label_counts["offensive_language"]}
    assert mixed.publish_params["extra_training"] == [extra.describe()]
    assert "extra_training" not in alone.publish_params
    assert {source.path for source in mixed.sources} >= {"davidson2017/labeled_data.csv",
                                                          "tweeteval_offensive/train_text.txt"}
    train = read_split_columns(tmp_path / "reg" / "tweeteval_offensive" / "v2", "train", ("id",))["id"]
    davidson_train = read_split_columns(tmp_path / "reg" / "davidson2017" / "v1", "train", ("id",))["id"]
    assert train[-len(davidson_train):] == [f"davidson2017:{row_id}" for row_id in davidson_train]  # appended
    assert len(set(train)) == len(train)


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
    from cybulde.preparation.sources import ExtraTraining

    with pytest.raises(LabelMappingError, match=message):
        publish("tweeteval_offensive", tweeteval_dir, str(tmp_path / "reg"), "v1",
                extra_training=[ExtraTraining("davidson2017", davidson_dir, label_map)], echo=None)
    assert not (tmp_path / "reg" / "tweeteval_offensive").exists()


def test_add_train_argument_is_parsed_strictly(tmp_path: Path) -> None:
    from cybulde.preparation.sources import ExtraTraining

    extra = ExtraTraining.parse("tweeteval_offensive:offensive=hate, not-offensive=not-hate", tmp_path)
    assert extra.raw_dir == tmp_path / "tweeteval_offensive"
    assert extra.label_map == {"offensive": "hate", "not-offensive": "not-hate"}
    for bad in ("nosuch:a=b", "tweeteval_offensive", "tweeteval_offensive:a", "tweeteval_offensive:a=b,a=c"):
        with pytest.raises(DataError):
            ExtraTraining.parse(bad, tmp_path)
