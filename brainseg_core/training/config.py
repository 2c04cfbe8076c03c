"""The settings of one training run (``brainseg-train``'s options) and their validation.

:class:`TrainConfig` holds what the caller asked for; :meth:`TrainConfig.resolved` fills in the
defaults that depend on other settings and checks every value, so the rest of the trainer only
ever sees a complete, valid configuration. A resumed run takes the settings that define it from its
checkpoint (:data:`FROZEN_ON_RESUME`, :meth:`TrainConfig.with_saved`), never from the caller.
"""

from __future__ import annotations

import math
import time
from dataclasses import MISSING, asdict, dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainseg_core.jsonsafe import json_safe
from brainseg_core.model_kind import KIND_NAMES

if TYPE_CHECKING:  # torch-free at import, so `brainseg-train --help` answers at once
    from brainseg_core.training.data import Augmentation

SEGMENTER_ARCHS = ("resunet",)
#: The losses a segmenter and a classifier train with (built by
#: :func:`brainseg_core.training.losses.build_loss`).
SEGMENTER_LOSSES = ("bce_dice", "dice", "focal_tversky")
CLASSIFIER_LOSSES = ("bce", "focal")
CLASSIFIER_ARCHS = ("resnet18", "resnet34", "resnet50", "vgg16", "plain_cnn", "resunet_gate")
#: Architectures built on a ResUNet (``--width`` is its ``base_filters``, ``--depth`` its depth).
RESUNET_ARCHS = ("resunet", "resunet_gate")
#: ``min_area_px`` values tried on the validation patients (pixels at the training image size).
MIN_AREA_CANDIDATES = (0, 10, 20, 40, 80, 160)
#: Most neighbouring slices on either side a model may take (``--context``).
MAX_CONTEXT = 3
#: Share of tumour slices among a segmenter's draws unless told otherwise.
SEGMENTER_TUMOUR_FRACTION = 0.7


class Keep(StrEnum):
    """Which weights a run keeps (``--keep``)."""

    #: the weights of the validation epoch with the best selection metric
    BEST = "best"
    #: the final weights (the validation patients select nothing: honest held-out scores)
    LAST = "last"


KEEP_CHOICES = tuple(k.value for k in Keep)

#: Settings that define a run; ``resume`` takes them from the checkpoint, never from the caller.
FROZEN_ON_RESUME = (
    "kind",
    "arch",
    "width",
    "depth",
    "batch_size",
    "lr",
    "image_size",
    "val_patients",
    "seed",
    "loss",
    "tumour_fraction",
    "missing_sequence",
    "intensity",
    "elastic_px",
    "context",
    "pretrained",
    "name",
    "crop",
    "folds",
    "fold",
    "init_from",
    "encoder_from",
    "keep",
    "val_every",
    "min_area_candidates",
    "series",
)


def default_tumour_fraction(kind: str) -> float | None:
    """The sampling ``brainseg-train`` uses for ``kind`` when ``--tumour-fraction`` is not given.

    Args:
        kind: ``"segmenter"`` or ``"classifier"``.

    Returns:
        :data:`SEGMENTER_TUMOUR_FRACTION` for a segmenter; None (natural frequencies) for a
        classifier.
    """
    return SEGMENTER_TUMOUR_FRACTION if kind == "segmenter" else None


