"""Explicit label maps between datasets: `FROM=TO` pairs, checked against both label sets.

Used wherever one dataset's labels meet another's: scoring a model on another dataset
(`cybulde evaluate-cross --map`) and training on several sources (`cybulde publish --add-train`).
A label whose name exists on both sides maps to itself unless mapped otherwise; every other label
must be mapped, so nothing is silently dropped or guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cybulde.registry.errors import DataError


class LabelMappingError(DataError, ValueError):
    """A label map is malformed, leaves a label unmapped, or names a label that does not exist."""


def parse_label_map(pairs: Sequence[str]) -> dict[str, str]:
    """`["hate=offensive", "neither=not-offensive"]` -> `{"hate": "offensive", ...}`."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        source, separator, target = pair.partition("=")
        source, target = source.strip(), target.strip()
        if not separator or not source or not target or "=" in target:
            raise LabelMappingError(f"invalid label mapping {pair!r}: expected FROM=TO, e.g. hate_speech=offensive")
        if source in mapping and mapping[source] != target:
            raise LabelMappingError(f"label {source!r} is mapped twice: to {mapping[source]!r} and to {target!r}")
        mapping[source] = target
    return mapping


def resolve_label_map(source_labels: Sequence[str], target_labels: Sequence[str], label_map: Mapping[str, str],
                      source: str = "data", target: str = "model", option: str = "--map ") -> dict[str, str]:
    """The complete map source label -> target label. `source`/`target` name the two sides in errors;
    `option` is how the user adds a pair (shown in the hint for an unmapped label)."""
    unknown_sources = sorted(set(label_map) - set(source_labels))
    if unknown_sources:
        raise LabelMappingError(f"the mapping names {source} labels {unknown_sources} that the {source} does not "
                                f"have; its labels are {list(source_labels)}")
    unknown_targets = sorted({name for name in label_map.values() if name not in target_labels})
    if unknown_targets:
        raise LabelMappingError(f"the mapping targets {unknown_targets} are not labels of the {target}; "
                                f"the {target} has {list(target_labels)}")
    resolved = {label: label_map.get(label, label) for label in source_labels}
    unmapped = [label for label, name in resolved.items() if name not in target_labels]
    if unmapped:
        raise LabelMappingError(
            f"{source} labels {unmapped} are not mapped onto the {target}'s labels {list(target_labels)}: "
            f"add {option}{unmapped[0]}=<one of {', '.join(target_labels)}>")
    return resolved
