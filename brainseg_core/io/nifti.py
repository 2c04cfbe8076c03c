"""Reading NIfTI patients (``.nii`` / ``.nii.gz``) into a :class:`Volume`, with nibabel.

Layouts:

- **Patient folder, one file per sequence**, named the way BraTS names them (case-insensitive):
  ``<id>_flair``, ``<id>_t1``, ``<id>_t1ce`` / ``_t1c`` / ``_t1gd`` / ``_post``, ``<id>_t2``; a file
  named ``<id>_seg`` / ``_mask`` / ``_label`` is ground truth (any non-zero label is tumour).
  FLAIR is required; a missing pre- or post-contrast image is replaced by FLAIR with a warning.
- **One 4-D file** (in a folder, or opened directly) whose three volumes are the models' channels
  in order: pre-contrast, FLAIR, post-contrast. A ground-truth file beside it is used.
- **One 3-D file** opened directly is taken as FLAIR (warned).

Sequences on another grid than FLAIR are resampled onto it by physical position. The volume is
shown on the FLAIR grid reoriented to axial, radiological (:mod:`brainseg_core.geometry`), and
exports map masks back to exactly the FLAIR file's voxels.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brainseg_core.errors import DataError
from brainseg_core.io.sequences import (
    MODEL_SEQUENCES,
    Sequence,
    SequenceImage,
    assemble_channels,
    sequence_from_filename,
)
from brainseg_core.io.tiff import to_uint8
from brainseg_core.io.volume import PatientFormat, Volume

if TYPE_CHECKING:  # nibabel loads with the first file read, not with the name helpers
    from brainseg_core.geometry import Geometry

__all__ = ["is_nifti_name", "nifti_files", "nifti_stem", "read_nifti_patient"]

_SUFFIX = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


def is_nifti_name(name: str | Path) -> bool:
    """Whether a file name ends in ``.nii`` or ``.nii.gz`` (any case)."""
    return bool(_SUFFIX.search(str(name)))


def nifti_stem(name: str | Path) -> str:
    """The file name without its ``.nii`` / ``.nii.gz`` suffix."""
    return _SUFFIX.sub("", Path(name).name)


def nifti_files(folder: Path) -> list[Path]:
    """The visible NIfTI files directly in ``folder``, sorted by name."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(folder / n for n in names if not n.startswith(".") and is_nifti_name(n))


