"""Label maps between datasets (`cybulde.preparation.labels`)."""

from __future__ import annotations

import pytest

from cybulde.preparation.labels import LabelMappingError, parse_label_map, resolve_label_map

MODEL_LABELS = ["not_offensive", "offensive"]
DATA_LABELS = ["neither", "offensive", "hate"]
TO_BINARY = {"neither": "not_offensive", "hate": "offensive"}


def test_parse_label_map() -> None:
    assert parse_label_map(["hate=offensive", " neither = not_offensive "]) == {
        "hate": "offensive", "neither": "not_offensive"}
    with pytest.raises(LabelMappingError, match="FROM=TO"):
        parse_label_map(["hate"])
    with pytest.raises(LabelMappingError, match="mapped twice"):
        parse_label_map(["hate=offensive", "hate=not_offensive"])


def test_same_names_map_to_themselves() -> None:
    assert resolve_label_map(DATA_LABELS, MODEL_LABELS, TO_BINARY) == {
        "neither": "not_offensive", "offensive": "offensive", "hate": "offensive"}


def test_unmapped_data_label_is_an_error() -> None:
    with pytest.raises(LabelMappingError, match=r"\['hate'\] are not mapped.*--map hate="):
        resolve_label_map(DATA_LABELS, MODEL_LABELS, {"neither": "not_offensive"})


def test_unknown_model_label_is_an_error() -> None:
    with pytest.raises(LabelMappingError, match="not labels of the model"):
        resolve_label_map(DATA_LABELS, MODEL_LABELS, {**TO_BINARY, "hate": "hateful"})


def test_unknown_data_label_is_an_error() -> None:
    with pytest.raises(LabelMappingError, match="does not have"):
        resolve_label_map(DATA_LABELS, MODEL_LABELS, {**TO_BINARY, "spam": "offensive"})


def test_sides_and_hint_are_named_by_the_caller() -> None:
    with pytest.raises(LabelMappingError, match=r"davidson2017 labels \['hate'\] are not mapped onto the dataset's "
                       r"labels .*: add --add-train davidson2017:\.\.\.,hate="):
        resolve_label_map(DATA_LABELS, MODEL_LABELS, {"neither": "not_offensive"}, source="davidson2017",
                          target="dataset", option="--add-train davidson2017:...,")
