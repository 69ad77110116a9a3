import contextlib
import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, f1_score

from cybulde.config.schema import Config, Head
from cybulde.evaluation import evaluate as evaluate_module
from cybulde.evaluation.evaluate import EvaluationError, evaluate_split
from cybulde.registry.errors import MissingFileError
from tests.helpers.cpus import WITH_BF16, WITHOUT_BF16, fake_cpu
from tests.helpers.tiny_model import LABEL_NAMES, make_data_dir, make_model_dir

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


class FakeRun:
    """Records what evaluate_split logs, and the stage bookkeeping the stage scripts do, like PipelineRun does."""

    def __init__(self):
        self.run_id = "fake-run"
        self.tracking_uri = "sqlite:///unused.db"
        self.metrics = {}
        self.artifacts = []
        self.stages = []
        self.status = "RUNNING"

    @contextlib.contextmanager
    def stage(self, name, final=False):
        self.stages.append((name, final))
        self.status = "RUNNING"
        try:
            yield self
        except BaseException:
            self.status = "FAILED"
            raise
        if final:
            self.status = "FINISHED"

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def log_artifact(self, local_path, artifact_path=None):
        self.artifacts.append((Path(local_path), artifact_path))


@pytest.fixture(scope="module")
def shared_inputs(tmp_path_factory):
    """Data dirs and exported models built once (building takes a few seconds)."""
    base = tmp_path_factory.mktemp("eval_inputs")
    built = {}
    for num_labels in (2, 3):
        data_dir = make_data_dir(base / f"data{num_labels}", num_labels=num_labels)
        for head in ("softmax", "sigmoid"):
            if num_labels == 3 and head == "sigmoid":
                continue
            model_dir = make_model_dir(base / f"model{num_labels}_{head}", data_dir, head=head)
            built[(num_labels, head)] = (data_dir, model_dir)
    return built


@pytest.fixture
def make_project(tmp_path, shared_inputs, monkeypatch):
    logged_models = []
    monkeypatch.setattr("cybulde.publishing.publish_served_model",
                        lambda cfg, run, model_dir, metrics, **kw: logged_models.append((model_dir, metrics)))

    def build(num_labels=2, head="softmax"):
        data_dir, model_dir = shared_inputs[(num_labels, head)]
        shutil.copytree(data_dir, tmp_path / "data" / "fetched")
        shutil.copytree(model_dir, tmp_path / "model")
        cfg = Config()
        cfg.model.head = Head(head)
        cfg.evaluation.batch_size = 7  # batches of unequal size
        return tmp_path, cfg, logged_models

    return build


def read_json(path):
    return json.loads(Path(path).read_text())


def stage_script(name):
    """The module of `stages/<name>.py` (the tests run with the project root on sys.path)."""
    return importlib.import_module(f"stages.{name}")


