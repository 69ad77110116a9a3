"""Errors of `cybulde predict` and the served model; each message says what to change."""

from __future__ import annotations

from cybulde.errors import CybuldeError


class ServingError(CybuldeError):
    """Base class of every error the serving package raises on purpose."""


class InputError(ServingError, ValueError):
    """The texts to score cannot be used as given (the served model answers HTTP 400)."""


class EmptyInputError(InputError):
    """The input holds no text to score."""


class EmptyTextError(InputError):
    """A text is empty after cleaning (blank or whitespace only): there is nothing to score."""


class MissingColumnError(InputError):
    """The input table lacks the text column."""


class InputEncodingError(InputError):
    """The input is not UTF-8 encoded text."""


class MalformedInputError(InputError):
    """The input does not parse as the format its extension names (CSV, JSON lines, Parquet)."""


class NonTextValueError(InputError):
    """A value to score is not a string (a number, a null, a list...)."""


class InputLimitError(InputError):
    """More rows than the row limit, or a text longer than the character limit."""


class UnsupportedFormatError(ServingError):
    """The input or output file extension is not one `predict` reads or writes."""


class OutputError(ServingError):
    """The output file cannot be written where asked."""


class ModelSourceError(ServingError):
    """The model folder or MLflow model URI cannot be loaded."""


class UnknownCleaningError(ModelSourceError):
    """The model was trained on text cleaned by a procedure this code does not know."""
