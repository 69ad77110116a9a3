"""`--engine dask`: the same shards and manifest as the local engine, from a real LocalCluster
(two worker processes, so every batch and the tokenizer cross a process boundary)."""

from pathlib import Path

import pytest

from cybulde.preparation.publish import publish
from cybulde.registry.errors import DataError
from tests.helpers.raw_data import write_davidson, write_generic_csv, write_tweeteval


def version_bytes(registry: Path, dataset: str) -> dict[str, bytes]:
    folder = registry / dataset / "v1"
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cluster():  # noqa: ANN201
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as local:
        yield local.scheduler_address


@pytest.mark.slow
@pytest.mark.parametrize(("source", "options"), [
    ("csv", dict(dataset="d", text_column="comment", label_column="verdict", rows_per_shard=40)),
    ("davidson2017", dict(tokenizer="wordpiece", vocab_size=200, max_rows_per_split=30)),
    ("tweeteval_offensive", dict(extra_training=())),
])
def test_dask_engine_publishes_the_same_bytes(cluster: str, tmp_path: Path, source: str, options: dict,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import cybulde.preparation.publish as publish_module

    monkeypatch.setattr(publish_module, "BATCH_ROWS", 16)  # many tasks, several in flight per worker
    raw = {"csv": lambda: write_generic_csv(tmp_path / "raw.csv", rows=400),
           "davidson2017": lambda: write_davidson(tmp_path / "davidson2017", rows=300),
           "tweeteval_offensive": lambda: write_tweeteval(tmp_path / "tweeteval")}[source]()
    local = publish(source, raw, str(tmp_path / "local"), "v1", workers=1, echo=None, **options)
    distributed = publish(source, raw, str(tmp_path / "dask"), "v1", engine="dask", scheduler=cluster, echo=None,
                          **options)
    assert distributed.sha256 == local.sha256
    dataset = options.get("dataset", source)
    assert version_bytes(tmp_path / "dask", dataset) == version_bytes(tmp_path / "local", dataset)
    assert sum(len(local.split_shards(split)) for split in local.splits) >= 3


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cybulde.preparation.dask_engine as dask_engine
    from tests.helpers.ports import free_port

    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT_S", 2)
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(DataError, match=f"cannot reach the dask scheduler {address}"):
        publish("csv", write_generic_csv(tmp_path / "raw.csv"), str(tmp_path / "reg"), "v1", dataset="d",
                text_column="comment", label_column="verdict", engine="dask", scheduler=address, echo=None)
    assert not (tmp_path / "reg" / "d").exists()
