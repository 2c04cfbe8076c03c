"""Rebuild ``resources/sample/<patient>/`` from an unpacked LGG dataset (run by hand, once).

The sample is one complete patient of the LGG Segmentation Dataset (every slice and its mask). The
pixels are those published: each array is checked against the dataset's ``manifest.json``
(sha256 of the decoded image / mask) before it is written. The files are stored as
deflate-compressed TIFFs (the published ones are uncompressed) to keep the sample near 2 MB; any
TIFF reader decodes them without extra codecs.

Usage::

    python packaging/make_sample.py [--patient TCGA_HT_7694_19950404]
        [--src /work/data/kaggle_3m] [--manifest ../shared/data/lgg/manifest.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import tifffile

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PATIENT = "TCGA_HT_7694_19950404"


def main(argv: list[str] | None = None) -> int:
    """Copy one patient into ``resources/sample`` after checking its pixels against the manifest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patient", default=DEFAULT_PATIENT)
    parser.add_argument("--src", type=Path, default=Path("/work/data/kaggle_3m"))
    parser.add_argument("--manifest", type=Path, default=REPO.parent / "shared/data/lgg/manifest.json")
    args = parser.parse_args(argv)

    src = args.src / args.patient
    if not src.is_dir():
        parser.error(f"{src}: not a patient folder; pass --src DATASET_ROOT (the kaggle_3m folder)")
    manifest = json.loads(args.manifest.read_text())
    out = REPO / "resources" / "sample" / args.patient
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    n = 0
    for image_path in sorted(src.glob("*.tif")):
        if image_path.stem.endswith("_mask"):
            continue
        image = tifffile.imread(image_path)
        mask_path = image_path.with_name(f"{image_path.stem}_mask.tif")
        mask = tifffile.imread(mask_path)
        want_image, want_mask = manifest[f"{args.patient}/{image_path.stem}"]
        if (
            hashlib.sha256(image.tobytes()).hexdigest() != want_image
            or hashlib.sha256(mask.tobytes()).hexdigest() != want_mask
        ):
            print(f"{image_path}: pixels differ from the published data (manifest)", file=sys.stderr)
            return 1
        tifffile.imwrite(out / image_path.name, image, photometric="rgb", compression="zlib")
        tifffile.imwrite(out / mask_path.name, mask, photometric="minisblack", compression="zlib")
        n += 1
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{out}: {n} slices + masks, {size / 1e6:.2f} MB, pixels verified against {args.manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
