"""Training data: patient split, the in-memory slice set, epoch sampling and on-device augmentation.

The whole data set is small (the 80 LGG development patients are 2885 slices, 1.1 GB as float16 at
256 x 256; 3.4 GB with one neighbouring slice on either side), so the trainer reads every patient
once, normalises each volume with the shared :func:`brainseg_core.preprocessing.model_input` (with
the model's neighbouring slices stacked in for 2.5-D input), and keeps one float16 tensor of every
slice on the training device. Batches are gathered by index and augmented there, batched, with no
DataLoader, worker processes or host-to-device copies per step.

Split: by patient, never by slice (neighbouring slices of one patient are nearly identical).
:func:`split_patients` sorts the patient ids, shuffles them with ``numpy.random.default_rng(seed)``
and puts the first ``round(fraction * n)`` (at least 1, at most ``n - 1``) in validation.

Augmentation (:func:`augment`), drawn independently per slice from a seeded generator; the numbers
below are the defaults of :class:`Augmentation`, whose instance :data:`AUGMENTATION` is what
training uses and what the model card records:

- left-right flip with probability 0.5 (brains are roughly left-right symmetric; up-down flips
  produce anatomy that never occurs, so they are not used);
- rotation uniform in +-15 degrees and isotropic scaling uniform in [0.9, 1.1], one affine warp
  (``affine_grid``/``grid_sample``): bilinear for the images with border padding (the corners of an
  LGG slice are background), nearest neighbour for the masks with zero padding;
- intensity: per slice and sequence a gain uniform in [0.9, 1.1] and an offset uniform in
  [-0.1, 0.1] (in z-score units of the normalised image), shared by the neighbouring slices
  stacked with it. The ``strong`` preset (:class:`Intensity`, ``--intensity strong``, the habit of
  nnU-Net's intensity augmentation) widens them to [0.75, 1.25] and [-0.25, 0.25] and adds, per
  slice and sequence, a gamma log-uniform in [0.7, 1.5] applied to each channel rescaled to its
  own range (then mapped back), and per slice Gaussian noise of a standard deviation uniform in
  [0, 0.1];
- missing sequences (off unless ``missing_sequence`` > 0): per slice, the pre- and the
  post-contrast channel are each replaced by the FLAIR channel with that probability, before the
  warp. This is what a scan without that sequence looks like to the models: the LGG data set
  stores FLAIR in a missing sequence's place (5 of its 80 development patients), and
  :func:`brainseg_core.io.sequences.assemble_channels` does the same for NIfTI and DICOM studies.

Patch training (:func:`crop_batch`): after augmentation, each slice of a batch may be cut to a random
``crop`` x ``crop`` patch. In a slice that holds tumour the patch always contains a tumour pixel
drawn uniformly from the slice's tumour pixels, at a uniformly random place inside the patch
(tumour-centred oversampling, as nnU-Net samples foreground); elsewhere the patch is placed
uniformly. The fully convolutional segmenter is then applied to whole slices at inference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from brainseg_core.errors import DataError
from brainseg_core.io.volume import CHANNELS
from brainseg_core.preprocessing import model_input, resize_mask


class Intensity(StrEnum):
    """How strongly training jitters intensities (``--intensity``; :class:`Augmentation`)."""

    #: gain 0.9-1.1 and offset +-0.1 per slice and sequence
    STANDARD = "standard"
    #: gain 0.75-1.25, offset +-0.25, gamma 0.7-1.5 and Gaussian noise up to 0.1 SD
    STRONG = "strong"


@dataclass(frozen=True)
class Augmentation:
    """The random augmentation :func:`augment` applies (the one definition of its parameters).

    Attributes:
        flip_left_right: probability of a left-right flip.
        rotation_deg: rotation drawn uniformly in ``[-rotation_deg, +rotation_deg]`` degrees.
        scale: isotropic zoom drawn uniformly in ``[low, high]``.
        intensity_gain: per slice and sequence gain drawn uniformly in ``[low, high]`` (shared by
            the neighbouring slices stacked with it).
        intensity_offset: per slice and sequence offset drawn uniformly in ``[low, high]`` (z-score
            units of the normalised image).
        gamma: per slice and sequence gamma drawn log-uniformly in ``[low, high]``, applied to
            each channel rescaled to its own minimum and maximum (``(1, 1)``: off).
        noise_std: per slice, Gaussian noise whose standard deviation is drawn uniformly in
            ``[0, noise_std]`` (z-score units; 0: off).
        missing_sequence: per slice, the probability that the pre-contrast channel, and
            independently the post-contrast channel, is replaced by the FLAIR channel (in the
            stacked neighbours too).
        elastic_px: a smooth elastic deformation on top of the affine warp: each of
            ``elastic_grid`` x ``elastic_grid`` control points moves by up to this many pixels
            (of the slice at its training size) in x and y, drawn uniformly, and the moves are
            interpolated bicubically over the slice (0: off). Image and mask share it.
        elastic_grid: control points per side of the elastic deformation (>= 2).
    """

    flip_left_right: float = 0.5
    rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    intensity_gain: tuple[float, float] = (0.9, 1.1)
    intensity_offset: tuple[float, float] = (-0.1, 0.1)
    gamma: tuple[float, float] = (1.0, 1.0)
    noise_std: float = 0.0
    missing_sequence: float = 0.0
    elastic_px: float = 0.0
    elastic_grid: int = 7

    def __post_init__(self) -> None:
        for name in ("scale", "intensity_gain", "intensity_offset", "gamma"):
            low, high = (float(v) for v in getattr(self, name))
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"{name} must be a finite range low <= high, got {getattr(self, name)}")
            object.__setattr__(self, name, (low, high))
        if not 0.0 <= self.missing_sequence <= 1.0:
            raise ValueError(f"missing_sequence is a probability in [0, 1], got {self.missing_sequence}")
        if not self.gamma[0] > 0.0:
            raise ValueError(f"gamma must be a range 0 < low <= high, got {self.gamma}")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0.0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {self.noise_std}")
        if not (math.isfinite(self.elastic_px) and self.elastic_px >= 0.0):
            raise ValueError(f"elastic_px must be a finite number of pixels >= 0, got {self.elastic_px}")
        if self.elastic_grid < 2:
            raise ValueError(f"elastic_grid must be >= 2 control points per side, got {self.elastic_grid}")

    @classmethod
    def of(
        cls,
        intensity: Intensity | str = Intensity.STANDARD,
        *,
        missing_sequence: float = 0.0,
        elastic_px: float = 0.0,
    ) -> Augmentation:
        """The augmentation of a run: the intensity preset, the missing-sequence probability and
        the elastic deformation's largest move in pixels (0: none).

        Raises:
            ValueError: for an unknown preset (naming the choices), a probability outside [0, 1]
                or a negative or non-finite elastic move.
        """
        try:
            preset = Intensity(intensity)
        except ValueError:
            raise ValueError(
                f"unknown intensity augmentation {intensity!r}; choose one of "
                + ", ".join(i.value for i in Intensity)
            ) from None
        if preset is Intensity.STRONG:
            return cls(
                intensity_gain=(0.75, 1.25),
                intensity_offset=(-0.25, 0.25),
                gamma=(0.7, 1.5),
                noise_std=0.1,
                missing_sequence=missing_sequence,
                elastic_px=elastic_px,
            )
        return cls(missing_sequence=missing_sequence, elastic_px=elastic_px)

    def card(self) -> dict[str, object]:
        """The parameters and the fixed choices of :func:`augment` as a model card's recipe records them."""
        return {
            "flip_left_right": self.flip_left_right,
            "rotation_deg": self.rotation_deg,
            "scale": list(self.scale),
            "image_interpolation": "bilinear (border padding)",
            "mask_interpolation": "nearest (zero padding)",
            "intensity_gain": list(self.intensity_gain),
            "intensity_offset": list(self.intensity_offset),
            **(
                {
                    "gamma": list(self.gamma),
                    "gamma_on": "each channel rescaled to its own range, log-uniform draw",
                }
                if self.gamma != (1.0, 1.0)
                else {}
            ),
            **({"noise_std_max": self.noise_std} if self.noise_std else {}),
            **(
                {
                    "elastic": {
                        "max_px": self.elastic_px,
                        "control_points": [self.elastic_grid, self.elastic_grid],
                        "what": "uniform control-point moves, bicubic between them, clamped to "
                        "max_px, added to the affine warp (image and mask)",
                    }
                }
                if self.elastic_px
                else {}
            ),
            "missing_sequence": {
                "probability": self.missing_sequence,
                "what": "per slice, pre- and post-contrast each replaced by FLAIR (before the warp; "
                "in its stacked neighbouring slices too)",
            },
            "where": "on the training device, batched",
            "crop": "optional random patches after the warp, tumour-centred in tumour slices (crop_batch)",
        }


