"""Training entry for the two-host test: what stages/train.py does, plus a digest of each rank's
final weights written to $WEIGHTS_DIGEST_DIR/rank<N>.sha256 when training ends."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

DIGEST_DIR_ENV = "WEIGHTS_DIGEST_DIR"


def weights_sha256(module: Any) -> str:
    """sha256 over every parameter and buffer's name and raw bytes, in name order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def digest_callback(out_dir: Path) -> Any:
    from lightning.pytorch.callbacks import Callback

    class WeightsDigest(Callback):
        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"rank{trainer.global_rank}.sha256").write_text(weights_sha256(pl_module))

    return WeightsDigest()


def main(argv: list[str]) -> int:
    import logging

    from cybulde.config.loader import load_config
    from cybulde.training import train as train_module

    build_trainer = train_module.build_trainer
    out_dir = Path(os.environ[DIGEST_DIR_ENV])

    def build_trainer_with_digest(*args: Any, **kwargs: Any) -> Any:
        trainer, *rest = build_trainer(*args, **kwargs)
        trainer.callbacks.append(digest_callback(out_dir))
        return (trainer, *rest)

    train_module.build_trainer = build_trainer_with_digest
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    train_module.train(load_config(overrides=argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
