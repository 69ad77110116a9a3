"""`train(cfg)` end to end on a tiny from-config BERT, in one process and under torchrun."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cybulde.models.export import load_model, read_model_config
from cybulde.training import train as train_module
from tests.helpers import tiny_train
from tests.helpers.cpus import WITH_BF16, WITHOUT_BF16, fake_cpu
from tests.helpers.ports import free_port
from tests.helpers.weights import assert_same_weights, tensor_differences

TINY_TRAIN = Path(tiny_train.__file__).resolve()
REPO = TINY_TRAIN.parents[2]


def run_in_process(project, monkeypatch, overrides=()):
    monkeypatch.chdir(project)
    tiny_train.use_test_doubles(train_module, monkeypatch)
    return train_module.train(tiny_train.load(project, overrides))


def weights_at_each_validation(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Copies of the classifier's weights after each validation epoch of the next `train` call."""
    import lightning.pytorch as pl

    snapshots: list[dict[str, torch.Tensor]] = []

    class Snapshot(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            snapshots.append({name: tensor.clone() for name, tensor in pl_module.model.state_dict().items()})

    build_trainer = train_module.build_trainer

    def with_snapshots(*args, **kwargs):
        trainer, *rest = build_trainer(*args, **kwargs)
        trainer.callbacks.append(Snapshot())
        return (trainer, *rest)

    monkeypatch.setattr(train_module, "build_trainer", with_snapshots)
    return snapshots


def manifest_reads(monkeypatch) -> list[str]:
    """Where each manifest.json that the process parses from now on came from."""
    from cybulde.registry.manifest import Manifest

    reads: list[str] = []
    parse = Manifest.from_json.__func__

    def counted(cls, data, origin="manifest.json"):
        reads.append(origin)
        return parse(cls, data, origin)

    monkeypatch.setattr(Manifest, "from_json", classmethod(counted))
    return reads


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_train_exports_the_best_checkpoint_and_metrics(tmp_path, monkeypatch, head):
    project = tiny_train.make_project(tmp_path / "project", {"model.head": head, "train.class_weights": True})
    snapshots = weights_at_each_validation(monkeypatch)
    reads = manifest_reads(monkeypatch)
    result = run_in_process(project, monkeypatch)
    assert len(reads) == 1  # the training reads manifest.json once and passes the Manifest on

    metrics = json.loads((project / "metrics" / "train.json").read_text())
    assert set(metrics) == {"best_epoch", "best_val_macro_f1", "best_val_loss", "global_steps", "epochs_run"}
    assert metrics == result.metrics and metrics["global_steps"] == 12 and 1 <= metrics["best_epoch"] <= 2
    assert result.samples_per_s > 0 and result.tokens_per_s > result.samples_per_s
    loaded = load_model(project / "model")
    assert loaded.config["head"] == head
    assert loaded.model.head.num_outputs == (1 if head == "sigmoid" else 2)
    assert loaded.config["metadata"]["dataset"] == "tiny"
    assert loaded.config["metadata"]["train_metrics"] == metrics
    assert len(snapshots) == metrics["epochs_run"] == 2
    best = snapshots[metrics["best_epoch"] - 1]
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, best[name]), name  # the best epoch's weights, not the last
    assert not any((project / ".cybulde/resume/train").iterdir())  # the resume state goes after the export


def test_tokenizer_mismatch_stops_before_training(tmp_path, monkeypatch):
    from cybulde.models.backbone import TokenizerMismatchError

    project = tiny_train.make_project(tmp_path / "project", {"model.backbone": "minilm"})
    with pytest.raises(TokenizerMismatchError):
        run_in_process(project, monkeypatch)
    assert not (project / "model").exists()


def test_world_size_mismatch_stops_before_training(tmp_path, monkeypatch):
    from cybulde.training.distributed import LaunchError

    project = tiny_train.make_project(tmp_path / "project")
    with pytest.raises(LaunchError, match="launch.nnodes \\* launch.nproc_per_node = 1 \\* 2"):
        run_in_process(project, monkeypatch, ["launch.nproc_per_node=2", "train.global_batch_size=16"])


