#!/usr/bin/env bash
# The recipe sweep behind the default params, as queued DVC experiments (see README, "Results").
#
#   scripts/sweep.sh recipe    # epochs, learning rate, frozen embeddings, layer-wise lr decay
#   scripts/sweep.sh seeds     # the chosen recipe with two more seeds (the default run is the third)
#   scripts/sweep.sh datasets  # the chosen recipe on TweetEval hate (alone, and with TweetEval
#                              # offensive's train split added) and on Davidson
#
# The time-to-quality sweep (issue #14), all under train.precision=auto (bf16 where native), one
# factor at a time around a two-epoch base; choose on validation macro-F1 only:
#   scripts/sweep.sh offensive     # TweetEval offensive: epochs 1-3, lr, frozen vs full embeddings,
#                                  # pooling mean/cls/pooler, EMA, warmup, schedule, selection metric,
#                                  # and the HF Trainer's recipe run by this pipeline
#   scripts/sweep.sh davidson      # Davidson: class weights and focal loss for the rare hate_speech class
#   scripts/sweep.sh hate          # TweetEval hate: alone and with TweetEval offensive's train split
#
# `datasets`, `davidson` and `hate` need those versions in the registry first:
#   cybulde publish --source tweeteval_hate --version v1
#   cybulde publish --source tweeteval_hate --dataset tweeteval_hate_plus_offensive --version v1 \
#       --add-train 'tweeteval_offensive:offensive=hate,not-offensive=not-hate'
#   cybulde publish --source davidson2017 --version v1
#
# Each experiment runs the whole pipeline in a temporary copy (`dvc exp run --queue`), one at a
# time: the runs use every core. Afterwards `dvc exp show` compares them and
# `python scripts/collect_experiments.py` copies their metrics into results/.
set -euo pipefail
cd "$(dirname "$0")/.."

queue() {
    local name=$1
    shift
    dvc exp remove "$name" >/dev/null 2>&1 || true
    dvc exp run --queue --name "$name" "$@"
}

case "${1:-}" in
    recipe)
        # Two epochs peaked after the first and overran the 15-minute budget of the default
        # pipeline, so the rest of the sweep trains one epoch.
        queue off-e2-lr1e-4-frozen -S train.epochs=2 -S train.lr=1e-4 -S train.freeze_embeddings=true
        queue off-e1-lr1e-4-frozen -S train.lr=1e-4 -S train.freeze_embeddings=true
        queue off-e1-lr1e-4 -S train.lr=1e-4
        queue off-e1-lr1e-4-frozen-llrd0.8 -S train.lr=1e-4 -S train.freeze_embeddings=true \
            -S train.layer_lr_decay=0.8
        ;;
    seeds)
        queue off-seed1 -S train.seed=1
        queue off-seed2 -S train.seed=2
        ;;
    datasets)
        queue hate-seed1234 -S data.dataset=tweeteval_hate
        queue hate-plus-offensive-seed1234 -S data.dataset=tweeteval_hate_plus_offensive
        queue davidson-seed1234 -S data.dataset=davidson2017
        ;;
    offensive)
        base=(-S train.precision=auto -S train.epochs=2)
        queue tq-off-e1 -S train.precision=auto -S train.epochs=1
        queue tq-off-e2 "${base[@]}"
        queue tq-off-e3 -S train.precision=auto -S train.epochs=3
        queue tq-off-e2-lr5e-5 "${base[@]}" -S train.lr=5e-5
        queue tq-off-e2-full "${base[@]}" -S train.freeze_embeddings=false
        queue tq-off-e2-cls "${base[@]}" -S model.pooling=cls
        queue tq-off-e2-pooler "${base[@]}" -S model.pooling=pooler
        queue tq-off-e2-ema "${base[@]}" -S train.ema_decay=0.99
        queue tq-off-e2-warmup0 "${base[@]}" -S train.warmup_ratio=0.0
        queue tq-off-e2-cosine "${base[@]}" -S train.lr_schedule=cosine
        queue tq-off-e2-select-loss "${base[@]}" -S train.select_on=loss
        # The HF Trainer's recipe (benchmarks/time_to_quality.py) in this pipeline: CLS + pooler, all
        # weights, lr 5e-5, linear decay without warmup.
        queue tq-off-trainer-recipe "${base[@]}" -S train.lr=5e-5 -S train.freeze_embeddings=false \
            -S train.warmup_ratio=0.0 -S model.pooling=pooler
        ;;
    davidson)
        base=(-S data.dataset=davidson2017 -S train.precision=auto)
        queue tq-davidson-e1 "${base[@]}"
        queue tq-davidson-e1-cw "${base[@]}" -S train.class_weights=true
        queue tq-davidson-e1-focal "${base[@]}" -S train.loss=focal -S train.focal_gamma=2.0
        queue tq-davidson-e1-cw-focal "${base[@]}" -S train.class_weights=true -S train.loss=focal
        queue tq-davidson-e2-cw "${base[@]}" -S train.epochs=2 -S train.class_weights=true
        ;;
    hate)
        base=(-S train.precision=auto)
        queue tq-hate-e1 "${base[@]}" -S data.dataset=tweeteval_hate
        queue tq-hate-e2 "${base[@]}" -S data.dataset=tweeteval_hate -S train.epochs=2
        queue tq-hate-plus-offensive-e1 "${base[@]}" -S data.dataset=tweeteval_hate_plus_offensive
        queue tq-hate-plus-offensive-e2 "${base[@]}" -S data.dataset=tweeteval_hate_plus_offensive \
            -S train.epochs=2
        ;;
    *)
        echo "usage: $0 recipe|seeds|datasets|offensive|davidson|hate" >&2
        exit 2
        ;;
esac
dvc exp run --run-all --jobs 1
