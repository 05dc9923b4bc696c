"""Stochastic Moving MNIST (Denton & Fergus 2018, SVG; Franceschi et al. 2020, SRVP).

MNIST digits bounce on a black canvas under the rules of `motion.py`: 2 digits of 28x28 on a
64x64 canvas, integer velocity up to 4 per axis, exact bounces, pixel-wise max (or clipped sum).
Training clips draw from the 60,000 training digits, test clips from the 10,000 test digits (a
validation split also uses training digits, on its own random stream). On another canvas size the
digits are scaled by size / 64, so the geometry stays that of SM-MNIST.

Digits come from the original IDX files (`train-images-idx3-ubyte`, `t10k-images-idx3-ubyte`,
gzip-compressed or not) in a folder, or in torchvision's `<folder>/MNIST/raw` layout;
`download=True` asks torchvision to fetch them there when they are missing.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from .sprites import BouncingObjects
from .clips import DataError

IMAGE_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
DIGITS_OF_SPLIT = {"train": "train", "val": "train", "test": "test"}  # val never sees test digits
SM_MNIST_CANVAS, SM_MNIST_DIGIT = 64, 28
IDX_UBYTE = 0x08


def find_mnist_images(root: str | Path, which: str) -> Path:
    """The IDX image file of MNIST's `which` ('train' or 'test') set under `root`."""
    root = Path(root)
    base = IMAGE_FILES[which]
    folders = [root, root / "MNIST" / "raw", root / "raw"]
    # Some mirrors spell the files with a dot: train-images.idx3-ubyte.
    names = [base, base + ".gz", base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"]
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    if not root.is_dir():
        raise DataError(f"MNIST folder {root} does not exist (expected a folder holding {base}.gz)")
    raise DataError(f"no MNIST {which} images under {root}: expected {base} or {base}.gz there or in "
                    f"{root / 'MNIST' / 'raw'} (torchvision's layout); --data.download=true fetches them")


def read_idx_images(path: str | Path) -> np.ndarray:
    """(n, rows, cols) uint8 images from an IDX file (gzip-compressed or not)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        kind = "gzip" if path.suffix == ".gz" else "an IDX file"
        raise DataError(f"{path}: cannot be read as {kind} ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (expected the magic bytes 00 00 08 03 of an image file)")
    dtype, ndim = raw[2], raw[3]
    if dtype != IDX_UBYTE or ndim != 3:
        raise DataError(f"{path}: an IDX file of type 0x{dtype:02x} with {ndim} dimensions; MNIST images are "
                        "unsigned bytes in 3 dimensions (magic 00 00 08 03) — is this a labels file?")
    if len(raw) < 16:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    n, rows, cols = (int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(3))
    expected = 16 + n * rows * cols
    if len(raw) != expected:
        raise DataError(f"{path}: the header promises {n} images of {rows}x{cols} ({expected} bytes) but the "
                        f"file holds {len(raw)} bytes (truncated or damaged)")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


@functools.lru_cache(maxsize=4)
def load_digits(root: str, which: str, side: int, download: bool = False) -> np.ndarray:
    """(n, side, side) uint8 digits of MNIST's `which` set, resized (antialiased) when `side` is
    not 28. Cached, and kept as bytes: loader workers share one copy of 47 MB."""
    try:
        path = find_mnist_images(root, which)
    except DataError:
        if not download:
            raise
        from torchvision.datasets import MNIST

        MNIST(root, train=which == "train", download=True)  # writes <root>/MNIST/raw
        path = find_mnist_images(root, which)
    images = torch.from_numpy(read_idx_images(path).copy())
    if side != images.shape[-1]:
        images = TF.resize(images[:, None], [side, side], antialias=True)[:, 0]
    return images.numpy()


class MovingMNIST(BouncingObjects):
    """Stochastic Moving MNIST clips `(t, c, size, size)`, each a pure function of (seed, split, index)."""

    def __init__(self, root: str | Path, *, seed: int = 0, split: str = "train", size: int = 64,
                 channels: int = 1, frames: int = 25, objects: int = 2, max_speed: int = 4,
                 bounce: str = "stochastic", branches: int = 2, context: int = 5, composite: str = "max",
                 download: bool = False, length: int = 10**9):
        super().__init__(seed=seed, split=split, size=size, channels=channels, frames=frames, objects=objects,
                         max_speed=max_speed, bounce=bounce, branches=branches, context=context,
                         composite=composite, length=length)
        self.digit_side = max(1, round(SM_MNIST_DIGIT * size / SM_MNIST_CANVAS))
        self.digits = load_digits(str(root), DIGITS_OF_SPLIT[split], self.digit_side, download)

    def sprite(self, rng: np.random.Generator) -> np.ndarray:
        digit = self.digits[rng.integers(len(self.digits))].astype(np.float32) / 255.0
        return np.broadcast_to(digit, (self.channels, *digit.shape))
