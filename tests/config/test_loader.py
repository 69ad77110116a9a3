from pathlib import Path

import pytest

from cybulde.config.loader import ConfigError, load_config, to_flat_dict
from cybulde.config.schema import Head

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_repo_params_are_valid() -> None:
    config = load_config(REPO_PARAMS)
    assert config.model.head is Head.softmax
    assert config.data.dataset == "tweeteval_offensive"


def test_override_changes_value() -> None:
    config = load_config(REPO_PARAMS, ["model.head=sigmoid", "train.lr=1e-4"])
    assert config.model.head is Head.sigmoid
    assert config.train.lr == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.head=foo", "'model.head'.*softmax, sigmoid"),
        ("train.lr=-1", "'train.lr': must be > 0"),
        ("train.lr=abc", "'train.lr'"),
        ("model.pooling=max", "'model.pooling'.*cls, mean, pooler"),
        ("train.loss=hinge", "'train.loss'.*ce, focal"),
        ("train.focal_gamma=-1", "'train.focal_gamma': must be >= 0"),
        ("train.ema_decay=1", "'train.ema_decay': must be in \\[0, 1\\)"),
        ("train.lr_schedule=step", "'train.lr_schedule'.*linear, cosine"),
        ("train.select_on=accuracy", "'train.select_on'.*macro_f1, loss"),
        ("train.embedding_updates=sparse", "'train.embedding_updates'.*dense, lazy"),
        ("train.dropout_masks=philox", "'train.dropout_masks'.*torch, packed"),
        ("train.hidden_states=fp16", "'train.hidden_states'.*float32, bf16"),
        ("train.max_time_s=-5", "'train.max_time_s': must be >= 0"),
        ("train.precision=16", "'train.precision'.*32-true"),
        ("evaluation.threshold=1.5", "'evaluation.threshold'"),
        ("train.batch_size=-1", "'train.batch_size': must be >= 0"),
        ("launch.nproc_per_node=0", "'launch.nproc_per_node': must be 'auto'.*got '0'"),
        ("launch.nproc_per_node=many", "'launch.nproc_per_node': must be 'auto'"),
        ("train.layer_lr_decay=0", "'train.layer_lr_decay': must be in \\(0, 1\\]"),
        ("train.layer_lr_decay=1.5", "'train.layer_lr_decay'"),
        ("++train.source_temperature=0", "'train.source_temperature': must be > 0"),
        ("++train.source_temperature=-2.0", "'train.source_temperature': must be > 0"),
        ("model.nope=1", "model.nope"),
        ("data.manifest_sha256=abc", "'data.manifest_sha256': must be '' \\(unpinned\\) or 64 lowercase hex"),
        (f"data.manifest_sha256={'A' * 64}", "'data.manifest_sha256'"),
        (f"data.manifest_sha256={'a' * 63}g", "'data.manifest_sha256'"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(REPO_PARAMS, [override])


def test_a_manifest_pin_is_64_hex_digits_or_empty() -> None:
    assert load_config(REPO_PARAMS, [f"data.manifest_sha256={'0a' * 32}"]).data.manifest_sha256 == "0a" * 32
    assert load_config(REPO_PARAMS, ["data.manifest_sha256="]).data.manifest_sha256 == ""


def test_unknown_key_in_params_file(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(REPO_PARAMS.read_text() + "\nextra_section:\n  x: 1\n")
    with pytest.raises(ConfigError, match="extra_section"):
        load_config(params)


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "params.yaml")


def test_flat_dict() -> None:
    config = load_config(REPO_PARAMS, ["train.batch_size=8"])
    flat = to_flat_dict(config)
    assert flat["model.head"] == "softmax"
    assert flat["train.batch_size"] == 8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.backbone=scratch", "train.freeze_embeddings=true"],
         "'train.freeze_embeddings'.*randomly initialised.*train.freeze_embeddings=false"),
        (["evaluation.threshold=0.3"], "'evaluation.threshold'.*0.3.*model.head=softmax.*model.head=sigmoid"),
    ],
)
def test_contradictory_combinations_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(REPO_PARAMS, overrides)


def test_the_fixes_the_errors_name_are_accepted() -> None:
    scratch = load_config(REPO_PARAMS, ["model.backbone=scratch", "train.freeze_embeddings=false"])
    assert scratch.model.backbone == "scratch" and not scratch.train.freeze_embeddings
    fixed = load_config(REPO_PARAMS, ["evaluation.threshold=0.3", "model.head=sigmoid"])
    assert fixed.evaluation.threshold == "0.3"
    # A pretrained backbone may freeze its embeddings; a sigmoid head may weight its classes.
    assert load_config(REPO_PARAMS, ["train.freeze_embeddings=true"]).train.freeze_embeddings
    assert load_config(REPO_PARAMS, ["model.head=sigmoid", "train.class_weights=true"]).train.class_weights


def test_recipe_defaults_keep_todays_behaviour_and_precision_is_auto() -> None:
    from omegaconf import OmegaConf

    from cybulde.config.schema import Config

    repo = OmegaConf.load(REPO_PARAMS)
    schema = Config()
    for key in ("precision", "loss", "focal_gamma", "ema_decay", "lr_schedule", "select_on", "max_time_s",
                "embedding_updates", "dropout_masks", "hidden_states"):
        configured, default = repo.train[key], getattr(schema.train, key)
        assert configured == getattr(default, "value", default), key  # params.yaml equals the schema
    assert repo.train.precision == "auto"
    assert (repo.train.loss, repo.train.ema_decay, repo.train.lr_schedule, repo.train.select_on,
            repo.train.max_time_s) == ("ce", 0.0, "linear", "macro_f1", 0)
