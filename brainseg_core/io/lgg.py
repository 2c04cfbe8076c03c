"""Reading patient folders (LGG layout), dataset roots and multi-page TIFF stacks into a Volume.

Layouts:

- **Patient folder** (the LGG / ``kaggle_3m`` layout): one TIFF per slice, named
  ``<prefix><n>.tif`` (e.g. ``TCGA_CS_4942_19970222_12.tif``; ``.tiff`` and any case work),
  ordered by the number ``n`` (``_2`` before ``_10``), with an optional ground-truth mask
  ``<prefix><n>_mask.tif`` per slice. A file name ending in a number makes a TIFF a slice.
- **Dataset root**: any folder holding patient folders and/or stacks at any depth, e.g. the
  published Kaggle archive, whose ``kaggle_3m/`` is repeated as ``lgg-mri-segmentation/kaggle_3m/``:
  identical copies (same id, file names, sizes and sampled pixels) are listed once, the
  shallowest kept.
- **Stack**: one multi-page TIFF, one page per slice (an ImageJ hyperstack with 3 channels per
  slice works too), with an optional multi-page mask ``<name>_mask.tif`` beside ``<name>.tif``.

Ground truth is all or nothing: :attr:`Volume.masks` is set only when every kept slice has a
usable mask. When some slices have one and others do not (or a mask is unreadable or of another
size than its image), the volume opens with ``masks=None`` and :attr:`Volume.warnings` says which
masks are missing or broken and why. Treating a missing mask as "no tumour" would silently turn
unlabelled slices into false negatives for training and evaluation.

Broken slices do not stop a patient from opening: a slice that cannot be read, or whose size
differs from the other slices (the most common size wins), is left out and listed in
:attr:`Volume.skipped` with the reason. Only when nothing usable remains is a
:class:`~brainseg_core.errors.DataError` raised.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from brainseg_core.errors import DataError
from brainseg_core.io.tiff import (
    as_page,
    decode_image,
    decode_mask,
    imagej_slice_spacing_mm,
    is_tiff_name,
    open_tiff,
    pages_missing_after,
    pixel_spacing_mm,
    tifffile_messages,
    to_uint8,
    unreadable,
)
from brainseg_core.io.volume import SkippedSlice, Volume
from brainseg_core.spacing import Spacing

__all__ = ["find_patients", "is_patient_dir", "open_volume"]

_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)(?P<mask>_mask)?$", re.IGNORECASE)
#: Sidecar file that marks a folder as BrainSeg export output (see brainseg_core.export).
EXPORT_SIDECAR = "brainseg_export.json"
_MASK_SUFFIX = re.compile(r"_mask$", re.IGNORECASE)
_READ_THREADS = 8  # tifffile releases the GIL while reading and decoding


@dataclass(frozen=True)
class _SliceFile:
    path: Path
    prefix: str
    number: int
    is_mask: bool


@dataclass
class _Decoded:
    """One decoded slice file: image ``(H, W, C)`` or mask ``(H, W)``, its spacing, page count."""

    data: np.ndarray
    spacing: tuple[float, float] | None
    n_pages: int
    messages: tuple[str, ...] = ()


def _stem(name: str) -> str:
    return name[: name.rfind(".")]


def _parse(path: Path) -> _SliceFile | None:
    """The slice number and kind of a file named like a slice, else None."""
    m = _NUMBERED.match(_stem(path.name))
    if m is None:
        return None
    return _SliceFile(path, m["prefix"], int(m["number"]), m["mask"] is not None)


def _visible_entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(folder, f"cannot be listed ({exc.strerror or exc})") from exc


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _tiff_files(entries: list[os.DirEntry[str]]) -> list[Path]:
    return [Path(e.path) for e in entries if is_tiff_name(e.name) and _is_file(e)]


def _has_slice_images(entries: list[os.DirEntry[str]]) -> bool:
    return any((s := _parse(p)) is not None and not s.is_mask for p in _tiff_files(entries))


def is_patient_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a patient folder: a folder holding at least one numbered slice TIFF.

    Only names are looked at (no file is opened), so this is cheap enough for file browsers.

    Args:
        path: any path.

    Returns:
        True for a folder with a file such as ``<prefix>_<n>.tif`` that is not a ``_mask``.
    """
    folder = Path(path)
    if not folder.is_dir():
        return False
    try:
        return _has_slice_images(_visible_entries(folder))
    except DataError:
        return False