def test_validate_and_test_write_metrics_plots_and_predictions(make_project):
    root, cfg, logged_models = make_project(2, "softmax")
    run = FakeRun()

    validation = evaluate_split(cfg, "validation", root=root, run=run)
    test = evaluate_split(cfg, "test", root=root, run=run)
    assert run.stages == []  # the stage scripts open the stages

    for split, result in (("validation", validation), ("test", test)):
        on_disk = read_json(root / "metrics" / f"{split}.json")
        assert on_disk == result
        assert list(on_disk) == sorted(on_disk)
        # Headline numbers only (what `dvc metrics show` lists); per-class detail in a file beside it.
        assert set(on_disk) == {"loss", "accuracy", "macro_f1", "roc_auc", "threshold", "num_examples"}
        assert on_disk["threshold"] is None
        per_class = read_json(root / "metrics" / f"{split}_per_class.json")
        assert list(per_class) == LABEL_NAMES[2]
        assert all(list(values) == ["f1", "precision", "recall", "support"] for values in per_class.values())
        # Exactly the plot files dvc.yaml declares; the PNG goes to MLflow only.
        assert sorted(p.name for p in (root / "plots" / split).iterdir()) == [
            "confusion.json", "pr.json", "reliability.json", "roc.json"]

        frame = pq.read_table(root / "predictions" / f"{split}.parquet").to_pandas()
        assert list(frame.columns) == ["id", "text", "label", "predicted", "prob_not_offensive",
                                       "prob_offensive"]
        assert len(frame) == on_disk["num_examples"]
        source = pq.read_table(root / "data" / "fetched" / f"{split}.parquet").to_pandas()
        assert frame["id"].tolist() == source["id"].tolist()
        assert frame["text"].tolist() == source["text"].tolist()
        # The metrics agree with sklearn on the written predictions.
        assert on_disk["accuracy"] == pytest.approx(accuracy_score(frame["label"], frame["predicted"]),
                                                    abs=1e-6)
        assert on_disk["macro_f1"] == pytest.approx(
            f1_score(frame["label"], frame["predicted"], average="macro", labels=LABEL_NAMES[2],
                     zero_division=0), abs=1e-6)
        np.testing.assert_allclose(frame["prob_not_offensive"] + frame["prob_offensive"], 1.0,
                                   atol=1e-5)
        for label, values in per_class.items():
            assert values["f1"] == pytest.approx(f1_score(frame["label"], frame["predicted"], average=None,
                                                          labels=[label], zero_division=0)[0], abs=1e-6)
            assert values["support"] == int((frame["label"] == label).sum())
        # The reliability diagram of the positive label, binned by hand from the stored probabilities.
        reliability = read_json(root / "plots" / split / "reliability.json")["reliability"]
        bins = np.minimum((frame["prob_offensive"].to_numpy() * 15).astype(int), 14)
        for point in reliability:
            inside = frame[bins == point["bin"]]
            assert point["question"] == "offensive" and point["count"] == len(inside)
            assert point["observed"] == pytest.approx((inside["label"] == "offensive").mean(), abs=1e-6)
        assert sum(point["count"] for point in reliability) == len(frame)
        confusion = read_json(root / "plots" / split / "confusion.json")
        assert [row["actual"] for row in confusion] == frame["label"].tolist()
        assert [row["predicted"] for row in confusion] == frame["predicted"].tolist()

    assert run.metrics["validation/accuracy"] == validation["accuracy"]
    assert run.metrics["test/per_class/offensive/f1"] == read_json(root / "metrics/test_per_class.json")[
        "offensive"]["f1"]
    assert "validation/threshold" not in run.metrics  # argmax: no threshold to log
    logged = {artifact_path for _, artifact_path in run.artifacts}
    assert logged == {"plots/validation", "plots/test", "predictions", "metrics"}
    logged_plots = {path.name for path, artifact_path in run.artifacts
                    if artifact_path == "plots/test"}
    assert logged_plots == {"confusion.json", "roc.json", "pr.json", "reliability.json", "confusion_matrix.png",
                            "roc_curve.png", "pr_curve.png", "reliability_diagram.png"}  # each plot beside its image
    assert logged_models == []  # publishing is the test stage's next step, not evaluation's


def test_validate_evaluates_and_test_evaluates_publishes_and_probes(make_project, monkeypatch):
    root, cfg, logged_models = make_project(2, "sigmoid")
    run, probed = FakeRun(), []
    monkeypatch.chdir(root)
    monkeypatch.setattr("cybulde.tracking.run.PipelineRun.for_model", lambda cfg, model_dir: run)
    monkeypatch.setattr("cybulde.evaluation.behaviour.log_behaviour",
                        lambda run, model_dir, threshold: probed.append((model_dir, threshold)))

    assert stage_script("validate").evaluate(cfg).endswith("-> metrics/validation.json")
    assert run.status == "RUNNING" and run.stages == [("validate", False)]
    assert (logged_models, probed) == ([], [])

    assert stage_script("test").evaluate_publish_and_probe(cfg).endswith("-> metrics/test.json")
    assert run.status == "FINISHED" and run.stages[-1] == ("test", True)
    test = read_json(root / "metrics" / "test.json")
    assert test["threshold"] == read_json(root / "metrics" / "validation.json")["threshold"]
    assert logged_models == [(root / "model", test)]
    assert probed == [(root / "model", test["threshold"])]
    assert {artifact_path for _, artifact_path in run.artifacts} == {
        "plots/validation", "plots/test", "predictions", "metrics"}