#: The augmentation of every model trained here (:func:`augment`'s default; written into the card).
AUGMENTATION = Augmentation()


@dataclass
class SliceSet:
    """Every slice of a list of patients, normalised, as tensors (on one device).

    Attributes:
        images: ``(N, C, S, S)`` float16 normalised images (C = 3, or 3 x (2k + 1) with k
            neighbouring slices on either side stacked in).
        masks: ``(N, 1, S, S)`` uint8 ground truth (0/1) at the training size.
        labels: ``(N,)`` float32, 1.0 where the source mask is not empty (tumour slice).
        patient: ``(N,)`` int64 index into ``patient_ids`` of each slice.
        patient_ids: ids of the patients, in load order.
        sources: folder or stack of each patient.
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    patient: torch.Tensor
    patient_ids: list[str]
    sources: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_tumour(self) -> int:
        """Number of slices with tumour."""
        return int(self.labels.sum().item())

    def to(self, device: torch.device | str) -> SliceSet:
        """A copy of the set on ``device`` (the same object if it is already there)."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return SliceSet(
            images=self.images.to(device),
            masks=self.masks.to(device),
            labels=self.labels.to(device),
            patient=self.patient.to(device),
            patient_ids=list(self.patient_ids),
            sources=list(self.sources),
        )

    def subset(self, patient_ids: Sequence[str]) -> SliceSet:
        """The slices of the given patients (in this set's order).

        Raises:
            ValueError: if an id is not in the set.
        """
        missing = sorted(set(patient_ids) - set(self.patient_ids))
        if missing:
            raise ValueError(f"patients not in the data set: {', '.join(missing)}")
        keep_idx = [i for i, p in enumerate(self.patient_ids) if p in set(patient_ids)]
        remap = torch.full((len(self.patient_ids),), -1, dtype=torch.long)
        remap[keep_idx] = torch.arange(len(keep_idx))
        sel = torch.isin(self.patient.cpu(), torch.tensor(keep_idx, dtype=torch.long))
        sel_dev = sel.to(self.images.device)
        return SliceSet(
            images=self.images[sel_dev],
            masks=self.masks[sel_dev],
            labels=self.labels[sel_dev],
            patient=remap[self.patient.cpu()[sel]].to(self.images.device),
            patient_ids=[self.patient_ids[i] for i in keep_idx],
            sources=[self.sources[i] for i in keep_idx] if self.sources else [],
        )


