"""How many of the tokens a batch computes are padding, on the fetched data.

Prints padded and real token counts for the training batches of `--epochs` epochs (the `train`
stage's sampler, length-grouped or not) and for each evaluation split, batched in file order and as
the evaluation stages batch it (shortest first):

    python benchmarks/padding.py --data-dir data/fetched
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data/fetched"), help="a fetched dataset version")
    parser.add_argument("--batch-size", type=int, default=32, help="training rows per step")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234)
    return parser.parse_args(argv)


def line(name: str, padded: int, real: int) -> str:
    return f"{name:<32} padded {padded:>9,}  real {real:>9,}  padding {1 - real / padded:6.1%}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from torch.utils.data import DataLoader

    from cybulde.loading.datamodule import ShardedBatchSampler, TextDataModule
    from cybulde.text.batching import PadCollator

    data = TextDataModule(args.data_dir, batch_size=args.batch_size, seed=args.seed)
    lengths = data.split("train").lengths
    for grouped in (True, False):
        sampler = ShardedBatchSampler(lengths, args.batch_size, args.seed, group_by_length=grouped)
        padded = real = 0
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for rows in sampler:
                padded += int(lengths[rows].max()) * len(rows)
                real += int(lengths[rows].sum())
        print(line(f"train, {'grouped' if grouped else 'not grouped'} by length", padded, real))
    for split in ("validation", "test"):
        file_order = DataLoader(data.split(split), batch_size=args.eval_batch_size,
                                collate_fn=PadCollator(data.pad_token_id))
        for name, loader in (("file order", file_order), ("shortest first", data.eval_dataloader(split, args.eval_batch_size))):
            batches = list(loader)
            print(line(f"{split}, {name}", sum(batch["input_ids"].numel() for batch in batches),
                       sum(int(batch["attention_mask"].sum()) for batch in batches)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
