"""The one text path from a raw string to logits, owned by the exported model.

An exported model (see `cybulde.models.export`) records in config.json the cleaning its
training texts went through (`metadata.cleaning`, an id from `cybulde.text.cleaning`) and the
`max_length` publish truncated them to; its `tokenizer/` is the one publish used. `TextScorer`
applies exactly that: the recorded cleaning, then `cybulde.text.tokenizer.encode` (the function
publish tokenized with), so `predict`, the served model and cross-dataset evaluation give the
model the token ids it was trained and tested on. A model that records a cleaning this code does
not know (or none) is refused.

Speed: texts are sorted by token count and cut into batches of `batch_size`, each padded to its own
longest row, as the evaluation stages batch a split (`cybulde.text.batching`); the model runs under
`torch.inference_mode`, in the precision its training's `train.precision` resolves to on this
machine (bf16 autocast where the hardware runs bf16 natively:
`cybulde.models.export.inference_precision`, the rule of the validate and test stages too) unless a
precision is asked for; the outputs are put back in input order.

A multi-label model (`head: multilabel`, one sigmoid per question) is scored per question: a
`<question>_probability` and a 0/1 `<question>_prediction`, the decision of that question's
threshold (`thresholds`, tuned on the validation split; 0.5 for a question without one).

Thread safety: a Hugging Face tokenizer object carries mutable settings (truncation, padding) that a
call may change while another thread reads them, which is how "Already borrowed" errors arise when
request threads share one. Every thread that scores therefore gets its own tokenizer (the backend
`tokenizers.Tokenizer`, configured once, never changed per call), loaded on its first call. Forward
passes run one at a time: concurrent ones would only compete for the same cores.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.hardware import autocast, resolve_precision
from cybulde.serving.columns import (
    LABEL_COLUMN,
    probability_column,
    question_prediction_column,
    question_probability_column,
)
from cybulde.serving.errors import ModelSourceError, UnknownCleaningError
from cybulde.text.cleaning import CLEANING_ID, clean_text
from cybulde.text.tokenizer import backend_tokenizer, encode

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from cybulde.models.export import LoadedModel

MULTILABEL_HEAD = "multilabel"
DEFAULT_BATCH_SIZE = 64  # texts per forward pass
# Cleaning ids (recorded by publish in the manifest, by train in config.json) -> the function.
KNOWN_CLEANINGS: dict[str, Callable[[str], str]] = {CLEANING_ID: clean_text}

ProgressCallback = Callable[[int], None]


def is_multilabel_config(config: Mapping[str, Any]) -> bool:
    """Whether an exported model's config.json describes a multi-label (per-question) model."""
    return str(config.get("head")) == MULTILABEL_HEAD


def pick_device(prefer_gpu: bool = False) -> torch.device:
    import torch

    if prefer_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def accelerator_of(device: torch.device) -> str:
    """The `launch.accelerator` name of a torch device, for `resolve_precision`."""
    return "gpu" if device.type == "cuda" else "cpu"


@contextlib.contextmanager
def inference_context(precision: str, device: torch.device) -> Iterator[None]:
    """No autograd; bf16 autocast when `precision` is bf16-mixed (matmuls in bf16, fp32 elsewhere)."""
    import torch

    with torch.inference_mode(), autocast(precision, device):
        yield


def model_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, precision: str,
                 device: torch.device) -> torch.Tensor:
    """float32 logits of one padded batch, on the CPU: the forward pass every scoring path shares."""
    with inference_context(precision, device):
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        return logits.float().cpu()


def model_cleaning(config: dict[str, Any], origin: str) -> Callable[[str], str]:
    """The cleaning function the model's training texts went through; refuses an unknown one."""
    cleaning_id = (config.get("metadata") or {}).get("cleaning")
    if not cleaning_id:
        raise UnknownCleaningError(
            f"{origin} records no text cleaning (metadata.cleaning in config.json): it was exported "
            f"before the cleaning was recorded; export it again with the `train` stage")
    if cleaning_id not in KNOWN_CLEANINGS:
        raise UnknownCleaningError(
            f"{origin} was trained on text cleaned by {cleaning_id!r}, which this version of cybulde "
            f"does not know (known: {sorted(KNOWN_CLEANINGS)}); score it with the cybulde version "
            f"that trained it")
    return KNOWN_CLEANINGS[cleaning_id]


def model_max_length(config: dict[str, Any], origin: str) -> int:
    value = config.get("max_length")
    if not value:
        raise ModelSourceError(f"{origin} records no max_length in config.json: export it again with "
                               f"the `train` stage")
    return int(value)


class ThreadTokenizers:
    """One tokenizer per thread (`cybulde.text.tokenizer.backend_tokenizer` of the model's tokenizer.json),
    each loaded on the thread's first use."""

    def __init__(self, tokenizer_json: Path) -> None:
        self.tokenizer_json = tokenizer_json
        self._local = threading.local()

    def get(self) -> Any:
        tokenizer = getattr(self._local, "tokenizer", None)
        if tokenizer is None:
            tokenizer = self._local.tokenizer = backend_tokenizer(self.tokenizer_json)
        return tokenizer


