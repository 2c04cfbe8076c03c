"""Decoding TIFF pages into BrainSeg's arrays, with errors that name the file and the problem.

This module knows TIFF, not folder layouts (that is :mod:`brainseg_core.io.lgg`). It accepts what
real TIFFs look like:

- any compression tifffile (with imagecodecs) decodes: none, LZW, deflate/zlib, PackBits, JPEG, ...;
- greyscale (replicated to three channels later), RGB, greyscale + alpha and RGBA (alpha dropped),
  planar ("separate") as well as interleaved samples, min-is-white greyscale (inverted);
- 8-bit, 16-bit, 32-bit, signed and floating-point samples (see :func:`to_uint8`);
- masks stored as 0/255, 0/1, bool, any integer labels or RGB: a pixel is tumour when any of its
  (colour) samples is > 0.

Every failure is a :class:`~brainseg_core.errors.DataError` naming the file, never a raw library
traceback: a truncated file, a corrupt one, an unsupported colour model or layout.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile

from brainseg_core.errors import DataError

#: File name suffixes read as TIFF (compared case-insensitively).
TIFF_SUFFIXES: tuple[str, str] = (".tif", ".tiff")

#: Non-8-bit images are rescaled per volume and channel so that this percentile of the
#: foreground (samples above the background level) maps to 255; brighter samples saturate.
RESCALE_PERCENTILE = 99.9

# Millimetres per unit of TIFF ResolutionUnit values that denote a physical length. INCH is left
# out on purpose: 72/96/300 dpi are screen or print defaults written by any image editor and say
# nothing about the scanner's pixel size.
_RESUNIT_MM = {
    tifffile.RESUNIT.CENTIMETER: 10.0,
    tifffile.RESUNIT.MILLIMETER: 1.0,
    tifffile.RESUNIT.MICROMETER: 1e-3,
}
# Millimetres per ImageJ ``unit`` (ImageJ writes ResolutionUnit NONE and names the unit in its
# description).
_IMAGEJ_UNIT_MM = {"mm": 1.0, "cm": 10.0, "micron": 1e-3, "um": 1e-3, "µm": 1e-3, "\\u00B5m": 1e-3}

_GREY = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE)
_COLOUR = (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)  # YCbCr is decoded to RGB


def is_tiff_name(name: str | Path) -> bool:
    """True when ``name`` ends in ``.tif`` or ``.tiff`` (any case)."""
    return str(name).lower().endswith(TIFF_SUFFIXES)


class _TifffileLogCapture(logging.Filter):
    """Routes the ``tifffile`` logger's records of capturing threads into their own lists."""

    def __init__(self) -> None:
        super().__init__()
        self.sinks: dict[int, list[str]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        sink = self.sinks.get(record.thread or 0)
        if sink is None:
            return True
        sink.append(record.getMessage())
        return False  # captured: not printed as a raw "<tifffile.TiffPages @...>" line


_CAPTURE = _TifffileLogCapture()
logging.getLogger("tifffile").addFilter(_CAPTURE)


@contextlib.contextmanager
def tifffile_messages() -> Iterator[list[str]]:
    """Collect what tifffile logs in this thread (instead of printing it) for the ``with`` block.

    Yields:
        The list that receives the messages; the reader attaches them to the file they concern.
    """
    sink: list[str] = []
    tid = threading.get_ident()
    outer = _CAPTURE.sinks.get(tid)
    _CAPTURE.sinks[tid] = sink
    try:
        yield sink
    finally:
        if outer is None:
            _CAPTURE.sinks.pop(tid, None)
        else:
            _CAPTURE.sinks[tid] = outer
            outer.extend(sink)


def unreadable(path: Path, exc: BaseException) -> DataError:
    """Wrap a library exception raised while reading ``path`` into a :class:`DataError`.

    Args:
        path: the file being read.
        exc: what the TIFF library raised.

    Returns:
        A DataError whose problem says the file is not a readable TIFF image, and why.
    """
    if isinstance(exc, DataError):
        return exc
    detail = str(exc).strip() or type(exc).__name__
    return DataError(path, f"is not a readable TIFF image ({detail})")


def open_tiff(path: Path) -> tifffile.TiffFile:
    """Open ``path`` with tifffile, turning any failure into a :class:`DataError`.

    Raises:
        DataError: the file cannot be opened or is not a TIFF file.
    """
    try:
        return tifffile.TiffFile(path)
    except Exception as exc:
        if os.path.getsize(path) == 0:
            raise DataError(path, "is an empty file (0 bytes)") from exc
        raise unreadable(path, exc) from exc


def as_page(page: tifffile.TiffPage | tifffile.TiffFrame) -> tifffile.TiffPage:
    """A full page for a page tifffile handed out (a frame, if tifffile used one, is expanded)."""
    return page if isinstance(page, tifffile.TiffPage) else page.aspage()


def pages_missing_after(tif: tifffile.TiffFile, last: tifffile.TiffPage) -> bool:
    """Whether the chain of pages continues past ``last`` but tifffile could not follow it.

    tifffile stops (with only a log message) at a next-page offset beyond the end of the file, as
    in a truncated stack whose page directories were written at its end. This reads the
    next-page offset of the last page found: a non-zero one means later pages are missing.
    """
    fmt, fh = tif.tiff, tif.filehandle
    try:
        fh.seek(last.offset)
        n_tags = struct.unpack(fmt.tagnoformat, fh.read(fmt.tagnosize))[0]
        fh.seek(last.offset + fmt.tagnosize + n_tags * fmt.tagsize)
        raw = fh.read(fmt.offsetsize)
        return len(raw) < fmt.offsetsize or struct.unpack(fmt.offsetformat, raw)[0] != 0
    except (OSError, struct.error):
        return True


def _check_complete(path: Path, page: tifffile.TiffPage, where: str) -> None:
    """Raise a clear DataError when the page's image data runs past the end of the file."""
    offsets, counts = page.dataoffsets, page.databytecounts
    if not offsets:
        return
    end = max(int(o) + int(c) for o, c in zip(offsets, counts, strict=False))
    size = os.path.getsize(path)
    if end > size:
        raise DataError(
            path,
            f"is truncated: {where}image data runs to byte {end} but the file ends at byte {size} "
            "(an incomplete copy or download?)",
        )


def _decode(path: Path, page: tifffile.TiffPage, where: str) -> np.ndarray:
    _check_complete(path, page, where)
    try:
        data = page.asarray()
    except Exception as exc:
        raise DataError(path, f"{where}cannot be decoded ({str(exc).strip() or type(exc).__name__})") from exc
    if page.axes.startswith("S") and data.ndim == 3:  # planar ("separate") samples -> interleaved
        data = np.moveaxis(data, 0, -1)
    if data.ndim not in (2, 3) or min(data.shape[:2]) < 1:
        raise DataError(path, f"{where}has an unsupported layout (axes {page.axes!r}, shape {data.shape})")
    return data


def decode_image(path: Path, page: tifffile.TiffPage, where: str = "") -> np.ndarray:
    """Decode one page as an image slice.

    Args:
        path: the file (for messages).
        page: the tifffile page.
        where: prefix for messages, e.g. ``"page 3 "`` for stacks.

    Returns:
        ``(H, W, C)`` array in the file's own dtype, C = 1 (greyscale) or 3 (RGB); alpha and other
        extra samples are dropped, min-is-white greyscale is inverted.

    Raises:
        DataError: the page cannot be decoded or uses a colour model BrainSeg cannot show.
    """
    photometric = page.photometric
    if photometric not in _GREY + _COLOUR:
        name = getattr(photometric, "name", str(photometric))
        raise DataError(
            path, f"{where}uses the {name} colour model; save it as greyscale or RGB (e.g. from ImageJ/Fiji)"
        )
    data = _decode(path, page, where)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8) * 255
    if data.ndim == 2:
        data = data[:, :, None]
    if photometric in _GREY:
        data = data[:, :, :1]  # greyscale (+ alpha): keep the grey sample
        if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
            data = _invert(data)
    elif data.shape[2] < 3:
        raise DataError(path, f"{where}is marked RGB but holds {data.shape[2]} sample(s) per pixel")
    else:
        data = data[:, :, :3]  # RGBA / extra samples: alpha dropped
    if data.dtype.kind not in "uif":
        raise DataError(path, f"{where}holds {data.dtype} samples; BrainSeg reads integer or float images")
    return data