def test_a_failing_evaluation_fails_the_test_stage_before_publishing(make_project, monkeypatch):
    root, cfg, logged_models = make_project(2, "sigmoid")
    run = FakeRun()
    monkeypatch.chdir(root)
    monkeypatch.setattr("cybulde.tracking.run.PipelineRun.for_model", lambda cfg, model_dir: run)
    with pytest.raises(EvaluationError, match=r"validation\.json not found.*validate"):
        stage_script("test").evaluate_publish_and_probe(cfg)
    assert run.status == "FAILED" and logged_models == []


def test_outputs_are_byte_identical_across_reruns(make_project):
    root, cfg, _ = make_project(2, "softmax")
    evaluate_split(cfg, "validation", root=root, run=FakeRun())
    outputs = ["metrics/validation.json", "metrics/validation_per_class.json", "plots/validation/confusion.json",
               "plots/validation/roc.json", "plots/validation/pr.json",
               "predictions/validation.parquet"]
    first = {name: (root / name).read_bytes() for name in outputs}
    evaluate_split(cfg, "validation", root=root, run=FakeRun())
    for name in outputs:
        assert (root / name).read_bytes() == first[name], name


def test_batch_size_changes_results_only_by_float_noise(make_project):
    root, cfg, _ = make_project(2, "softmax")
    first = evaluate_split(cfg, "validation", root=root, run=FakeRun())
    cfg.evaluation.batch_size = 3  # other padding widths: logits differ in the last float bits
    first_per_class = read_json(root / "metrics/validation_per_class.json")
    second = evaluate_split(cfg, "validation", root=root, run=FakeRun())
    assert second["loss"] == pytest.approx(first["loss"], abs=1e-5)
    assert second["roc_auc"] == pytest.approx(first["roc_auc"], abs=1e-5)
    assert read_json(root / "metrics/validation_per_class.json") == first_per_class


def test_sigmoid_threshold_is_tuned_on_validation_and_reused_on_test(make_project):
    root, cfg, logged_models = make_project(2, "sigmoid")
    validation = evaluate_split(cfg, "validation", root=root, run=FakeRun())
    threshold = validation["threshold"]
    assert isinstance(threshold, float) and 0 < threshold < 1

    test = evaluate_split(cfg, "test", root=root, run=FakeRun())
    assert test["threshold"] == threshold
    frame = pq.read_table(root / "predictions" / "test.parquet").to_pandas()
    expected = np.where(frame["prob_offensive"] >= threshold, "offensive", "not_offensive")
    # Probabilities in the file are rounded; only rows far from the threshold are unambiguous.
    clear = (frame["prob_offensive"] - threshold).abs() > 1e-5
    assert (frame["predicted"][clear] == expected[clear]).all()


def test_tuned_threshold_maximises_validation_macro_f1(make_project):
    root, cfg, _ = make_project(2, "sigmoid")
    tuned = evaluate_split(cfg, "validation", root=root, run=FakeRun())
    for fixed in ("0.1", "0.3", "0.5", "0.7", "0.9"):
        cfg.evaluation.threshold = fixed
        result = evaluate_split(cfg, "validation", root=root, run=FakeRun())
        assert result["threshold"] == float(fixed)
        assert result["macro_f1"] <= tuned["macro_f1"] + 1e-9


def test_test_split_without_recorded_threshold_fails_clearly(make_project):
    root, cfg, _ = make_project(2, "sigmoid")
    with pytest.raises(EvaluationError, match=r"validation\.json not found.*validate"):
        evaluate_split(cfg, "test", root=root, run=FakeRun())

    (root / "metrics").mkdir()
    (root / "metrics" / "validation.json").write_text(json.dumps({"threshold": None}))
    with pytest.raises(EvaluationError, match="records no threshold"):
        evaluate_split(cfg, "test", root=root, run=FakeRun())


