"""Builders of tiny fetched-data directories (registry layout) for model and training tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

from cybulde.files import sha256_file

NEUTRAL = "the a day cat dog sun tree road book music food city game friend home park walk".split()
TOXIC = "idiot stupid hate ugly loser trash dumb awful".split()
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LENGTH = 32


def make_texts(rows: int, seed: int, num_labels: int = 2) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    examples = []
    for index in range(rows):
        label = index % num_labels
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 14))]
        for _ in range(label * 2):
            words.insert(rng.randrange(len(words) + 1), TOXIC[(label * 3 + rng.randrange(3)) % len(TOXIC)])
        examples.append((" ".join(words), label))
    return examples


def make_tokenizer_dir(out_dir: Path, corpus: list[str] | None = None):
    """Train a tiny WordPiece tokenizer and save it like the data registry does."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = corpus or [text for text, _ in make_texts(200, seed=0, num_labels=3)]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=120, special_tokens=SPECIAL_TOKENS))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def make_data_dir(data_dir: Path, rows: dict[str, int] | None = None, num_labels: int = 2,
                  tokenizer_sha256: str | None = None, kind: str = "wordpiece",
                  label_names: list[str] | None = None, max_length: int = MAX_LENGTH) -> Path:
    """A fetched dataset version: parquet splits, tokenizer/ and manifest.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cybulde.registry.manifest import Manifest, SplitSummary, TokenizerInfo
    from cybulde.text.cleaning import CLEANING_ID

    rows = rows or {"train": 48, "validation": 16, "test": 16}
    data_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer_dir(data_dir / "tokenizer")
    label_names = label_names or (["none", "offensive", "hateful"][:num_labels] if num_labels <= 3 else [
        f"label_{index}" for index in range(num_labels)])
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.int64()),
                        ("input_ids", pa.list_(pa.int32()))])
    splits = {}
    for seed, (split, count) in enumerate(rows.items(), start=1):
        examples = make_texts(count, seed=seed, num_labels=num_labels)
        texts = [text for text, _ in examples]
        labels = [label for _, label in examples]
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        table = pa.table({"id": [f"{split}-{index}" for index in range(count)], "text": texts,
                          "label": labels, "input_ids": ids}, schema=schema)
        pq.write_table(table, data_dir / f"{split}.parquet")
        splits[split] = SplitSummary(
            rows=count, label_counts={name: labels.count(index) for index, name in enumerate(label_names)},
            token_length_percentiles={"50": float(sorted(map(len, ids))[count // 2])})
    files = {str(path.relative_to(data_dir)): sha256_file(path)
             for path in sorted(data_dir.rglob("*")) if path.is_file()}
    vocab = tokenizer.get_vocab()
    info = TokenizerInfo(name="tiny-wordpiece", kind=kind,
                         sha256=tokenizer_sha256 or sha256_file(data_dir / "tokenizer" / "tokenizer.json"),
                         vocab_size=len(vocab), pad_token_id=vocab["[PAD]"], cls_token_id=vocab["[CLS]"],
                         sep_token_id=vocab["[SEP]"])
    manifest = Manifest(dataset="tiny", version="v1", label_names=label_names, splits=splits, tokenizer=info,
                        max_length=max_length, sources=[], files=files,
                        publish_params={"seed": 0, "cleaning": CLEANING_ID})  # its texts need no cleaning
    manifest.write(data_dir)
    return data_dir


def read_manifest(data_dir: Path) -> dict:
    return json.loads((data_dir / "manifest.json").read_text())


# ---- multi-label (multi-source) versions ------------------------------------------------------

QUESTIONS = ["abusive", "hate"]
# Which questions each tiny source answers (the others are missing, -1), like OLID (abuse only),
# Davidson (both) and HatEval (hate only).
SOURCE_ANSWERS = {"alpha": ("abusive", "hate"), "beta": ("abusive",), "gamma": ("hate",)}
HATE_WORDS = ("hate", "vermin")


def make_multilabel_texts(rows: int, seed: int, source: str) -> list[tuple[str, list[int]]]:
    """Rows of one tiny source: a third neutral, a third abusive, a third hateful (abusive too), with
    the answers the source does not give set to -1."""
    rng = random.Random(f"{seed}:{source}")
    examples = []
    for index in range(rows):
        kind = index % 3  # 0 neutral, 1 abusive, 2 hateful
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 12))]
        if kind >= 1:
            words.insert(rng.randrange(len(words) + 1), rng.choice(TOXIC[:5]))
        if kind == 2:
            words.insert(rng.randrange(len(words) + 1), rng.choice(HATE_WORDS))
        truth = {"abusive": int(kind >= 1), "hate": int(kind == 2)}
        examples.append((" ".join(words), [truth[q] if q in SOURCE_ANSWERS[source] else -1 for q in QUESTIONS]))
    return examples


def make_multilabel_data_dir(data_dir: Path, rows_per_source: dict[str, int] | None = None,
                             max_length: int = MAX_LENGTH) -> Path:
    """A fetched multi-label version of the three tiny sources (the contract of publish --questions):
    rows id/text/source/labels/input_ids, `task: multilabel`, questions as label names."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cybulde.registry.manifest import MULTILABEL, Manifest, SplitSummary, TokenizerInfo
    from cybulde.text.cleaning import CLEANING_ID

    rows_per_source = rows_per_source or {"train": 24, "validation": 12, "test": 12}
    sources = list(SOURCE_ANSWERS)
    data_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer_dir(data_dir / "tokenizer", corpus=[
        text for source in sources for text, _ in make_multilabel_texts(60, 0, source)])
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()),
                        ("labels", pa.list_(pa.int8())), ("input_ids", pa.list_(pa.int32()))])
    splits = {}
    for seed, (split, count) in enumerate(rows_per_source.items(), start=1):
        ids, texts, row_sources, labels = [], [], [], []
        for source in sources:
            for index, (text, answers) in enumerate(make_multilabel_texts(count, seed, source)):
                ids.append(f"{source}/{split}-{index}")
                texts.append(text)
                row_sources.append(source)
                labels.append(answers)
        input_ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        pq.write_table(pa.table({"id": ids, "text": texts, "source": row_sources, "labels": labels,
                                 "input_ids": input_ids}, schema=schema), data_dir / f"{split}.parquet")
        answers = {source: {q: {"yes": sum(1 for s, row in zip(row_sources, labels, strict=True)
                                           if s == source and row[i] == 1),
                                "no": sum(1 for s, row in zip(row_sources, labels, strict=True)
                                          if s == source and row[i] == 0),
                                "missing": sum(1 for s, row in zip(row_sources, labels, strict=True)
                                               if s == source and row[i] == -1)}
                            for i, q in enumerate(QUESTIONS)} for source in sources}
        splits[split] = SplitSummary(
            rows=len(ids), label_counts={q: sum(row[i] == 1 for row in labels) for i, q in enumerate(QUESTIONS)},
            token_length_percentiles={"50": float(sorted(map(len, input_ids))[len(ids) // 2])},
            source_rows={source: count for source in sources}, answers=answers)
    files = {str(path.relative_to(data_dir)): sha256_file(path)
             for path in sorted(data_dir.rglob("*")) if path.is_file()}
    vocab = tokenizer.get_vocab()
    info = TokenizerInfo(name="tiny-wordpiece", kind="wordpiece",
                         sha256=sha256_file(data_dir / "tokenizer" / "tokenizer.json"),
                         vocab_size=len(vocab), pad_token_id=vocab["[PAD]"], cls_token_id=vocab["[CLS]"],
                         sep_token_id=vocab["[SEP]"])
    label_map = {"file": "tiny-questions.yaml", "sha256": "0" * 64, "questions": QUESTIONS, "implies": {},
                 "sources": {source: {"kind": "tiny", "labels": {}} for source in sources}}
    manifest = Manifest(dataset="tiny-multi", version="v1", label_names=list(QUESTIONS), splits=splits,
                        tokenizer=info, max_length=max_length, sources=[], files=files,
                        publish_params={"seed": 0, "cleaning": CLEANING_ID}, task=MULTILABEL,
                        source_names=sources, label_map=label_map)
    manifest.write(data_dir)
    return data_dir