def open_volume(path: str | os.PathLike[str]) -> Volume:
    """Read one patient: a folder of slice TIFFs or a (multi-page) TIFF stack.

    Args:
        path: a patient folder (LGG layout) or a ``.tif``/``.tiff`` stack file.

    Returns:
        The patient's :class:`Volume`, slices in order, at the source size.

    Raises:
        DataError: the path does not exist, is empty, holds no slices, is a dataset folder rather
            than one patient, or none of its slices can be read. Individual broken slices do not
            raise; they are listed in ``volume.skipped``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "does not exist")
    if path.is_dir():
        return _read_patient_dir(path)
    if path.is_file():
        return _read_stack(path)
    raise DataError(path, "is neither a file nor a folder")


# --------------------------------------------------------------------------------------------
# Patient folders


def _describe_non_patient_dir(folder: Path, entries: list[os.DirEntry[str]]) -> str:
    """The problem to report when a folder given as a patient holds no slice images."""
    if not entries:
        return "is an empty folder; choose a patient folder with slice TIFFs (<patient>_<n>.tif)"
    tiffs = _tiff_files(entries)
    masks = [p for p in tiffs if (s := _parse(p)) is not None and s.is_mask]
    if masks:
        return (
            f"holds only ground-truth masks ({len(masks)} *_mask.tif, e.g. {masks[0].name}) and no slice "
            "images; each mask needs its image <prefix>_<n>.tif beside it"
        )
    patients = [e.name for e in entries if _is_dir(e) and is_patient_dir(e.path)]
    if patients:
        return (
            f"is a dataset folder holding {len(patients)} patient folder(s) (e.g. {patients[0]}); "
            "open one patient folder, not the dataset root"
        )
    if tiffs:
        return (
            f"holds TIFF files without slice numbers (e.g. {tiffs[0].name}); open a stack file "
            "itself, or name slices <patient>_<n>.tif"
        )
    return "holds no TIFF slices; a patient folder holds one <patient>_<n>.tif per slice"


def _read_file(path: Path, *, mask: bool) -> _Decoded:
    """Decode the first page of a slice file (image or mask); tifffile's log lines come back as
    ``messages`` (or in the error) instead of reaching stderr without a file name."""
    with tifffile_messages() as messages:
        try:
            with open_tiff(path) as tif:
                try:
                    n_pages = len(tif.pages)
                    if n_pages == 0:
                        raise DataError(
                            path, "is not a readable TIFF image: no image page (truncated or damaged file)"
                        )
                    page = as_page(tif.pages[0])
                    data = decode_mask(path, page) if mask else decode_image(path, page)
                    spacing = None if mask else pixel_spacing_mm(tif, page)
                except Exception as exc:
                    raise unreadable(path, exc) from exc
        except DataError as exc:
            if messages:
                raise DataError(path, f"{exc.problem}; tifffile: {'; '.join(messages)}") from None
            raise
    return _Decoded(data, spacing, n_pages, tuple(messages))


def _read_many(files: list[tuple[Path, bool]]) -> list[_Decoded | DataError]:
    """Decode many slice files in parallel; a failure is returned, not raised."""

    def one(item: tuple[Path, bool]) -> _Decoded | DataError:
        try:
            return _read_file(item[0], mask=item[1])
        except DataError as exc:
            return exc
        except Exception as exc:  # anything tifffile/imagecodecs/OS raise: never a raw traceback
            return unreadable(item[0], exc)

    if len(files) <= 1:
        return [one(f) for f in files]
    with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(files))) as pool:
        return list(pool.map(one, files))


def _read_patient_dir(folder: Path) -> Volume:
    entries = _visible_entries(folder)
    warnings: list[str] = []
    images: dict[int, _SliceFile] = {}
    masks: dict[tuple[str, int], _SliceFile] = {}
    skipped: list[SkippedSlice] = []
    duplicates: list[_SliceFile] = []
    for e in entries:  # a link to a file that is gone: say so, do not drop it silently
        if is_tiff_name(e.name) and e.is_symlink() and not os.path.exists(e.path):
            link = Path(e.path)
            parsed = _parse(link)
            if parsed is not None and parsed.is_mask:
                warnings.append(f"{link}: mask not read: a symbolic link to a file that does not exist")
            else:
                skipped.append(SkippedSlice(link, "is a symbolic link to a file that does not exist"))
    for path in _tiff_files(entries):
        s = _parse(path)
        if s is None:
            warnings.append(f"{path}: not read: its name has no slice number (<patient>_<n>.tif)")
        elif s.is_mask:
            masks[(s.prefix, s.number)] = s
        elif s.number in images:
            duplicates.append(s)
        else:
            images[s.number] = s
    if not images:
        raise DataError(folder, _describe_non_patient_dir(folder, entries))
    prefixes = sorted({s.prefix for s in images.values()} | {s.prefix for s in duplicates})
    if len(prefixes) > 1:
        shown = ", ".join(repr(p) for p in prefixes[:4])
        raise DataError(
            folder,
            f"holds the slices of more than one series (file name prefixes {shown}); "
            "put each patient's slices in a folder of their own",
        )
    for s in duplicates:
        skipped.append(
            SkippedSlice(s.path, f"duplicate slice number {s.number} (also {images[s.number].path.name})")
        )
    prefix = prefixes[0]
    for (mask_prefix, number), orphan in sorted(masks.items(), key=lambda kv: kv[1].path.name):
        if mask_prefix != prefix or number not in images:
            warnings.append(f"{orphan.path}: mask without an image (no {mask_prefix}{number}.tif); ignored")

    ordered = [images[n] for n in sorted(images)]
    paired = [masks.get((prefix, s.number)) for s in ordered]
    jobs = [(s.path, False) for s in ordered] + [(m.path, True) for m in paired if m is not None]
    results = _read_many(jobs)
    image_results = results[: len(ordered)]
    mask_results = iter(results[len(ordered) :])

    kept: list[tuple[_SliceFile, _Decoded, _SliceFile | None, _Decoded | DataError | None]] = []
    for s, res, m in zip(ordered, image_results, paired, strict=True):
        mres: _Decoded | DataError | None = next(mask_results) if m is not None else None
        if isinstance(res, DataError):
            skipped.append(SkippedSlice(s.path, res.problem))
            continue
        warnings.extend(f"{s.path}: tifffile: {msg}" for msg in res.messages)
        if res.n_pages > 1:
            warnings.append(f"{s.path}: holds {res.n_pages} pages; only the first is read")
        kept.append((s, res, m, mres))
    if kept and all(d.n_pages > 1 for _, d, _, _ in kept):
        raise DataError(
            folder,
            f"holds multi-page TIFF stacks named like slices ({kept[0][0].path.name} has "
            f"{kept[0][1].n_pages} pages): each file is one patient; open the files one by one, or "
            "open this folder as a dataset root",
        )

    size = _common_size([d.data.shape[:2] for _, d, _, _ in kept])
    in_size = []
    for item in kept:
        s, d = item[0], item[1]
        if d.data.shape[:2] != size:
            skipped.append(SkippedSlice(s.path, _size_problem(d.data.shape[:2], size, "slices")))
        else:
            in_size.append(item)
    kept = in_size
    if not kept:
        first = skipped[0] if skipped else None
        raise DataError(
            folder,
            f"none of its {len(ordered)} slice image(s) can be read"
            + (f"; e.g. {first.path.name} {first.reason}" if first else ""),
        )

    mask_array = _folder_masks(kept, prefix, warnings)
    spacings = {d.spacing for _, d, _, _ in kept}
    spacing = next(iter(spacings)) if len(spacings) == 1 else None
    if len(spacings) > 1:
        warnings.append(f"{folder}: its slices disagree on pixel spacing; spacing treated as unknown")
    skipped.sort(key=lambda k: _sort_key(k.path))
    return Volume(
        patient_id=patient_id_of(folder),
        source=folder,
        slice_paths=[s.path for s, _, _, _ in kept],
        slice_numbers=[s.number for s, _, _, _ in kept],
        images=to_uint8([d.data for _, d, _, _ in kept]),
        masks=mask_array,
        spacing=None if spacing is None else Spacing(*spacing),
        skipped=skipped,
        warnings=warnings,
    )


def _sort_key(path: Path) -> tuple[int, str]:
    s = _parse(path)
    return (s.number if s is not None else -1, path.name)


def _common_size(sizes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The most common (H, W); ties go to the earliest slice."""
    if not sizes:
        return None
    counts = Counter(sizes)
    best = max(counts.values())
    return next(s for s in sizes if counts[s] == best)


