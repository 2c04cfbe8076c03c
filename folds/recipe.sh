#!/bin/bash
# The shipped segmenter's CPU recipe (README, "The CPU recipe") for the given folds, chunk by chunk;
# a chunk whose bundle exists is skipped, so an interrupted run picks up at its last finished chunk
# (an interrupted chunk resumes from its checkpoint). Each fold's chunk-4 bundle is copied into
# folds/segmenter/foldI/ (seed 0: the 5-fold split by patient with seed 0), or, with SEED=S, into
# folds/segmenter-seedS/foldI/ (--seed S, on the same held-out patients as folds/segmenter/foldI:
# its card's list, --val-patients).
#
#   bash folds/recipe.sh DATA [FOLD ...]            e.g. bash folds/recipe.sh /tmp/lgg/kaggle_3m 3 4
#   SEED=1 bash folds/recipe.sh DATA [FOLD ...]     the second seed (folds/segmenter-seed1)
#   SEED=1 bash folds/recipe.sh DATA full           the full-data model: all patients but the
#                                                   bundled sample (TCGA_HT_7694_19950404), as the
#                                                   shipped segmenter (SEED=0) and its thorough-mode
#                                                   partner (SEED=1) were trained; left in the work
#                                                   folder (copy it into resources/models/ by hand)
#
# Work files go to runs/recipe/cC/foldI/ (SEED=S: runs/seedS/cC/foldI/; git-ignored). Run it from
# the repository root, with the project's venv (`make install`); about 36 min a fold on a quiet
# 2-core CPU.
set -euo pipefail
DATA=${1:?usage: [SEED=S] bash folds/recipe.sh DATA [FOLD ...]}
shift
FOLDS=${*:-0 1 2 3 4}
SEED=${SEED:-0}
[[ $SEED =~ ^(0|[1-9][0-9]*)$ ]] || { echo "SEED must be a whole number, got '$SEED'"; exit 2; }
TRAIN=${BRAINSEG_TRAIN:-.venv/bin/brainseg-train}
PYTHON=${BRAINSEG_PYTHON:-.venv/bin/python}
COMMON="--crop 128 --tumour-fraction 0.5 --patience 0 --keep last"
[ "$SEED" != 0 ] && COMMON="$COMMON --seed $SEED"
CHUNK1="$COMMON --epochs 16 --val-every 4"
CHUNK2="$COMMON --epochs 16 --val-every 8 --lr 5e-4"
CHUNK3="$COMMON --epochs 4 --val-every 4 --lr 2e-4 --missing-sequence 0.15"
CHUNK4="$COMMON --epochs 8 --val-every 8 --lr 3e-4 --missing-sequence 0.15"
for i in $FOLDS; do
  if [ "$i" = full ]; then
    name=brainseg-segmenter-resunet16
    work=runs/recipe
    [ "$SEED" != 0 ] && { name=$name-seed$SEED; work=runs/seed$SEED; }
    dest=""
    held=$work/heldout-full.txt
    mkdir -p "$work"
    echo TCGA_HT_7694_19950404 > "$held"
    split=(--val-patients "$held")
  elif [ "$SEED" = 0 ]; then
    name=brainseg-segmenter-resunet16-cv5-fold$i
    work=runs/recipe
    dest=folds/segmenter/fold$i
    split=(--folds 5 --fold "$i")
  else
    name=seg-seed$SEED-fold$i
    work=runs/seed$SEED
    dest=folds/segmenter-seed$SEED/fold$i
    held=$work/heldout$i.txt
    mkdir -p "$work"
    "$PYTHON" -c "import json, sys; print('\n'.join(json.load(open(sys.argv[1]))['training']['split']['val_patients']))" \
      "folds/segmenter/fold$i/brainseg-segmenter-resunet16-cv5-fold$i.json" > "$held"
    split=(--val-patients "$held")
  fi
  previous=""
  for c in 1 2 3 4; do
    out=$work/c$c/fold$i
    options=CHUNK$c
    if [ ! -f "$out/$name.json" ]; then
      echo "$(date +%T) fold $i chunk $c"
      mkdir -p "$out"
      init=()
      [ -n "$previous" ] && init=(--init-from "$previous")
      [ -n "$(ls -A "$out/checkpoint" 2>/dev/null)" ] && init=(--resume)  # an interrupted chunk
      # shellcheck disable=SC2086  # the options are word lists; ${init[@]+...}: bash 3.2 (macOS)
      nice -n 10 "$TRAIN" segmenter "$DATA" --out "$out" "${split[@]}" ${!options} \
        ${init[@]+"${init[@]}"} --name "$name" >> "$out.log" 2>&1 || { echo "failed: see $out.log"; exit 1; }
    fi
    previous=$out/$name.json
  done
  if [ -z "$dest" ]; then
    echo "$(date +%T) $i done: $previous"
    continue
  fi
  mkdir -p "$dest"
  cp "$previous" "${previous%.json}.safetensors" "$dest/"
  echo "$(date +%T) fold $i done: $dest"
done