@dataclass
class TrainConfig:
    """Settings of one training run (``brainseg-train`` options).

    Attributes:
        kind: ``"segmenter"`` or ``"classifier"``.
        data: dataset root (LGG layout, masks for every slice).
        out: output folder.
        arch: architecture (default ``resunet`` for a segmenter, ``resnet18`` for a classifier).
        width: ResUNet ``base_filters`` or plain CNN ``width`` (None: the builder's default).
        depth: ResUNet depth (None: the builder's default).
        epochs: most epochs to run.
        batch_size: slices per step (per process when distributed).
        lr: peak learning rate.
        image_size: training (and model input) size.
        val_patients: validation fraction, or a text file listing validation patient ids.
        seed: seed of the split, initialisation, sampling and augmentation.
        loss: loss name (default ``bce_dice`` / ``bce``).
        tumour_fraction: share of tumour slices among each epoch's draws, 0 < f < 1, or None for
            natural frequencies (one shuffle of every slice; a classifier's loss is then
            class-balanced). The default is the segmenter's 0.7; the classifier recipe is None,
            which ``brainseg-train`` passes for a classifier unless told otherwise
            (:func:`default_tumour_fraction`).
        missing_sequence: augmentation probability that a slice's pre- or post-contrast channel is
            replaced by FLAIR (:class:`~brainseg_core.training.data.Augmentation`); 0 turns it off.
        intensity: the intensity augmentation, ``"standard"`` or ``"strong"``
            (:class:`~brainseg_core.training.data.Intensity`).
        elastic_px: the elastic deformation's largest control-point move in pixels (0: off;
            :class:`~brainseg_core.training.data.Augmentation`).
        context: a ResUNet segmenter sees each slice with this many neighbouring slices on either
            side (2.5-D input, the card's ``context_slices``); 0 is the plain 3-channel input.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: autocast precision (``auto`` = bf16 on CUDA, fp32 on the CPU).
        patience: stop after this many epochs without improvement (0: never).
        pretrained: start a torchvision classifier from ImageNet weights (from the local cache).
        time_budget_min: stop cleanly when this many minutes of wall time are used.
        resume: continue from the checkpoint in ``out/checkpoint/``.
        name: bundle name (default ``brainseg-<kind>-<arch>-<date>``).
        install: copy the finished bundle into the user's model folder (refused when its
            validation metric is missing or below the active model's, unless ``force_install``).
        force_install: install even then.
        min_area_candidates: ``min_area_px`` values tried for a segmenter.
        crop: train a segmenter on random ``crop`` x ``crop`` patches of the slices
            (tumour-centred in tumour slices, :func:`~brainseg_core.training.data.crop_batch`);
            None trains on whole slices. Validation and inference always use whole slices.
        folds: K of a K-fold cross-validation by patient; with ``fold`` it replaces
            ``val_patients`` (:func:`~brainseg_core.training.data.fold_patients`).
        fold: the held-out fold, 0 <= fold < folds.
        init_from: a model bundle (card or folder) whose weights start this run; the schedule,
            optimiser and epoch count start fresh (unlike ``resume``).
        encoder_from: for a ``resunet_gate``, a segmenter whose stem and encoder replace those of
            ``init_from`` (a gate continued onto a retrained segmenter: the head from the old gate,
            the encoder it sits on from the new segmenter, so the pipeline can share it).
        keep: :class:`Keep` (``"best"`` or ``"last"``): the weights of the validation epoch with the
            best selection metric, or the final weights, so the validation patients never select
            anything and their scores are honest held-out estimates (use it for cross-validation).
        val_every: validate every this many epochs (and always after the last one).
        series: for DICOM studies, the series read per sequence (``flair``/``pre``/``post`` to a
            SeriesNumber, SeriesInstanceUID or description part); None: the guesses.
    """

    kind: str
    data: Path
    out: Path
    arch: str | None = None
    width: int | None = None
    depth: int | None = None
    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    image_size: int = 256
    val_patients: float | str = 0.2
    seed: int = 0
    loss: str | None = None
    tumour_fraction: float | None = SEGMENTER_TUMOUR_FRACTION
    missing_sequence: float = 0.0
    intensity: str = "standard"
    elastic_px: float = 0.0
    context: int = 0
    device: str = "auto"
    precision: str = "auto"
    patience: int = 15
    pretrained: bool = False
    time_budget_min: float | None = None
    resume: bool = False
    name: str | None = None
    install: bool = False
    force_install: bool = False
    min_area_candidates: tuple[int, ...] = MIN_AREA_CANDIDATES
    crop: int | None = None
    folds: int | None = None
    fold: int | None = None
    init_from: str | None = None
    encoder_from: str | None = None
    keep: Keep | str = Keep.BEST
    val_every: int = 1
    series: dict[str, str] | None = None

    @property
    def segmenter(self) -> bool:
        """Whether this run trains a segmenter (else a classifier)."""
        return self.kind == "segmenter"

    @property
    def augmentation(self) -> Augmentation:
        """The random augmentation of this run's training batches."""
        from brainseg_core.training.data import Augmentation

        return Augmentation.of(
            self.intensity, missing_sequence=self.missing_sequence, elastic_px=self.elastic_px
        )

    def resolved(self) -> TrainConfig:
        """A copy with defaults filled in and every value checked.

        Returns:
            The complete configuration (``data`` and ``out`` as paths, ``arch``, ``loss`` and
            ``name`` set, ``keep`` a :class:`Keep`, ``val_patients`` a float or an absolute path).

        Raises:
            ValueError: naming the invalid setting and its valid values.
        """
        c = replace(self, data=Path(self.data), out=Path(self.out))
        if c.kind not in KIND_NAMES:
            raise ValueError(f"kind must be 'segmenter' or 'classifier', got {c.kind!r}")
        c.arch = c.arch or ("resunet" if c.segmenter else "resnet18")
        c.loss = c.loss or ("bce_dice" if c.segmenter else "bce")
        _check_model(c)
        _check_sizes_and_schedule(c)
        _resolve_split(c)
        if c.keep not in KEEP_CHOICES:
            raise ValueError(f"--keep must be one of {', '.join(KEEP_CHOICES)}, got {c.keep!r}")
        c.keep = Keep(c.keep)
        if c.val_every < 1:
            raise ValueError(f"--val-every must be >= 1, got {c.val_every}")
        if c.init_from is not None:
            c.init_from = str(Path(c.init_from).resolve())
        if c.encoder_from is not None:
            c.encoder_from = str(Path(c.encoder_from).resolve())
        if c.name is None:
            c.name = f"brainseg-{c.kind}-{c.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
        c.min_area_candidates = tuple(sorted({int(a) for a in c.min_area_candidates}))
        return c

    def with_saved(self, saved: dict[str, Any]) -> TrainConfig:
        """A copy whose run-defining settings (:data:`FROZEN_ON_RESUME`) are those of a checkpoint.

        Args:
            saved: the checkpoint's configuration (:meth:`to_plain` of the resolved settings).

        Returns:
            The configuration of the resumed run.
        """
        # a setting newer than the checkpoint takes its default: what the run it saved did
        defaults: dict[str, Any] = {
            f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
            for f in fields(TrainConfig)
            if f.default is not MISSING or f.default_factory is not MISSING
        }
        frozen: dict[str, Any] = {
            key: saved[key] if key in saved else defaults[key]
            for key in FROZEN_ON_RESUME
            if key in saved or key in defaults
        }
        c = replace(self, **frozen)
        c.keep = Keep(c.keep)
        c.min_area_candidates = tuple(int(a) for a in c.min_area_candidates)
        return c

    def to_plain(self) -> dict[str, Any]:
        """The settings as plain JSON values (paths as strings, tuples as lists, enums as strings)."""
        plain = json_safe(asdict(self))
        plain["keep"] = self.keep.value if isinstance(self.keep, Keep) else str(self.keep)
        return plain

    def arch_args(self) -> dict[str, Any]:
        """Builder arguments written into the card (``pretrained`` is not one of them)."""
        args: dict[str, Any] = {}
        if self.arch in RESUNET_ARCHS:
            if self.width is not None:
                args["base_filters"] = int(self.width)
            if self.depth is not None:
                args["depth"] = int(self.depth)
            if self.context:
                from brainseg_core.preprocessing import input_channels

                args["in_channels"] = input_channels(int(self.context))
        elif self.arch == "plain_cnn" and self.width is not None:
            args["width"] = int(self.width)
        return args


