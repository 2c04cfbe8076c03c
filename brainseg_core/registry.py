"""Which models to run: shipped bundles, the user's own bundles, or files named explicitly.

Two folders hold bundles (``NAME.json`` + ``NAME.safetensors``, directly or one folder down):

* shipped: :func:`shipped_models_dir` = ``resources/models`` (read-only, part of the install);
* user: :func:`user_models_dir` = ``<platformdirs user data dir>/models``, where
  ``brainseg-train`` writes and :func:`install_bundle` copies; ``BRAINSEG_USER_DATA`` replaces the
  user data dir (tests, portable installs).

:func:`resolve_models` picks, for each kind: an explicit path, else the user's choice for that kind
(:func:`pin_bundle`: one bundle by name; :func:`use_default_models`: the shipped bundle), else the
newest user bundle (by the card's ``created``), else the newest shipped bundle. The choice is kept
in ``<user data dir>/choice.json``.

:func:`install_bundle` refuses a bundle without a validation metric, or one whose metric is below
the model it would replace (segmenter: mean per-patient Dice; classifier: ROC AUC), unless
``force``; :func:`remove_bundle` deletes an installed user bundle. ``brainseg-models`` is the
command line for all of this.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from brainseg_core.atomic import atomic_write
from brainseg_core.errors import BundleError
from brainseg_core.model_card import (
    KEY_METRICS,
    ModelCard,
    key_metric,
    read_card,
    read_weights,
    resolve_card_path,
)
from brainseg_core.model_kind import KIND_NAMES, ModelKind
from brainseg_core.resources import resource_path
from brainseg_core.user_data import user_data_dir

if TYPE_CHECKING:
    import torch

    from brainseg_core.bundle import ModelBundle

__all__ = [
    "BundleInfo",
    "InstallRefused",
    "active_bundle",
    "find_bundle",
    "install_bundle",
    "list_bundles",
    "model_choice",
    "open_bundle",
    "pin_bundle",
    "remove_bundle",
    "resolve_cards",
    "resolve_models",
    "shipped_models_dir",
    "use_default_models",
    "user_data_dir",
    "user_models_dir",
]

log = logging.getLogger(__name__)

#: Where a bundle was found: the shipped or the user's models folder, or a file named explicitly.
Source = Literal["shipped", "user", "file"]


@dataclass(frozen=True)
class BundleInfo:
    """A bundle found on disk, known from its card only (weights not read).

    Attributes:
        path: the card (``.json``) path.
        card: the parsed, validated card.
        source: ``"shipped"``, ``"user"`` or ``"file"`` (a path given explicitly).
    """

    path: Path
    card: ModelCard
    source: Source


def shipped_models_dir() -> Path:
    """``resources/models`` of this installation (see :func:`brainseg_core.resources.resource_path`)."""
    return resource_path("models")


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
    # a segmenter's thorough-mode ensemble members belong to it, not offered as models of their own
    members = _named_members(i.card for i in found)
    return [i for i in found if (i.card.name, i.card.weights_sha256) not in members]


def _named_members(cards: Iterable[ModelCard]) -> set[tuple[str, str]]:
    """The (name, weights hash) of every thorough-ensemble member that ``cards`` name."""
    return {(m["name"], m["weights_sha256"]) for card in cards for m in card.thorough.get("ensemble", [])}


def _log_error(exc: BundleError) -> None:
    log.warning("skipping model bundle: %s", exc)


def list_bundles(
    kind: str | None = None, *, on_error: Callable[[BundleError], None] | None = None
) -> list[BundleInfo]:
    """Every readable bundle in the user and shipped folders, reading cards only.

    A bundle that a segmenter's card in the same folder names as a member of its thorough-mode
    ensemble (:mod:`brainseg_core.thorough`) is part of that segmenter and not listed.

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
    kind = _kind(kind)
    report = on_error or _log_error
    out = []
    folders: tuple[tuple[Path, Source], ...] = (
        (user_models_dir(), "user"),
        (shipped_models_dir(), "shipped"),
    )
    for folder, source in folders:
        infos = [i for i in _scan(folder, source, report) if kind is None or i.card.kind == kind]
        out += sorted(infos, key=lambda i: _created(i.card), reverse=True)
    return out


