"""Stochastic Moving MNIST on tiny fake IDX files the tests write (and the real files when present)."""

import gzip
import json
import os
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from vidpred.config import DataConfig
from vidpred.build import build_source
from vidpred.data import ArrayClips, DataError, MovingMNIST
from vidpred.data.mmnist import load_digits, read_idx_images
from vidpred.metrics import coverage

ROOT = Path(__file__).resolve().parents[1]
REAL_MNIST = Path(os.environ.get("VIDPRED_MNIST", "data/mnist"))  # real MNIST files, where a user has them
TRAIN_LEVEL, TEST_LEVEL = 100, 200  # every fake training digit is solid 100, every test digit 200


def write_idx(path: Path, images: np.ndarray) -> Path:
    """An IDX image file (magic 00 00 08 03, big-endian sizes), gzip-compressed when named .gz."""
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    raw = header + images.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def fake_digits(level: int, count: int = 12) -> np.ndarray:
    """(count, 28, 28) digits: a solid block of `level` (its size varying), zero around it."""
    digits = np.zeros((count, 28, 28), dtype=np.uint8)
    for i in range(count):
        digits[i, 4:24, 4 + i % 4:20 + i % 4] = level
    return digits


@pytest.fixture
def mnist_dir(tmp_path):
    root = tmp_path / "mnist"
    write_idx(root / "train-images-idx3-ubyte.gz", fake_digits(TRAIN_LEVEL))
    write_idx(root / "t10k-images-idx3-ubyte.gz", fake_digits(TEST_LEVEL, 7))
    load_digits.cache_clear()  # every test reads its own files
    return root


@pytest.mark.parametrize("layout", ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz",
                                    "MNIST/raw/t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte.gz"])
def test_digits_are_read_from_plain_gzip_and_torchvision_layouts(tmp_path, layout):
    digits = fake_digits(TEST_LEVEL, 5)
    write_idx(tmp_path / layout, digits)
    load_digits.cache_clear()
    assert np.array_equal(load_digits(str(tmp_path), "test", 28), digits)


def test_training_clips_use_training_digits_and_test_clips_test_digits(mnist_dir):
    for split, level in (("train", TRAIN_LEVEL), ("val", TRAIN_LEVEL), ("test", TEST_LEVEL)):
        source = MovingMNIST(mnist_dir, split=split, frames=6, objects=2)
        values = np.unique(np.stack([source.clip(i) for i in range(10)]))
        assert set(np.round(values * 255).astype(int)) == {0, level}, split


def test_clips_are_a_pure_function_of_seed_split_and_index(mnist_dir):
    a, b = MovingMNIST(mnist_dir, seed=3, frames=5), MovingMNIST(mnist_dir, seed=3, frames=5)
    assert np.array_equal(a.clip(9), b.clip(9))
    assert not np.array_equal(a.clip(9), a.clip(10))
    assert not np.array_equal(a.clip(9), MovingMNIST(mnist_dir, seed=4, frames=5).clip(9))
    assert not np.array_equal(a.clip(9), MovingMNIST(mnist_dir, seed=3, frames=5, split="val").clip(9))


@pytest.mark.parametrize("size, side", [(64, 28), (32, 14)])
def test_digits_stay_whole_on_the_canvas_and_scale_with_it(tmp_path, size, side):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.full((3, 28, 28), 255, dtype=np.uint8))
    load_digits.cache_clear()
    source = MovingMNIST(tmp_path, size=size, frames=30, objects=1, max_speed=4)
    assert source.digit_side == side
    for index in range(5):
        clip = source.clip(index)
        assert clip.shape == (30, 1, size, size)
        assert (clip > 0.5).sum(axis=(1, 2, 3)).tolist() == [side * side] * 30  # never cut by a wall


@pytest.mark.parametrize("composite, expected", [("max", TRAIN_LEVEL / 255), ("sum", min(1.0, 2 * TRAIN_LEVEL / 255))])
def test_overlapping_digits_combine_by_max_or_clipped_sum(mnist_dir, composite, expected):
    source = MovingMNIST(mnist_dir, frames=20, objects=2, composite=composite)
    top = max(source.clip(i).max() for i in range(20))  # some frame has the two digits overlapping
    assert top == pytest.approx(expected)


