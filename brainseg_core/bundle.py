"""Model bundles: ``NAME.safetensors`` weights + ``NAME.json`` model card.

A bundle is everything needed to run a trained network: the card names the architecture and its
arguments, the input size, the normalisation, the decision thresholds, how it was trained and how
well it did; the weights are a safetensors file (never a pickle, so opening a model file cannot
run code) whose SHA-256 is recorded in the card. :func:`load_bundle` refuses any bundle whose
card, hash, normalisation or tensors do not match exactly, with a :class:`BundleError` that names
the file, says what is wrong and what to do.

The card itself (its keys, validation and reading) is :mod:`brainseg_core.model_card`, which
needs no torch; this module loads, verifies and writes the weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

import brainseg_core
from brainseg_core.atomic import atomic_write
from brainseg_core.errors import BundleError
from brainseg_core.io.volume import CHANNELS
from brainseg_core.model_card import (
    CARD_FORMAT,
    CARD_KEYS,
    WEIGHT_DTYPES,
    WEIGHT_FIELDS,
    ModelCard,
    read_card,
    read_weights,
    resolve_card_path,
)
from brainseg_core.models import ModelKind, ResUNet, build_model
from brainseg_core.preprocessing import NORMALIZATION, NORMALIZATION_ID, input_channels

__all__ = [
    "ModelBundle",
    "load_bundle",
    "save_bundle",
    "update_card",
]

#: Builder arguments naming starting weights (``pretrained`` in cards of BrainSeg 0.1): not kept.
_STARTING_WEIGHTS = frozenset({"weights", "pretrained"})
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
assert set(_DTYPES) == set(WEIGHT_DTYPES)


@dataclass
class ModelBundle:
    """A loaded, verified bundle.

    Attributes:
        card: its model card.
        model: the network in eval mode, float32, on the requested device.
        path: the card (``.json``) path.
    """

    card: ModelCard
    model: nn.Module
    path: Path

    @property
    def weights_path(self) -> Path:
        """The ``.safetensors`` file beside the card."""
        return self.path.parent / self.card.weights_file


def _arch_args(card: ModelCard) -> dict[str, Any]:
    # Starting weights only matter when training starts; the bundle's weights replace them.
    return {k: v for k, v in card.arch_args.items() if k not in _STARTING_WEIGHTS}


def _size_problem(card: ModelCard, model: nn.Module) -> str | None:
    if isinstance(model, ResUNet) and card.input_size % 2**model.depth:
        return f"input_size {card.input_size} is not divisible by 2**depth = {2**model.depth} of the ResUNet"
    channels, wanted = getattr(model, "in_channels", None), input_channels(card.context_slices)
    if isinstance(channels, int) and channels != wanted:
        return (
            f"the network takes {channels} input channels but {len(CHANNELS)} sequences with "
            f"context_slices={card.context_slices} give {wanted}"
        )
    return None


def _state_problem(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str | None:
    """What differs between two state dicts (tensor names and shapes), or None."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [
        f"{k} {tuple(got[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in sorted(set(expected) & set(got))
        if got[k].shape != expected[k].shape
    ]
    problems = []
    for label, items in (
        ("missing tensors", missing),
        ("unexpected tensors", unexpected),
        ("wrong shapes", shapes),
    ):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{label}: {', '.join(items[:5])}{more}")
    return "; ".join(problems) or None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_bundle(path: str | Path, *, device: str | torch.device = "cpu") -> ModelBundle:
    """Load and verify a bundle; never unpickles.

    Checks, in order: the files exist, the card parses and is valid (format, kind, known arch that
    serves that kind, thresholds), the channel order and normalisation match this version's, the
    weights' SHA-256 equals the card's, the safetensors file parses, its tensors match the
    architecture exactly (names and shapes, compared on the meta device before any network is
    allocated) and are finite.

    Args:
        path: the ``.json`` card, the ``.safetensors`` weights, or a folder holding one pair.
        device: where to put the model.

    Returns:
        The bundle, model in eval mode and float32.

    Raises:
        BundleError: naming the file and what is wrong, for every failed check.
    """
    card_path = resolve_card_path(path)
    card = read_card(card_path)
    if card.channel_order != list(CHANNELS):
        raise BundleError(
            card_path,
            f"the model expects channels {card.channel_order}, BrainSeg provides {list(CHANNELS)}; "
            "retrain the model with this BrainSeg",
        )
    norm_id = card.normalization.get("id")
    if norm_id != NORMALIZATION_ID:
        raise BundleError(
            card_path,
            f"the model was trained with normalization {norm_id!r} but this BrainSeg uses "
            f"{NORMALIZATION_ID!r}; retrain it with brainseg-train or use the BrainSeg version that made it",
        )
    weights_path = card_path.parent / card.weights_file
    data = read_weights(card_path, card)
    try:
        state = safetensors.torch.load(data)
    except Exception as exc:  # SafetensorError, or a header that is not JSON
        raise BundleError(
            weights_path, f"not a valid safetensors file ({exc}); reinstall the bundle"
        ) from None
    try:
        # Shapes first, on the meta device (nothing allocated): a card whose arch_args describe a
        # huge network is refused without building it.
        with torch.device("meta"):
            skeleton = build_model(card.arch, **_arch_args(card))
    except (ValueError, TypeError) as exc:
        raise BundleError(card_path, f"invalid arch_args for {card.arch}: {exc}") from None
    problem = _size_problem(card, skeleton)
    if problem:
        raise BundleError(card_path, f"{problem}; fix input_size in the card")
    problem = _state_problem(skeleton.state_dict(), state)
    if problem:
        raise BundleError(
            weights_path,
            f"the weights do not match the card's architecture {card.arch!r} with {card.arch_args} "
            f"({problem}); the card and weights belong to different models: reinstall or retrain the bundle",
        )
    bad = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise BundleError(
            weights_path,
            f"weights hold NaN or infinite values ({', '.join(bad[:3])}); training diverged: retrain",
        )
    model = build_model(card.arch, **_arch_args(card))
    model.load_state_dict(state, strict=True)
    model = model.float().eval().to(device)
    return ModelBundle(card=card, model=model, path=card_path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} into a model card (not JSON)")


