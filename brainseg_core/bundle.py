"""Model bundles: ``NAME.safetensors`` weights + ``NAME.json`` model card.

A bundle is everything needed to run a trained network: the card names the architecture and its
arguments, the input size, the normalisation, the decision thresholds, how it was trained and how
well it did; the weights are a safetensors file (never a pickle, so opening a model file cannot
run code) whose SHA-256 is recorded in the card. :func:`load_bundle` refuses any bundle whose
card, hash, normalisation or tensors do not match exactly, with a :class:`BundleError` that names
the file, says what is wrong and what to do.

Card keys (format ``brainseg-model-card/1``)::

    format, name, kind ("classifier" | "segmenter"), arch, arch_args, input_size, channel_order,
    context_slices, normalization, thresholds, training, metrics, created (ISO-8601 UTC), software_version,
    weights_file, weights_sha256, weights_dtype, license, notes

``context_slices`` (default 0) is how many neighbouring slices on either side the network sees
with each slice (:func:`brainseg_core.preprocessing.model_input`); its input then has
``len(channel_order) * (2 * context_slices + 1)`` channels. ``training``, ``metrics``,
``license`` and ``notes`` are optional (default empty); keys this
version does not know are kept in :attr:`ModelCard.extra` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
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
from brainseg_core.model_kind import KIND_NAMES
from brainseg_core.model_ref import ModelRef
from brainseg_core.models import ARCHITECTURES, ModelKind, ResUNet, arch_kind, build_model
from brainseg_core.preprocessing import NORMALIZATION, NORMALIZATION_ID, input_channels
from brainseg_core.thresholds import MAX_GATE_REACH

__all__ = [
    "CARD_FORMAT",
    "KEY_METRICS",
    "ModelBundle",
    "ModelCard",
    "ModelKind",
    "bundle_summary",
    "key_metric",
    "key_metric_text",
    "load_bundle",
    "read_card",
    "resolve_card_path",
    "save_bundle",
    "update_card",
]

CARD_FORMAT = "brainseg-model-card/1"
#: Builder arguments naming starting weights (``pretrained`` in cards of BrainSeg 0.1): not kept.
_STARTING_WEIGHTS = frozenset({"weights", "pretrained"})
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
OPTIONAL_KEYS = ("context_slices", "training", "metrics", "license", "notes")
_WEIGHT_FIELDS = ("format", "weights_file", "weights_sha256", "weights_dtype")
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
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
            self.arch in ARCHITECTURES,
            "arch",
            f"a known architecture ({', '.join(sorted(ARCHITECTURES))}); update BrainSeg to load this model",
        )
        if arch_kind(self.arch) != self.kind:
            raise ValueError(
                f"arch {self.arch!r} is a {arch_kind(self.arch)}, but the card's kind is '{self.kind}'"
            )
        for key in ("arch_args", "normalization", "thresholds", "training", "metrics"):
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
        need(self.weights_dtype in _DTYPES, "weights_dtype", f"one of {', '.join(_DTYPES)}")
        for key in THRESHOLD_KEYS[self.kind]:
            if key not in self.thresholds:
                raise ValueError(f"a {self.kind} card needs thresholds.{key}")
        for key, value in self.thresholds.items():
            if key == "min_area_px":
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
                if not ok:
                    raise ValueError(f"thresholds.min_area_px must be an integer >= 0, got {value!r}")
            elif key == "gate_reach_slices":
                ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_GATE_REACH
                if not ok:
                    raise ValueError(
                        f"thresholds.gate_reach_slices must be an integer from 0 to {MAX_GATE_REACH}, "
                        f"got {value!r}"
                    )
            elif key == "largest_component":
                if not isinstance(value, bool):
                    raise ValueError(f"thresholds.largest_component must be true or false, got {value!r}")
            elif not (isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0):
                raise ValueError(f"thresholds.{key} must be a probability in [0, 1], got {value!r}")


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
    protected = sorted(set(fields) & set(_WEIGHT_FIELDS))
    if protected:
        raise ValueError(f"update_card cannot change {', '.join(protected)}: they describe the weights file")
    unknown = sorted(set(fields) - set(CARD_KEYS))
    if unknown:
        valid = ", ".join(k for k in CARD_KEYS if k not in _WEIGHT_FIELDS)
        raise ValueError(f"unknown card key(s) {', '.join(unknown)}; valid keys: {valid}")
    new = dataclasses.replace(card, **fields)
    new.validate()
    text = _card_json(new)
    with atomic_write(card_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return new


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
