#!/bin/bash
# The shipped gate's recipe (README, "The shipped gate") for the given folds of the seed-0 5-fold
# split: each fold's encoder gate is trained on the frozen encoder of that fold's segmenter in
# folds/segmenter/foldI/ (12 epochs of whole slices), and its bundle copied into folds/gate/foldI/.
# A fold whose gate is in runs/gate/foldI/ is not trained again (an interrupted one is resumed);
# a gate there that was trained on another segmenter than the fold's is refused, not replaced.
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
PYTHON=${BRAINSEG_PYTHON:-.venv/bin/python}
segmenter() { echo "folds/segmenter/fold$1/brainseg-segmenter-resunet16-cv5-fold$1.json"; }
for i in $FOLDS; do  # every fold's segmenter before any training
  case $i in [0-4]) ;; *) echo "not a fold of the 5-fold split: $i (0-4)"; exit 2;; esac
  [ -f "$(segmenter "$i")" ] || { echo "no segmenter for fold $i: run bash folds/recipe.sh $DATA $i first"; exit 1; }
done
for i in $FOLDS; do
  name=brainseg-gate-cv5-fold$i
  out=runs/gate/fold$i
  if [ -f "$out/$name.json" ]; then  # trained on this fold's segmenter?
    "$PYTHON" - "$out/$name.json" "$(segmenter "$i")" <<'PY' || exit 1
import json, sys
gate, seg = (json.load(open(p)) for p in sys.argv[1:])
if (gate["training"].get("init_from") or {}).get("sha256") != seg["weights_sha256"]:
    sys.exit(f"{sys.argv[1]} was trained on another segmenter than {sys.argv[2]}: delete its folder to retrain it")
PY
  else
    echo "$(date +%T) gate fold $i"
    mkdir -p "$out"
    resume=()
    [ -n "$(ls -A "$out/checkpoint" 2>/dev/null)" ] && resume=(--resume)  # an interrupted run
    nice -n 10 "$TRAIN" classifier "$DATA" --arch resunet_gate --out "$out" --folds 5 --fold "$i" \
      --init-from "$(segmenter "$i")" --keep last --val-every 4 --epochs 12 --patience 0 --batch-size 32 \
      --lr 1e-3 --seed 0 --name "$name" "${resume[@]}" >> "$out.log" 2>&1 || { echo "failed: see $out.log"; exit 1; }
  fi
  mkdir -p "folds/gate/fold$i"
  cp "$out/$name.json" "$out/$name.safetensors" "folds/gate/fold$i/"
  echo "$(date +%T) gate fold $i done: folds/gate/fold$i"
done
