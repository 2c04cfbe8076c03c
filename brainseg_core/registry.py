"""Which models to run: shipped bundles, the user's own bundles, or files named explicitly.

Two folders hold bundles (``NAME.json`` + ``NAME.safetensors``, directly or one folder down):

* shipped: :func:`shipped_models_dir` = ``resources/models`` (read-only, part of the install);
* user: :func:`user_models_dir` = ``<platformdirs user data dir>/models``, where
  ``brainseg-train`` writes and :func:`install_bundle` copies; ``BRAINSEG_USER_DATA`` replaces the
  user data dir (tests, portable installs).

:func:`resolve_models` picks, for each kind: an explicit path, else the newest user bundle (by
the card's ``created``), else the newest shipped bundle.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import platformdirs
import torch

from brainseg_core.atomic import atomic_write
from brainseg_core.bundle import KINDS, ModelBundle, ModelCard, load_bundle, read_card, resolve_card_path
from brainseg_core.errors import BundleError
from brainseg_core.resources import resource_path

__all__ = [
    "BundleInfo",
    "explicit_info",
    "install_bundle",
    "list_bundles",
    "resolve_models",
    "shipped_models_dir",
    "user_data_dir",
    "user_models_dir",
]

log = logging.getLogger(__name__)

Source = Literal["shipped", "user", "explicit"]


@dataclass(frozen=True)
class BundleInfo:
    """A bundle found on disk, known from its card only (weights not read).

    Attributes:
        path: the card (``.json``) path.
        card: the parsed, validated card.
        source: ``"shipped"``, ``"user"`` or ``"explicit"``.
    """

    path: Path
    card: ModelCard
    source: Source


def shipped_models_dir() -> Path:
    """``resources/models`` of this installation (see :func:`brainseg_core.resources.resource_path`)."""
    return resource_path("models")


def user_data_dir() -> Path:
    """The per-user BrainSeg data folder: ``$BRAINSEG_USER_DATA`` or platformdirs' user data dir."""
    env = os.environ.get("BRAINSEG_USER_DATA")
    return Path(env) if env else Path(platformdirs.user_data_dir("BrainSeg", "BrainSeg"))


def user_models_dir() -> Path:
    """Folder of the user's trained and installed bundles (may not exist yet)."""
    return user_data_dir() / "models"


def _created(card: ModelCard) -> datetime:
    try:
        created = datetime.fromisoformat(card.created)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def _scan(folder: Path, source: Source, on_error: Callable[[BundleError], None]) -> list[BundleInfo]:
    if not folder.is_dir():
        return []
    found = []
    for card_path in sorted([*folder.glob("*.json"), *folder.glob("*/*.json")]):
        try:
            card = read_card(card_path)
            weights = card_path.parent / card.weights_file
            if not weights.is_file():
                raise BundleError(weights, f"weights file named by {card_path.name} not found")
        except BundleError as exc:
            on_error(exc)
            continue
        found.append(BundleInfo(card_path, card, source))
    return found


def _log_error(exc: BundleError) -> None:
    log.warning("skipping model bundle: %s", exc)


def list_bundles(
    kind: str | None = None, *, on_error: Callable[[BundleError], None] | None = None
) -> list[BundleInfo]:
    """Every readable bundle in the user and shipped folders, reading cards only.

    Args:
        kind: ``"classifier"`` or ``"segmenter"`` to keep one kind; None for all.
        on_error: called with a :class:`BundleError` for each card that cannot be read (bad JSON,
            invalid card, weights missing); by default such cards are logged as warnings. They
            are skipped either way.

    Returns:
        User bundles then shipped ones, each group newest first (by the card's ``created``).

    Raises:
        ValueError: for an unknown ``kind``.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)} or None, got {kind!r}")
    report = on_error or _log_error
    out = []
    for folder, source in ((user_models_dir(), "user"), (shipped_models_dir(), "shipped")):
        infos = [i for i in _scan(folder, source, report) if kind is None or i.card.kind == kind]
        out += sorted(infos, key=lambda i: _created(i.card), reverse=True)
    return out


def _resolve_one(
    kind: str, explicit: str | Path | None, device: str | torch.device, required: bool
) -> ModelBundle | None:
    if explicit is not None:
        bundle = load_bundle(explicit, device=device)
        if bundle.card.kind != kind:
            raise BundleError(
                bundle.path,
                f"this is a {bundle.card.kind} model, but it was given as the {kind}; swap the two",
            )
        return bundle
    candidates = list_bundles(kind)
    if candidates:
        return load_bundle(candidates[0].path, device=device)
    if not required:
        return None
    raise BundleError(
        user_models_dir(),
        f"no {kind} model found here or in {shipped_models_dir()}; train one with brainseg-train, "
        f"copy a bundle (NAME.json + NAME.safetensors) into {user_models_dir()}, or pass its path explicitly",
    )


def resolve_models(
    classifier: str | Path | None = None,
    segmenter: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
) -> tuple[ModelBundle | None, ModelBundle]:
    """Load the classifier and segmenter to run.

    For each kind: the explicit path when given, else the newest user bundle, else the newest
    shipped bundle. A chosen bundle that fails verification raises rather than silently falling
    back to another model.

    Args:
        classifier: explicit classifier bundle (``.json``, ``.safetensors`` or folder), or None.
        segmenter: explicit segmenter bundle, or None.
        device: where to load the models.

    Returns:
        ``(classifier, segmenter)``; the classifier is None only when none is given or installed
        anywhere (then every slice is segmented).

    Raises:
        BundleError: when no segmenter exists anywhere (saying how to get one), when a bundle
            fails verification, or when an explicit bundle is of the wrong kind.
    """
    seg = _resolve_one("segmenter", segmenter, device, required=True)
    cls = _resolve_one("classifier", classifier, device, required=False)
    assert seg is not None
    return cls, seg


def install_bundle(card_path: str | Path, *, overwrite: bool = False) -> Path:
    """Verify a bundle and copy it into :func:`user_models_dir`.

    Args:
        card_path: the bundle (``.json``, ``.safetensors`` or its folder).
        overwrite: replace an installed bundle with the same file names.

    Returns:
        The installed card path.

    Raises:
        BundleError: if the bundle fails verification (see :func:`load_bundle`) or a bundle with
            the same file names is installed and ``overwrite`` is False.
    """
    source = load_bundle(card_path)
    dest_dir = user_models_dir()
    dest_card = dest_dir / source.path.name
    dest_weights = dest_dir / source.card.weights_file
    if dest_card.exists() and dest_card.resolve() == source.path.resolve():
        return dest_card  # already installed
    if not overwrite:
        for dest in (dest_card, dest_weights):
            if dest.exists():
                raise BundleError(
                    dest,
                    "a bundle with this file name is already installed; remove it or install with overwrite",
                )
    # Weights first, so an installed card always finds complete weights.
    for src, dest in ((source.weights_path, dest_weights), (source.path, dest_card)):
        with atomic_write(dest) as tmp:
            shutil.copyfile(src, tmp)
    return dest_card


def explicit_info(path: str | Path) -> BundleInfo:
    """The card of an explicitly named bundle, for listings next to :func:`list_bundles`.

    Args:
        path: the bundle (``.json``, ``.safetensors`` or its folder).

    Returns:
        Its :class:`BundleInfo` with source ``"explicit"``.

    Raises:
        BundleError: if the card cannot be read.
    """
    card_path = resolve_card_path(path)
    return BundleInfo(card_path, read_card(card_path), "explicit")