def _check_model(c: TrainConfig) -> None:
    """Architecture, loss, sampling and builder options fit the kind."""
    valid_archs = SEGMENTER_ARCHS if c.segmenter else CLASSIFIER_ARCHS
    if c.arch not in valid_archs:
        raise ValueError(f"--arch {c.arch} cannot be a {c.kind}; choose one of {', '.join(valid_archs)}")
    valid_losses = SEGMENTER_LOSSES if c.segmenter else CLASSIFIER_LOSSES
    if c.loss not in valid_losses:
        raise ValueError(f"--loss {c.loss} is not a {c.kind} loss; choose one of {', '.join(valid_losses)}")
    if c.tumour_fraction is not None and not 0.0 < float(c.tumour_fraction) < 1.0:
        raise ValueError(f"--tumour-fraction must be between 0 and 1 (exclusive), got {c.tumour_fraction}")
    if c.width is not None and c.arch not in (*RESUNET_ARCHS, "plain_cnn"):
        raise ValueError(f"--width applies to resunet, resunet_gate and plain_cnn only, not {c.arch}")
    if c.depth is not None and c.arch not in RESUNET_ARCHS:
        raise ValueError(f"--depth applies to resunet and resunet_gate only, not {c.arch}")
    if not isinstance(c.context, int) or isinstance(c.context, bool) or not 0 <= c.context <= MAX_CONTEXT:
        raise ValueError(
            f"--context must be a whole number of slices from 0 to {MAX_CONTEXT}, got {c.context!r}"
        )
    if c.context and c.arch not in RESUNET_ARCHS:
        raise ValueError(f"--context applies to resunet and resunet_gate only, not {c.arch}")
    if c.pretrained and c.arch in (*RESUNET_ARCHS, "plain_cnn"):
        raise ValueError(f"--pretrained needs a torchvision architecture, not {c.arch}")
    if c.arch == "resunet_gate" and c.init_from is None and not c.resume:
        raise ValueError(
            "--arch resunet_gate is a head on a trained segmenter's encoder: pass that segmenter with "
            "--init-from BUNDLE (and its --width/--depth if not the defaults)"
        )
    if c.encoder_from is not None and (c.arch != "resunet_gate" or c.init_from is None):
        raise ValueError(
            "--encoder-from puts a segmenter's encoder under a gate's head: use it with "
            "--arch resunet_gate and --init-from GATE_BUNDLE"
        )