def test_softmax_test_split_needs_no_validation_metrics(make_project):
    root, cfg, _ = make_project(2, "softmax")
    assert evaluate_split(cfg, "test", root=root, run=FakeRun())["threshold"] is None


def test_evaluation_runs_in_the_precision_the_trained_setting_resolves_to_here(make_project, monkeypatch, caplog):
    root, cfg, _ = make_project(2, "softmax")
    fp32 = evaluate_split(cfg, "validation", root=root, run=FakeRun())
    config = read_json(root / "model" / "config.json")
    config["metadata"]["train_params"] = {"train": {"precision": "auto"}}
    (root / "model" / "config.json").write_text(json.dumps(config))
    results = {}
    for precision, cpuinfo in (("bf16-mixed", WITH_BF16), ("32-true", WITHOUT_BF16)):
        fake_cpu(root, monkeypatch, cpuinfo)
        caplog.clear()
        with caplog.at_level("INFO", logger="cybulde.evaluation"):
            results[precision] = evaluate_split(cfg, "validation", root=root, run=FakeRun())
        assert f"validation: inference in {precision} (auto: Test CPU has" in caplog.text
    assert results["32-true"] == fp32  # no native bf16: the fp32 result, exactly
    assert results["bf16-mixed"]["loss"] != fp32["loss"]
    assert results["bf16-mixed"]["loss"] == pytest.approx(fp32["loss"], abs=0.02)


def test_multiclass_plots_have_micro_and_per_class_curves(make_project):
    root, cfg, _ = make_project(3, "softmax")
    run = FakeRun()
    evaluate_split(cfg, "validation", root=root, run=run)
    assert set(read_json(root / "metrics/validation_per_class.json")) == set(LABEL_NAMES[3])
    roc = read_json(root / "plots" / "validation" / "roc.json")["roc"]
    assert roc and all("class" not in point for point in roc)  # micro-averaged
    pr = read_json(root / "plots" / "validation" / "pr.json")["pr"]
    assert pr and all("class" not in point for point in pr)
    # One-vs-rest curves per class go to MLflow, not into the DVC-tracked folder.
    logged = {path.name for path, artifact_path in run.artifacts
              if artifact_path == "plots/validation"}
    assert {"roc_per_class.json", "pr_per_class.json", "confusion_matrix.png"} <= logged
    assert not (root / "plots" / "validation" / "roc_per_class.json").exists()
    frame = pq.read_table(root / "predictions" / "validation.parquet").to_pandas()
    assert [c for c in frame.columns if c.startswith("prob_")] == [
        f"prob_{name}" for name in LABEL_NAMES[3]]


def test_missing_model_or_split_or_mismatched_data(make_project, shared_inputs):
    root, cfg, _ = make_project(2, "softmax")
    with pytest.raises(EvaluationError, match="unknown split"):
        evaluate_split(cfg, "train", root=root, run=FakeRun())

    (root / "data" / "fetched" / "test.parquet").unlink()
    with pytest.raises(MissingFileError, match=r"test\.parquet not found.*fetch"):
        evaluate_split(cfg, "test", root=root, run=FakeRun())

    shutil.rmtree(root / "data" / "fetched")
    shutil.copytree(shared_inputs[(3, "softmax")][0], root / "data" / "fetched")
    with pytest.raises(EvaluationError, match="labels"):
        evaluate_split(cfg, "validation", root=root, run=FakeRun())

    shutil.rmtree(root / "model")
    with pytest.raises(EvaluationError, match="run the `train` stage"):
        evaluate_split(cfg, "validation", root=root, run=FakeRun())


