"""Array files in both field layouts, memory-mapped, with clear errors for shapes that fit neither."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidpred.data import ArrayClips, DataError

ROOT = Path(__file__).resolve().parents[1]


def sequences(n=5, t=12, h=16, w=16, c=None, seed=0) -> np.ndarray:
    """(n, t, h, w[, c]) uint8 with every frame different."""
    shape = (n, t, h, w) if c is None else (n, t, h, w, c)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_mnist_test_seq_layout_is_detected_and_read_time_major(tmp_path):
    data = sequences(n=30, t=8)
    np.save(tmp_path / "seq.npy", data.transpose(1, 0, 2, 3))  # (t, n, h, w) like mnist_test_seq.npy
    source = ArrayClips(tmp_path / "seq.npy", frames=8, size=16)
    assert source.layout == "tnhw" and len(source) == 30 and isinstance(source.array, np.memmap)
    assert source[7].shape == (8, 1, 16, 16) and source[7].dtype.is_floating_point
    np.testing.assert_array_equal(source.clip(7)[:, 0], data[7] / np.float32(255))
    assert np.array_equal(source.clip(30 + 7), source.clip(7))  # indices wrap around, as generated code expects


def test_sequence_major_rgb_floats_with_clip_windows_and_frame_steps(tmp_path):
    data = sequences(n=3, t=20, c=3).astype(np.float32) / 255
    np.save(tmp_path / "rgb.npy", data)
    source = ArrayClips(tmp_path / "rgb.npy", frames=4, size=16, channels=3, frame_step=2, stride=5)
    assert source.layout == "nthwc"
    # span 7 frames, a new clip every 5: starts 0, 5, 10 in each sequence of 20 frames
    assert len(source) == 9
    np.testing.assert_allclose(source.clip(4), data[1, [5, 7, 9, 11]].transpose(0, 3, 1, 2), atol=1e-6)


def test_channels_first_layout_and_grayscale_conversion(tmp_path):
    data = sequences(n=12, t=6, c=3).transpose(0, 1, 4, 2, 3)  # (n, t, c, h, w)
    np.save(tmp_path / "ntchw.npy", data)
    gray = ArrayClips(tmp_path / "ntchw.npy", frames=6, size=16, channels=1)
    assert gray.layout == "ntchw"
    weights = np.array([0.2989, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma
    expected = np.einsum("tchw,c->thw", data[3].astype(np.float32), weights) / 255
    np.testing.assert_allclose(gray.clip(3)[:, 0], expected, atol=1.5 / 255)


def test_frames_of_another_size_are_resized_and_centre_cropped(tmp_path):
    data = np.zeros((2, 4, 24, 32), dtype=np.uint8)
    data[..., 2:30] = 255  # dark columns at the left and right edges, which the centre crop removes
    np.save(tmp_path / "wide.npy", data)
    clip = ArrayClips(tmp_path / "wide.npy", frames=4, size=12, layout="nthw").clip(0)
    assert clip.shape == (4, 1, 12, 12)
    assert clip.min() > 0.99  # 24x32 -> 12x16 -> centre 12x12 lies inside the block


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_files_are_read_and_stored_ones_memory_mapped(tmp_path, compressed):
    data = sequences(n=10, t=6)
    path = tmp_path / "clips.npz"
    (np.savez_compressed if compressed else np.savez)(path, videos=data, labels=np.arange(10))
    source = ArrayClips(path, frames=6, size=16, layout="nthw")
    assert isinstance(source.array, np.memmap) != compressed
    np.testing.assert_array_equal(source.clip(9)[:, 0], data[9] / np.float32(255))


@pytest.mark.parametrize("shape, layout, message", [
    ((10, 64, 64), "auto", r"array of shape \(10, 64, 64\) cannot be read: expected \(t, n, h, w\)"),
    ((4, 5, 16, 16, 4), "auto", r"array of shape \(4, 5, 16, 16, 4\) cannot be read"),
    ((4, 5, 16, 16), "nthwc", r"array of shape \(4, 5, 16, 16\) cannot be read as nthwc"),
    ((4, 5, 2, 16, 16), "ntchw", r"read as ntchw has 2 channels; expected 1 or 3"),
])
def test_a_shape_that_fits_no_layout_is_an_error_that_prints_it(tmp_path, shape, layout, message):
    np.save(tmp_path / "bad.npy", np.zeros(shape, dtype=np.uint8))
    with pytest.raises(DataError, match=message):
        ArrayClips(tmp_path / "bad.npy", frames=2, size=16, layout=layout)


def test_bad_paths_values_and_lengths_are_named(tmp_path):
    with pytest.raises(DataError, match=f"array file {tmp_path / 'none.npy'} does not exist"):
        ArrayClips(tmp_path / "none.npy", frames=2, size=16)
    np.save(tmp_path / "hot.npy", np.full((3, 4, 8, 8), 7.5, dtype=np.float32))
    with pytest.raises(DataError, match=r"float pixels in \[7.5, 7.5\]; expected \[0, 1\]"):
        ArrayClips(tmp_path / "hot.npy", frames=2, size=8, layout="nthw")
    np.save(tmp_path / "short.npy", np.zeros((3, 4, 8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match="sequences of 4 frames are too short for clips of 5 frames"):
        ArrayClips(tmp_path / "short.npy", frames=5, size=8, layout="nthw")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="junk.npy: not a readable .npy file"):
        ArrayClips(tmp_path / "junk.npy", frames=2, size=8)
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 3, 8, 8)), b=np.zeros((2, 3, 8, 8)))
    with pytest.raises(DataError, match=r"exactly one 4-d or 5-d array .* it holds a \(2, 3, 8, 8\), b \(2, 3, 8, 8\)"):
        ArrayClips(tmp_path / "two.npz", frames=2, size=8)


# --- non-finite pixels: refused when the clip is read, naming the file and the clip ----------------

@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, r"\+inf"), (-np.inf, "-inf")])
def test_non_finite_pixels_are_refused_when_their_clip_is_read(tmp_path, value, kind):
    """+inf is not clamped to 1 nor NaN passed on to become a NaN loss: the clip holding one is
    refused by name, and the clips around it read as before."""
    data = sequences(n=8, t=6).astype(np.float32) / 255
    data[2, 4, 3, 5] = value  # sequence 2, frame 4: the second 3-frame clip of sequence 2 is clip 5
    path = tmp_path / "bad.npy"
    np.save(path, data)
    source = ArrayClips(path, frames=3, size=16)
    np.testing.assert_array_equal(source.clip(4)[:, 0], data[2, :3])
    assert source[6].shape == (3, 1, 16, 16)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: clip 5 \(sequence 2, frames 3..5\): 1 {kind} "
                                        r"of its 768 pixel values are not finite; expected numbers in \[0, 1\]"):
        source[5]


def test_non_finite_pixels_in_the_first_clip_refuse_the_file_at_once(tmp_path):
    data = np.full((8, 6, 16, 16), np.nan, dtype=np.float16)
    np.save(tmp_path / "nan.npy", data)
    with pytest.raises(DataError, match=r"nan.npy: clip 0 \(sequence 0, frames 0..5\): 1536 NaN of its 1536 pixel"):
        ArrayClips(tmp_path / "nan.npy", frames=6, size=8)


def test_every_source_refuses_to_serve_a_non_finite_clip():
    """The generic gate in ClipSource.__getitem__, for sources that compute their pixels."""
    from vidpred.data import ClipSource

    class Broken(ClipSource):
        frames, channels, size = 2, 1, 4

        def clip(self, index):
            video = np.zeros((2, 1, 4, 4), dtype=np.float32)
            video[1, 0, 0, :2] = np.inf
            return video

    with pytest.raises(DataError, match=r"^clip 3 of the Broken source: 2 \+inf of its 32 pixel values are not finite"):
        Broken()[3]


def test_a_training_run_on_an_array_with_a_nan_stops_at_once_naming_the_clip_not_the_learning_rate(tmp_path):
    from conftest import tiny_args

    data = sequences(n=8, t=6).astype(np.float32) / 255
    data[2, 1, 0, 0] = np.nan
    path = tmp_path / "clips.npy"
    np.save(path, data)
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *tiny_args(tmp_path / "run", "--data.kind=array",
                                                                             f"--data.path={path}")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"train.py: {path}: clip 2 (sequence 2, frames 0..5): 1 NaN of its 1536 pixel values" in done.stderr
    assert "loss" not in done.stderr and "--lr" not in done.stderr and "Traceback" not in done.stderr