def find_labelled_patients(root: Path) -> list[Path]:
    """Every patient folder or stack under ``root`` (see :func:`brainseg_core.io.find_patients`).

    Raises:
        DataError: if ``root`` holds no patient.
    """
    from brainseg_core.io import find_patients

    root = Path(root)
    patients = find_patients(root)
    if not patients:
        raise DataError(root, "no patient folders or TIFF stacks found (expected the LGG kaggle_3m layout)")
    return list(patients)


def read_patient_list(path: Path) -> list[str]:
    """Patient ids from a text file: one per line, blank lines and ``#`` comments ignored.

    Raises:
        DataError: if the file cannot be read or lists no id.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(path, f"cannot read the patient list: {exc.strerror or exc}") from exc
    ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise DataError(path, "the patient list is empty (write one patient id per line)")
    return ids


def fold_patients(patient_ids: Sequence[str], *, folds: int, fold: int, seed: int = 0) -> list[str]:
    """The validation patients of one fold of a K-fold cross-validation by patient.

    The sorted ids are shuffled with ``numpy.random.default_rng(seed)`` and dealt round-robin into
    ``folds`` groups, so the folds are disjoint, cover every patient once and differ in size by at
    most one; the same ids and seed give the same folds on any machine.

    Args:
        patient_ids: every patient id (unique).
        folds: number of folds K (2 <= K <= number of patients).
        fold: which fold to hold out, 0 <= fold < K.
        seed: shuffling seed.

    Returns:
        The held-out ids of ``fold``, sorted.

    Raises:
        ValueError: for K or fold out of range, or duplicate ids.
    """
    ids = sorted(patient_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate patient ids (rename one of the folders)")
    if not 2 <= folds <= len(ids):
        raise ValueError(f"--folds must be between 2 and the number of patients ({len(ids)}), got {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"--fold must be between 0 and {folds - 1}, got {fold}")
    order = np.random.default_rng(seed).permutation(len(ids))
    return sorted(ids[i] for i in order[fold::folds])


def split_patients(
    patient_ids: Sequence[str], val: float | Sequence[str], *, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split patients into training and validation sets (by patient, reproducibly).

    Args:
        patient_ids: every patient id (unique).
        val: fraction of patients for validation (0 < val < 1), or the explicit validation ids.
        seed: shuffling seed (ignored for explicit ids).

    Returns:
        ``(train_ids, val_ids)``, each sorted; disjoint, together all of ``patient_ids``.

    Raises:
        ValueError: on duplicate ids, fewer than 2 patients, a fraction outside (0, 1), or
            validation ids that are unknown or leave no training patient.
    """
    ids = sorted(patient_ids)
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate patient ids: {', '.join(dup)} (rename one of the folders)")
    if len(ids) < 2:
        raise ValueError(f"need at least 2 patients to split into training and validation, got {len(ids)}")
    if isinstance(val, (int, float)) and not isinstance(val, bool):
        if not 0 < val < 1:
            raise ValueError(f"validation fraction must be between 0 and 1, got {val}")
        n_val = min(max(1, round(val * len(ids))), len(ids) - 1)
        order = np.random.default_rng(seed).permutation(len(ids))
        val_ids = sorted(ids[i] for i in order[:n_val])
    else:
        val_ids = sorted(set(cast("Sequence[str]", val)))
        unknown = sorted(set(val_ids) - set(ids))
        if unknown:
            raise ValueError(f"validation patients not in the data: {', '.join(unknown)}")
        if len(val_ids) == len(ids):
            raise ValueError("every patient is in the validation list; leave some for training")
        if not val_ids:
            raise ValueError("the validation list is empty")
    val_set = set(val_ids)
    return [i for i in ids if i not in val_set], val_ids


