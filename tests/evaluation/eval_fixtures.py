"""Tiny fetched datasets and tiny exported models for evaluation, pyfunc and predict tests.

Imported by tests/evaluation, tests/tracking/test_pyfunc.py and tests/test_predict.py (the latter
two add this folder to sys.path).
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

NEUTRAL = "the a day cat dog sun tree road book music food city game friend home park walk".split()
TOXIC = "idiot stupid hate ugly loser trash dumb awful".split()
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LENGTH = 24
LABEL_NAMES = {2: ["not_offensive", "offensive"], 3: ["neither", "offensive", "hate"]}


def make_texts(rows: int, seed: int, num_labels: int = 2) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    examples = []
    for index in range(rows):
        label = index % num_labels
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 12))]
        for _ in range(label * 2):
            words.insert(rng.randrange(len(words) + 1), TOXIC[(label * 3 + rng.randrange(3)) % len(TOXIC)])
        examples.append((" ".join(words), label))
    return examples


def make_tokenizer_dir(out_dir: Path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [text for text, _ in make_texts(200, seed=0, num_labels=3)] + ["é ü ß 你好"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=120, special_tokens=SPECIAL_TOKENS,
                                          show_progress=False))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=MAX_LENGTH)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_data_dir(data_dir: Path, num_labels: int = 2,
                  rows: dict[str, int] | None = None) -> Path:
    """A fetched dataset version: {train,validation,test}.parquet, tokenizer/, manifest.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cybulde.data.manifest import Manifest, SplitSummary, TokenizerInfo, hash_files

    rows = rows or {"train": 24, "validation": 20, "test": 18}
    data_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer_dir(data_dir / "tokenizer")
    label_names = LABEL_NAMES[num_labels]
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.int64()),
                        ("input_ids", pa.list_(pa.int32()))])
    splits = {}
    for seed, (split, count) in enumerate(rows.items(), start=1):
        examples = make_texts(count, seed=seed, num_labels=num_labels)
        texts = [text for text, _ in examples]
        labels = [label for _, label in examples]
        ids = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
        table = pa.table({"id": [f"{split}-{index}" for index in range(count)], "text": texts,
                          "label": labels, "input_ids": ids}, schema=schema)
        pq.write_table(table, data_dir / f"{split}.parquet")
        splits[split] = SplitSummary(
            rows=count,
            label_counts={name: labels.count(index) for index, name in enumerate(label_names)},
            token_length_percentiles={"50": float(sorted(map(len, ids))[count // 2])})
    vocab = tokenizer.get_vocab()
    info = TokenizerInfo(name="tiny-wordpiece", kind="wordpiece",
                         sha256=sha256_file(data_dir / "tokenizer" / "tokenizer.json"),
                         vocab_size=len(vocab), pad_token_id=vocab["[PAD]"],
                         cls_token_id=vocab["[CLS]"], sep_token_id=vocab["[SEP]"])
    manifest = Manifest(dataset="tiny", version="v1", label_names=label_names, splits=splits,
                        tokenizer=info, max_length=MAX_LENGTH, sources=[],
                        publish_params={"seed": 0}, files=hash_files(data_dir))
    manifest.write(data_dir)
    return data_dir


def make_model_dir(model_dir: Path, data_dir: Path, head: str = "softmax", seed: int = 0) -> Path:
    """A randomly initialised tiny scratch-BERT classifier exported with `save_model`."""
    import json

    import torch

    from cybulde.config.schema import ModelConfig, ScratchBackboneConfig
    from cybulde.models.checkpoint import save_model
    from cybulde.models.classifier import build_classifier

    torch.manual_seed(seed)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    model_cfg = ModelConfig(
        backbone="scratch", head=head, dropout=0.0,
        scratch=ScratchBackboneConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, max_position_embeddings=64))
    model = build_classifier(model_cfg, manifest, data_dir / "tokenizer")
    # Make the output layer react to the toxic words so that predictions are not all one class.
    with torch.no_grad():
        model.output.weight.mul_(20.0)
    metadata = {"dataset": manifest["dataset"], "version": manifest["version"],
                "manifest_sha256": sha256_file(data_dir / "manifest.json"),
                "tokenizer_sha256": manifest["tokenizer"]["sha256"], "train_params": {}}
    return save_model(model, model_dir, metadata, data_dir / "tokenizer")
