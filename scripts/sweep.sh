#!/usr/bin/env bash
# The sweeps behind the default params and the results tables, as queued DVC experiments (see
# docs/results.md). Choose on validation macro-F1 only; the test split is read once per run.
#
#   scripts/sweep.sh offensive   # TweetEval offensive, one factor at a time around the default recipe
#                                # (two epochs, lr 1e-4, all weights trained, the backbone's pooler):
#                                # pooling, learning rate, epochs, warmup, weight averaging (EMA),
#                                # selection on validation loss, the HF Trainer's recipe, the previous default
#   scripts/sweep.sh seeds       # the default recipe with two more seeds (the default run is the third)
#   scripts/sweep.sh davidson    # Davidson: the default recipe, class weights and focal loss for the
#                                # rare hate_speech class
#   scripts/sweep.sh hate        # TweetEval hate: alone, and with TweetEval offensive's train split added
#   scripts/sweep.sh seeds-all   # Davidson and TweetEval hate, seeds 1 and 2 (`davidson`, `hate`: the third)
#   scripts/sweep.sh multisource # one model on all three sources (configs/questions/harm.yaml), 3 seeds
#
# `davidson` and `hate` need those versions in the registry first:
#   cybulde publish --source davidson2017 --version v2
#   cybulde publish --source tweeteval_hate --version v2
#   cybulde publish --source tweeteval_hate --dataset tweeteval_hate_plus_offensive --version v2 \
#       --add-train 'tweeteval_offensive:offensive=hate,not-offensive=not-hate'
# (`multisource` publishes its version itself if the registry lacks it.)
#
# Each experiment runs the whole pipeline in a temporary copy (`dvc exp run --queue`), one at a
# time: the runs use every core. Afterwards `dvc exp show` compares them and
# `python scripts/collect_experiments.py` copies their metrics into results/.
set -euo pipefail
cd "$(dirname "$0")/.."

# The runs behind results/sweep, results/seeds and results/behaviour used the training options of
# their time: torch's dropout masks, dense embedding updates and float32 hidden states (docs/speed.md
# has today's faster defaults). The sweeps keep them, so that a rerun or a further seed is the same
# recipe as the runs it joins.
measured_options=(-S train.dropout_masks=torch -S train.embedding_updates=dense -S train.hidden_states=float32)

queue() {
    local name=$1
    shift
    dvc exp remove "$name" >/dev/null 2>&1 || true
    dvc exp run --queue --name "$name" "${measured_options[@]}" "$@"
}

case "${1:-}" in
    offensive)
        queue off-mean -S model.pooling=mean
        queue off-cls -S model.pooling=cls
        queue off-lr5e-5 -S train.lr=5e-5
        queue off-e3 -S train.epochs=3
        queue off-warmup0 -S train.warmup_ratio=0.0
        queue off-ema -S train.ema_decay=0.995
        queue off-select-loss -S train.select_on=loss
        # The HF Trainer's recipe (benchmarks/time_to_quality.py) in this pipeline: lr 5e-5, no warmup.
        queue off-trainer-recipe -S train.lr=5e-5 -S train.warmup_ratio=0.0
        # The previous default: one epoch, frozen token embeddings, mean pooling.
        queue off-previous-default -S train.epochs=1 -S train.freeze_embeddings=true -S model.pooling=mean
        ;;
    seeds)
        queue off-seed1 -S train.seed=1
        queue off-seed2 -S train.seed=2
        ;;
    davidson)
        base=(-S data.dataset=davidson2017 -S data.manifest_sha256=)  # the pin in params.yaml is the default dataset's
        queue davidson "${base[@]}"
        queue davidson-class-weights "${base[@]}" -S train.class_weights=true
        queue davidson-focal "${base[@]}" -S train.loss=focal -S train.focal_gamma=2.0
        ;;
    hate)
        queue hate -S data.dataset=tweeteval_hate -S data.manifest_sha256=
        queue hate-plus-offensive -S data.dataset=tweeteval_hate_plus_offensive -S data.manifest_sha256=
        ;;
    seeds-all)
        for seed in 1 2; do
            queue "davidson-seed$seed" -S data.dataset=davidson2017 -S data.manifest_sha256= -S train.seed=$seed
            queue "hate-seed$seed" -S data.dataset=tweeteval_hate -S data.manifest_sha256= -S train.seed=$seed
        done
        ;;
    multisource)
        # Sources drawn with temperature 2 (p ~ sqrt(rows)): the smallest source is not drowned.
        pin=$(cybulde publish --questions configs/questions/harm.yaml --dataset harm --version v1 --if-missing \
            --print-pin)
        ms=(-S data.dataset=harm -S data.version=v1 -S "$pin" -S model.head=multilabel -S train.source_temperature=2.0)
        queue ms "${ms[@]}"
        queue ms-seed1 "${ms[@]}" -S train.seed=1
        queue ms-seed2 "${ms[@]}" -S train.seed=2
        ;;
    *)
        echo "usage: $0 offensive|seeds|davidson|hate|seeds-all|multisource" >&2
        exit 2
        ;;
esac
dvc exp run --run-all --jobs 1
