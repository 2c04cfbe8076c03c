"""Model cards: the JSON half of a bundle, read and checked without loading any network.

A card names the architecture and its arguments, the input size, the normalisation, the decision
thresholds, how the model was trained and how well it did, and the SHA-256 of its weights (see
:mod:`brainseg_core.bundle`, which loads and writes the weights). This module imports neither
torch nor the networks, so listings, the viewer and the command lines' argument checks can read
cards at once.

Card keys (format ``brainseg-model-card/1``)::

    format, name, kind ("classifier" | "segmenter"), arch, arch_args, input_size, channel_order,
    context_slices, normalization, thresholds, thorough, training, metrics, created (ISO-8601 UTC),
    software_version, weights_file, weights_sha256, weights_dtype, license, notes

``context_slices`` (default 0) is how many neighbouring slices on either side the network sees
with each slice (:func:`brainseg_core.preprocessing.model_input`); its input then has
``len(channel_order) * (2 * context_slices + 1)`` channels. ``thorough`` (a segmenter's only) says
what its "thorough" mode runs: ``{"ensemble": [{"name", "weights_sha256"}, ...], "flip_tta": bool,
"thresholds": {...}, "metrics": {...}}``, the other segmenters averaged with it (bundles beside
this card), and the thresholds and cross-validated metrics of that ensemble
(:mod:`brainseg_core.thorough`). ``thorough``, ``training``, ``metrics``,
``license`` and ``notes`` are optional (default empty); keys this version does not know are kept
in :attr:`ModelCard.extra` and written back unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import brainseg_core
from brainseg_core.errors import BundleError
from brainseg_core.model_kind import ARCH_KINDS, KIND_NAMES, ModelKind, arch_kind
from brainseg_core.model_ref import ModelRef
from brainseg_core.thresholds import MAX_GATE_REACH, region_rule

__all__ = [
    "CARD_FORMAT",
    "CARD_KEYS",
    "KEY_METRICS",
    "OPTIONAL_KEYS",
    "THRESHOLD_KEYS",
    "WEIGHT_DTYPES",
    "WEIGHT_FIELDS",
    "ModelCard",
    "bundle_summary",
    "key_metric",
    "key_metric_text",
    "read_card",
    "read_weights",
    "resolve_card_path",
]

CARD_FORMAT = "brainseg-model-card/1"
#: Threshold keys each kind's card must carry.
THRESHOLD_KEYS: dict[ModelKind, tuple[str, ...]] = {
    ModelKind.CLASSIFIER: ("tumour_probability",),
    ModelKind.SEGMENTER: ("mask_probability", "min_area_px"),
}
#: Card keys in the order they are written.
CARD_KEYS = (
    "format",
    "name",
    "kind",
    "arch",
    "arch_args",
    "input_size",
    "channel_order",
    "context_slices",
    "normalization",
    "thresholds",
    "thorough",
    "training",
    "metrics",
    "created",
    "software_version",
    "weights_file",
    "weights_sha256",
    "weights_dtype",
    "license",
    "notes",
)
OPTIONAL_KEYS = ("context_slices", "thorough", "training", "metrics", "license", "notes")
#: Card keys that describe the weights file: only :func:`~brainseg_core.bundle.save_bundle` writes them.
WEIGHT_FIELDS = ("format", "weights_file", "weights_sha256", "weights_dtype")
#: The precisions weights may be stored in (a card's ``weights_dtype``).
WEIGHT_DTYPES = ("float16", "bfloat16", "float32")
_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar", ".h5", ".hdf5", ".keras"}


@dataclass
class ModelCard:
    """The JSON card of a bundle (see the module docstring for the keys).

    Build one with :meth:`from_dict` (validating) or let :func:`save_bundle` fill it in.
    """

    name: str
    kind: ModelKind
    arch: str
    arch_args: dict[str, Any]
    input_size: int
    channel_order: list[str]
    normalization: dict[str, Any]
    thresholds: dict[str, Any]
    created: str
    software_version: str
    weights_file: str
    weights_sha256: str
    weights_dtype: str
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    notes: str = ""
    context_slices: int = 0
    thorough: dict[str, Any] = field(default_factory=dict)
    format: str = CARD_FORMAT
    #: Keys not known to this version, kept so rewriting a newer card does not lose them.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> ModelRef:
        """This model's :class:`ModelRef`."""
        return ModelRef(self.name, self.weights_sha256)

    def to_dict(self) -> dict[str, Any]:
        """The card as a JSON-ready dict, keys in :data:`CARD_KEYS` order, then :attr:`extra`."""
        out = {key: getattr(self, key) for key in CARD_KEYS}
        if not self.thorough:  # a segmenter without a thorough ensemble: the card says nothing
            del out["thorough"]
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Validate a parsed card.

        Args:
            data: the JSON object of a card.

        Returns:
            The card.

        Raises:
            ValueError: naming the missing or invalid key and what it should hold.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a model card must be a JSON object, got {type(data).__name__}")
        fmt = data.get("format", CARD_FORMAT)
        if fmt != CARD_FORMAT:
            raise ValueError(
                f"unsupported card format {fmt!r}; this BrainSeg ({brainseg_core.__version__}) reads "
                f"{CARD_FORMAT!r} cards: use the BrainSeg version that wrote it, or retrain"
            )
        missing = [k for k in CARD_KEYS if k not in data and k not in OPTIONAL_KEYS]
        if missing:
            raise ValueError(f"the card lacks required key(s) {', '.join(missing)}")
        known = {k: data[k] for k in CARD_KEYS if k in data}
        card = cls(**known, extra={k: v for k, v in data.items() if k not in CARD_KEYS})
        card.validate()
        return card

    def validate(self) -> None:
        """Check every field's type and value.

        Raises:
            ValueError: naming the invalid key and what it should hold.
        """

        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ValueError(f"card key {key!r} must be {what}, got {getattr(self, key)!r}")

        for key in (
            "name",
            "created",
            "software_version",
            "weights_file",
            "weights_dtype",
            "license",
            "notes",
        ):
            need(isinstance(getattr(self, key), str), key, "a string")
        need(bool(self.name.strip()), "name", "a non-empty string")
        need(self.kind in KIND_NAMES, "kind", f"one of {', '.join(KIND_NAMES)}")
        self.kind = ModelKind(self.kind)
        need(
            self.arch in ARCH_KINDS,
            "arch",
            f"a known architecture ({', '.join(sorted(ARCH_KINDS))}); update BrainSeg to load this model",
        )
        if arch_kind(self.arch) != self.kind:
            raise ValueError(
                f"arch {self.arch!r} is a {arch_kind(self.arch)}, but the card's kind is '{self.kind}'"
            )
        for key in ("arch_args", "normalization", "thresholds", "thorough", "training", "metrics"):
            need(isinstance(getattr(self, key), dict), key, "a JSON object")
        need(
            isinstance(self.input_size, int)
            and not isinstance(self.input_size, bool)
            and self.input_size > 0,
            "input_size",
            "a positive integer",
        )
        need(isinstance(self.channel_order, list), "channel_order", "a list of channel names")
        need(
            isinstance(self.context_slices, int)
            and not isinstance(self.context_slices, bool)
            and self.context_slices >= 0,
            "context_slices",
            "an integer >= 0 (neighbouring slices on either side)",
        )
        need(
            isinstance(self.weights_sha256, str)
            and re.fullmatch(r"[0-9a-f]{64}", self.weights_sha256) is not None,
            "weights_sha256",
            "64 lower-case hex digits",
        )
        need(
            Path(self.weights_file).name == self.weights_file and self.weights_file.endswith(".safetensors"),
            "weights_file",
            "a bare NAME.safetensors file name beside the card",
        )
        need(self.weights_dtype in WEIGHT_DTYPES, "weights_dtype", f"one of {', '.join(WEIGHT_DTYPES)}")
        for key in THRESHOLD_KEYS[self.kind]:
            if key not in self.thresholds:
                raise ValueError(f"a {self.kind} card needs thresholds.{key}")
        _check_thresholds(self.thresholds, "thresholds")
        if self.thorough:
            self._check_thorough()

    def _check_thorough(self) -> None:
        t = self.thorough
        if self.kind != ModelKind.SEGMENTER:
            raise ValueError(f"card key 'thorough' belongs to a segmenter's card, not a {self.kind}'s")
        members = t.get("ensemble")
        ok = (
            isinstance(members, list)
            and bool(members)
            and all(
                isinstance(m, dict)
                and isinstance(m.get("name"), str)
                and m["name"].strip()
                and Path(m["name"]).name == m["name"]
                and re.fullmatch(r"[0-9a-f]{64}", str(m.get("weights_sha256", ""))) is not None
                for m in members
            )
        )
        if not ok or not isinstance(members, list):  # (the second test only narrows the type)
            raise ValueError(
                'thorough.ensemble must be a non-empty list of {"name": bundle name beside this card, '
                f'"weights_sha256": 64 hex digits}}, got {members!r}; write the section with brainseg-eval '
                "--cv A --with B --write-card BUNDLE --member OTHER, or delete the card's thorough key"
            )
        names = [m["name"] for m in members]
        if self.name in names or len(set(names)) != len(names):
            raise ValueError(
                f"thorough.ensemble must name other segmenters than {self.name!r}, each once, got {names}; "
                "write the section with brainseg-eval --cv A --with B --write-card BUNDLE --member OTHER"
            )
        if not isinstance(t.get("flip_tta", False), bool):
            raise ValueError(f"thorough.flip_tta must be true or false, got {t['flip_tta']!r}")
        for key in ("thresholds", "metrics"):
            if not isinstance(t.get(key, {}), dict):
                raise ValueError(f"thorough.{key} must be a JSON object, got {t[key]!r}")
        _check_thresholds(t.get("thresholds", {}), "thorough.thresholds")


