#!/bin/bash
# The shipped segmenter's CPU recipe again with --seed 1 (initialisation, sampling, augmentation) on
# the same held-out patients as each committed fold (folds/segmenter/foldI's card), chunk by chunk
# as folds/recipe.sh does; each fold's chunk-4 bundle is copied into folds/segmenter-seed1/foldI/.
#
#   bash folds/seed1.sh DATA [FOLD ...]     e.g. bash folds/seed1.sh /tmp/lgg/kaggle_3m 3 4
#
# Work files go to runs/seed1/cC/foldI/ (git-ignored). Run it from the repository root, with the
# project's venv (`make install`); about 36 min a fold on a quiet 2-core CPU.
set -euo pipefail
DATA=${1:?usage: bash folds/seed1.sh DATA [FOLD ...]}
shift
FOLDS=${*:-0 1 2 3 4}
TRAIN=${BRAINSEG_TRAIN:-.venv/bin/brainseg-train}
PYTHON=${BRAINSEG_PYTHON:-.venv/bin/python}
COMMON="--crop 128 --tumour-fraction 0.5 --patience 0 --keep last --seed 1"
CHUNK1="$COMMON --epochs 16 --val-every 4"
CHUNK2="$COMMON --epochs 16 --val-every 8 --lr 5e-4"
CHUNK3="$COMMON --epochs 4 --val-every 4 --lr 2e-4 --missing-sequence 0.15"
CHUNK4="$COMMON --epochs 8 --val-every 8 --lr 3e-4 --missing-sequence 0.15"
mkdir -p runs/seed1
for i in $FOLDS; do
  name=seg-seed1-fold$i
  held=runs/seed1/heldout$i.txt
  "$PYTHON" -c "import json, sys; print('\n'.join(json.load(open(sys.argv[1]))['training']['split']['val_patients']))" \
    "folds/segmenter/fold$i/brainseg-segmenter-resunet16-cv5-fold$i.json" > "$held"
  previous=""
  for c in 1 2 3 4; do
    out=runs/seed1/c$c/fold$i
    options=CHUNK$c
    if [ ! -f "$out/$name.json" ]; then
      echo "$(date +%T) fold $i chunk $c"
      mkdir -p "$out"
      init=()
      [ -n "$previous" ] && init=(--init-from "$previous")
      [ -n "$(ls -A "$out/checkpoint" 2>/dev/null)" ] && init=(--resume)  # an interrupted chunk
      # shellcheck disable=SC2086  # the options are word lists
      nice -n 10 "$TRAIN" segmenter "$DATA" --out "$out" --val-patients "$held" ${!options} \
        "${init[@]}" --name "$name" >> "$out.log" 2>&1 || { echo "failed: see $out.log"; exit 1; }
    fi
    previous=$out/$name.json
  done
  mkdir -p "folds/segmenter-seed1/fold$i"
  cp "$previous" "${previous%.json}.safetensors" "folds/segmenter-seed1/fold$i/"
  echo "$(date +%T) fold $i done"
done
