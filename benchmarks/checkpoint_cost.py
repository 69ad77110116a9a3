"""What the resume checkpoints cost: seconds per checkpoint and the share of training time.

Trains the model of params.yaml (the default: MiniLM, default recipe) for `--steps` optimizer
steps with the real Trainer, callbacks and checkpoint writer of the `train` stage, saving the full
state every `--every` steps, and prints

  - seconds per checkpoint (mean and max over the step checkpoints; each is written and fsync'ed),
  - seconds per training step without checkpoints,
  - the share of training time that checkpoints take at params.yaml's `train.checkpoint_every_n_steps`
    (one per interval), and over one epoch of the fetched data (the step checkpoints plus the
    epoch-end one).

Run it as the `train` stage runs, on the same data and world size (two ranks by default):

    python -m torch.distributed.run --nproc-per-node=2 benchmarks/checkpoint_cost.py --data-dir data/fetched

or in one process with `launch.nproc_per_node=1 train.global_batch_size=16` as overrides. The last line
is `CHECKPOINT_COST {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULT_PREFIX = "CHECKPOINT_COST "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data/fetched"), help="a fetched dataset version")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps to train")
    parser.add_argument("--every", type=int, default=10, help="save the full state every this many steps")
    parser.add_argument("overrides", nargs="*", help="key=value params overrides")
    return parser.parse_args(argv)


def share_of_training(save_s: float, step_s: float, every: int) -> float:
    """Percent of training time spent saving with one checkpoint per `every` steps."""
    return 100.0 * save_s / (save_s + every * step_s)


def epoch_share(save_s: float, step_s: float, every: int, steps_per_epoch: int) -> float:
    """Percent of an epoch spent saving: a checkpoint every `every` steps (none on the last batch, whose
    state the epoch-end checkpoint saves after validation) plus the epoch-end one."""
    saves = (steps_per_epoch - 1) // every + 1 if every > 0 else 1
    return 100.0 * saves * save_s / (saves * save_s + steps_per_epoch * step_s)


def measure(args: argparse.Namespace) -> dict:
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from cybulde.config.loader import load_config
    from cybulde.config.topology import resolve_topology
    from cybulde.registry.manifest import Manifest
    from cybulde.training.checkpoints import ResumeCheckpoint
    from cybulde.training.determinism import seed_everything
    from cybulde.training.distributed import (
        check_world_size,
        configure_threads,
        init_distributed,
        read_launch_env,
        threads_per_rank,
    )
    from cybulde.training.train import build_module, build_trainer, make_datamodule

    default_every = load_config(args.params, args.overrides).train.checkpoint_every_n_steps
    cfg = load_config(args.params, [*args.overrides, f"train.max_steps={args.steps}",
                                    f"train.checkpoint_every_n_steps={args.every}", "train.epochs=1"])
    env = read_launch_env()
    topology = resolve_topology(cfg)
    check_world_size(topology, env)
    configure_threads(threads_per_rank(cfg, env))
    seed_everything(cfg.train.seed)
    manifest = Manifest.load(args.data_dir)
    module = build_module(cfg, manifest, args.data_dir)
    init_distributed(cfg, env)
    datamodule = make_datamodule(cfg, topology, args.data_dir, manifest, env)
    with tempfile.TemporaryDirectory(prefix="cybulde-checkpoint-cost-") as folder:
        trainer, throughput, _ = build_trainer(cfg, topology, env, Path(folder), logger=False)
        # Training steps and the resume checkpoints only: no validation, so nothing that monitors it.
        trainer.limit_val_batches = 0
        trainer.callbacks[:] = [cb for cb in trainer.callbacks if not isinstance(cb, (EarlyStopping, ModelCheckpoint))]
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        wall_s = time.perf_counter() - started
        checkpoint = next(cb for cb in trainer.callbacks if isinstance(cb, ResumeCheckpoint))
        size_mb = checkpoint.path.stat().st_size / 1e6 if checkpoint.path.exists() else 0.0
    step_saves = [seconds for kind, seconds in checkpoint.saves if kind == "step"]
    if not step_saves:
        raise SystemExit("no step checkpoint was written: raise --steps or lower --every")
    save_s = sum(step_saves) / len(step_saves)
    # Throughput counts each step checkpoint into the step after it; the epoch-end one is outside its window.
    step_s = (throughput.train_seconds - sum(step_saves)) / trainer.global_step
    steps_per_epoch = -(-len(datamodule.split("train")) // (cfg.train.global_batch_size))
    return {"rank": env.rank, "world_size": env.world_size, "steps": trainer.global_step,
            "global_batch_size": cfg.train.global_batch_size, "accumulation": topology.accumulation,
            "checkpoint_mb": round(size_mb, 1), "saves": len(step_saves), "save_s": save_s,
            "save_s_max": max(step_saves), "step_s": step_s, "wall_s": wall_s,
            "default_every": default_every, "steps_per_epoch": steps_per_epoch,
            "percent_at_default_every": share_of_training(save_s, step_s, default_every),
            "percent_of_an_epoch": epoch_share(save_s, step_s, default_every, steps_per_epoch)}


def main(argv: list[str] | None = None) -> int:
    result = measure(parse_args(argv))
    if result["rank"] != 0:
        return 0
    print(f"checkpoint of {result['checkpoint_mb']:.1f} MB: {result['save_s']:.2f} s per save "
          f"(mean of {result['saves']}, max {result['save_s_max']:.2f} s)")
    print(f"training step: {result['step_s']:.3f} s ({result['world_size']} rank(s), global batch "
          f"{result['global_batch_size']})")
    print(f"train.checkpoint_every_n_steps={result['default_every']}: {result['percent_at_default_every']:.2f}% "
          f"of training time; over a {result['steps_per_epoch']}-step epoch with its epoch-end checkpoint: "
          f"{result['percent_of_an_epoch']:.2f}%")
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