def copy_project(source: Path, target: Path) -> Path:
    """The same data for every run (a freshly trained tiny tokenizer may differ in its ids)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model", "metrics", ".cybulde"))
    return target


@pytest.mark.slow
def test_two_runs_give_bit_identical_weights(tmp_path, monkeypatch):
    first = tiny_train.make_project(tmp_path / "first", {"train.precision": "bf16-mixed"})
    second = copy_project(first, tmp_path / "second")
    run_in_process(first, monkeypatch)
    run_in_process(second, monkeypatch)
    assert_same_weights(first / "model", second / "model")
    assert (first / "metrics/train.json").read_text() == (second / "metrics/train.json").read_text()
    assert read_model_config(first / "model")["hidden_states"] == "bf16"  # the default, recorded for scoring


def torchrun(project: Path, nnodes: int, nproc_per_node: int, port: int,
             extra_env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(extra_env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
               f"--nproc_per_node={nproc_per_node}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
               str(TINY_TRAIN), str(project)]
    return subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_all(processes: list[subprocess.Popen]) -> list[str]:
    outputs = []
    for process in processes:
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, output[-4000:]
        outputs.append(output)
    return outputs


# Frozen embeddings and layer-wise lr decay ride along: DDP must skip the frozen table on every rank.
# The table is a "pretrained" backbone's (a scratch backbone must train its embeddings).
DDP = {"model.backbone": tiny_train.PRETRAINED_DIR, "train.global_batch_size": 16, "launch.threads_per_rank": 1,
       "train.freeze_embeddings": True, "train.layer_lr_decay": 0.8}


@pytest.fixture(scope="module")
def one_node_two_processes(tmp_path_factory):
    project = tiny_train.make_project(tmp_path_factory.mktemp("ddp") / "one_node",
                                      {**DDP, "launch.nproc_per_node": 2})
    tiny_train.make_pretrained_backbone(project)
    wait_all([torchrun(project, 1, 2, free_port())])
    return project


@pytest.mark.slow
def test_torchrun_with_two_processes_trains_and_exports_on_rank_zero(one_node_two_processes):
    project = one_node_two_processes
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["global_steps"] == 6  # 48 rows / (8 per rank * 2 ranks) = 3 steps * 2 epochs
    loaded = load_model(project / "model")
    assert loaded.config["metadata"]["train_params"]["launch"]["nproc_per_node"] == "2"
    # The frozen table left training as it came in; the layers above it trained.
    from safetensors.torch import load_file

    pretrained = load_file(project / tiny_train.PRETRAINED_DIR / "model.safetensors")
    trained = loaded.model.backbone.state_dict()
    assert torch.equal(trained["embeddings.word_embeddings.weight"], pretrained["embeddings.word_embeddings.weight"])
    assert not torch.equal(trained["encoder.layer.0.output.dense.weight"],
                           pretrained["encoder.layer.0.output.dense.weight"])


@pytest.mark.slow
def test_two_nodes_train_the_same_model_as_one_node_with_two_processes(one_node_two_processes, tmp_path):
    one_node = one_node_two_processes
    two_nodes = copy_project(one_node, tmp_path / "two_nodes")
    tiny_train.write_params(two_nodes, {**DDP, "launch.nnodes": 2, "launch.nproc_per_node": 1})
    port = free_port()
    wait_all([torchrun(two_nodes, 2, 1, port), torchrun(two_nodes, 2, 1, port)])

    assert json.loads((one_node / "metrics/train.json").read_text()) == json.loads(
        (two_nodes / "metrics/train.json").read_text())
    assert_same_weights(one_node / "model", two_nodes / "model")


@pytest.mark.slow
def test_training_reports_into_the_pipeline_run(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from cybulde.tracking.client import MODEL_TAG
    from cybulde.tracking.lineage import model_digest

    fake_cpu(tmp_path, monkeypatch, WITH_BF16)
    project = tiny_train.make_project(tmp_path / "project", {"mlflow.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                                                             "train.precision": "auto", "launch.nproc_per_node": "auto",
                                                             "train.global_batch_size": 8, "train.batch_size": 4})
    monkeypatch.chdir(project)
    tiny_train.use_test_doubles(train_module, monkeypatch)
    monkeypatch.setattr(train_module, "start_tracking", train_module.start_tracking.__wrapped__)
    result = train_module.train(tiny_train.load(project))

    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(result.run_id)
    assert {"train/loss", "train/val_loss", "train/val_macro_f1", "train/epoch", "train/samples_per_s",
            "train/tokens_per_s"} <= set(run.data.metrics)
    assert not any(key.startswith("val/") for key in run.data.metrics)  # one name per quantity
    assert run.data.tags[MODEL_TAG] == model_digest(project / "model")
    assert run.data.params["train.precision"] == "auto"  # as configured
    assert run.data.params["train.precision_resolved"] == "bf16-mixed"  # what it meant on this (faked) CPU
    assert run.data.tags["cybulde.precision"].startswith("auto: Test CPU has native bf16")
    # The topology `auto` resolved to on this CPU node: one process, the global batch of 8 in two micro-batches.
    assert run.data.params["launch.nproc_per_node"] == "auto"
    assert [run.data.params[f"{key}_resolved"] for key in ("launch.nproc_per_node", "train.batch_size",
                                                            "train.accumulation")] == ["1", "4", "2"]
    assert run.data.tags["cybulde.topology"].startswith("auto: one process using this CPU node's")
    assert run.info.status == "RUNNING"  # the test stage finishes the run


def record_builds(monkeypatch):
    """The (trainer, throughput, validation history) of every `build_trainer` call of the run."""
    builds = []
    build = train_module.build_trainer

    def recording(*args, **kwargs):
        builds.append(build(*args, **kwargs))
        return builds[-1]

    monkeypatch.setattr(train_module, "build_trainer", recording)
    return builds


@pytest.mark.parametrize(("cpuinfo", "expected"), [(WITH_BF16, "bf16-mixed"), (WITHOUT_BF16, "32-true")],
                         ids=["bf16-cpu", "fp32-cpu"])
def test_auto_precision_follows_the_cpu_flags_and_is_logged(tmp_path, monkeypatch, caplog, cpuinfo, expected):
    fake_cpu(tmp_path, monkeypatch, cpuinfo)
    project = tiny_train.make_project(tmp_path / "project", {"train.precision": "auto", "train.max_steps": 2})
    builds = record_builds(monkeypatch)
    with caplog.at_level("INFO", logger="cybulde.training"):
        run_in_process(project, monkeypatch)
    assert builds[0][0].precision == expected
    assert f"train.precision=auto runs as {expected} (auto: Test CPU has" in caplog.text


def test_explicit_bf16_on_a_cpu_without_it_is_kept_with_a_warning(tmp_path, monkeypatch, caplog):
    fake_cpu(tmp_path, monkeypatch, WITHOUT_BF16)
    project = tiny_train.make_project(tmp_path / "project", {"train.precision": "bf16-mixed", "train.max_steps": 1})
    builds = record_builds(monkeypatch)
    with caplog.at_level("INFO", logger="cybulde.training"):
        run_in_process(project, monkeypatch)
    assert builds[0][0].precision == "bf16-mixed"
    assert "bf16 matmuls are emulated" in caplog.text


@pytest.mark.parametrize(("max_steps", "validated_at"), [(4, [4]), (8, [6, 8])])
def test_max_steps_is_a_quick_run_that_validates_at_the_stop_and_exports_the_best(tmp_path, monkeypatch,
                                                                                   max_steps, validated_at):
    project = tiny_train.make_project(tmp_path / "project", {"train.max_steps": max_steps})  # 6 steps an epoch
    snapshots = weights_at_each_validation(monkeypatch)
    builds = record_builds(monkeypatch)
    result = run_in_process(project, monkeypatch)

    history = builds[0][2]
    assert [record["global_step"] for record in history.epochs] == validated_at
    assert result.metrics["global_steps"] == max_steps and result.metrics["epochs_run"] == len(validated_at)
    best = max(history.epochs, key=lambda record: record["val_macro_f1"])  # the first maximum
    assert result.metrics["best_val_macro_f1"] == pytest.approx(best["val_macro_f1"])
    best_weights = snapshots[history.epochs.index(best)]
    for name, tensor in load_model(project / "model").model.state_dict().items():
        assert torch.equal(tensor, best_weights[name]), name


def test_selection_on_validation_loss_exports_the_lowest_loss(tmp_path, monkeypatch):
    project = tiny_train.make_project(tmp_path / "project", {"train.select_on": "loss", "train.epochs": 3,
                                                             "train.early_stopping_patience": 3})
    builds = record_builds(monkeypatch)
    result = run_in_process(project, monkeypatch)
    losses = [record["val_loss"] for record in builds[0][2].epochs]
    assert len(losses) == 3
    assert result.metrics["best_val_loss"] == pytest.approx(min(losses))
    assert result.metrics["best_epoch"] == losses.index(min(losses)) + 1


@pytest.mark.slow
def test_sharded_validation_under_two_ranks_equals_one_process_scoring_the_whole_split(tmp_path):
    """2 gloo ranks, 17 validation rows (9 + 8: unequal batches, nothing repeated), auto precision on a CPU
    faked without bf16, an EMA of the weights and a max_steps stop in the second epoch (3 steps an epoch):
    the metrics recorded for the exported (best, averaged) weights must be those of scoring all 17 rows
    with them in one process through the evaluation code."""
    from sklearn.metrics import f1_score

    from cybulde.evaluation.inference import collect_outputs
    from cybulde.loading.datamodule import TextDataModule

    cpuinfo = fake_cpu(tmp_path, pytest.MonkeyPatch(), WITHOUT_BF16)
    project = tiny_train.make_project(
        tmp_path / "project", {**DDP, "launch.nproc_per_node": 2, "train.precision": "auto", "train.ema_decay": 0.5,
                               "train.max_steps": 5, "train.layer_lr_decay": 1.0},
        rows={"train": 48, "validation": 17, "test": 16})
    tiny_train.make_pretrained_backbone(project)
    [output] = wait_all([torchrun(project, 1, 2, free_port(), {"CYBULDE_CPUINFO": str(cpuinfo),
                                                               tiny_train.COUNT_VALIDATION_ENV: "1"})])
    assert "train.precision=auto runs as 32-true" in output
    counts = re.findall(r"validation rows on rank (\d): (\d+)", output)
    assert sorted(counts) == [("0", "9"), ("0", "9"), ("1", "8"), ("1", "8")]  # each rank its own share, twice

    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["global_steps"] == 5 and metrics["epochs_run"] == 2  # validated at steps 3 and 5
    loaded = load_model(project / "model")
    data = TextDataModule(project / "data" / "fetched", batch_size=8, seed=0, group_by_length=False)
    outputs = collect_outputs(loaded.model, data.eval_dataloader("validation"), 17)
    labels = outputs.labels.numpy()
    assert metrics["best_val_loss"] == pytest.approx(outputs.loss, abs=1e-5)
    assert metrics["best_val_macro_f1"] == pytest.approx(
        f1_score(labels, outputs.logits.argmax(1).numpy(), average="macro", zero_division=0), abs=1e-6)


def test_a_time_budget_stops_training_with_a_validation_and_an_export(tmp_path, monkeypatch):
    project = tiny_train.make_project(tmp_path / "project", {"train.max_time_s": 1e-6})  # spent by the first step
    builds = record_builds(monkeypatch)
    result = run_in_process(project, monkeypatch)
    assert [record["global_step"] for record in builds[0][2].epochs] == [1]
    assert result.metrics["global_steps"] == 1 and result.model_dir == project / "model"
    assert result.train_seconds > 0 and result.samples_per_s > 0


# -- resuming ------------------------------------------------------------------------------------
class Crash(Exception):
    """Stands in for a killed process: raised in the middle of training, after some checkpoints."""


def crash_at_step(monkeypatch, step: int) -> None:
    """Make the next `train` call fail at the end of the batch that reaches optimizer step `step`."""
    import lightning.pytorch as pl

    class CrashAt(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == step:
                raise Crash(step)

    build_trainer = train_module.build_trainer

    def crashing(*args, **kwargs):
        trainer, *rest = build_trainer(*args, **kwargs)
        trainer.callbacks.insert(0, CrashAt())  # before the checkpoint callbacks, which Lightning runs last
        return (trainer, *rest)

    monkeypatch.setattr(train_module, "build_trainer", crashing)


RESUME_CASES = {
    # 6 batches = 6 steps per epoch, checkpoints at steps 2, 4 and each epoch end: resume at step 4 of epoch 1
    "mid-epoch": ({"train.checkpoint_every_n_steps": 2, "train.epochs": 3}, 11, 10),
    # no step checkpoints: the epoch-end checkpoint of epoch 2 (step 12) is the latest
    "epoch boundary": ({"train.checkpoint_every_n_steps": 0, "train.epochs": 3}, 15, 12),
    # 2 micro-batches per step, 3 steps per epoch: the step-4 checkpoint lies 2 batches into epoch 2
    "mid-epoch, gradient accumulation": ({"train.checkpoint_every_n_steps": 2, "train.epochs": 3,
                                          "train.global_batch_size": 16}, 5, 4),
    # the weight average too: training weights and average resume as they were
    "mid-epoch, EMA": ({"train.checkpoint_every_n_steps": 2, "train.epochs": 3, "train.ema_decay": 0.9}, 11, 10),
    # the epoch-end checkpoint is written while the average is swapped in for validation
    "epoch boundary, EMA": ({"train.checkpoint_every_n_steps": 0, "train.epochs": 3, "train.ema_decay": 0.9}, 15, 12),
    # lazy embedding updates: the table's sparse AdamW state resumes too
    "mid-epoch, lazy embedding updates": ({"train.checkpoint_every_n_steps": 2, "train.epochs": 3,
                                           "train.embedding_updates": "lazy"}, 11, 10),
    # packed dropout masks come from the generator state the checkpoint restores
    "mid-epoch, packed dropout masks": ({"train.checkpoint_every_n_steps": 2, "train.epochs": 3,
                                         "train.dropout_masks": "packed"}, 11, 10),
    # bf16 autocast with the encoder's hidden states in bf16 (the defaults on a CPU with native bf16)
    "mid-epoch, bf16 hidden states": ({"train.checkpoint_every_n_steps": 2, "train.epochs": 3,
                                       "train.precision": "bf16-mixed", "train.hidden_states": "bf16"}, 11, 10),
    # a loader worker fetches the resumed epoch's first batches before Lightning sets the sampler's epoch
    "mid-epoch, loader worker": ({"train.checkpoint_every_n_steps": 2, "train.epochs": 3, "train.num_workers": 1},
                                 11, 10),
    "epoch boundary, loader worker": ({"train.checkpoint_every_n_steps": 0, "train.epochs": 3,
                                       "train.num_workers": 1}, 15, 12),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resumed_training_is_bit_identical_to_an_uninterrupted_one(tmp_path, monkeypatch, caplog, case):
    overrides, crash_step, resume_step = RESUME_CASES[case]
    uninterrupted = tiny_train.make_project(tmp_path / "uninterrupted", overrides)
    interrupted = copy_project(uninterrupted, tmp_path / "interrupted")
    with monkeypatch.context() as patch:
        uninterrupted_epochs = weights_at_each_validation(patch)
        run_in_process(uninterrupted, patch)

    with monkeypatch.context() as patch:
        crash_at_step(patch, crash_step)
        with pytest.raises(Crash):
            run_in_process(interrupted, patch)
    assert not (interrupted / "model").exists()
    with monkeypatch.context() as patch, caplog.at_level("INFO", logger="cybulde.training"):
        resumed_epochs = weights_at_each_validation(patch)
        run_in_process(interrupted, patch)

    assert f"resuming training from step {resume_step} " in caplog.text
    # Every epoch trained after the resume, not only the exported best one (often an earlier epoch).
    assert resumed_epochs and len(resumed_epochs) < len(uninterrupted_epochs) == 3
    for epoch, (resumed, original) in enumerate(zip(resumed_epochs, uninterrupted_epochs[-len(resumed_epochs):],
                                                    strict=True)):
        differing = tensor_differences(resumed, original)
        assert not differing, f"epoch {3 - len(resumed_epochs) + epoch + 1} after the resume: {differing}"
    assert_same_weights(interrupted / "model", uninterrupted / "model")
    assert (interrupted / "metrics/train.json").read_text() == (uninterrupted / "metrics/train.json").read_text()


@pytest.mark.slow
def test_changed_params_start_over_and_the_stale_state_goes(tmp_path, monkeypatch, caplog):
    project = tiny_train.make_project(tmp_path / "project", {"train.checkpoint_every_n_steps": 2})
    with monkeypatch.context() as patch:
        crash_at_step(patch, 5)
        with pytest.raises(Crash):
            run_in_process(project, patch)
    [stale] = list((project / ".cybulde/resume/train").iterdir())
    assert (stale / "last.ckpt").is_file()
    with caplog.at_level("INFO", logger="cybulde.training"):
        run_in_process(project, monkeypatch, ["train.lr=0.002"])
    assert "resuming training" not in caplog.text
    assert not stale.exists() and not any((project / ".cybulde/resume/train").iterdir())


@pytest.mark.slow
def test_a_resumed_training_continues_its_mlflow_run(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from cybulde.training.train import RESUMED_TAG

    store = f"sqlite:///{tmp_path}/mlflow.db"
    project = tiny_train.make_project(tmp_path / "project", {"mlflow.tracking_uri": store,
                                                             "train.checkpoint_every_n_steps": 2,
                                                             "train.log_every_n_steps": 1})
    monkeypatch.chdir(project)
    tiny_train.use_test_doubles(train_module, monkeypatch)
    monkeypatch.setattr(train_module, "start_tracking", train_module.start_tracking.__wrapped__)
    with monkeypatch.context() as patch:
        crash_at_step(patch, 3)
        with pytest.raises(Crash):
            train_module.train(tiny_train.load(project))
    result = train_module.train(tiny_train.load(project))

    client = MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("cybulde").experiment_id])
    assert run.info.run_id == result.run_id and run.info.status == "RUNNING"  # the test stage finishes it
    assert run.data.tags[RESUMED_TAG] == "2"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train/resumed_at_step")] == [2.0]
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert {m.step for m in losses} == set(range(12))  # steps logged before the crash and after the resume
