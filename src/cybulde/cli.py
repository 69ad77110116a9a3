"""`cybulde` command line: the upstream and downstream ends of the pipeline.

    cybulde publish ...   raw labeled data -> a new immutable dataset version in the registry
    cybulde predict ...   score texts with a trained model (a folder or an MLflow model URI)
    cybulde evaluate-cross ...  score a trained model on another dataset version
    cybulde evaluate-behaviour ...  per-functionality accuracy on the behavioural test suite
    cybulde gcp ...       create or delete the GPU training cluster on Google Cloud

The pipeline stages themselves are run by DVC (`dvc repro`, see dvc.yaml).

Every subcommand shares one error contract: a `CybuldeError` (bad input, a missing file, an
unreachable service...) is one line `cybulde <command>: error: <message>` on standard error and
exit status 1; a usage error (argparse's, or a `UsageError`) prints the usage and exits 2. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from cybulde.cloud.gcp import add_gcp_arguments, run_gcp
from cybulde.errors import CybuldeError, UsageError
from cybulde.evaluation.behaviour import add_behaviour_arguments, run_behaviour
from cybulde.evaluation.cross import add_cross_arguments, run_cross
from cybulde.preparation.publish import add_publish_arguments, run_publish
from cybulde.serving.predict import add_predict_arguments, run_predict


@dataclass(frozen=True)
class Subcommand:
    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], object]
    handler: Callable[[argparse.Namespace], int | None]


def subcommands() -> list[Subcommand]:
    """The table of subcommands; a new one is one more row (its module's add_*_arguments / run_*)."""
    return [
        Subcommand("publish", "publish a dataset version to a registry", add_publish_arguments, run_publish),
        Subcommand("predict", "score texts with a trained model", add_predict_arguments, run_predict),
        Subcommand("evaluate-cross", "score a trained model on another dataset version", add_cross_arguments,
                   run_cross),
        Subcommand("evaluate-behaviour", "per-functionality accuracy on the behavioural test suite",
                   add_behaviour_arguments, run_behaviour),
        Subcommand("gcp", "create or delete the GPU training cluster on Google Cloud", add_gcp_arguments, run_gcp),
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cybulde", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in subcommands():
        subparser = commands.add_parser(command.name, help=command.summary)
        command.add_arguments(subparser)
        subparser.set_defaults(handler=command.handler, subparser=subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    try:
        return int(args.handler(args) or 0)
    except UsageError as error:
        args.subparser.error(one_line(error))  # usage + message, exit 2
    except CybuldeError as error:
        print(f"cybulde {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 1
    return 2  # not reached: ArgumentParser.error exits


def one_line(error: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def run() -> NoReturn:
    """The `cybulde` executable: `main`, then exit.

    Everything is frozen out of the garbage collector first: otherwise the interpreter's shutdown
    spends most of a second collecting the objects torch, transformers and MLflow created at import,
    memory the process hands back anyway (and a stop signal must be answered within a second)."""
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    run()
