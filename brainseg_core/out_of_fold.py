"""Rebuild a fold's out-of-fold predictions from its bundle.

A K-fold run leaves, in each fold's folder, the fold model's bundle and ``out_of_fold.npz``: its
probabilities on the patients it never saw, which ``brainseg-eval --cv`` scores and chooses the
post-processing and gate thresholds on. The ``.npz`` is derived data (about 0.9 MB a fold for the
LGG data, beside a 2.4 MB bundle), so a project can keep the bundles alone and rebuild the files
where they are needed: the bundle's card names its held-out patients (``training.split``), and the
files come from the same forward passes the trainer's final evaluation makes
(:func:`~brainseg_core.training.validation.save_out_of_fold`,
:func:`~brainseg_core.training.validation.save_gate_out_of_fold`). They are computed from the
bundle's stored (half-precision) weights, in the autocast precision the card records, so they match
the trainer's own file to within rounding, not bit for bit (on a real LGG fold: mean Dice 0.8542
against 0.8543, 0.24 % of the pixels' stored probabilities moved).

Each file records the weights that made it (:data:`WEIGHTS_KEY`: the bundle card's
``weights_sha256``, stamped by the trainer once the bundle is written and by a rebuild), so a file
left behind by other weights (a fold retrained, a bundle replaced) or holding other patients than
the card's held-out ones is rebuilt instead of scored (:func:`stale_folds`). Files written before
the stamp existed carry none and are trusted when their patients match.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainseg_core.atomic import atomic_write
from brainseg_core.crossval import OUT_OF_FOLD_FILE
from brainseg_core.errors import DataError
from brainseg_core.model_kind import ModelKind
from brainseg_core.npz import NPZ_READ_ERRORS

__all__ = [
    "WEIGHTS_KEY",
    "fold_folders",
    "held_out_patients",
    "rebuild_missing",
    "rebuild_out_of_fold",
    "stale_folds",
    "stamp_out_of_fold",
]

#: The array of an out-of-fold file that names the weights it came from (their sha256).
WEIGHTS_KEY = "weights_sha256"

# the card's ``training.precision`` (the trainer's autocast) to a precision name
_PRECISIONS = {"bfloat16": "bf16", "float16": "fp16", "fp32": "fp32", "float32": "fp32"}


def held_out_patients(card_training: Mapping[str, Any]) -> list[str]:
    """The patients a bundle was not trained on, from its card's ``training.split`` (empty when
    the model saw every patient: nothing of it is out of fold)."""
    split = card_training.get("split") or {}
    return [str(p) for p in split.get("val_patients") or []]


def fold_folders(root: str | Path) -> list[Path]:
    """The sub-folders of a K-fold run's folder that hold a model bundle, in name order.

    Raises:
        DataError: ``root`` is not a folder.
        BundleError: a sub-folder holds several bundles (which one is the fold's is unclear).
    """
    from brainseg_core.model_card import resolve_card_path

    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a folder of K-fold runs (one sub-folder per fold)")
    found = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if any(c.with_suffix(".safetensors").is_file() for c in sub.glob("*.json")):
            resolve_card_path(sub)  # raises for several bundles
            found.append(sub)
    return found


def stamp_out_of_fold(path: str | Path, weights_sha256: str) -> Path:
    """Record in an out-of-fold file which weights made it (:data:`WEIGHTS_KEY`), atomically.

    Raises:
        OSError, ValueError: the file cannot be read or written.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[WEIGHTS_KEY] = np.array(weights_sha256)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def _why_stale(fold: Path) -> str | None:
    """Why ``fold``'s out-of-fold file must be (re)built; None when it serves or the fold's model
    saw every patient (it has none)."""
    from brainseg_core.model_card import read_card, resolve_card_path

    card = read_card(resolve_card_path(fold))
    ids = held_out_patients(card.training)
    path = fold / OUT_OF_FOLD_FILE
    if not ids:
        return None
    if not path.is_file():
        return "missing"
    try:
        with np.load(path, allow_pickle=False) as z:
            stamped = str(z[WEIGHTS_KEY]) if WEIGHTS_KEY in z.files else None
            held = sorted(str(i) for i in z["patient_ids"])
    except (*NPZ_READ_ERRORS, KeyError) as exc:
        return f"unreadable ({exc})"
    if stamped is not None and stamped != card.weights_sha256:
        return "made by other weights than the fold's bundle"
    if held != sorted(ids):
        return "holds other patients than the bundle's held-out ones"
    return None


def stale_folds(root: str | Path) -> list[tuple[Path, str]]:
    """The folds of ``root`` whose ``out_of_fold.npz`` must be (re)built, each with why: missing,
    unreadable, made by other weights than the fold's bundle (its stamp), or holding other
    patients than the card's held-out ones. A model trained on every patient has no such file, and
    is not listed.

    Raises:
        DataError: ``root`` is not a folder.
        BundleError: a fold holds no valid card, or several bundles.
    """
    return [(f, why) for f in fold_folders(root) if (why := _why_stale(f)) is not None]


def rebuild_out_of_fold(
    fold: str | Path,
    data: str | Path,
    *,
    device: str = "auto",
    batch_size: int = 16,
    series: Mapping[str, str] | None = None,
    say: Callable[[str], None] | None = None,
) -> Path:
    """Write ``fold/out_of_fold.npz`` from the fold's bundle and its held-out patients in ``data``.

    Args:
        fold: a fold's folder (one bundle), or its ``.json`` card.
        data: the dataset the run was trained on (the held-out patients are read from it).
        device: where the network runs (``auto``, ``cpu``, ``cuda``...).
        batch_size: slices per forward pass.
        series: for DICOM studies, the series to read per sequence, as the run was given them
            (the card does not record them).
        say: receives one line per step and the readers' warnings.

    Returns:
        The written file.

    Raises:
        BundleError: the fold holds no valid bundle, or several.
        DataError: the card names no held-out patient, one of them is not in ``data`` or cannot be
            read, or the file cannot be written.
    """
    from brainseg_core.bundle import load_bundle
    from brainseg_core.inference.device import resolve_device, resolve_precision
    from brainseg_core.model_card import resolve_card_path
    from brainseg_core.training.data import find_labelled_patients, load_slices
    from brainseg_core.training.validation import predict_logits, save_gate_out_of_fold, save_out_of_fold

    card_path = resolve_card_path(fold)
    torch_device = resolve_device(device)
    bundle = load_bundle(card_path, device=torch_device)
    card = bundle.card
    ids = held_out_patients(card.training)
    if not ids:
        raise DataError(
            card_path, "its card names no held-out patients (training.split): the model saw every patient"
        )
    wanted = set(ids)
    patients = find_labelled_patients(Path(data))
    # read only the held-out patients when their folders carry their ids (the LGG layout), else all
    named = [p for p in patients if p.name in wanted or p.stem in wanted]
    slices = load_slices(
        named if len(named) == len(wanted) else patients,
        size=card.input_size,
        context=card.context_slices,
        series=series,
        warn=say,
    )
    missing = sorted(wanted - set(slices.patient_ids))
    if missing:
        trained_on = card.training.get("data") or "the dataset the folds were trained on"
        raise DataError(
            Path(data),
            f"the held-out patients of {card_path} are not all here (missing: {', '.join(missing)}); "
            f"pass {trained_on}",
        )
    # the trainer's order: the dataset's, restricted to the held-out patients
    val = slices.subset(ids).to(torch_device)
    if say is not None:
        say(f"{card_path.parent.name}: {len(val.patient_ids)} held-out patients, {len(val)} slices")
    amp = resolve_precision(_PRECISIONS.get(str(card.training.get("precision")), "auto"), torch_device)
    out = card_path.parent / OUT_OF_FOLD_FILE
    try:
        with torch.inference_mode():
            if card.kind is ModelKind.SEGMENTER:
                save_out_of_fold(bundle.model, val, out, batch_size=batch_size, amp=amp)
            else:
                logits = predict_logits(bundle.model, val.images, batch_size=batch_size, amp=amp)
                save_gate_out_of_fold(val, logits, out)
        return stamp_out_of_fold(out, card.weights_sha256)
    except OSError as exc:
        raise DataError(
            out, f"cannot write it ({exc.strerror or exc}); copy the folds somewhere writable"
        ) from exc


def rebuild_missing(
    root: str | Path,
    data: str | Path,
    *,
    device: str = "auto",
    batch_size: int = 16,
    series: Mapping[str, str] | None = None,
    say: Callable[[str], None] | None = None,
) -> list[Path]:
    """:func:`rebuild_out_of_fold` for each of :func:`stale_folds`.

    Returns:
        The files written (none when every fold had a file that serves).
    """
    return [
        rebuild_out_of_fold(f, data, device=device, batch_size=batch_size, series=series, say=say)
        for f, _ in stale_folds(root)
    ]