def test_stage_scripts_exit_with_one_line_on_known_errors(tmp_path, monkeypatch, capsys):
    import importlib.util

    shutil.copy(REPO_PARAMS, tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    for script, stage in (("validate.py", "validate"), ("test.py", "test")):
        path = Path(__file__).resolve().parents[2] / "stages" / script
        spec = importlib.util.spec_from_file_location(f"stage_{stage}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main([]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"{stage}: error: no exported model in")
        assert len(err.splitlines()) == 1
        assert module.main(["evaluation.batch_size=0"]) == 1
        assert "evaluation.batch_size" in capsys.readouterr().err


def test_module_constants_match_the_pipeline_layout():
    assert (stage_script("validate").STAGE, stage_script("validate").SPLIT) == ("validate", "validation")
    assert (stage_script("test").STAGE, stage_script("test").SPLIT) == ("test", "test")
    assert evaluate_module.MODEL_DIR == "model"


@pytest.mark.slow
def test_stages_log_into_the_training_run_and_finish_it(make_project, monkeypatch):
    """validate + test with the real PipelineRun: one run, RUNNING after validate, FINISHED after test."""
    import mlflow
    from mlflow import MlflowClient

    from cybulde.tracking.run import PipelineRun

    root, cfg, logged_models = make_project(2, "sigmoid")
    monkeypatch.undo()  # log the real pyfunc model this time
    monkeypatch.chdir(root)
    shutil.copy(REPO_PARAMS, root / "params.yaml")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg.mlflow.tracking_uri = uri
    config = read_json(root / "model" / "config.json")
    config["metadata"]["dataset"] = "tweeteval_offensive"  # a dataset the behaviour suite maps
    (root / "model" / "config.json").write_text(json.dumps(config))
    training = PipelineRun.start_training(cfg)
    training.mark_model(root / "model")
    client = MlflowClient(uri)

    stage_script("validate").evaluate(cfg)
    validation = read_json(root / "metrics" / "validation.json")
    assert client.get_run(training.run_id).info.status == "RUNNING"
    stage_script("test").evaluate_publish_and_probe(cfg)
    test = read_json(root / "metrics" / "test.json")

    run = client.get_run(training.run_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert run.data.metrics["validation/macro_f1"] == pytest.approx(validation["macro_f1"])
    assert run.data.metrics["test/threshold"] == pytest.approx(validation["threshold"])
    assert run.data.metrics["test/per_class/offensive/support"] == read_json(
        root / "metrics/test_per_class.json")["offensive"]["support"]
    assert test["num_examples"] == read_json(root / "metrics/test.json")["num_examples"]
    artifacts = {item.path for folder in ("plots/validation", "plots/test", "predictions", "metrics")
                 for item in client.list_artifacts(training.run_id, folder)}
    assert {"plots/validation/confusion_matrix.png", "plots/test/confusion_matrix.png",
            "plots/test/roc.json", "predictions/test.parquet", "metrics/validation.json",
            "metrics/test_per_class.json"} <= artifacts
    assert [item.path for item in client.list_artifacts(training.run_id, "behaviour")] == ["behaviour/table.json"]
    assert 0 <= run.data.metrics["behaviour/total/accuracy"] <= 1

    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"runs:/{training.run_id}/model")
    frame = pq.read_table(root / "predictions" / "test.parquet").to_pandas()
    answer = served.predict(frame[["text"]])
    assert answer["label"].tolist() == frame["predicted"].tolist()
    assert answer["prob_offensive"].tolist() == pytest.approx(frame["prob_offensive"].tolist(), abs=1e-5)


@pytest.mark.slow
def test_a_failing_test_stage_marks_the_run_failed(make_project, monkeypatch):
    from mlflow import MlflowClient

    from cybulde.tracking.run import PipelineRun

    root, cfg, _ = make_project(2, "sigmoid")
    monkeypatch.chdir(root)
    shutil.copy(REPO_PARAMS, root / "params.yaml")
    cfg.mlflow.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    training = PipelineRun.start_training(cfg)
    training.mark_model(root / "model")
    with pytest.raises(EvaluationError, match="validation.json not found"):
        stage_script("test").evaluate_publish_and_probe(cfg)  # validate never ran: no recorded threshold
    status = MlflowClient(cfg.mlflow.tracking_uri).get_run(training.run_id).info.status
    assert status == "FAILED"
