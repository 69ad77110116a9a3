"""`cybulde publish --questions`: one multi-label version from every source of a mapping file."""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cybulde.cli import main
from cybulde.preparation.publish import default_datasets_dir, plan_question_parts, publish, publish_questions
from cybulde.preparation.questions import QuestionMapError, load_question_map
from cybulde.registry.manifest import MULTILABEL, SPLITS, Manifest, files_dir
from cybulde.registry.splits import read_split_columns
from tests.helpers.raw_data import write_davidson, write_tweeteval

HARM = Path(__file__).resolve().parents[2] / "configs" / "questions" / "harm.yaml"
SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()),
                    ("labels", pa.list_(pa.int8())), ("input_ids", pa.list_(pa.int32()))])
HATE_NAMES = ["not-hate", "hate"]

# Hand-written raw sources: TweetEval files (text, label index) per split file, Davidson rows (id, class, tweet).
OFFENSIVE_ROWS = {"train": [("have a nice day", 0), ("you absolute idiot", 1)], "val": [("thanks for sharing", 0)],
                  "test": [("shut up clown", 1), ("", 0)]}
HATE_ROWS = {"train": [("send them all back", 1), ("i love this city", 0)], "val": [("so much traffic today", 0)],
             "test": [("they are all criminals", 1)]}
DAVIDSON_ROWS = [(0, 0, "you people are vermin"), (1, 1, "shut up you idiot"), (2, 2, "what a lovely morning"),
                 (3, 2, "   ")]

# What the harm map makes of them, by hand: id -> [abusive, hate], -1 missing. Empty texts are dropped.
EXPECTED_LABELS = {
    "tweeteval_offensive/train-1": [0, 0],  # not-offensive
    "tweeteval_offensive/train-2": [1, -1],  # offensive: abusive, hate unknown
    "tweeteval_offensive/validation-1": [0, 0],
    "tweeteval_offensive/test-1": [1, -1],
    "davidson2017/row-0": [1, 1],  # hate_speech
    "davidson2017/row-1": [1, 0],  # offensive_language
    "davidson2017/row-2": [0, 0],  # neither
    "tweeteval_hate/train-1": [1, 1],  # hate
    "tweeteval_hate/train-2": [-1, 0],  # not-hate: abusive unknown
    "tweeteval_hate/validation-1": [-1, 0],
    "tweeteval_hate/test-1": [1, 1],
}


def write_tweeteval_rows(folder: Path, names: list[str], rows: dict[str, list[tuple[str, int]]]) -> Path:
    folder.mkdir(parents=True)
    (folder / "mapping.txt").write_text("".join(f"{index}\t{name}\n" for index, name in enumerate(names)))
    for stem, split_rows in rows.items():
        (folder / f"{stem}_text.txt").write_text("".join(f"{text}\n" for text, _ in split_rows))
        (folder / f"{stem}_labels.txt").write_text("".join(f"{label}\n" for _, label in split_rows))
    return folder


def write_davidson_rows(folder: Path, rows: list[tuple[int, int, str]]) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "labeled_data.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["", "count", "hate_speech", "offensive_language", "neither", "class", "tweet"])
        for row_id, label, text in rows:
            writer.writerow([row_id, 3, *[3 if label == index else 0 for index in range(3)], label, text])
    return folder


def write_hand_sources(datasets: Path) -> Path:
    write_tweeteval_rows(datasets / "tweeteval_offensive", ["not-offensive", "offensive"], OFFENSIVE_ROWS)
    write_davidson_rows(datasets / "davidson2017", DAVIDSON_ROWS)
    write_tweeteval_rows(datasets / "tweeteval_hate", HATE_NAMES, HATE_ROWS)
    return datasets


def write_generated_sources(datasets: Path) -> Path:
    """The larger generated raw files (tests.helpers.raw_data) of the three sources."""
    write_tweeteval(datasets / "tweeteval_offensive")
    write_davidson(datasets / "davidson2017")
    write_tweeteval(datasets / "tweeteval_hate", HATE_NAMES)
    return datasets


def split_rows(version: Path, split: str, columns: tuple[str, ...] = ("id", "source", "labels")) -> list[tuple]:
    return list(zip(*read_split_columns(version, split, columns).values(), strict=True))