#: Value of :func:`model_choice` meaning "the shipped bundle".
DEFAULT_CHOICE = "default"
_CHOICE_FILE = "choice.json"


def _kind(kind: ModelKind | str | None) -> ModelKind | None:
    if kind is None:
        return None
    if kind not in KIND_NAMES:
        raise ValueError(f"kind must be one of {', '.join(sorted(KIND_NAMES))} or None, got {kind!r}")
    return ModelKind(kind)


class InstallRefused(BundleError):
    """:func:`install_bundle` would replace a better model (or cannot tell); ``force`` overrides."""


def model_choice() -> dict[str, str]:
    """The user's choice per kind: a bundle name, ``"default"`` (shipped) or absent (newest).

    An unreadable choice file counts as no choice (and is logged).
    """
    path = user_data_dir() / _CHOICE_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s: ignoring the model choice file: %s", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: str(v) for k, v in data.items() if k in KIND_NAMES and isinstance(v, str)}


def _set_choice(kind: str, value: str | None) -> None:
    choice = model_choice()
    if value is None:
        choice.pop(kind, None)
    else:
        choice[kind] = value
    folder = user_data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / _CHOICE_FILE) as tmp:
        tmp.write_text(json.dumps(choice, indent=1) + "\n", encoding="utf-8")


def find_bundle(name: str, kind: str | None = None) -> BundleInfo:
    """The bundle whose card is named ``name`` (a user bundle before a shipped one).

    Raises:
        BundleError: when no bundle has that name (listing the names there are).
    """
    infos = list_bundles(kind)
    for info in infos:
        if info.card.name == name:
            return info
    names = ", ".join(sorted({i.card.name for i in infos})) or "none"
    raise BundleError(user_models_dir(), f"no model named {name!r}; installed and shipped models: {names}")


def active_bundle(kind: str) -> BundleInfo | None:
    """The bundle :func:`resolve_models` uses for ``kind`` when none is named explicitly.

    Args:
        kind: ``"classifier"`` or ``"segmenter"``.

    Returns:
        Its :class:`BundleInfo`, or None when there is none of that kind.

    Raises:
        BundleError: when the user pinned a bundle that no longer exists.
    """
    choice = model_choice().get(kind)
    candidates = list_bundles(kind)
    if choice == DEFAULT_CHOICE:
        shipped = [i for i in candidates if i.source == "shipped"]
        return shipped[0] if shipped else None
    if choice is not None:
        try:
            return find_bundle(choice, kind)
        except BundleError as exc:
            raise BundleError(
                exc.path,
                f"the pinned {kind} {choice!r} is gone; run `brainseg-models use-default` or pin another",
            ) from None
    return candidates[0] if candidates else None


def pin_bundle(name: str) -> BundleInfo:
    """Use the bundle named ``name`` for its kind from now on (until unpinned or removed).

    Raises:
        BundleError: when no bundle has that name.
    """
    info = find_bundle(name)
    _set_choice(info.card.kind, name)
    return info


def use_default_models(kind: str | None = None) -> None:
    """Use the shipped bundle of ``kind`` (both kinds when None), whatever the user installed.

    Raises:
        ValueError: for an unknown kind.
    """
    kind = _kind(kind)
    for k in (kind,) if kind else tuple(ModelKind):
        _set_choice(k, DEFAULT_CHOICE)