def _size_problem(got: tuple[int, ...], want: tuple[int, ...] | None, what: str) -> str:
    assert want is not None
    return f"is {got[1]}x{got[0]} pixels but the other {what} are {want[1]}x{want[0]}"


def _folder_masks(
    kept: list[tuple[_SliceFile, _Decoded, _SliceFile | None, _Decoded | DataError | None]],
    prefix: str,
    warnings: list[str],
) -> np.ndarray | None:
    """Stack the kept slices' masks when every one is usable; otherwise None plus warnings."""
    if all(m is None for _, _, m, _ in kept):
        return None
    problems: list[str] = []
    arrays: list[np.ndarray] = []
    for s, d, m, mres in kept:
        if m is None or mres is None:
            problems.append(f"{s.path.parent / f'{prefix}{s.number}_mask.tif'}: missing")
        elif isinstance(mres, DataError):
            problems.append(str(mres))
        elif mres.data.shape != d.data.shape[:2]:
            problems.append(
                f"{m.path}: mask is {mres.data.shape[1]}x{mres.data.shape[0]} pixels but its image "
                f"{s.path.name} is {d.data.shape[1]}x{d.data.shape[0]}"
            )
        else:
            arrays.append(mres.data)
    if problems:
        warnings.append(
            f"ground-truth masks ignored for this patient: {len(problems)} of {len(kept)} slices "
            "have no usable mask"
        )
        warnings.extend(problems)
        return None
    return np.stack(arrays)


