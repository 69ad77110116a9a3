"""Where a training step's time goes, on the default model and the fetched data.

Runs our module's training step by hand (the same loss, autocast, gradient clipping and optimizer as
the `train` stage, without Lightning's loop) on the length-grouped batches of the train split, and
prints the wall time of each phase (forward, backward, clipping, optimizer step, zero_grad) over
`--steps` steps after `--warmup-steps`, then the torch profiler's operators by self CPU time over
`--profile-steps` more steps (and with `--by-shape N`, the top N operators split by input shape):

    python benchmarks/step_profile.py --data-dir data/fetched --steps 60
    python benchmarks/step_profile.py --data-dir data/fetched --steps 60 --embedding-updates dense --dropout-masks torch \
        --hidden-states float32

The difference between this loop's samples/s and `ours-1proc` in benchmarks/train_throughput.py is
what Lightning's loop and the stage's callbacks add.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import set_train_options  # noqa: E402  (the modes' way of setting train options)

PHASES = ("forward", "backward", "clip", "optimizer", "zero_grad")
OPTIONS = ("embedding_updates", "dropout_masks", "hidden_states")  # train config options, as the arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data/fetched"), help="a fetched dataset version")
    parser.add_argument("--steps", type=int, default=60, help="timed steps")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--profile-steps", type=int, default=10, help="steps under the torch profiler (0: none)")
    parser.add_argument("--top", type=int, default=15, help="operators listed")
    parser.add_argument("--by-shape", type=int, default=0, metavar="N",
                        help="also list the top N operators by input shape (which casts are weights, which activations)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--precision", default="bf16-mixed", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--embedding-updates", choices=["dense", "lazy"], help="default: the train config's")
    parser.add_argument("--dropout-masks", choices=["torch", "packed"], help="default: the train config's")
    parser.add_argument("--hidden-states", choices=["float32", "bf16"], help="default: the train config's")
    return parser.parse_args(argv)


def build(args: argparse.Namespace):
    """The default model as `train` builds it, its optimizer, and the train split's batches."""
    from cybulde.config.schema import Config
    from cybulde.loading.datamodule import TextDataModule
    from cybulde.registry.manifest import Manifest
    from cybulde.training.determinism import seed_everything
    from cybulde.training.train import build_module

    cfg = Config()
    set_train_options(cfg.train, {option: getattr(args, option) for option in OPTIONS if getattr(args, option)})
    for option in OPTIONS:
        setattr(args, option, getattr(cfg.train, option).value)  # what ran, defaults included
    seed_everything(cfg.train.seed)
    manifest = Manifest.load(args.data_dir)
    module = build_module(cfg, manifest, args.data_dir)
    data = TextDataModule(args.data_dir, manifest=manifest, batch_size=args.batch_size, seed=cfg.train.seed,
                          group_by_length=True)
    return module, module.build_optimizer(), data.train_dataloader()


def training_step(module, optimizer, batch, precision: str, clock: Callable[[str], None]) -> None:
    import torch

    from cybulde.hardware import autocast

    with autocast(precision, torch.device("cpu")):
        loss, _ = module.loss_and_logits(batch)
    clock("forward")
    loss.backward()
    clock("backward")
    module.on_before_optimizer_step(optimizer)
    clock("clip")
    optimizer.step()
    clock("optimizer")
    optimizer.zero_grad(set_to_none=True)
    clock("zero_grad")


class PhaseClock:
    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.last = time.perf_counter()

    def start(self) -> None:
        self.last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] += now - self.last
        self.last = now


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.utils.deterministic.fill_uninitialized_memory = False  # as the train stage
    module, optimizer, loader = build(args)
    module.train()
    batches = iter(loader)
    clock, samples = PhaseClock(), 0
    for step in range(args.warmup_steps + args.steps):
        batch = next(batches)
        if step == args.warmup_steps:
            clock = PhaseClock()
        clock.start()
        training_step(module, optimizer, batch, args.precision, clock)
        if step >= args.warmup_steps:
            samples += int(batch["labels"].shape[0])
    total = sum(clock.seconds.values())
    options = " ".join(f"{option}={getattr(args, option)}" for option in OPTIONS)
    print(f"{options} precision={args.precision} threads={args.threads} "
          f"steps={args.steps}: {samples / total:.1f} samples/s in the bare loop")
    for phase in PHASES:
        print(f"  {phase:<10}{1000 * clock.seconds[phase] / args.steps:8.1f} ms/step {100 * clock.seconds[phase] / total:6.1f}%")
    if args.profile_steps:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.by_shape > 0) as profiler:
            for _ in range(args.profile_steps):
                training_step(module, optimizer, next(batches), args.precision, lambda phase: None)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
        if args.by_shape:
            print(profiler.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total",
                                                                         row_limit=args.by_shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