def _check_thresholds(thresholds: dict[str, Any], where: str) -> None:
    """Each threshold's type and range (``where``: the key path the messages name).

    Raises:
        ValueError: naming the key and what it should hold.
    """
    for key, value in thresholds.items():
        if key == "min_area_px":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            if not ok:
                raise ValueError(f"{where}.min_area_px must be an integer >= 0, got {value!r}")
        elif key == "gate_reach_slices":
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_GATE_REACH
            if not ok:
                raise ValueError(
                    f"{where}.gate_reach_slices must be an integer from 0 to {MAX_GATE_REACH}, got {value!r}"
                )
        elif key == "largest_component":
            if not isinstance(value, bool):
                raise ValueError(f"{where}.largest_component must be true or false, got {value!r}")
        elif key == "region_rule":
            try:
                region_rule(value)
            except ValueError as exc:
                raise ValueError(f"{where}.region_rule: {exc}") from None
        elif not (isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0):
            raise ValueError(f"{where}.{key} must be a probability in [0, 1], got {value!r}")


def resolve_card_path(path: str | Path) -> Path:
    """The card of the bundle a user pointed at.

    Args:
        path: a ``NAME.json`` card, a ``NAME.safetensors`` weights file, or a folder holding
            exactly one ``NAME.json`` + ``NAME.safetensors`` pair.

    Returns:
        The ``.json`` card path (not yet checked for existence when ``path`` names a file).

    Raises:
        BundleError: for a pickle-based file (``.pt``, ``.pth``, ...), another kind of file, or a
            folder holding no or several bundles.
    """
    path = Path(path)
    if path.is_dir():
        cards = sorted(p for p in path.glob("*.json") if p.with_suffix(".safetensors").is_file())
        if len(cards) == 1:
            return cards[0]
        if not cards:
            raise BundleError(path, "no model bundle (NAME.json + NAME.safetensors pair) in this folder")
        names = ", ".join(p.name for p in cards)
        raise BundleError(
            path, f"this folder holds {len(cards)} bundles ({names}); pass the .json of one of them"
        )
    suffix = path.suffix.lower()
    if suffix == ".json":
        return path
    if suffix == ".safetensors":
        return path.with_suffix(".json")
    if suffix in _PICKLE_SUFFIXES:
        raise BundleError(
            path,
            "BrainSeg never loads pickle-based model files (.pt/.pth/.ckpt/...), which can run "
            "arbitrary code when opened; use a BrainSeg bundle (NAME.json + "
            "NAME.safetensors) written by brainseg-train",
        )
    raise BundleError(path, "not a model bundle; expected NAME.json + NAME.safetensors (or their folder)")