class TextScorer:
    """Scores raw texts with an exported model directory (weights, config.json, tokenizer/)."""

    def __init__(self, loaded: LoadedModel, model_dir: str | Path, threshold: float | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, precision: str | None = None,
                 device: torch.device | None = None, thresholds: Mapping[str, float] | None = None) -> None:
        # torch and omegaconf load with a model: `cybulde predict --help` imports this module.
        from cybulde.models.export import TOKENIZER_DIR, inference_precision
        from cybulde.text.batching import PadCollator

        origin = f"the model in {model_dir}"
        self.config = loaded.config
        self.clean = model_cleaning(self.config, origin)
        self.max_length = model_max_length(self.config, origin)
        self.model = loaded.model
        self.threshold = threshold
        self.thresholds = dict(thresholds or {})
        self.batch_size = batch_size
        self.device = device or pick_device()
        # None: the model's own train.precision, resolved here, as in the validate and test stages.
        accelerator = accelerator_of(self.device)
        resolved = (inference_precision(self.config, accelerator) if precision is None
                    else resolve_precision(precision, accelerator))
        self.precision, self.precision_reason = resolved.precision, resolved.reason
        self.tokenizers = ThreadTokenizers(Path(model_dir) / TOKENIZER_DIR / "tokenizer.json")
        self.collate = PadCollator(int(loaded.tokenizer.pad_token_id))
        self._forward_lock = threading.Lock()
        self.model.eval()
        self.model.to(self.device)

    @classmethod
    def from_dir(cls, model_dir: str | Path, threshold: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 precision: str | None = None, device: torch.device | None = None,
                 thresholds: Mapping[str, float] | None = None) -> TextScorer:
        from cybulde.models.export import load_model, read_model_config

        config = read_model_config(model_dir)  # refuse an unknown cleaning before loading weights
        model_cleaning(config, f"the model in {model_dir}")
        return cls(load_model(model_dir), model_dir, threshold=threshold, batch_size=batch_size,
                   precision=precision, device=device, thresholds=thresholds)

    @property
    def label_names(self) -> list[str]:
        return [str(name) for name in self.model.label_names]

    @property
    def head_kind(self) -> str:
        return str(self.model.head.kind)

    @property
    def is_multilabel(self) -> bool:
        """Whether the model answers one yes/no question per label name (see the module docstring)."""
        return is_multilabel_config(self.config)

    def question_thresholds(self) -> list[float]:
        """Each question's decision threshold, in question order: `thresholds`, else `threshold`, else 0.5."""
        default = 0.5 if self.threshold is None else float(self.threshold)
        return [float(self.thresholds.get(name, default)) for name in self.label_names]

    @property
    def decides_by_threshold(self) -> bool:
        """Whether the model's head lets a threshold replace the argmax (see `Head.predict`)."""
        return bool(self.model.head.decides_by_threshold)

    @property
    def cleaning_id(self) -> str:
        return str(self.config["metadata"]["cleaning"])

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each raw text cleaned and tokenized exactly as publish did for training."""
        ids, _ = encode(self.tokenizers.get(), [self.clean(text) for text in texts], self.max_length)
        return ids

    def logits(self, texts: Sequence[str], on_batch: ProgressCallback | None = None) -> torch.Tensor:
        """`[N, outputs]` float32 logits in input order, computed in batches of similar length."""
        import torch

        from cybulde.text.batching import length_sorted_batches

        ids = self.token_ids(texts)
        batches = length_sorted_batches([len(row_ids) for row_ids in ids], self.batch_size)
        chunks = []
        for rows in batches:
            batch = self.collate([{"input_ids": ids[row], "label": 0, "index": row} for row in rows])
            with self._forward_lock:
                chunks.append(model_logits(self.model, batch["input_ids"], batch["attention_mask"],
                                           self.precision, self.device))
            if on_batch is not None:
                on_batch(len(rows))
        if not chunks:
            return torch.zeros((0, self.model.head.num_outputs))
        in_input_order = torch.empty_like(torch.cat(chunks))
        in_input_order[torch.tensor([row for rows in batches for row in rows])] = torch.cat(chunks)
        return in_input_order

    def probabilities(self, texts: Sequence[str], on_batch: ProgressCallback | None = None) -> torch.Tensor:
        """`[N, K]` probabilities, one column per label, in input order."""
        return self.model.head.probabilities(self.logits(texts, on_batch))

    def score(self, texts: Sequence[str], on_batch: ProgressCallback | None = None) -> pd.DataFrame:
        """A table with `label` (the predicted name) and one `prob_<name>` column per label; for a
        multi-label model, `<question>_probability` and `<question>_prediction` per question."""
        probabilities = self.probabilities(texts, on_batch)
        if self.is_multilabel:
            decisions = self.model.head.predict(probabilities, self.question_thresholds())
            return question_frame(probabilities, decisions, self.label_names)
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


def question_frame(probabilities: torch.Tensor, decisions: torch.Tensor, questions: Sequence[str]) -> pd.DataFrame:
    """Per question, in question order: `<question>_probability` (float64), `<question>_prediction` (int64 0/1)."""
    import pandas as pd

    frame = pd.DataFrame(index=range(len(probabilities)))
    for index, question in enumerate(questions):
        frame[question_probability_column(question)] = probabilities[:, index].double().numpy()
        frame[question_prediction_column(question)] = decisions[:, index].long().numpy()
    return frame
