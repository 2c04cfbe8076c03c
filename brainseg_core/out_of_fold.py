"""Rebuild a fold's out-of-fold predictions from its bundle.

A K-fold run leaves, in each fold's folder, the fold model's bundle and ``out_of_fold.npz``: its
probabilities on the patients it never saw, which ``brainseg-eval --cv`` scores and chooses the
post-processing and gate thresholds on. The ``.npz`` is derived data (about 0.9 MB a fold for the
LGG data, beside a 2.4 MB bundle), so a project can keep the bundles alone and rebuild the files
where they are needed: the bundle's card names its held-out patients (``training.split``), and the
files come from the same forward passes the trainer's final evaluation makes
(:func:`~brainseg_core.training.validation.save_out_of_fold`,
:func:`~brainseg_core.training.validation.save_gate_out_of_fold`). They are computed from the
bundle's stored (half-precision) weights, as the viewer and the CLIs run them, so they match the
trainer's own file to within that rounding, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from brainseg_core.crossval import OUT_OF_FOLD_FILE
from brainseg_core.errors import BundleError, DataError
from brainseg_core.model_kind import ModelKind

__all__ = ["fold_folders", "held_out_patients", "rebuild_missing", "rebuild_out_of_fold"]


def held_out_patients(card_training: dict) -> list[str]:
    """The patients a bundle was not trained on, from its card's ``training.split``.

    Raises:
        ValueError: when the card names none (the model saw every patient: nothing is out of fold).
    """
    split = card_training.get("split") or {}
    ids = [str(p) for p in split.get("val_patients") or []]
    if not ids:
        raise ValueError("its card names no held-out patients (training.split.val_patients)")
    return ids


def fold_folders(root: str | Path) -> list[Path]:
    """The sub-folders of a K-fold run's folder that hold one model bundle each, in name order."""
    from brainseg_core.model_card import resolve_card_path

    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a folder of K-fold runs (one sub-folder per fold)")
    found = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            resolve_card_path(sub)
        except BundleError:
            continue
        found.append(sub)
    return found


def rebuild_out_of_fold(
    fold: str | Path,
    data: str | Path,
    *,
    device: str = "auto",
    batch_size: int = 16,
    say: Callable[[str], None] | None = None,
) -> Path:
    """Write ``fold/out_of_fold.npz`` from the fold's bundle and its held-out patients in ``data``.

    Args:
        fold: a fold's folder (one bundle), or its ``.json`` card.
        data: the dataset the run was trained on (the held-out patients are read from it).
        device: where the network runs (``auto``, ``cpu``, ``cuda``...; autocast as the pipeline).
        batch_size: slices per forward pass.
        say: receives one line per step and the readers' warnings.

    Returns:
        The written file.

    Raises:
        BundleError: the fold holds no (valid) bundle.
        DataError: a held-out patient is not in ``data`` or cannot be read; the card names no
            held-out patient.
    """
    from brainseg_core.bundle import load_bundle
    from brainseg_core.inference.device import resolve_device, resolve_precision
    from brainseg_core.model_card import resolve_card_path
    from brainseg_core.training.data import find_labelled_patients, load_slices
    from brainseg_core.training.validation import predict_logits, save_gate_out_of_fold, save_out_of_fold

    card_path = resolve_card_path(fold)
    torch_device = resolve_device(device)
    bundle = load_bundle(card_path, device=torch_device)
    try:
        ids = held_out_patients(bundle.card.training)
    except ValueError as exc:
        raise DataError(card_path, str(exc)) from exc
    wanted = set(ids)
    patients = find_labelled_patients(Path(data))
    # read only the held-out patients when their folders carry their ids (the LGG layout), else all
    named = [p for p in patients if p.name in wanted or p.stem in wanted]
    card = bundle.card
    slices = load_slices(
        named if len(named) == len(wanted) else patients,
        size=card.input_size,
        context=card.context_slices,
        warn=say,
    )
    missing = sorted(wanted - set(slices.patient_ids))
    if missing:
        raise DataError(Path(data), f"held-out patients of {card_path.name} not found: {', '.join(missing)}")
    # the trainer's order: the dataset's, restricted to the held-out patients
    val = slices.subset(ids).to(torch_device)
    if say is not None:
        say(f"{card_path.parent.name}: {len(val.patient_ids)} held-out patients, {len(val)} slices")
    amp = resolve_precision("auto", torch_device)
    out = card_path.parent / OUT_OF_FOLD_FILE
    with torch.inference_mode():
        if card.kind is ModelKind.SEGMENTER:
            return save_out_of_fold(bundle.model, val, out, batch_size=batch_size, amp=amp)
        logits = predict_logits(bundle.model, val.images, batch_size=batch_size, amp=amp)
        return save_gate_out_of_fold(val, logits, out)


def rebuild_missing(
    root: str | Path,
    data: str | Path,
    *,
    device: str = "auto",
    batch_size: int = 16,
    say: Callable[[str], None] | None = None,
) -> list[Path]:
    """:func:`rebuild_out_of_fold` for each fold of ``root`` that has a bundle but no file.

    Returns:
        The files written (none when every fold had its file).
    """
    return [
        rebuild_out_of_fold(f, data, device=device, batch_size=batch_size, say=say)
        for f in fold_folders(root)
        if not (f / OUT_OF_FOLD_FILE).is_file()
    ]
