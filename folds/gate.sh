#!/bin/bash
# The shipped gate's recipe (README, "The shipped gate") for the given folds of the seed-0 5-fold
# split: each fold's encoder gate is trained on the frozen encoder of that fold's segmenter in
# folds/segmenter/foldI/ (12 epochs of whole slices), and its bundle copied into folds/gate/foldI/.
# A fold whose bundle exists in runs/gate/foldI/ is not trained again.
#
#   bash folds/gate.sh DATA [FOLD ...]     e.g. bash folds/gate.sh /tmp/lgg/kaggle_3m 0 1 2 3 4
#
# Work files go to runs/gate/foldI/ (git-ignored). Run it from the repository root, with the
# project's venv (`make install`); about 9 min a fold on a quiet 2-core CPU.
set -euo pipefail
DATA=${1:?usage: bash folds/gate.sh DATA [FOLD ...]}
shift
FOLDS=${*:-0 1 2 3 4}
TRAIN=${BRAINSEG_TRAIN:-.venv/bin/brainseg-train}
for i in $FOLDS; do
  name=brainseg-gate-cv5-fold$i
  segmenter=folds/segmenter/fold$i/brainseg-segmenter-resunet16-cv5-fold$i.json
  [ -f "$segmenter" ] || { echo "no segmenter for fold $i: run bash folds/recipe.sh DATA $i first"; exit 1; }
  out=runs/gate/fold$i
  if [ ! -f "$out/$name.json" ]; then
    echo "$(date +%T) gate fold $i"
    mkdir -p "$out"
    nice -n 10 "$TRAIN" classifier "$DATA" --arch resunet_gate --out "$out" --folds 5 --fold "$i" \
      --init-from "$segmenter" --keep last --val-every 4 --epochs 12 --patience 0 --batch-size 32 \
      --lr 1e-3 --seed 0 --name "$name" > "$out.log" 2>&1 || { echo "failed: see $out.log"; exit 1; }
  fi
  mkdir -p "folds/gate/fold$i"
  cp "$out/$name.json" "$out/$name.safetensors" "folds/gate/fold$i/"
  echo "$(date +%T) gate fold $i done: folds/gate/fold$i"
done