@dataclass
class Split:
    """A run's patients and slices, split by patient.

    Attributes:
        train_ids: training patient ids, sorted.
        val_ids: validation patient ids, sorted (empty: no validation).
        val_spec: how they were chosen: a fraction of the patients, or an explicit list.
        train: the training slices.
        val: the validation slices.
    """

    train_ids: list[str]
    val_ids: list[str]
    val_spec: float | list[str]
    train: SliceSet
    val: SliceSet


def make_split(
    data: SliceSet, val: float | Sequence[str], *, seed: int, device: torch.device | str = "cpu"
) -> Split:
    """Split a data set by patient (:func:`split_patients`) and move both sides to ``device``.

    Args:
        data: every slice of every patient.
        val: fraction of patients for validation (0.0: none, train on every patient), or the
            explicit validation ids.
        seed: shuffling seed of a fraction.
        device: where the two slice sets go.

    Returns:
        The :class:`Split`.

    Raises:
        ValueError: as :func:`split_patients`, or when one side holds no slice.
    """
    spec: float | list[str] = float(val) if isinstance(val, (int, float)) else list(val)
    train_ids: list[str]
    val_ids: list[str]
    if spec == 0.0:
        train_ids, val_ids = sorted(data.patient_ids), []
    else:
        train_ids, val_ids = split_patients(data.patient_ids, spec, seed=seed)
    train_set = data.subset(train_ids).to(device)
    val_set = data.subset(val_ids).to(device)
    if len(train_set) == 0 or (val_ids and len(val_set) == 0):
        raise ValueError("the split left no slice on one side; use more patients")
    return Split(train_ids, val_ids, spec, train_set, val_set)