def read_card(card_path: str | Path) -> ModelCard:
    """Read and validate a card without touching the weights (for listings).

    Args:
        card_path: the ``.json`` card.

    Returns:
        The card.

    Raises:
        BundleError: if the card is missing, not JSON, or invalid.
    """
    card_path = Path(card_path)
    if not card_path.is_file():
        raise BundleError(card_path, "model card not found; a bundle needs NAME.json beside NAME.safetensors")
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(
            card_path, f"the model card is not valid JSON ({exc}); reinstall or retrain the model"
        ) from None
    try:
        return ModelCard.from_dict(data)
    except ValueError as exc:
        raise BundleError(card_path, f"invalid model card: {exc}") from None


def read_weights(card_path: Path, card: ModelCard) -> bytes:
    """The bytes of a card's weights file, checked against the card's SHA-256 (not parsed).

    Args:
        card_path: the ``.json`` card (the weights lie beside it).
        card: the card read from it.

    Returns:
        The ``.safetensors`` file's bytes.

    Raises:
        BundleError: when the weights file is missing or its SHA-256 differs from the card's.
    """
    weights_path = card_path.parent / card.weights_file
    if not weights_path.is_file():
        raise BundleError(
            weights_path, f"weights file named by {card_path.name} not found; reinstall the bundle"
        )
    data = weights_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.weights_sha256:
        raise BundleError(
            weights_path,
            f"sha256 of the weights ({digest[:12]}...) does not match the card "
            f"({card.weights_sha256[:12]}...): the file is damaged or "
            "was modified; reinstall the bundle or retrain",
        )
    return data