def _invert(data: np.ndarray) -> np.ndarray:
    if data.dtype.kind in "ui":
        return np.iinfo(data.dtype).max - data
    return np.nanmax(data) - data


def decode_mask(path: Path, page: tifffile.TiffPage, where: str = "") -> np.ndarray:
    """Decode one page as a ground-truth mask.

    Returns:
        ``(H, W)`` bool: True where any colour sample is > 0 (0/255, 0/1, bool, labels, RGB
        all work). An alpha sample is ignored.

    Raises:
        DataError: the page cannot be decoded.
    """
    data = _decode(path, page, where)
    if data.ndim == 3:
        keep = 3 if page.photometric in _COLOUR else 1  # drop alpha / extra samples
        data = data[:, :, :keep]
        return np.asarray(np.asarray(data > 0).any(axis=2))
    return np.asarray(data > 0)


def pixel_spacing_mm(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> tuple[float, float] | None:
    """``(row, col)`` pixel spacing in mm from the resolution tags, when they are physical.

    Only centimetre/millimetre/micrometre resolution units (or ImageJ's ``unit=mm|cm|micron``)
    count; inch resolutions are screen/print defaults (72 dpi, ...) and are ignored, as are
    missing, zero or non-finite values.

    Returns:
        The spacing, or None when the file does not say.
    """
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else tifffile.RESUNIT.INCH
    mm_per_unit = _RESUNIT_MM.get(unit)
    if mm_per_unit is None and unit == tifffile.RESUNIT.NONE and tif.is_imagej:
        ij_unit = str((tif.imagej_metadata or {}).get("unit", "")).strip().lower()
        mm_per_unit = _IMAGEJ_UNIT_MM.get(ij_unit)
    if mm_per_unit is None:
        return None
    spacing = []
    for name in ("YResolution", "XResolution"):
        value = tags[name].value
        try:
            per_unit = value[0] / value[1] if isinstance(value, tuple) else float(value)
        except (TypeError, ZeroDivisionError, IndexError):
            return None
        if not math.isfinite(per_unit) or per_unit <= 0:
            return None
        spacing.append(mm_per_unit / per_unit)
    return spacing[0], spacing[1]


def imagej_slice_spacing_mm(tif: tifffile.TiffFile) -> float | None:
    """Distance between slices of an ImageJ stack in mm (its ``spacing`` and ``unit``), if known."""
    if not tif.is_imagej:
        return None
    meta = tif.imagej_metadata or {}
    mm_per_unit = _IMAGEJ_UNIT_MM.get(str(meta.get("unit", "")).strip().lower())
    try:
        spacing = float(meta["spacing"])
    except (KeyError, TypeError, ValueError):
        return None
    if mm_per_unit is None or not math.isfinite(spacing) or spacing <= 0:
        return None
    return spacing * mm_per_unit


def to_uint8(slices: Sequence[np.ndarray]) -> np.ndarray:
    """Stack same-sized ``(H, W, C)`` slices (C = 1 or 3) into ``(N, H, W, 3)`` uint8.

    8-bit slices are copied unchanged. Anything else (16-bit, 32-bit, signed, float) is rescaled
    per volume and per channel: the background level ``lo = min(0, volume minimum)`` maps to 0
    and the :data:`RESCALE_PERCENTILE` percentile of the samples above ``lo`` maps to 255
    (brighter samples saturate; a single hot pixel cannot darken the whole volume). The
    preprocessing clips at the 1st/99th foreground percentile and z-scores, so this linear map
    changes what the models see only by 8-bit rounding. Greyscale slices are replicated to three
    channels.

    Args:
        slices: the slices, all of one height and width.

    Returns:
        The volume as ``(N, H, W, 3)`` uint8.
    """
    if not slices:
        raise ValueError("to_uint8 needs at least one slice")
    h, w = slices[0].shape[:2]
    out = np.empty((len(slices), h, w, 3), np.uint8)
    if all(s.dtype == np.uint8 for s in slices):
        for i, s in enumerate(slices):
            out[i] = s  # broadcasts a greyscale (H, W, 1) slice to 3 channels
        return out
    lo, scale = _rescale_params(slices)
    for i, s in enumerate(slices):
        x = np.nan_to_num(s.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        out[i] = np.clip(np.rint((x - lo) * scale), 0, 255)
    return out


def _rescale_params(slices: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``lo`` and ``scale`` (broadcastable to (H, W, 3)) for :func:`to_uint8`."""
    total = sum(s.size for s in slices)
    step = max(1, total // 4_000_000)  # a strided sample keeps this fast on very large volumes
    lo = np.zeros(3, np.float32)
    scale = np.zeros(3, np.float32)
    for c in range(3):
        values = np.concatenate([s[..., min(c, s.shape[2] - 1)].ravel()[::step] for s in slices])
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low = min(0.0, float(values.min()))
        fg = values[values > low]
        if fg.size == 0:
            continue  # an all-background channel stays 0
        high = float(np.percentile(fg, RESCALE_PERCENTILE))
        if high <= low:
            high = float(fg.max())
        lo[c], scale[c] = low, 255.0 / (high - low)
    return lo, scale
