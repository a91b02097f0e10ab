"""Write scikit-learn's digits (1,797 handwritten 8x8 digits, 10 classes; a public set nobody here
made) as a folder-per-class PNG collection, for `agroml import` and the from-scratch acceptance runs
of issue 11 ("a real folder-per-class set of about 1,800 small images in 10 classes").

Each 8x8 image (grey levels 0..16) is scaled to 0..255, enlarged with nearest-neighbour to ``--size``
pixels (default 32) and saved as RGB (grey copied to three channels), as a user's small photos would
be. scikit-learn is needed for this script only (``pip install scikit-learn``), not by agroml.

    python benchmarks/digits_folder.py /tmp/digits            # /tmp/digits/digit_0/0000.png ...
    agroml import /tmp/digits --model pest
    agroml train --model pest --weights none --image-size 64
"""

from __future__ import annotations

import argparse
from pathlib import Path


def write_digits(folder: Path, size: int = 32) -> int:
    """Write every digit as ``folder/digit_<k>/<index>.png``; returns the number of files written."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        grey = np.clip(np.asarray(pixels) * (255.0 / 16.0), 0, 255).astype("uint8")
        image = Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.NEAREST).convert("RGB")
        out = folder / f"digit_{int(target)}" / f"{index:04d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out)
    return len(digits.images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=32, help="pixels of each side of the written PNGs")
    args = parser.parse_args()
    n = write_digits(args.folder, args.size)
    print(f"wrote {n} PNGs ({args.size} px) under {args.folder}")


if __name__ == "__main__":
    main()
