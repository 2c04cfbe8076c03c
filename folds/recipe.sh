#!/bin/bash
# The shipped segmenter's CPU recipe (README, "The CPU recipe") for the given folds of the seed-0
# 5-fold split, chunk by chunk; a chunk whose bundle exists is skipped, so an interrupted run picks
# up at its last finished chunk (an interrupted chunk resumes from its checkpoint). Each fold's
# chunk-4 bundle is copied into folds/segmenter/foldI/.
#
#   bash folds/recipe.sh DATA [FOLD ...]     e.g. bash folds/recipe.sh /tmp/lgg/kaggle_3m 3 4
#
# Work files go to runs/recipe/cC/foldI/ (git-ignored). Run it from the repository root, with the
# project's venv (`make install`); about 36 min a fold on a quiet 2-core CPU.
set -euo pipefail
DATA=${1:?usage: bash folds/recipe.sh DATA [FOLD ...]}
shift
FOLDS=${*:-0 1 2 3 4}
TRAIN=${BRAINSEG_TRAIN:-.venv/bin/brainseg-train}
COMMON="--crop 128 --tumour-fraction 0.5 --patience 0 --keep last"
CHUNK1="$COMMON --epochs 16 --val-every 4"
CHUNK2="$COMMON --epochs 16 --val-every 8 --lr 5e-4"
CHUNK3="$COMMON --epochs 4 --val-every 4 --lr 2e-4 --missing-sequence 0.15"
CHUNK4="$COMMON --epochs 8 --val-every 8 --lr 3e-4 --missing-sequence 0.15"
for i in $FOLDS; do
  name=brainseg-segmenter-resunet16-cv5-fold$i
  previous=""
  for c in 1 2 3 4; do
    out=runs/recipe/c$c/fold$i
    options=CHUNK$c
    if [ ! -f "$out/$name.json" ]; then
      echo "$(date +%T) fold $i chunk $c"
      mkdir -p "$out"
      init=()
      [ -n "$previous" ] && init=(--init-from "$previous")
      [ -n "$(ls -A "$out/checkpoint" 2>/dev/null)" ] && init=(--resume)  # an interrupted chunk
      # shellcheck disable=SC2086  # the options are word lists
      nice -n 10 "$TRAIN" segmenter "$DATA" --out "$out" --folds 5 --fold "$i" ${!options} \
        "${init[@]}" --name "$name" >> "$out.log" 2>&1 || { echo "failed: see $out.log"; exit 1; }
    fi
    previous=$out/$name.json
  done
  mkdir -p "folds/segmenter/fold$i"
  cp "$previous" "${previous%.json}.safetensors" "folds/segmenter/fold$i/"
  echo "$(date +%T) fold $i done: folds/segmenter/fold$i"
done