def remove_bundle(name: str) -> Path:
    """Delete the installed user bundle named ``name`` (shipped bundles cannot be removed), with the
    thorough-mode ensemble members its card names beside it: each only when its card there has the
    named name and hash and no other card in the folder names it too.

    A pin on it is dropped, so the kind falls back to the newest remaining bundle.

    Returns:
        The removed card's path.

    Raises:
        BundleError: when no user bundle has that name.
    """
    info = find_bundle(name)
    if info.source != "user":
        raise BundleError(
            info.path, "is shipped with BrainSeg and cannot be removed; use another model instead"
        )
    # Card first: a listing never sees a card whose weights are gone; its members after it
    weights = info.path.parent / info.card.weights_file
    info.path.unlink()
    weights.unlink(missing_ok=True)
    still_named = _named_members(i.card for i in _scan(info.path.parent, "user", lambda _exc: None))
    for member in info.card.thorough.get("ensemble", []):
        card = info.path.parent / f"{member['name']}.json"
        if (member["name"], member["weights_sha256"]) in still_named:
            continue  # another segmenter's ensemble needs it
        with contextlib.suppress(BundleError, OSError):
            found = read_card(card)
            if (found.name, found.weights_sha256) == (member["name"], member["weights_sha256"]):
                card.unlink()
                (card.parent / found.weights_file).unlink(missing_ok=True)
    if model_choice().get(info.card.kind) == name:
        _set_choice(info.card.kind, None)
    return info.path


def _card_file(path: str | Path) -> BundleInfo:
    """A bundle named by path, known from its card (weights not read)."""
    card_path = resolve_card_path(path)
    return BundleInfo(card_path, read_card(card_path), "file")


def open_bundle(path: str | Path) -> BundleInfo:
    """A bundle the user named (``.json``, ``.safetensors`` or folder), its weights checked against
    its card's SHA-256 but no network built (:func:`~brainseg_core.bundle.load_bundle` does that).

    Raises:
        BundleError: when the card is missing or invalid, or the weights missing or damaged.
    """
    info = _card_file(path)
    read_weights(info.path, info.card)
    return info


def _resolve_card(kind: str, explicit: str | Path | None, required: bool) -> BundleInfo | None:
    """The bundle to run for ``kind``, known from its card (its weights are the caller's to check
    or load)."""
    if explicit is not None:
        info = _card_file(explicit)
        if info.card.kind != kind:
            raise BundleError(
                info.path, f"this is a {info.card.kind} model, but it was given as the {kind}; swap the two"
            )
        return info
    active = active_bundle(kind)
    if active is not None or not required:
        return active
    raise BundleError(
        user_models_dir(),
        f"no {kind} model found here or in {shipped_models_dir()}; train one with brainseg-train, "
        f"copy a bundle (NAME.json + NAME.safetensors) into {user_models_dir()}, or pass its path explicitly",
    )


def _checked(info: BundleInfo | None) -> BundleInfo | None:
    """``info`` once its weights match its card (a damaged or modified file is refused here)."""
    if info is not None:
        read_weights(info.path, info.card)
    return info


def resolve_cards(
    classifier: str | Path | None = None, segmenter: str | Path | None = None
) -> tuple[BundleInfo | None, BundleInfo]:
    """The classifier and segmenter to run, known from their cards (networks not built).

    For each kind: the explicit path when given, else :func:`active_bundle` (the user's pinned or
    default choice, else the newest user bundle, else the newest shipped bundle). The weights'
    SHA-256 is checked against the card (:func:`~brainseg_core.model_card.read_weights`); the rest
    of :func:`~brainseg_core.bundle.load_bundle`'s checks wait until the networks are loaded.

    Args:
        classifier: explicit classifier bundle (``.json``, ``.safetensors`` or folder), or None.
        segmenter: explicit segmenter bundle, or None.

    Returns:
        ``(classifier, segmenter)``; the classifier is None only when none is given or installed
        anywhere (then every slice is segmented).

    Raises:
        BundleError: when no segmenter exists anywhere (saying how to get one), when a card is
            unreadable or its weights are missing or damaged, or when an explicit bundle is of
            the wrong kind.
    """
    seg = _checked(_resolve_card("segmenter", segmenter, required=True))
    cls = _checked(_resolve_card("classifier", classifier, required=False))
    assert seg is not None
    return cls, seg