def _card_json(card: ModelCard) -> str:
    return json.dumps(card.to_dict(), indent=2, ensure_ascii=False, default=_json_default) + "\n"


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` / DataParallel / DistributedDataParallel wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):  # torch.compile
            model = inner
        elif isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _file_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return stem or "model"


def save_bundle(
    model: nn.Module,
    out: str | Path,
    *,
    name: str,
    kind: ModelKind | str,
    arch: str,
    arch_args: dict[str, Any],
    input_size: int,
    thresholds: dict[str, Any],
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
    notes: str = "",
    license: str = "",
    context_slices: int = 0,
) -> Path:
    """Write a bundle: weights as safetensors and the JSON card, each atomically.

    Floating-point tensors (weights and BatchNorm statistics) are cast to ``dtype``; integer
    buffers (``num_batches_tracked``) are kept. The weights are written first, then the card with
    their SHA-256, so a reader never sees a card whose weights are not complete. An existing
    bundle of the same file name is replaced.

    Args:
        model: the trained network (``torch.compile`` / DDP wrappers are unwrapped); its tensors
            must match ``build_model(arch, **arch_args)`` exactly.
        out: a folder (the files are named after ``name``) or the ``NAME.json`` /
            ``NAME.safetensors`` path to write.
        name: display name of the model.
        kind: what the model does (a :class:`ModelKind` or its value).
        arch: architecture name (a key of ``brainseg_core.models.ARCHITECTURES``).
        arch_args: builder arguments; ``weights`` is dropped (the bundle's weights replace it; record it
            in ``training``).
        input_size: side of the square model input in pixels.
        thresholds: ``{"tumour_probability"}`` for a classifier, ``{"mask_probability",
            "min_area_px"}`` for a segmenter.
        training: free-form training summary (data, patients, split, epochs, loss, device, ...).
        metrics: validation metrics.
        dtype: storage dtype of floating tensors: float16 (default), bfloat16 or float32.
        notes: free text.
        license: licence of the weights (e.g. that of the training data).
        context_slices: neighbouring slices on either side in the network's input (module
            docstring); the model must take ``3 * (2 * context_slices + 1)`` channels.

    Returns:
        The card (``.json``) path.

    Raises:
        ValueError: for an invalid argument, card field, or a model that does not match ``arch``.
        TypeError: if ``training`` or ``metrics`` hold values JSON cannot store (nothing is written).
    """
    dtype_name = next((k for k, v in _DTYPES.items() if v == dtype), None)
    if dtype_name is None:
        raise ValueError(f"dtype must be one of torch.{', torch.'.join(_DTYPES)}, got {dtype}")
    out = Path(out)
    if out.suffix.lower() in (".json", ".safetensors"):
        card_path = out.with_suffix(".json")
    else:
        card_path = out / f"{_file_stem(name)}.json"
    weights_path = card_path.with_suffix(".safetensors")
    args = {k: v for k, v in dict(arch_args).items() if k not in _STARTING_WEIGHTS}
    card = ModelCard(
        name=name,
        kind=ModelKind(kind),
        arch=arch,
        arch_args=args,
        input_size=input_size,
        channel_order=list(CHANNELS),
        context_slices=context_slices,
        normalization=json.loads(json.dumps(NORMALIZATION)),
        thresholds=dict(thresholds),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        software_version=brainseg_core.__version__,
        weights_file=weights_path.name,
        weights_sha256="0" * 64,
        weights_dtype=dtype_name,
        training=dict(training or {}),
        metrics=dict(metrics or {}),
        license=license,
        notes=notes,
    )
    card.validate()
    _card_json(card)  # fail on non-JSON training/metrics before writing anything

    with torch.device("meta"):
        expected = build_model(arch, **args)
    state = {
        k: (t.detach().to("cpu", dtype) if t.is_floating_point() else t.detach().to("cpu"))
        .contiguous()
        .clone()
        for k, t in _unwrap(model).state_dict().items()
    }
    problem = _size_problem(card, expected) or _state_problem(expected.state_dict(), state)
    if problem:
        raise ValueError(f"cannot save this model as {arch} with {args}: {problem}")

    with atomic_write(weights_path) as tmp:
        safetensors.torch.save_file(state, str(tmp), metadata={"format": "pt", "card_format": CARD_FORMAT})
        card.weights_sha256 = _sha256(tmp)
    with atomic_write(card_path) as tmp:
        tmp.write_text(_card_json(card), encoding="utf-8")
    return card_path


def update_card(path: str | Path, **fields: Any) -> ModelCard:
    """Rewrite a bundle's card atomically, leaving the weights (and their hash) alone.

    Args:
        path: the bundle (``.json``, ``.safetensors`` or its folder).
        **fields: card keys to replace, e.g. ``metrics={...}`` (a dict value replaces the old one
            as a whole). ``format`` and the ``weights_*`` keys cannot be changed.

    Returns:
        The new card.

    Raises:
        BundleError: if the current card cannot be read.
        ValueError: for an unknown or protected key, or an invalid new value.
    """
    card_path = resolve_card_path(path)
    card = read_card(card_path)
    protected = sorted(set(fields) & set(WEIGHT_FIELDS))
    if protected:
        raise ValueError(f"update_card cannot change {', '.join(protected)}: they describe the weights file")
    unknown = sorted(set(fields) - set(CARD_KEYS))
    if unknown:
        valid = ", ".join(k for k in CARD_KEYS if k not in WEIGHT_FIELDS)
        raise ValueError(f"unknown card key(s) {', '.join(unknown)}; valid keys: {valid}")
    new = dataclasses.replace(card, **fields)
    new.validate()
    text = _card_json(new)
    with atomic_write(card_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return new
