"""A reference scorer for the serving tests, written apart from `cybulde.serving.scorer`.

It follows the documented text path by other means: the cleaning spelled out from its definition
(`html.unescape`, then runs of whitespace to one space), Hugging Face's own truncation instead of
`cybulde.text.tokenizer.encode`, one text at a time (no sorting, batching or padding), in fp32.
"""

from __future__ import annotations

import html
from pathlib import Path


def reference_scores(model_dir: Path, texts: list[str], threshold: float | None = None):  # noqa: ANN201
    """DataFrame `label`, `prob_<name>`... for `texts`, in order."""
    import pandas as pd
    import torch

    from cybulde.models.export import load_model

    loaded = load_model(model_dir)
    model, tokenizer = loaded.model, loaded.tokenizer
    names = [str(name) for name in model.label_names]
    rows = []
    with torch.no_grad():
        for text in texts:
            cleaned = " ".join(html.unescape(text).split())
            ids = tokenizer(cleaned, truncation=True, max_length=int(loaded.config["max_length"]))["input_ids"]
            logits = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones((1, len(ids)), dtype=torch.long))
            probabilities = model.head.probabilities(logits.float())
            predicted = int(model.head.predict(probabilities, threshold)[0])
            row = {"label": names[predicted]}
            row.update({f"prob_{name}": float(probabilities[0, index]) for index, name in enumerate(names)})
            rows.append(row)
    return pd.DataFrame(rows)