def resolve_models(
    classifier: str | Path | None = None,
    segmenter: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
) -> tuple[ModelBundle | None, ModelBundle]:
    """Load the classifier and segmenter to run (chosen by :func:`resolve_cards`).

    A chosen bundle that fails verification raises rather than silently falling back to another
    model.

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
    from brainseg_core.bundle import load_bundle  # the networks and torch, only when loading

    # chosen like resolve_cards, and checked (weights included) once, by load_bundle
    seg = _resolve_card("segmenter", segmenter, required=True)
    assert seg is not None
    loaded_seg = load_bundle(seg.path, device=device)
    cls = _resolve_card("classifier", classifier, required=False)
    return (None if cls is None else load_bundle(cls.path, device=device)), loaded_seg


def install_bundle(card_path: str | Path, *, overwrite: bool = False, force: bool = False) -> Path:
    """Verify a bundle, check it is no worse than the model it replaces, and copy it in.

    The installed bundle becomes the active one of its kind (it is pinned, replacing an earlier pin
    or "use default" choice for that kind).

    Args:
        card_path: the bundle (``.json``, ``.safetensors`` or its folder).
        overwrite: replace an installed bundle with the same file names.
        force: install even when the card has no validation metric or a lower one than the
            active model of its kind (:data:`KEY_METRICS`).

    A segmenter's thorough-mode ensemble members (:mod:`brainseg_core.thorough`) are copied with
    it, checked against the hashes its card names.

    Returns:
        The installed card path.

    Raises:
        InstallRefused: the metric check failed and ``force`` is False (the message says why).
        BundleError: if the bundle fails verification (see :func:`load_bundle`) or a bundle with
            the same file names is installed and ``overwrite`` is False.
    """
    from brainseg_core.bundle import load_bundle  # verifies the weights too
    from brainseg_core.thorough import thorough_mode

    source = load_bundle(card_path)
    if not force:
        _check_no_worse(source.card, source.path)
    members = thorough_mode(source).ensemble if source.card.thorough else ()
    dest_dir = user_models_dir()
    dest_card = dest_dir / source.path.name
    if dest_card.exists() and dest_card.resolve() == source.path.resolve():
        return dest_card  # already installed
    # members first, then weights, then the card: an installed card always finds what it names. A
    # member already there with the same name and hash (another segmenter's) is kept as it is; any
    # other file of that name is refused, even with overwrite (it may be the user's own model).
    pairs = []
    for b in members:
        there = dest_dir / b.path.name
        if there.exists():
            found = _card_file(there).card if there.is_file() else None
            if found is None or (found.name, found.weights_sha256) != (b.card.name, b.card.weights_sha256):
                raise BundleError(
                    there,
                    f"is installed and is not {source.card.name}'s ensemble member {b.card.name} "
                    "(other weights): remove that bundle first (brainseg-models remove)",
                )
            continue
        pairs += [(b.weights_path, dest_dir / b.card.weights_file), (b.path, there)]
    pairs += [(source.weights_path, dest_dir / source.card.weights_file), (source.path, dest_card)]
    if not overwrite:
        for _, dest in pairs:
            if dest.exists():
                raise BundleError(
                    dest,
                    "a bundle with this file name is already installed; remove it or install with overwrite",
                )
    for src, dest in pairs:
        with atomic_write(dest) as tmp:
            shutil.copyfile(src, tmp)
    _set_choice(source.card.kind, source.card.name)
    return dest_card


def _check_no_worse(card: ModelCard, path: Path) -> None:
    metric = KEY_METRICS[card.kind]
    new = key_metric(card)
    if new is None:
        raise InstallRefused(
            path,
            f"the card has no validation {metric}, so it cannot be checked against the active {card.kind}; "
            "evaluate it (brainseg-eval) or install with --force",
        )
    try:
        current = active_bundle(card.kind)
    except BundleError:
        return  # the active choice is broken: anything readable is an improvement
    old = key_metric(current.card) if current is not None else None
    if current is not None and old is not None and new < old:
        raise InstallRefused(
            path,
            f"its validation {metric} {new:.3f} is below the active {card.kind} {current.card.name!r} "
            f"({old:.3f}); the two may have been validated on different patients, so compare them with "
            "brainseg-eval on the same data, then install with --force to use it anyway",
        )
