"""The schema is the one source of defaults and allowed values: params.yaml must say the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cybulde.config.loader import to_flat_dict
from cybulde.config.schema import Adapter, Config, Head, Pooling
from cybulde.models import adapter, heads

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def drift(params: dict[str, Any]) -> list[str]:
    """Every key whose params.yaml value differs from the schema default, or that only one side has."""
    in_params, defaults = flatten(params), to_flat_dict(Config())
    return [f"{key}: params.yaml {in_params.get(key, '<missing>')!r}, schema {defaults.get(key, '<missing>')!r}"
            for key in sorted(in_params.keys() | defaults.keys())
            if key not in in_params or key not in defaults or in_params[key] != defaults[key]]


def repo_params() -> dict[str, Any]:
    return yaml.safe_load(REPO_PARAMS.read_text(encoding="utf-8"))


def test_params_yaml_equals_the_schema_defaults() -> None:
    assert drift(repo_params()) == []


def test_a_drifted_value_or_a_missing_key_is_reported() -> None:
    params = repo_params()
    params["train"]["freeze_embeddings"] = not params["train"]["freeze_embeddings"]
    del params["evaluation"]["batch_size"]
    params["model"]["scratch"]["extra"] = 1
    assert drift(params) == [
        "evaluation.batch_size: params.yaml '<missing>', schema 64",
        "model.scratch.extra: params.yaml 1, schema '<missing>'",
        f"train.freeze_embeddings: params.yaml {params['train']['freeze_embeddings']!r}, schema False",
    ]


def test_params_yaml_comments_name_exactly_the_allowed_values() -> None:
    """`head: softmax  # softmax | sigmoid` style comments list the enum's members, in order."""
    text = REPO_PARAMS.read_text(encoding="utf-8")
    for key, enum in (("head", Head), ("pooling", Pooling), ("adapter", Adapter)):
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{key}:"))
        assert line.split("#", 1)[1].strip() == " | ".join(member.value for member in enum), line


@pytest.mark.parametrize(("make", "value", "members"), [
    (lambda value: heads.make_head(value, 2), "tanh", Head),
    (lambda value: adapter.Adapter(8, pooling=value), "max", Pooling),
    (lambda value: adapter.Adapter(8, kind=value), "lstm", Adapter),
])
def test_model_code_refuses_what_the_enum_does_not_list(make, value, members) -> None:
    with pytest.raises(ValueError, match=str([member.value for member in members]).replace("[", r"\[")):
        make(value)
    for member in members:  # and builds every member, given as enum or as plain string
        make(member)
        make(member.value)
