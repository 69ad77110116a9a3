"""Minimal, documented cleaning applied to the text *given to the tokenizer* only.

The published `text` column keeps each raw text exactly as it was, so cleaning never loses
information: it can be redone (or changed) from the stored text. Steps, in order:

1. decode HTML entities (`&amp;` -> `&`, `&#8220;` -> a quote): Davidson's tweets carry them;
2. collapse every run of whitespace (spaces, tabs, newlines) into one space and strip the ends.

Casing, user mentions, URLs, emoji and punctuation are left to the tokenizer. A text that is empty
after cleaning carries no signal; publish drops such rows and records how many in the manifest.
"""

from __future__ import annotations

import html
import re

CLEANING_ID = "html-unescape+collapse-whitespace/v1"

_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """The text as the tokenizer sees it (see module docstring)."""
    return _WHITESPACE.sub(" ", html.unescape(text)).strip()


def clean_texts(texts: list[str]) -> list[str]:
    return [clean_text(text) for text in texts]