def load_slices(
    patients: Sequence[Path],
    *,
    size: int,
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
    series: Mapping[str, str] | None = None,
    context: int = 0,
) -> SliceSet:
    """Read, normalise and stack every slice of the given patients (on the CPU).

    Args:
        patients: patient folders or stacks, each with a ground-truth mask for every slice.
        size: training image size (slices are resized to ``size`` x ``size``).
        workers: reader threads (TIFF decoding and normalisation release the GIL).
        progress: ``progress(done, total)`` after each patient.
        warn: receives each volume's warnings and skipped slices (one line each, naming the file).
        series: for DICOM studies, the series to read per sequence (``--flair/--pre/--post``).
        context: neighbouring slices on either side stacked with each slice
            (:func:`~brainseg_core.preprocessing.model_input`); the images then have
            ``3 * (2 * context + 1)`` channels.

    Returns:
        The :class:`SliceSet`, patients in the given order.

    Raises:
        DataError: if a patient cannot be read, has no masks, or two patients share an id.
    """
    from brainseg_core.io import open_volume

    if size < 8:
        raise ValueError(f"image size must be at least 8, got {size}")

    def one(path: Path) -> tuple[str, torch.Tensor, torch.Tensor]:
        vol = open_volume(path, choose=series)
        if vol.masks is None:
            raise DataError(path, "no ground-truth masks (_mask.tif for every slice) needed for training")
        if vol.n_slices == 0:
            raise DataError(path, "no readable slices")
        if warn is not None:
            for line in vol.problem_lines():
                warn(line)
        images = model_input(vol.images, range(vol.n_slices), size=size, context=context).to(torch.float16)
        masks = torch.from_numpy(resize_mask(vol.masks, size)).to(torch.uint8)[:, None]
        return vol.patient_id, images, masks

    paths = [Path(p) for p in patients]
    results: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(paths)))) as pool:
        for done, res in enumerate(pool.map(one, paths), start=1):
            results.append(res)
            if progress is not None:
                progress(done, len(paths))
    seen: dict[str, Path] = {}
    for (pid, _, _), path in zip(results, paths, strict=True):
        if pid in seen:
            raise DataError(path, f"patient id {pid} is also used by {seen[pid]}; patient ids must be unique")
        seen[pid] = path
    images = torch.cat([r[1] for r in results])
    masks = torch.cat([r[2] for r in results])
    # Labels come from the source-size masks' resized copy; a tumour of a few pixels that vanishes
    # at a small training size is labelled by what the network can see.
    labels = (masks.flatten(1).amax(dim=1) > 0).float()
    patient = torch.cat([torch.full((r[1].shape[0],), i, dtype=torch.long) for i, r in enumerate(results)])
    return SliceSet(images, masks, labels, patient, [r[0] for r in results], paths)


