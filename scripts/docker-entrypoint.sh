#!/usr/bin/env bash
# Entry point of the image: run a pipeline stage, the whole pipeline, torchrun or any command.
#   fetch | train | validate | test [ARGS]   one stage through DVC (dvc repro --single-item STAGE)
#   repro [ARGS]                             the whole pipeline (dvc repro)
#   torchrun ARGS                            torchrun directly (e.g. one node of a multi-node job)
#   cybulde ARGS                             the project CLI (publish, predict)
set -euo pipefail
command="${1:-repro}"
shift || true
case "$command" in
  fetch | train | validate | test) exec dvc repro --single-item "$command" "$@" ;;
  repro) exec dvc repro "$@" ;;
  *) exec "$command" "$@" ;;
esac
