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
