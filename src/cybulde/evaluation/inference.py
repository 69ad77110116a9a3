"""Batched, gradient-free inference with an exported model, from token ids or from raw text.

`collect_outputs` runs the model over a DataLoader of tokenized batches (the evaluation stages);
`TextScorer` tokenizes raw text with the tokenizer bundled in the model directory and returns a
table of predicted labels and per-label probabilities (`cybulde predict` and the MLflow pyfunc).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from cybulde.models.checkpoint import LoadedModel

PROBABILITY_PREFIX = "prob_"
LABEL_COLUMN = "label"


def probability_column(label_name: str) -> str:
    return f"{PROBABILITY_PREFIX}{label_name}"


def pick_device(prefer_gpu: bool = False) -> torch.device:
    import torch

    if prefer_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class SplitOutputs:
    """The model's outputs over a whole split, in row order of the split."""

    logits: torch.Tensor  # [N, num_outputs], float32
    labels: torch.Tensor  # [N]
    loss: float  # mean over examples


def collect_outputs(model: Any, batches: Iterable[dict[str, Any]], num_rows: int,
                    device: torch.device | None = None, precision: str = "32-true") -> SplitOutputs:
    """Logits and labels for every row of a split; rows are placed by the batches' `index`.

    `precision` is a resolved one (`cybulde.hardware`): "bf16-mixed" runs the model under bf16
    autocast; the logits are cast to float32 either way, so metrics are computed in float32.
    """
    import torch

    from cybulde.hardware import autocast

    device = device or pick_device()
    model.eval()
    model.to(device)
    logits_by_row: torch.Tensor | None = None
    labels_by_row = torch.full((num_rows,), -1, dtype=torch.int64)
    loss_sum = 0.0
    with torch.inference_mode():
        for batch in batches:
            input_ids = batch["input_ids"].to(device)
            attention_mask = batch["attention_mask"].to(device)
            labels = batch["labels"].to(device)
            with autocast(precision, device):
                logits = model(input_ids=input_ids, attention_mask=attention_mask)
            logits = logits.float()
            loss_sum += float(model.head.loss(logits, labels)) * len(labels)
            if logits_by_row is None:
                logits_by_row = torch.zeros((num_rows, logits.shape[1]), dtype=torch.float32)
            index = batch["index"].cpu()
            logits_by_row[index] = logits.cpu()
            labels_by_row[index] = labels.cpu()
    if logits_by_row is None:
        raise ValueError("the split produced no batches")
    missing = int((labels_by_row < 0).sum())
    if missing:
        raise ValueError(f"the data loader skipped {missing} of {num_rows} rows")
    return SplitOutputs(logits=logits_by_row, labels=labels_by_row, loss=loss_sum / num_rows)


class TextScorer:
    """Scores raw texts with an exported model directory (weights, config.json, tokenizer/).

    The model runs in the precision its training's `train.precision` resolves to on this machine
    (`cybulde.models.checkpoint.inference_precision`), as in the validate and test stages.
    """

    def __init__(self, loaded: LoadedModel, threshold: float | None = None,
                 batch_size: int = 64, device: torch.device | None = None) -> None:
        from cybulde.models.checkpoint import inference_precision

        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.config = loaded.config
        self.threshold = threshold
        self.batch_size = batch_size
        self.device = device or pick_device()
        self.precision = inference_precision(self.config, "gpu" if self.device.type == "cuda" else "cpu").precision
        self.model.eval()
        self.model.to(self.device)

    @classmethod
    def from_dir(cls, model_dir: str | Path, threshold: float | None = None,
                 batch_size: int = 64) -> TextScorer:
        from cybulde.models.checkpoint import load_model

        return cls(load_model(model_dir), threshold=threshold, batch_size=batch_size)

    @property
    def label_names(self) -> list[str]:
        return [str(name) for name in self.model.label_names]

    @property
    def head_kind(self) -> str:
        return str(self.model.head.kind)

    @property
    def max_length(self) -> int | None:
        value = self.config.get("max_length")
        return int(value) if value else None

    def probabilities(self, texts: Sequence[str],
                      on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
        """`[N, K]` probabilities, computed `batch_size` texts at a time."""
        import torch

        from cybulde.hardware import autocast

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start:start + self.batch_size])
                encoded = self.tokenizer(batch, padding=True, truncation=self.max_length is not None,
                                         max_length=self.max_length, return_tensors="pt")
                with autocast(self.precision, self.device):
                    logits = self.model(input_ids=encoded["input_ids"].to(self.device),
                                        attention_mask=encoded["attention_mask"].to(self.device))
                chunks.append(self.model.head.probabilities(logits.float()).cpu())
                if on_batch is not None:
                    on_batch(len(batch))
        if not chunks:
            return torch.zeros((0, len(self.label_names)))
        return torch.cat(chunks)

    def score(self, texts: Sequence[str],
              on_batch: Callable[[int], None] | None = None) -> pd.DataFrame:
        """A table with `label` (the predicted name) and one `prob_<name>` column per label."""
        probabilities = self.probabilities(texts, on_batch)
        predicted = self.model.head.predict(probabilities, self.threshold)
        return predictions_frame(probabilities, predicted, self.label_names)


def predictions_frame(probabilities: torch.Tensor, predicted: torch.Tensor,
                      label_names: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame({LABEL_COLUMN: [label_names[int(i)] for i in predicted.tolist()]},
                         dtype=object)
    for index, name in enumerate(label_names):
        frame[probability_column(name)] = probabilities[:, index].double().numpy()
    return frame