def _load(path: Path) -> tuple[np.ndarray, Geometry | None, np.ndarray]:
    """``(data, geometry of its first 3 axes, affine)``; raises DataError naming the file."""
    import nibabel as nib

    from brainseg_core.geometry import Geometry

    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise DataError(path, f"is a {type(img).__name__}, not a NIfTI image")
        data = np.asarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except DataError:
        raise
    except Exception as exc:  # nibabel raises many types for truncated or foreign files
        raise DataError(path, f"cannot be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise DataError(path, f"holds {data.dtype} voxels; BrainSeg reads real-valued images")
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim not in (3, 4):
        raise DataError(
            path, f"is a {data.ndim}-D image; BrainSeg reads 3-D volumes or a 4-D file of 3 channels"
        )
    try:
        form = "sform" if img.header["sform_code"] > 0 else "qform"
        geometry = Geometry(affine, data.shape[:3], f"NIfTI {form} of {path.name}")
    except ValueError as exc:
        raise DataError(path, f"has an unusable orientation: {exc}") from exc
    return data, geometry, affine


def _classify(folder: Path, files: list[Path]) -> dict[Sequence, Path]:
    found: dict[Sequence, Path] = {}
    for f in files:
        seq = sequence_from_filename(nifti_stem(f))
        if seq is None:
            continue
        if seq in found:
            raise DataError(
                folder,
                f"holds two {seq.label} files ({found[seq].name} and {f.name}); keep one per sequence",
            )
        found[seq] = f
    return found


def read_nifti_patient(path: Path) -> Volume:
    """Read a NIfTI patient folder or file (see the module docstring for the layouts).

    Args:
        path: a folder of NIfTI files or one ``.nii`` / ``.nii.gz`` file.

    Returns:
        The patient on the FLAIR grid, display-ordered, with :attr:`Volume.geometry` set.

    Raises:
        DataError: naming the file: unreadable or truncated files, no FLAIR, a 4-D file that does
            not hold exactly 3 channels, two files for one sequence. Ground truth on another grid
            is resampled (nearest) with a warning.
    """
    warnings: list[str] = []
    if path.is_file() and sequence_from_filename(nifti_stem(path)) not in (None, Sequence.LABEL):
        path = path.parent  # one sequence of a patient folder: open the whole folder
    if path.is_file():
        patient_id = nifti_stem(path)
        if sequence_from_filename(patient_id) is Sequence.LABEL:
            raise DataError(path, "is a ground-truth segmentation; open its patient's images instead")
        label_path = next(
            (
                f
                for f in nifti_files(path.parent)
                if sequence_from_filename(nifti_stem(f)) is Sequence.LABEL
                and nifti_stem(f).lower().startswith(patient_id.lower())
            ),
            None,
        )
        flair_file = path
        images = _images_of_file(path, warnings)
    else:
        files = nifti_files(path)
        patient_id = path.name
        if not files:
            raise DataError(path, "holds no NIfTI files (.nii / .nii.gz)")
        named = _classify(path, files)
        label_path = named.pop(Sequence.LABEL, None)
        named.pop(Sequence.T2, None)
        if named:
            if Sequence.FLAIR not in named:
                raise DataError(
                    path,
                    "has no FLAIR file (<id>_flair.nii.gz); BrainSeg's models need FLAIR "
                    f"(found: {', '.join(p.name for p in named.values())})",
                )
            images = {seq: _sequence_image(p, seq) for seq, p in named.items()}
            flair_file = named[Sequence.FLAIR]
        else:
            candidates = [f for f in files if f != label_path]
            if len(candidates) != 1:
                raise DataError(
                    path,
                    "holds NIfTI files whose names say no sequence ("
                    + ", ".join(f.name for f in candidates[:4])
                    + "); name them <id>_flair, <id>_t1, <id>_t1ce, <id>_seg, or keep one 4-D file "
                    "of pre-contrast, FLAIR, post-contrast",
                )
            flair_file = candidates[0]
            images = _images_of_file(flair_file, warnings)
    try:
        channels, geometry, more = assemble_channels(images, where=str(path))
    except ValueError as exc:
        raise DataError(path, str(exc).split(": ", 1)[-1]) from exc
    warnings += more
    masks = None
    if label_path is not None:
        masks = _read_label(label_path, geometry, warnings)
    uint8 = to_uint8(list(channels))
    return Volume(
        patient_id=patient_id,
        source=path,
        slice_paths=[flair_file] * uint8.shape[0],
        slice_numbers=list(range(1, uint8.shape[0] + 1)),
        images=uint8,
        masks=masks,
        warnings=warnings,
        geometry=geometry,
        reference_files=(flair_file,),
        channel_sources=tuple(images.get(s, images[Sequence.FLAIR]).source for s in MODEL_SEQUENCES),
        format=PatientFormat.NIFTI,
    )


def _sequence_image(path: Path, seq: Sequence) -> SequenceImage:
    data, geometry, _ = _load(path)
    if data.ndim != 3:
        raise DataError(path, f"is 4-D ({data.shape}); a {seq.label} file must hold one 3-D volume")
    assert geometry is not None
    return SequenceImage(data, geometry, str(path))


def _images_of_file(path: Path, warnings: list[str]) -> dict[Sequence, SequenceImage]:
    """The channels of a single file: 4-D with 3 volumes, or 3-D taken as FLAIR."""
    data, geometry, _ = _load(path)
    assert geometry is not None
    if data.ndim == 3:
        warnings.append(f"{path}: one 3-D image without a sequence name; read as FLAIR")
        return {Sequence.FLAIR: SequenceImage(data, geometry, str(path))}
    if data.shape[3] != 3:
        raise DataError(
            path,
            f"is 4-D with {data.shape[3]} volumes; a 4-D file must hold exactly 3 "
            "(pre-contrast, FLAIR, post-contrast, in that order)",
        )
    return {
        seq: SequenceImage(data[..., i], geometry, f"{path}[{i}]") for i, seq in enumerate(MODEL_SEQUENCES)
    }


def _read_label(path: Path, geometry: Geometry, warnings: list[str]) -> np.ndarray | None:
    data, label_geometry, _ = _load(path)
    assert label_geometry is not None
    if data.ndim != 3:
        warnings.append(f"{path}: ground truth is {data.ndim}-D, not 3-D; ignored")
        return None
    if not label_geometry.same_grid(geometry):
        from brainseg_core.geometry import resample_onto

        warnings.append(f"{path}: ground truth is on another grid than FLAIR; resampled (nearest)")
        data = resample_onto((data != 0).astype(np.float32), label_geometry, geometry, order=0)
    return geometry.to_display(np.asarray(data) != 0)