def epoch_indices(
    labels: torch.Tensor,
    *,
    length: int,
    tumour_fraction: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """The slice indices of one epoch, shuffled.

    Args:
        labels: ``(N,)`` slice labels on the CPU (1 = tumour).
        length: number of indices to draw.
        tumour_fraction: share of tumour slices in the epoch, drawn by repeated shuffles of the
            tumour slices (and of the others) so every slice is seen as evenly as possible; None
            for one plain shuffle of every slice (natural frequencies).
        generator: CPU generator (seeded per epoch for reproducibility).

    Returns:
        ``(length,)`` int64 indices.

    Raises:
        ValueError: if the requested fraction needs a class that is absent.
    """
    n = labels.numel()
    if tumour_fraction is None:
        return _tiled_perm(torch.arange(n), length, generator)
    pos = torch.nonzero(labels > 0.5).flatten()
    neg = torch.nonzero(labels <= 0.5).flatten()
    n_pos = round(tumour_fraction * length)
    if n_pos > 0 and pos.numel() == 0:
        raise ValueError("--tumour-fraction > 0 but the training patients have no tumour slice")
    if n_pos < length and neg.numel() == 0:
        n_pos = length
    idx = torch.cat(
        [_tiled_perm(pos, n_pos, generator), _tiled_perm(neg, length - n_pos, generator)]
        if neg.numel()
        else [_tiled_perm(pos, n_pos, generator)]
    )
    return idx[torch.randperm(idx.numel(), generator=generator)]


def _tiled_perm(pool: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    if length <= 0 or pool.numel() == 0:
        return pool[:0]
    reps = math.ceil(length / pool.numel())
    return torch.cat([pool[torch.randperm(pool.numel(), generator=generator)] for _ in range(reps)])[:length]


def crop_batch(
    images: torch.Tensor, masks: torch.Tensor, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each slice of a batch to a random ``size`` x ``size`` patch (see the module docstring).

    Args:
        images: ``(B, C, H, W)`` images.
        masks: ``(B, 1, H, W)`` 0/1 masks (float or integer).
        size: patch side in pixels; slices no larger than ``size`` are returned unchanged.
        generator: a generator on the images' device.

    Returns:
        ``(images, masks)`` patches, ``(B, C, size, size)`` and ``(B, 1, size, size)``.

    Raises:
        ValueError: if ``size`` is not positive or the batch is not square-or-larger than ``size``
            in only one dimension.
    """
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    b, _, h, w = images.shape
    if size >= h and size >= w:
        return images, masks
    if size > h or size > w:
        raise ValueError(f"crop size {size} does not fit slices of {h}x{w}")
    dev = images.device

    def draw(high: int) -> int:
        return int(torch.randint(0, high, (1,), device=dev, generator=generator).item())

    out_x, out_m = [], []
    for i in range(b):
        fg = torch.nonzero(masks[i, 0] > 0)
        if fg.shape[0]:
            cy, cx = (int(v) for v in fg[draw(fg.shape[0])])
            oy = min(max(cy - draw(size), 0), h - size)
            ox = min(max(cx - draw(size), 0), w - size)
        else:
            oy, ox = draw(h - size + 1), draw(w - size + 1)
        out_x.append(images[i, :, oy : oy + size, ox : ox + size])
        out_m.append(masks[i, :, oy : oy + size, ox : ox + size])
    return torch.stack(out_x), torch.stack(out_m)


def augment(
    images: torch.Tensor,
    masks: torch.Tensor | None,
    generator: torch.Generator,
    params: Augmentation = AUGMENTATION,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Randomly drop sequences, flip, rotate, scale and intensity-jitter a batch (module docstring).

    Args:
        images: ``(B, C, H, W)`` float images on the training device.
        masks: ``(B, 1, H, W)`` masks (any dtype) or None.
        generator: a generator on the images' device.
        params: the augmentation's parameters.

    Returns:
        ``(images, masks)``: float32 images and float32 0/1 masks (None if ``masks`` was None).
    """
    b, c = images.shape[:2]
    dev = images.device
    x = images.float()
    n_seq = len(CHANNELS)
    if params.missing_sequence > 0.0:
        x = _drop_sequences(x, params.missing_sequence, generator)

    def u(*shape: int, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(*shape, device=dev, generator=generator) * (hi - lo) + lo

    max_angle = math.radians(params.rotation_deg)
    angle = u(b, lo=-max_angle, hi=max_angle)
    scale = u(b, lo=params.scale[0], hi=params.scale[1])
    flip = torch.where(torch.rand(b, device=dev, generator=generator) < params.flip_left_right, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)
    # output -> input sampling coordinates: rotate, zoom by `scale`, then mirror x
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, zero], 1), torch.stack([sin * flip, cos, zero], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if params.elastic_px > 0.0:  # drawn only when on, like gamma and noise below
        grid = grid + _elastic_displacement(b, x.shape[-2:], params, generator, dev)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # one gain and offset per sequence, shared by a slice and its neighbours (2.5-D input)
    per = n_seq if c % n_seq == 0 else c
    gain = u(b, per, 1, 1, lo=params.intensity_gain[0], hi=params.intensity_gain[1])
    offset = u(b, per, 1, 1, lo=params.intensity_offset[0], hi=params.intensity_offset[1])
    x = x * gain.repeat(1, c // per, 1, 1) + offset.repeat(1, c // per, 1, 1)
    # drawn only when on, so the standard augmentation draws exactly what it always drew
    if params.gamma != (1.0, 1.0):
        lo, hi = math.log(params.gamma[0]), math.log(params.gamma[1])
        gamma = torch.exp(u(b, per, 1, 1, lo=lo, hi=hi)).repeat(1, c // per, 1, 1)
        # each sequence's range over all its stacked slices (2.5-D input), so that one value maps
        # to one value in the slice and its neighbours, as gain and offset do
        stack = x.view(b, c // per, per, *x.shape[2:])
        low = stack.amin(dim=(1, 3, 4), keepdim=True)
        span = (stack.amax(dim=(1, 3, 4), keepdim=True) - low).clamp_min(1e-6)
        low, span = (t.repeat(1, c // per, 1, 1, 1).view(b, c, 1, 1) for t in (low, span))
        x = ((x - low) / span).clamp(0.0, 1.0) ** gamma * span + low
    if params.noise_std > 0.0:
        sigma = u(b, 1, 1, 1, lo=0.0, hi=params.noise_std)
        x = x + torch.randn(x.shape, device=dev, generator=generator) * sigma
    m = None
    if masks is not None:
        m = F.grid_sample(masks.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return x, m


def _elastic_displacement(
    b: int,
    size: tuple[int, ...] | torch.Size,
    params: Augmentation,
    generator: torch.Generator,
    dev: torch.device,
) -> torch.Tensor:
    """``(B, H, W, 2)`` smooth random moves in :func:`torch.nn.functional.grid_sample`'s normalised
    coordinates: control-point moves of up to ``params.elastic_px`` pixels, bicubic between them."""
    h, w = int(size[0]), int(size[1])
    g, px = params.elastic_grid, params.elastic_px
    moves = (torch.rand(b, 2, g, g, device=dev, generator=generator) * 2.0 - 1.0) * px
    field_px = F.interpolate(moves, size=(h, w), mode="bicubic", align_corners=True).clamp(-px, px)
    # pixels to normalised units (x first, as in the grid): the grid spans 2 over w and h pixels
    scale = torch.tensor([2.0 / w, 2.0 / h], device=dev).view(1, 2, 1, 1)
    return (field_px * scale).permute(0, 2, 3, 1)


def _drop_sequences(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Replace the pre- and post-contrast channels of random samples by the FLAIR channel.

    With neighbouring slices stacked in (2.5-D input), a dropped sequence is dropped in every slice
    of the sample, as in a scan that lacks it.
    """
    n_seq = len(CHANNELS)
    flair = CHANNELS.index("FLAIR")
    others = [i for i in range(n_seq) if i != flair]
    drop = torch.rand(x.shape[0], len(others), device=x.device, generator=generator) < probability
    out = x.clone()
    for base in range(0, x.shape[1], n_seq):
        for j, ch in enumerate(others):
            out[:, base + ch] = torch.where(drop[:, j, None, None], x[:, base + flair], x[:, base + ch])
    return out
