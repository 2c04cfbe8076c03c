"""Analyses that survive a restart: :class:`ResultStore`.

An analysis of a patient is kept as one compressed file in the user data folder
(``<user data>/results/<key>.npz``; an analysis in thorough mode, :mod:`brainseg_core.thorough`,
beside it as ``<key>.thorough.npz``, so switching the mode back and forth reruns nothing), keyed
by the content of the images the networks read (:func:`volume_key`: a sha256 of the decoded
slices, so renaming or moving a patient folder keeps its results and editing a slice does not
reuse stale ones). The file holds every slice's tumour
probability and mask probability map (float16), the thresholds, the models' names and sha256,
the device and the time. Reopening the patient restores the analysis without running a network;
results of other models than the active ones come back marked stale (:attr:`StoredResult.current`).

The reader's work on a patient - edited masks (:class:`~brainseg_core.edits.MaskEdits`) and the
slices marked reviewed - is kept beside it under the same key (``<key>.reader.npz``,
:meth:`ResultStore.save_reader_work`), apart from the analysis, so a new analysis never replaces
it and it comes back even before the patient is analysed again.

Files are written atomically and read with ``allow_pickle=False``; a damaged or foreign file is
ignored (with a log line naming it), never trusted and never a crash.

The analyses are a cache: when they take more than ``max_bytes`` (2 GiB by default, several
hundred patients), the least recently used ones are removed after each save (opening a patient
marks its analysis used). The reader's work is never removed: it is the reader's, not a cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import brainseg_core
from brainseg_core.atomic import atomic_write
from brainseg_core.io.volume import Volume
from brainseg_core.model_ref import ModelRef
from brainseg_core.npz import NPZ_READ_ERRORS
from brainseg_core.results import ENSEMBLE_KEY, PatientResult, SliceResult, rethreshold, with_neighbours
from brainseg_core.thresholds import Thresholds

__all__ = [
    "DEFAULT_MAX_BYTES",
    "READER_FORMAT",
    "STORE_FORMAT",
    "ReaderWork",
    "ResultStore",
    "StoredResult",
    "volume_key",
]

log = logging.getLogger(__name__)

STORE_FORMAT = "brainseg-result/1"
READER_FORMAT = "brainseg-reader-work/1"
_READ_ERRORS = (*NPZ_READ_ERRORS, KeyError, TypeError)  # and the metadata that does not parse


_THOROUGH_SUFFIX = ".thorough.npz"


def volume_key(volume: Volume) -> str:
    """sha256 of the slices the networks read (shape and pixels), as 64 hex digits."""
    h = hashlib.sha256()
    h.update(repr(volume.images.shape).encode())
    h.update(np.ascontiguousarray(volume.images).data)
    return h.hexdigest()


@dataclass(frozen=True)
class StoredResult:
    """An analysis read back from the store.

    Attributes:
        result: the patient's result (probabilities, masks under the stored thresholds).
        stale: why it is not what the models asked about, run as asked, would make now, in words
            that complete "the analysis was made ..." (``"by other models"``, ``"in thorough
            mode"``, ``"without thorough mode"``, ``"by another thorough ensemble"``); empty when
            it is current.
        saved: when it was saved (ISO 8601, UTC).
        path: the file it came from.
    """

    result: PatientResult
    stale: str
    saved: str
    path: Path

    @property
    def current(self) -> bool:
        """Whether the models asked about, run as asked, made it (else show it as stale and offer
        a new run)."""
        return not self.stale


@dataclass(frozen=True)
class ReaderWork:
    """The reader's work on one patient, as saved.

    Attributes:
        masks: the edited slices' masks (``(H, W)`` bool), by slice index.
        reviewed: the slices the reader marked reviewed.
        saved: when it was saved (ISO 8601, UTC); "" before it was.
    """

    masks: dict[int, np.ndarray]
    reviewed: frozenset[int]
    saved: str = ""


#: Default size limit of the saved analyses (the reader's work does not count and is never removed).
DEFAULT_MAX_BYTES = 2 * 1024**3
_READER_SUFFIX = ".reader.npz"


class ResultStore:
    """Saved analyses in one folder (see the module docstring).

    Args:
        folder: where the files live (created on the first save).
        max_bytes: the analyses' size limit; the least recently used go first beyond it.

    Raises:
        ValueError: for a limit that is not positive.
    """

    def __init__(self, folder: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.folder = Path(folder)
        self.max_bytes = max_bytes

    @classmethod
    def default(cls) -> ResultStore:
        """The store in the user data folder (``<user data>/results``)."""
        from brainseg_core.user_data import user_data_dir

        return cls(user_data_dir() / "results")

    def path_for(self, volume: Volume, *, thorough: bool = False) -> Path:
        """The file that holds (or would hold) ``volume``'s analysis, in thorough mode or not."""
        return self.folder / f"{volume_key(volume)}{_THOROUGH_SUFFIX if thorough else '.npz'}"

    def save(self, volume: Volume, result: PatientResult) -> Path:
        """Keep ``result`` for ``volume`` (replacing an earlier one of the same mode: thorough, with
        flip TTA or an ensemble, or not), atomically.

        Raises:
            ValueError: if ``result`` does not belong to ``volume`` or is not complete.
            OSError: when the file cannot be written.
        """
        if result.patient_id != volume.patient_id or len(result.slices) != volume.n_slices:
            raise ValueError(
                f"the result of {result.patient_id} ({len(result.slices)} slices) does not belong to "
                f"{volume.patient_id} ({volume.n_slices} slices)"
            )
        present = np.array([s.mask_probability is not None for s in result.slices], bool)
        maps = [s.mask_probability for s in result.slices if s.mask_probability is not None]
        meta = {
            "format": STORE_FORMAT,
            "patient_id": result.patient_id,
            "source": str(volume.source),
            "shape": list(volume.images.shape),
            "thresholds": result.thresholds.to_json(),
            "models": result.models_json(),
            "device": result.device,
            "flip_tta": result.flip_tta,
            "saved": datetime.now(UTC).isoformat(timespec="seconds"),
            "software_version": brainseg_core.__version__,
        }
        stacked = np.stack(maps).astype(np.float16) if maps else np.zeros((0, *volume.shape), np.float16)
        path = self.path_for(volume, thorough=result.thorough)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                meta=np.array(json.dumps(meta)),
                tumour_probability=np.array([s.tumour_probability for s in result.slices], np.float32),
                has_mask_probability=present,
                mask_probability=stacked,
            )
        self.evict(keep=path)
        return path

    def evict(self, *, keep: Path | None = None) -> list[Path]:
        """Remove the least recently used analyses until they fit in :attr:`max_bytes`.

        Args:
            keep: an analysis never removed (the one just saved).

        Returns:
            The files removed (the reader's work is never among them).
        """
        entries = []
        for p in self.folder.glob("*.npz"):
            if p.name.endswith(_READER_SUFFIX):
                continue
            try:
                st = p.stat()
            except OSError:
                continue  # removed meanwhile
            entries.append((st.st_mtime, p, st.st_size))
        total = sum(size for _, _, size in entries)
        removed: list[Path] = []
        for _, p, size in sorted(entries, key=lambda e: (e[0], str(e[1]))):
            if total <= self.max_bytes:
                break
            if p == keep:
                continue
            try:
                p.unlink()
            except OSError as exc:
                log.warning("%s: cannot remove an old saved analysis: %s", p, exc)
                continue
            total -= size
            removed.append(p)
        return removed

    def load(
        self,
        volume: Volume,
        *,
        segmenter: ModelRef,
        classifier: ModelRef | None,
        flip_tta: bool = False,
        ensemble: tuple[ModelRef, ...] = (),
    ) -> StoredResult | None:
        """The saved analysis of ``volume``, or None when there is none (or it is unusable).

        Args:
            volume: the patient as read now (its spacing is used for areas and volumes).
            segmenter: the active segmenter.
            classifier: the active classifier (None: none is used).
            flip_tta: whether the active pipeline uses flip test-time augmentation.
            ensemble: the segmenters the active pipeline averages with ``segmenter`` (thorough).

        Returns:
            The stored result, ``current`` telling whether these models, run this way, made it:
            the analysis kept for this mode (thorough or not) or, when there is none, the one
            kept for the other mode.
        """
        thorough = bool(flip_tta or ensemble)  # what PatientResult.thorough will say of its result
        path = self.path_for(volume, thorough=thorough)
        if not path.is_file():
            path = self.path_for(volume, thorough=not thorough)
        if not path.is_file():
            return None
        try:
            stored = self._read(path, volume, segmenter, classifier, (flip_tta, tuple(ensemble)))
        except _READ_ERRORS as exc:
            log.warning("%s: ignoring a saved analysis that cannot be read: %s", path, exc)
            return None
        if stored.current:
            with contextlib.suppress(OSError):  # used now: the last to be evicted
                os.utime(path)
        return stored

    # -- the reader's work -----------------------------------------------------------------------
    def reader_path_for(self, volume: Volume) -> Path:
        """The file that holds (or would hold) the reader's work on ``volume``."""
        return self.folder / f"{volume_key(volume)}{_READER_SUFFIX}"

    def save_reader_work(self, volume: Volume, work: ReaderWork) -> Path:
        """Keep the reader's edited masks and reviewed slices of ``volume``, atomically.

        Nothing to keep (no edit, no reviewed slice) removes the file.

        Raises:
            ValueError: for a mask not of the volume's slice shape or an index outside the volume.
            OSError: when the file cannot be written.
        """
        path = self.reader_path_for(volume)
        n = volume.n_slices
        indices = sorted(work.masks)
        if any(not 0 <= i < n for i in [*indices, *work.reviewed]):
            raise ValueError(f"slice indices outside the {n} slices of {volume.patient_id}")
        if any(work.masks[i].shape != volume.shape for i in indices):
            raise ValueError(f"edited masks of {volume.patient_id} are not {volume.shape}")
        if not indices and not work.reviewed:
            path.unlink(missing_ok=True)
            return path
        meta = {
            "format": READER_FORMAT,
            "patient_id": volume.patient_id,
            "source": str(volume.source),
            "saved": datetime.now(UTC).isoformat(timespec="seconds"),
            "software_version": brainseg_core.__version__,
        }
        masks = (
            np.stack([work.masks[i] for i in indices]).astype(bool)
            if indices
            else np.zeros((0, *volume.shape), bool)
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                meta=np.array(json.dumps(meta)),
                edited=np.array(indices, np.int32),
                masks=masks,
                reviewed=np.array(sorted(work.reviewed), np.int32),
            )
        return path

    def load_reader_work(self, volume: Volume) -> ReaderWork | None:
        """The reader's saved work on ``volume``, or None when there is none (or it is unusable)."""
        path = self.reader_path_for(volume)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta: dict[str, Any] = json.loads(str(data["meta"]))
                edited = [int(i) for i in np.asarray(data["edited"], np.int64)]
                masks = np.asarray(data["masks"], bool)
                reviewed = frozenset(int(i) for i in np.asarray(data["reviewed"], np.int64))
            if meta.get("format") != READER_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {READER_FORMAT!r}")
            n = volume.n_slices
            if masks.shape != (len(edited), *volume.shape) or any(
                not 0 <= i < n for i in [*edited, *reviewed]
            ):
                raise ValueError("its arrays do not match the patient's slices")
        except _READ_ERRORS as exc:
            log.warning("%s: ignoring the reader's saved work that cannot be read: %s", path, exc)
            return None
        return ReaderWork(dict(zip(edited, masks, strict=True)), reviewed, str(meta.get("saved", "")))

    def _read(
        self,
        path: Path,
        volume: Volume,
        segmenter: ModelRef,
        classifier: ModelRef | None,
        mode: tuple[bool, tuple[ModelRef, ...]],
    ) -> StoredResult:
        with np.load(path, allow_pickle=False) as data:
            meta: dict[str, Any] = json.loads(str(data["meta"]))
            tumour = np.asarray(data["tumour_probability"], np.float32)
            present = np.asarray(data["has_mask_probability"], bool)
            maps = np.asarray(data["mask_probability"], np.float32)
        if meta.get("format") != STORE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {STORE_FORMAT!r}")
        n = volume.n_slices
        if tumour.shape != (n,) or present.shape != (n,) or maps.shape != (int(present.sum()), *volume.shape):
            raise ValueError("its arrays do not match the patient's slices")
        models = meta["models"]
        stored_seg = ModelRef(**models["segmenter"])
        stored_cls = None if models["classifier"] is None else ModelRef(**models["classifier"])
        stored_ensemble = tuple(ModelRef(**m) for m in models.get(ENSEMBLE_KEY, []))
        it = iter(maps)
        slices = [
            SliceResult(
                index=i,
                tumour_probability=float(tumour[i]),
                segmented=bool(present[i]),
                mask_probability=next(it) if present[i] else None,
                mask=np.zeros(volume.shape, bool),
                area_px=0,
                area_mm2=None,
            )
            for i in range(n)
        ]
        thresholds = Thresholds.from_json(meta["thresholds"])
        if stored_cls is not None:
            slices = with_neighbours(slices, thresholds.gate_reach)
        raw = PatientResult(
            patient_id=volume.patient_id,
            slices=slices,
            thresholds=thresholds,
            segmenter=stored_seg,
            classifier=stored_cls,
            device=str(meta["device"]),
            spacing=volume.spacing,
            flip_tta=bool(meta.get("flip_tta", False)),
            ensemble=stored_ensemble,
        )
        if stored_seg != segmenter or stored_cls != classifier:
            stale = "by other models"
        elif raw.thorough != bool(mode[0] or mode[1]):
            stale = ("in" if raw.thorough else "without") + " thorough mode"
        elif (raw.flip_tta, raw.ensemble) != mode:
            stale = "by another thorough ensemble"  # the card names other members (or flip TTA) now
        else:
            stale = ""
        return StoredResult(rethreshold(raw), stale, str(meta["saved"]), path)