#: The cross-validated metric that ranks bundles of each kind (higher is better).
KEY_METRICS: dict[ModelKind, str] = {
    ModelKind.SEGMENTER: "dice_patient_mean",
    ModelKind.CLASSIFIER: "roc_auc",
}
#: Other names of the same metrics: a cross-validated gate's card keeps its own ROC AUC as
#: ``gate_roc_auc`` beside the end-to-end metrics (:func:`brainseg_core.gate_crossval.apply_gate_to_card`);
#: older cards say ``dice`` and ``auc``.
_METRIC_ALIASES: dict[ModelKind, tuple[str, ...]] = {
    ModelKind.SEGMENTER: ("dice",),
    ModelKind.CLASSIFIER: ("gate_roc_auc", "auc"),
}


def key_metric(card: ModelCard) -> float | None:
    """The card's ranking metric (:data:`KEY_METRICS`, or its older name), or None without one."""
    metrics = card.metrics if isinstance(card.metrics, dict) else {}
    for key in (KEY_METRICS[card.kind], *_METRIC_ALIASES[card.kind]):
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def key_metric_text(card: ModelCard) -> str:
    """The ranking metric as text for listings, e.g. ``"dice_patient_mean 0.805"`` (``"... -"``)."""
    value = key_metric(card)
    return f"{KEY_METRICS[card.kind]} " + ("-" if value is None else f"{value:.3f}")


def bundle_summary(card: ModelCard) -> str:
    """One line describing a model for menus and status bars.

    Args:
        card: the model card.

    Returns:
        e.g. ``"LGG ResUNet | resunet segmenter | dice_patient_mean 0.871 | 2025-03-01"``.
    """
    parts = [card.name, f"{card.arch} {card.kind}"]
    parts.append(key_metric_text(card))
    parts.append(card.created[:10])
    return " | ".join(parts)