# --------------------------------------------------------------------------------------------
# Multi-page stacks


def _mask_sibling(path: Path) -> Path | None:
    stem = _stem(path.name)
    for suffix in (path.suffix, ".tif", ".tiff", ".TIF", ".TIFF"):
        candidate = path.with_name(f"{stem}_mask{suffix}")
        if candidate != path and candidate.is_file():
            return candidate
    return None


def _image_for_mask(path: Path) -> Path | None:
    stem = _stem(path.name)
    if not _MASK_SUFFIX.search(stem):
        return None
    base = _MASK_SUFFIX.sub("", stem)
    for suffix in (path.suffix, ".tif", ".tiff", ".TIF", ".TIFF"):
        candidate = path.with_name(base + suffix)
        if candidate.is_file():
            return candidate
    return None


def _stack_pages(path: Path, tif: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    """Every full-resolution page (thumbnails and reduced-resolution pages left out)."""
    try:
        return [as_page(p) for p in tif.pages if not getattr(p, "is_reduced", False)]
    except Exception as exc:
        raise unreadable(path, exc) from exc


def _channels_per_slice(path: Path, tif: tifffile.TiffFile) -> int:
    """1, or 3 for an ImageJ hyperstack storing each slice as 3 greyscale channel pages."""
    if not tif.is_imagej:
        return 1
    meta = tif.imagej_metadata or {}
    channels = int(meta.get("channels", 1) or 1)
    if int(meta.get("slices", 1) or 1) > 1 and int(meta.get("frames", 1) or 1) > 1:
        raise DataError(
            path, "is a time series of volumes (ImageJ frames and slices); save one volume per file"
        )
    if channels not in (1, 3):
        raise DataError(
            path,
            f"has {channels} channels per slice; BrainSeg reads 1 (greyscale) or 3 "
            "(pre-contrast, FLAIR, post-contrast)",
        )
    return channels


def _decode_stack(
    path: Path, tif: tifffile.TiffFile, *, mask: bool
) -> tuple[list[np.ndarray | DataError], tifffile.TiffPage | None, str | None]:
    """Decode every slice of a stack; a slice that fails is returned as its DataError.

    Returns:
        The slices, the first page (for its tags), and the problem when pages are missing at the end.
    """
    pages = _stack_pages(path, tif)
    lost = None
    if tif.pages and pages_missing_after(tif, as_page(tif.pages[-1])):
        lost = f"is truncated or damaged after page {len(tif.pages)}: any later pages are lost"
    channels = 1 if mask else _channels_per_slice(path, tif)
    if channels > 1 and len(pages) % channels:
        raise DataError(path, f"has {len(pages)} pages, not a multiple of its {channels} channels")
    slices: list[np.ndarray | DataError] = []
    for i in range(0, len(pages), channels):
        where = (
            f"page {i + 1} "
            if channels == 1
            else f"slice {i // channels + 1} (pages {i + 1}-{i + channels}) "
        )
        try:
            if mask:
                slices.append(decode_mask(path, pages[i], where))
            else:
                parts = [decode_image(path, pages[i + c], where) for c in range(channels)]
                slices.append(parts[0] if channels == 1 else np.concatenate(parts, axis=2))
        except DataError as exc:
            slices.append(exc)
        except Exception as exc:
            slices.append(unreadable(path, exc))
    return slices, (pages[0] if pages else None), lost


def _read_stack(path: Path) -> Volume:
    if not is_tiff_name(path.name):
        raise DataError(path, "is not a TIFF file; BrainSeg opens .tif/.tiff stacks or patient folders")
    image_path = _image_for_mask(path)
    if image_path is not None:
        raise DataError(path, f"is a ground-truth mask; open its image {image_path.name} instead")
    warnings: list[str] = []
    with tifffile_messages() as messages, open_tiff(path) as tif:
        slices, first_page, lost = _decode_stack(path, tif, mask=False)
        spacing = pixel_spacing_mm(tif, first_page) if first_page is not None else None
        thickness = imagej_slice_spacing_mm(tif)
    warnings.extend(f"{path}: tifffile: {msg}" for msg in messages)
    if not slices:
        raise DataError(path, "holds no image pages")
    skipped: list[SkippedSlice] = []
    good = [(i, s) for i, s in enumerate(slices) if not isinstance(s, DataError)]
    for s in slices:
        if isinstance(s, DataError):
            skipped.append(SkippedSlice(path, s.problem))
    if lost is not None:
        skipped.append(SkippedSlice(path, lost))
    size = _common_size([s.shape[:2] for _, s in good])
    kept = []
    for i, s in good:
        if s.shape[:2] == size:
            kept.append((i, s))
        else:
            skipped.append(SkippedSlice(path, f"slice {i + 1} " + _size_problem(s.shape[:2], size, "slices")))
    if not kept:
        raise DataError(path, f"none of its {len(slices)} slice(s) can be read; e.g. {skipped[0].reason}")
    masks = _stack_masks(path, len(slices), kept, warnings)
    return Volume(
        patient_id=patient_id_of(path),
        source=path,
        slice_paths=[path] * len(kept),
        slice_numbers=[i + 1 for i, _ in kept],
        images=to_uint8([s for _, s in kept]),
        masks=masks,
        spacing=None if spacing is None else Spacing(*spacing, thickness_mm=thickness),
        skipped=skipped,
        warnings=warnings,
    )


def _stack_masks(
    path: Path, n_slices: int, kept: list[tuple[int, np.ndarray]], warnings: list[str]
) -> np.ndarray | None:
    """Read ``<name>_mask.tif`` beside a stack when it exists and fits every kept slice."""
    mask_path = _mask_sibling(path)
    if mask_path is None:
        return None
    try:
        with open_tiff(mask_path) as tif:
            masks, _, lost = _decode_stack(mask_path, tif, mask=True)
    except DataError as exc:
        warnings.append(f"ground-truth masks ignored: {exc}")
        return None
    if lost is not None:
        warnings.append(f"ground-truth masks ignored: {mask_path}: {lost}")
        return None
    if len(masks) != n_slices:
        warnings.append(
            f"ground-truth masks ignored: {mask_path} has {len(masks)} page(s) but {path.name} has "
            f"{n_slices} slice(s)"
        )
        return None
    arrays = []
    for i, image in kept:
        m = masks[i]
        if isinstance(m, DataError):
            warnings.append(f"ground-truth masks ignored: {m}")
            return None
        if m.shape != image.shape[:2]:
            warnings.append(
                f"ground-truth masks ignored: {mask_path}: page {i + 1} is {m.shape[1]}x{m.shape[0]} "
                f"pixels but the image is {image.shape[1]}x{image.shape[0]}"
            )
            return None
        arrays.append(m)
    return np.stack(arrays)


# --------------------------------------------------------------------------------------------
# Dataset roots


def find_patients(path: str | os.PathLike[str]) -> list[Path]:
    """Every patient (folder of slices or stack file) at or under ``path``.

    A patient folder or a stack file gives ``[path]``. Any other folder is searched at every
    depth (hidden folders and files skipped, patient folders not entered): each patient folder
    and each TIFF stack (a TIFF that is not a ``*_mask.tif`` and whose name has no slice number,
    or a multi-page one in a folder of such numbered stacks) is a patient. Folders written by
    BrainSeg's exporter (holding ``brainseg_export.json``) are skipped. Symbolic links to folders
    are followed, each real folder entered once (so a link loop ends). Identical copies of a
    patient (same id, file names, sizes and the contents of every file), such as the Kaggle archive's
    repeated ``lgg-mri-segmentation/kaggle_3m``, are listed once: the copy
    nearest to ``path``.

    Args:
        path: a dataset root, a patient folder or a stack file.

    Returns:
        The patients, sorted by path.

    Raises:
        DataError: ``path`` does not exist, is not a TIFF/folder, or holds no patient.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(root, "does not exist")
    if root.is_file():
        if not is_tiff_name(root.name):
            raise DataError(
                root,
                "is not a TIFF, NIfTI or DICOM file; BrainSeg opens .tif/.tiff stacks, .nii/.nii.gz "
                "files, DICOM studies and patient folders",
            )
        image_path = _image_for_mask(root)
        if image_path is not None:
            raise DataError(root, f"is a ground-truth mask; open its image {image_path.name} instead")
        return [root]
    if is_patient_dir(root) and not _holds_numbered_stacks(root, os.listdir(root)):
        return [root]
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()  # (device, inode) of every folder entered: symlink loops end
    for dirpath, dirnames, filenames in os.walk(root, onerror=None, followlinks=True):
        here = Path(dirpath)
        try:
            st = here.stat()
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if EXPORT_SIDECAR in filenames:  # BrainSeg's own export output, not a patient
            dirnames[:] = []
            continue
        stacks_here = _holds_numbered_stacks(here, filenames)
        if here != root and _is_patient_listing(filenames) and not stacks_here:
            found.append(here)
            dirnames[:] = []
            continue
        for name in sorted(filenames):
            if name.startswith(".") or not is_tiff_name(name) or _MASK_SUFFIX.search(_stem(name)):
                continue
            if _parse(Path(name)) is None or (stacks_here and _page_count(here / name) > 1):
                found.append(here / name)
    if not found:
        raise DataError(
            root,
            "holds no patient folders (<patient>/<patient>_<n>.tif) and no TIFF stacks"
            if _visible_entries(root)
            else "is an empty folder",
        )
    return sorted(_dedupe(root, found), key=lambda p: str(p))


def _page_count(path: Path) -> int:
    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages)
    except Exception:  # unreadable files are reported when the patient is opened
        return 1


def _holds_numbered_stacks(folder: Path, filenames: list[str]) -> bool:
    """True when the folder's first slice-named image is a multi-page stack (e.g. ``case1.tif``,
    ``case2.tif``, one patient each): then its files are stacks, not the slices of one patient."""
    for name in sorted(filenames):
        s = _parse(Path(name)) if not name.startswith(".") and is_tiff_name(name) else None
        if s is not None and not s.is_mask:
            return _page_count(folder / name) > 1
    return False


def _is_patient_listing(filenames: list[str]) -> bool:
    for name in filenames:
        if not name.startswith(".") and is_tiff_name(name):
            s = _parse(Path(name))
            if s is not None and not s.is_mask:
                return True
    return False


def _signature(path: Path) -> tuple[tuple[str, int], ...]:
    """What makes two copies of a patient identical: file names and sizes."""
    try:
        if path.is_file():
            mask = _mask_sibling(path)
            files = [path] + ([mask] if mask is not None else [])
            return tuple((p.name, p.stat().st_size) for p in files)
        with os.scandir(path) as it:
            return tuple(sorted((e.name, e.stat().st_size) for e in it if e.is_file()))
    except OSError:
        return ((str(path), -1),)  # unreadable: never considered a duplicate


def _content_digest(path: Path) -> str:
    """sha256 over every file of a patient (names and contents), to tell real copies apart.

    Only computed for patients whose id, file names and sizes already match another's, so the
    full read is rare; a copy that differs in a single slice is not a copy.
    """
    h = hashlib.sha256()
    try:
        if path.is_file():
            files = [path]
        else:
            with os.scandir(path) as it:
                files = [path / n for n in sorted(e.name for e in it if e.is_file())]
        for f in files:
            h.update(f.name.encode("utf-8", "surrogateescape") + b"\0")
            with f.open("rb") as fh:
                for chunk in iter(functools.partial(fh.read, 1 << 20), b""):
                    h.update(chunk)
    except OSError:
        return f"unreadable:{path}"  # never considered a duplicate
    return h.hexdigest()


def patient_id_of(path: str | os.PathLike[str]) -> str:
    """The patient id :func:`open_volume` gives ``path``: a folder's name or a stack file's stem.

    Only the path is looked at (nothing is read), so callers can name patients before opening them.
    """
    p = Path(path)
    return _stem(p.name) if p.is_file() else p.name


def _dedupe(root: Path, found: list[Path]) -> list[Path]:
    by_depth = sorted(found, key=lambda p: (len(p.relative_to(root).parts), str(p)))
    kept: list[Path] = []
    first_of: dict[tuple[str, tuple[tuple[str, int], ...]], list[Path]] = {}
    digests: dict[Path, str] = {}

    def digest(path: Path) -> str:  # each patient's files are read at most once
        if path not in digests:
            digests[path] = _content_digest(path)
        return digests[path]

    for p in by_depth:
        copies = first_of.setdefault((patient_id_of(p), _signature(p)), [])
        # Same id, file names and sizes (uncompressed TIFFs of one size always match): a copy
        # only if the contents match too, so two different patients that share an id both stay.
        if copies and digest(p) in {digest(q) for q in copies}:
            continue
        copies.append(p)
        kept.append(p)
    return kept
