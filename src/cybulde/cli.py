"""`cybulde` command line: the upstream and downstream ends of the pipeline.

    cybulde publish ...   raw labeled data -> a new immutable dataset version in the registry
    cybulde predict ...   score texts with a trained model (a folder or an MLflow model URI)
    cybulde evaluate-cross ...  score a trained model on another dataset version
    cybulde evaluate-behaviour ...  per-functionality accuracy on the behavioural test suite
    cybulde gcp ...       create or delete the GPU training cluster on Google Cloud

The pipeline stages themselves are run by DVC (`dvc repro`, see dvc.yaml).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from cybulde.cloud.gcp import add_gcp_arguments, run_gcp
    from cybulde.data.publish import add_publish_arguments, run_publish
    from cybulde.evaluation.behaviour import add_behaviour_arguments, run_behaviour
    from cybulde.evaluation.cross import add_cross_arguments, run_cross
    from cybulde.predict import add_predict_arguments, run_predict

    subcommands = [
        ("publish", "publish a dataset version to a registry", add_publish_arguments, run_publish),
        ("predict", "score texts with a trained model", add_predict_arguments, run_predict),
        ("evaluate-cross", "score a trained model on another dataset version", add_cross_arguments, run_cross),
        ("evaluate-behaviour", "per-functionality accuracy on the behavioural test suite", add_behaviour_arguments,
         run_behaviour),
        ("gcp", "create or delete the GPU training cluster on Google Cloud", add_gcp_arguments, run_gcp),
    ]
    parser = argparse.ArgumentParser(prog="cybulde", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary, add_arguments, handler in subcommands:
        subparser = commands.add_parser(name, help=summary)
        add_arguments(subparser)
        subparser.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    result = args.handler(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