def _check_sizes_and_schedule(c: TrainConfig) -> None:
    """Counts, sizes, learning rate, time budget and crop are in range."""
    for key, lo in (("epochs", 1), ("batch_size", 1), ("image_size", 16), ("patience", 0)):
        if int(getattr(c, key)) < lo:
            raise ValueError(f"--{key.replace('_', '-')} must be >= {lo}, got {getattr(c, key)}")
    if c.image_size % 2**4 and c.arch in RESUNET_ARCHS:
        raise ValueError(f"--image-size must be a multiple of 16 for the ResUNet, got {c.image_size}")
    if not c.lr > 0:
        raise ValueError(f"--lr must be > 0, got {c.lr}")
    if c.time_budget_min is not None and not c.time_budget_min > 0:
        raise ValueError(f"--time-budget must be > 0 minutes, got {c.time_budget_min}")
    if not 0.0 <= c.missing_sequence <= 1.0:
        raise ValueError(f"--missing-sequence is a probability from 0 to 1, got {c.missing_sequence}")
    if not (math.isfinite(c.elastic_px) and c.elastic_px >= 0.0):
        raise ValueError(f"--elastic must be a finite number of pixels >= 0, got {c.elastic_px}")
    from brainseg_core.training.data import Intensity

    if c.intensity not in tuple(Intensity):
        raise ValueError(
            f"--intensity must be one of {', '.join(i.value for i in Intensity)}, got {c.intensity!r}"
        )
    if c.crop is not None:
        if not c.segmenter:
            raise ValueError("--crop applies to a segmenter only (a classifier sees whole slices)")
        if c.crop % 2**4 or not 16 <= c.crop <= c.image_size:
            raise ValueError(
                f"--crop must be a multiple of 16 from 16 to --image-size ({c.image_size}), got {c.crop}"
            )


def _resolve_split(c: TrainConfig) -> None:
    """``val_patients`` as a fraction or an absolute path; K-fold settings consistent."""
    if isinstance(c.val_patients, str):
        text = c.val_patients
        try:
            c.val_patients = float(text)
        except ValueError:
            c.val_patients = str(Path(text).resolve())
    if c.val_patients == 0.0 and c.folds is None:
        # no validation: train on every patient and keep the last weights (the recipe's
        # honest estimate then comes from a cross-validation with the same settings)
        c.keep = Keep.LAST
    if (c.folds is None) != (c.fold is None):
        raise ValueError("--folds and --fold go together (e.g. --folds 5 --fold 0)")
    if c.folds is not None and c.fold is not None and not 0 <= c.fold < c.folds:
        raise ValueError(f"--fold must be between 0 and {c.folds - 1}, got {c.fold}")