@pytest.fixture(scope="module")
def hand_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-written sources published with the harm map: harm/v1 in a registry."""
    root = tmp_path_factory.mktemp("hand")
    publish_questions(HARM, str(root / "registry"), "v1", datasets_dir=write_hand_sources(root / "datasets"),
                      max_length=16, workers=1, echo=None)
    return root / "registry" / "harm" / "v1"


def test_rows_answer_the_questions_as_the_map_says(hand_version: Path) -> None:
    rows = {split: split_rows(hand_version, split, ("id", "source", "labels", "text")) for split in SPLITS}
    everything = [row for split in SPLITS for row in rows[split]]
    assert {row_id: labels for row_id, _, labels, _ in everything} == EXPECTED_LABELS
    assert len(everything) == len(EXPECTED_LABELS)
    for row_id, source, _, text in everything:
        assert row_id.startswith(f"{source}/")
        assert text.strip()  # the empty tweet and the blank Davidson row are dropped
    # TweetEval's official splits are kept; within a split the sources follow the map's order
    for split, stem in (("train", "train"), ("validation", "validation"), ("test", "test")):
        tweeteval = [row_id for row_id, source, _, _ in rows[split] if source != "davidson2017"]
        assert all(f"/{stem}-" in row_id for row_id in tweeteval)
        order = ["tweeteval_offensive", "davidson2017", "tweeteval_hate"]
        sources = [source for _, source, _, _ in rows[split]]
        assert sources == sorted(sources, key=order.index)
    shard = files_dir(hand_version) / "train-00000-of-00001.parquet"
    assert pq.read_table(shard).schema.remove_metadata().equals(SCHEMA)


def test_manifest_of_a_multilabel_version(hand_version: Path) -> None:
    manifest = Manifest.load(hand_version)
    assert manifest.task == MULTILABEL and manifest.is_multilabel
    assert manifest.label_names == ["abusive", "hate"]
    assert manifest.source_names == ["tweeteval_offensive", "davidson2017", "tweeteval_hate"]
    assert manifest.label_map == load_question_map(HARM).record()
    assert manifest.label_map["file"] == str(HARM)
    assert manifest.label_map["sha256"] == hashlib.sha256(HARM.read_bytes()).hexdigest()
    assert manifest.label_map["sources"]["tweeteval_hate"] == {
        "kind": "tweeteval_hate", "labels": {"hate": {"abusive": 1, "hate": 1}, "not-hate": {"abusive": None, "hate": 0}}}
    for split in SPLITS:
        rows = split_rows(hand_version, split)
        summary = manifest.splits[split]
        assert summary.rows == len(rows)
        assert summary.source_rows == {source: sum(row[1] == source for row in rows)
                                       for source in manifest.source_names}
        assert summary.label_counts == {question: sum(row[2][column] == 1 for row in rows)
                                        for column, question in enumerate(manifest.label_names)}
        assert summary.answers == {
            source: {question: {name: sum(row[1] == source and row[2][column] == value for row in rows)
                                for name, value in (("yes", 1), ("no", 0), ("missing", -1))}
                     for column, question in enumerate(manifest.label_names)}
            for source in manifest.source_names}
    # by hand: the offensive tweet of the test split, the dropped empty one
    assert manifest.splits["test"].answers["tweeteval_offensive"] == {
        "abusive": {"yes": 1, "no": 0, "missing": 0}, "hate": {"yes": 0, "no": 0, "missing": 1}}
    assert manifest.splits["test"].dropped_empty_rows >= 1
    assert manifest.splits["train"].answers["tweeteval_hate"]["abusive"] == {"yes": 1, "no": 0, "missing": 1}
    params = manifest.publish_params
    assert params["questions"] == str(HARM) and params["sources"]["davidson2017"]["split"]["method"] == "seeded-sha256/v1"
    assert params["sources"]["tweeteval_offensive"]["split"] == {"method": "official"}
    assert {source.path for source in manifest.sources} >= {"davidson2017/labeled_data.csv",
                                                             "tweeteval_hate/mapping.txt"}
    raw = json.loads((hand_version / "manifest.json").read_bytes())
    assert raw["task"] == "multilabel" and raw["splits"]["train"]["source_rows"]["davidson2017"] >= 0


def test_a_single_label_manifest_has_none_of_the_new_fields(tmp_path: Path) -> None:
    folder = write_tweeteval(tmp_path / "raw" / "tweeteval_offensive")
    publish("tweeteval_offensive", folder, str(tmp_path / "reg"), "v1", workers=1, echo=None)
    raw = json.loads((tmp_path / "reg" / "tweeteval_offensive" / "v1" / "manifest.json").read_bytes())
    assert raw["task"] == "multiclass"
    assert not {"source_names", "label_map"} & set(raw)
    assert not {"source_rows", "answers"} & set(raw["splits"]["train"])


@pytest.mark.parametrize("limit", [None, 5])
def test_each_source_keeps_the_split_of_its_own_version(tmp_path: Path, limit: int | None) -> None:
    """Same seed: a source's rows in each split (and a --max-rows-per-split sample of them) are the ones
    its own single-source version has, in the same order, with the same tokens."""
    datasets = write_generated_sources(tmp_path / "datasets")
    registry = str(tmp_path / "reg")
    options = dict(seed=7, max_length=24, max_rows_per_split=limit, workers=1, echo=None)
    publish_questions(HARM, registry, "v1", datasets_dir=datasets, **options)
    for source in ("tweeteval_offensive", "davidson2017", "tweeteval_hate"):
        publish(source, datasets / source, registry, "v1", **options)
    combined = tmp_path / "reg" / "harm" / "v1"
    for split in SPLITS:
        rows = split_rows(combined, split, ("id", "source", "text", "input_ids"))
        for source in ("tweeteval_offensive", "davidson2017", "tweeteval_hate"):
            alone = read_split_columns(tmp_path / "reg" / source / "v1", split, ("id", "text", "input_ids"))
            mine = [(row_id, text, ids) for row_id, row_source, text, ids in rows if row_source == source]
            assert mine == [(f"{source}/{row_id}", text, ids) for row_id, text, ids in zip(*alone.values(), strict=True)]
            if limit is not None:
                assert len(mine) == min(limit, Manifest.load(tmp_path / "reg" / source / "v1").splits[split].rows)
    davidson = Manifest.load(tmp_path / "reg" / "davidson2017" / "v1")
    assert sum(davidson.splits[split].rows for split in SPLITS) >= (15 if limit else 80)  # hash-split: every split


def test_a_users_csv_joins_the_combination(tmp_path: Path) -> None:
    datasets = write_hand_sources(tmp_path / "datasets")
    (datasets / "forum").mkdir()
    posts = [("fine post about gardening", 0), ("you are a moron", 1), ("a calm reply", 0), ("get lost loser", 1)]
    with open(datasets / "forum" / "posts.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["body", "verdict"])
        writer.writerows(posts)
    mapping = tmp_path / "with-forum.yaml"
    mapping.write_text(HARM.read_text() + "  forum:\n    kind: csv\n    path: forum/posts.csv\n"
                       "    text_column: body\n    label_column: verdict\n    labels:\n"
                       "      0: {abusive: 0, hate: null}\n      1: {abusive: 1, hate: null}\n")
    manifest = publish_questions(mapping, str(tmp_path / "reg"), "v1", datasets_dir=datasets, workers=1, echo=None)
    assert manifest.dataset == "with-forum" and manifest.source_names[-1] == "forum"
    version = tmp_path / "reg" / "with-forum" / "v1"
    rows = {row_id: labels for split in SPLITS for row_id, _, labels in split_rows(version, split)}
    assert rows == {**EXPECTED_LABELS, "forum/row-0": [0, -1], "forum/row-1": [1, -1], "forum/row-2": [0, -1],
                    "forum/row-3": [1, -1]}
    assert manifest.publish_params["sources"]["forum"]["split"]["key"] == "text"
    assert manifest.label_map["sources"]["forum"] == {"kind": "csv", "labels": {"0": {"abusive": 0, "hate": None},
                                                                                "1": {"abusive": 1, "hate": None}}}


@pytest.mark.parametrize(("edit", "message"), [
    (("      neither: {abusive: 0, hate: 0}\n", ""),
     r"source 'davidson2017' has labels \['neither'\] that the map leaves out"),
    (("      neither: {abusive: 0, hate: 0}\n", "      neither: {abusive: 0, hate: 0}\n      spam: {abusive: 0, hate: 0}\n"),
     r"source 'davidson2017' has no labels \['spam'\]; its labels are \['hate_speech', 'offensive_language', 'neither'\]"),
    (("      hate_speech: {abusive: 1, hate: 1}", "      hate_speech: {abusive: 0, hate: 1}"),
     "source 'davidson2017': label 'hate_speech': answers hate=1, which implies abusive=1, but answers abusive=0"),
])
def test_a_bad_map_is_refused_before_anything_is_written(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    datasets = write_hand_sources(tmp_path / "datasets")
    text = HARM.read_text()
    assert edit[0] in text
    mapping = tmp_path / "harm.yaml"
    mapping.write_text(text.replace(edit[0], edit[1]))
    with pytest.raises(QuestionMapError, match=f"{mapping}: {message}"):
        publish_questions(mapping, str(tmp_path / "reg"), "v1", datasets_dir=datasets, workers=1, echo=None)
    assert not (tmp_path / "reg" / "harm").exists()


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    datasets = write_hand_sources(tmp_path / "datasets")
    argv = ["publish", "--questions", str(HARM), "--datasets-dir", str(datasets), "--registry", str(tmp_path / "reg"),
            "--dataset", "harm", "--version", "v1", "--max-length", "16", "--workers", "1", "--print-pin"]
    assert main(argv) == 0
    pin = capsys.readouterr().out
    manifest = Manifest.load(tmp_path / "reg" / "harm" / "v1")
    assert pin == f"data.manifest_sha256={manifest.sha256}\n" and manifest.is_multilabel
    assert main(argv) == 1 and "harm/v1 already exists" in capsys.readouterr().err
    assert main([*argv, "--if-missing"]) == 0 and capsys.readouterr().out == pin
    for extra, refused in ((["--source", "davidson2017"], "--source"),
                           (["--add-train", "davidson2017:neither=not-hate"], "--add-train"),
                           (["--raw-dir", str(datasets), "--text-column", "t"], "--raw-dir, --text-column")):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv[:-1], "--version", "v2", *extra])
        assert exit_info.value.code == 2
        assert f"--questions cannot be combined with {refused}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["publish", "--version", "v2", "--registry", str(tmp_path / "reg")])
    assert exit_info.value.code == 2 and "one of --source or --questions is required" in capsys.readouterr().err
    assert not (tmp_path / "reg" / "harm" / "v2").exists()
    with pytest.raises(SystemExit):
        main(["publish", "--help"])
    assert "--questions FILE" in capsys.readouterr().out


def test_the_harm_map_fits_the_real_datasets() -> None:
    """The shipped map names exactly the labels the real raw files have (skipped without them)."""
    datasets = default_datasets_dir()
    harm = load_question_map(HARM)
    if not all((datasets / name).is_dir() for name in harm.source_names):
        pytest.skip(f"the raw datasets are not in {datasets}")
    parts = plan_question_parts(harm, datasets, seed=1234)
    assert [part.plan.source_name for part in parts] == harm.source_names


def test_a_source_folder_can_be_moved_with_path(tmp_path: Path) -> None:
    datasets = write_hand_sources(tmp_path / "datasets")
    shutil.move(datasets / "davidson2017", datasets / "davidson-copy")
    mapping = tmp_path / "moved.yaml"
    mapping.write_text(HARM.read_text().replace("  davidson2017:\n", "  davidson2017:\n    path: davidson-copy\n"))
    manifest = publish_questions(mapping, str(tmp_path / "reg"), "v1", datasets_dir=datasets, workers=1, echo=None)
    assert manifest.splits["train"].source_rows["davidson2017"] + manifest.splits["validation"].source_rows[
        "davidson2017"] + manifest.splits["test"].source_rows["davidson2017"] == 3


def test_a_map_of_one_source_records_its_files_under_its_folder(tmp_path: Path) -> None:
    datasets = write_hand_sources(tmp_path / "datasets")
    mapping = tmp_path / "only-davidson.yaml"
    mapping.write_text("questions: [abusive, hate]\nsources:\n  davidson2017:\n    labels:\n"
                       "      hate_speech: {abusive: 1, hate: 1}\n      offensive_language: {abusive: 1, hate: 0}\n"
                       "      neither: {abusive: 0, hate: 0}\n")
    manifest = publish_questions(mapping, str(tmp_path / "reg"), "v1", datasets_dir=datasets, workers=1, echo=None)
    assert [source.path for source in manifest.sources] == ["davidson2017/labeled_data.csv"]
    assert manifest.source_names == ["davidson2017"] and manifest.label_map["implies"] == {}