def test_discrete_mnist_lists_its_futures_and_coverage_of_the_truth_is_complete(mnist_dir):
    source = MovingMNIST(mnist_dir, split="test", size=32, frames=9, context=3, max_speed=2, bounce="discrete")
    clips, truths = [], []
    for index in range(6):
        futures = source.futures(index)
        assert any(np.array_equal(f, source.clip(index)) for f in futures)
        clips.append(torch.from_numpy(futures[:, 3:]))
        truths.append(clips[-1])
    assert max(len(t) for t in truths) > 1
    padded = torch.stack([torch.cat([t, t[:1].expand(8 - len(t), *t.shape[1:])]) for t in truths])  # K = 8
    assert torch.equal(coverage(padded, truths), torch.ones(6))  # sampling every true future covers all
    assert coverage(padded[:, :1], truths).min() < 1  # one sample cannot cover a branching clip


@pytest.mark.parametrize("files, message", [
    ({}, r"no MNIST train images under .*: expected train-images-idx3-ubyte or train-images-idx3-ubyte.gz"),
    ({"train-images-idx3-ubyte": b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(5)},
     r"train-images-idx3-ubyte: an IDX file of type 0x08 with 1 dimensions; .* is this a labels file\?"),
    ({"train-images-idx3-ubyte": b"PK\x03\x04 not an idx file at all"}, r"not an IDX file"),
    ({"train-images-idx3-ubyte.gz": b"this is not gzip"}, r"train-images-idx3-ubyte.gz: cannot be read as gzip"),
])
def test_missing_or_malformed_files_name_the_path_and_what_was_expected(tmp_path, files, message):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    load_digits.cache_clear()
    with pytest.raises(DataError, match=message):
        MovingMNIST(tmp_path)


def test_a_truncated_image_file_is_refused_with_its_sizes(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", fake_digits(TRAIN_LEVEL, 4))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"promises 4 images of 28x28 \(3152 bytes\) but the file holds 3052 bytes"):
        read_idx_images(path)


def test_a_missing_folder_is_named(tmp_path):
    load_digits.cache_clear()
    with pytest.raises(DataError, match=f"MNIST folder {tmp_path / 'nowhere'} does not exist"):
        build_source(DataConfig(kind="mmnist", path=str(tmp_path / "nowhere"), size=64), seed=0, split="train",
                     frames=5, context=2)


def test_prepare_writes_the_fixed_test_set_that_evaluation_reads(mnist_dir, tmp_path):
    out = tmp_path / "set.npy"
    prepare = runpy.run_path(str(ROOT / "data" / "prepare.py"), run_name="prepare")
    assert prepare["main"]([f"--mnist={mnist_dir}", f"--out={out}", "--clips=6", "--frames=7", "--seed=42"]) == 0
    array = np.load(out, mmap_mode="r")
    assert array.shape == (6, 7, 64, 64) and array.dtype == np.uint8
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["seed"] == 42 and info["shape"] == [6, 7, 64, 64] and len(info["sha256"]) == 64
    generated = MovingMNIST(mnist_dir, seed=42, split="test", frames=7)
    read = ArrayClips(out, frames=7, size=64)  # (6, 7, ...) would be guessed (t, n, ...): the .json says nthw
    assert read.layout == "nthw" and len(read) == 6
    for i in range(6):
        assert np.array_equal(read.clip(i), generated.clip(i))  # bytes round-trip exactly


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason="the MNIST files are not on this machine")
def test_real_mnist_train_and_test_digits_are_the_official_sets():
    train = load_digits(str(REAL_MNIST), "train", 28)
    test = load_digits(str(REAL_MNIST), "test", 28)
    assert train.shape == (60000, 28, 28) and test.shape == (10000, 28, 28)
    assert not np.array_equal(train[:10000], test)
