"""vidpred-sample end to end on files a user would have: video files, frame folders, arrays."""

import json
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vidpred.config import parse_args, tomllib  # tomllib, or tomli on Python 3.10
from vidpred.data import DataError
from vidpred.media import read_clip, to_model_frames
from vidpred.sample_cli import main
from vidpred.training import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny model (16x16 grayscale, 3 -> 3 frames): these tests check files, not predictions."""
    from conftest import tiny_args

    return train(parse_args(tiny_args(tmp_path_factory.mktemp("run"), "--steps=2")))


def moving_square(frames: int, *, height: int = 30, width: int = 40) -> np.ndarray:
    """(t, H, W, 3) uint8: a red square moving right, one frame per 3 pixels."""
    video = np.zeros((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        video[t, 10:20, 3 * t:3 * t + 10, 0] = 255
    return video


def write_with_pyav(path: Path, video: np.ndarray, *, codec: str, fps: int = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width, stream.pix_fmt = video.shape[1], video.shape[2], "yuv420p"
        for image in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize("name, codec", [("clip.mp4", "libx264"), ("clip.avi", "mpeg4")])
def test_sample_command_on_a_video_file(ckpt, tmp_path, capsys, name, codec):
    video = write_with_pyav(tmp_path / name, moving_square(9), codec=codec)
    out = tmp_path / "out"
    assert main([f"--ckpt={ckpt}", f"--input={video}", f"--out={out}", "--start=2", "--samples=3", "--save_array",
                 "--score", "--steps=5"]) == 0
    printed = capsys.readouterr().out
    assert f"frames 2-7 of {video} (40x30 RGB, 10 fps)" in printed
    assert ("resized 40x30 (shorter side to 16) and centre-cropped to 16x16, converted RGB to grayscale (luma) "
            "for the model's 1x16x16 frames") in printed
    assert decoded_frames(out / "samples.mp4") == 3 + 3  # context + horizon
    assert np.load(out / "samples.npy").shape == (3, 3, 1, 16, 16)
    rows = 1 + 1 + 3  # the input's continuation, z = 0, the samples
    scale = 8  # 16-pixel frames drawn at 128 pixels
    assert Image.open(out / "samples.png").size == (6 * (16 + 1) * scale + scale, rows * (16 + 1) * scale + scale)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == ["input", "z = 0", "3 samples"]
    assert len(summary["score"]["per_frame"]) == 3
    assert summary["score"]["total"] == pytest.approx(sum(summary["score"]["per_frame"]))


def test_a_start_time_takes_the_same_frames_as_the_matching_start_frame(tmp_path):
    video = write_with_pyav(tmp_path / "clip.mp4", moving_square(12), codec="libx264")
    by_frame = read_clip(video, count=4, start=5)
    by_time = read_clip(video, count=4, start_time=0.5)
    assert by_frame.fps == 10 and by_frame.frames.shape == (4, 30, 40, 3)
    assert np.array_equal(by_frame.frames, by_time.frames)
    assert np.abs(by_frame.frames[0, 15, 16:24, 0] - 1).max() < 0.1  # the square at x = 15..24 in frame 5


def test_fill_in_from_the_command_ranks_the_samples(ckpt, tmp_path):
    video = write_with_pyav(tmp_path / "clip.mp4", moving_square(6), codec="libx264")
    out = tmp_path / "out"
    assert main([f"--ckpt={ckpt}", f"--input={video}", f"--out={out}", "--samples=4", "--mask=bottom",
                 "--mask_frames=-1", "--steps=5", "--starts=2", "--video=gif"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == ["input", "z = 0", "observed (checkerboard: not observed)", "filled in",
                               "4 samples ranked by energy, best first"]
    fill = summary["fill"]
    assert fill["observed_share"] == pytest.approx(0.5 / 3)
    assert fill["samples_energy"] == sorted(fill["samples_energy"]) and sorted(fill["samples_order"]) == [0, 1, 2, 3]
    assert decoded_frames(out / "samples.gif") == 6


def test_a_mask_image_drawn_on_the_input_frames_is_fitted_like_them(ckpt, tmp_path, capsys):
    video = write_with_pyav(tmp_path / "clip.mp4", moving_square(6), codec="libx264")
    drawn = np.zeros((30, 40), dtype=np.uint8)  # the input's size, not the model's 16x16
    drawn[15:] = 255  # the bottom half is observed
    Image.fromarray(drawn).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    assert main([f"--ckpt={ckpt}", f"--input={video}", f"--out={out}", "--samples=2", f"--mask={tmp_path / 'mask.png'}",
                 "--steps=2", "--starts=1"]) == 0
    assert json.loads((out / "summary.json").read_text())["fill"]["observed_share"] == pytest.approx(0.5, abs=0.02)
    np.save(tmp_path / "odd.npy", np.ones((20, 20)))
    assert main([f"--ckpt={ckpt}", f"--input={video}", f"--out={out}", f"--mask={tmp_path / 'odd.npy'}"]) == 2
    assert "odd.npy is 20x20 pixels; expected the model's 16x16 or the input frames' 40x30" in capsys.readouterr().err


def test_the_module_runs_on_a_frame_folder(ckpt, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, image in enumerate(moving_square(5)):  # frame_10 must come after frame_9: natural order
        Image.fromarray(image[..., 0]).save(folder / f"frame_{t + 7}.png")
    result = subprocess.run([sys.executable, "-m", "vidpred.sample_cli", f"--ckpt={ckpt}", f"--input={folder}",
                             f"--out={tmp_path / 'out'}", "--samples=2", "--horizon=4"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"frames 0-4 of {folder}/ (40x30 grayscale images)" in result.stdout
    assert "rows: z = 0, 2 samples" in result.stdout  # 5 frames: no continuation of 4 to show
    assert decoded_frames(tmp_path / "out" / "samples.mp4") == 3 + 4
    clip = read_clip(folder, count=5)
    assert [clip.frames[t, 15].argmax() for t in range(5)] == [0, 3, 6, 9, 12]  # frame_7 ... frame_11 in order


def test_array_files_in_the_moving_mnist_layout(ckpt, tmp_path):
    clips = np.zeros((8, 10, 16, 16), dtype=np.uint8)  # (t, n, h, w) as mnist_test_seq.npy
    clips[:, 1, 4:8, 4:8] = 255
    path = tmp_path / "seq.npy"
    np.save(path, clips)
    out = tmp_path / "out"
    assert main([f"--ckpt={ckpt}", f"--input={path}", f"--out={out}", "--samples=2", "--clip=1", "--save_array"]) == 0
    assert np.load(out / "samples.npy").shape == (2, 3, 1, 16, 16)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"] == f"frames 0-5 of clip 1 of {path} (16x16 grayscale, array uint8 read as tnhw)"
    assert summary["conversion"] == "already the model's 1x16x16 frames; used as they are"
    assert read_clip(path, count=6, clip=1).frames[0, 5, 5, 0] == 1.0  # the square of sequence 1
    with pytest.raises(DataError, match=r"shape \(8, 10, 16, 16\) cannot be read as ntchw"):
        read_clip(path, count=6, layout="ntchw")
    one = tmp_path / "one.npy"  # a single clip (t, h, w, c)
    np.save(one, np.zeros((7, 16, 16, 3), dtype=np.float32))
    assert read_clip(one, count=6, start=1).description == (f"frames 1-6 of {one} (16x16 RGB, array float32 read "
                                                            "as nthwc)")


def test_conversion_to_the_model_frames():
    rgb = np.zeros((2, 20, 10, 3), dtype=np.float32)
    rgb[..., 1] = 1.0  # pure green
    frames, note = to_model_frames(rgb, size=5, channels=1)
    assert frames.shape == (2, 1, 5, 5) and np.allclose(frames.numpy(), 0.587, atol=1e-5)
    assert note == ("resized 10x20 (shorter side to 5) and centre-cropped to 5x5, converted RGB to grayscale (luma) "
                    "for the model's 1x5x5 frames")
    gray, _ = to_model_frames(np.full((1, 4, 4, 1), 0.25, dtype=np.float32), size=4, channels=3)
    assert gray.shape == (1, 3, 4, 4) and float(gray.min()) == float(gray.max()) == 0.25


FRAMES = np.zeros((6, 16, 16), dtype=np.float32)  # context 3 + horizon 3 at the model's size


def poisoned(value: float) -> np.ndarray:
    frames = FRAMES.copy()
    frames[4, 2, 3] = value
    return frames


@pytest.mark.parametrize("name, content, extra, message", [
    ("clip.mp4", "not a video", [], "clip.mp4: could not be read as a video"),
    ("missing.mp4", None, [], "missing.mp4: no such file or folder"),
    ("x.npy", FRAMES + 2, [], r"x.npy: float pixels in \[2, 2\]; expected \[0, 1\]"),
    ("x.npy", FRAMES[:2], [], "holds 2 frames; the context needs 3"),
    ("x.npy", poisoned(np.nan), [], r"input \S+x.npy, frames 0..5: 1 NaN of its 1536 pixel values are not finite"),
    ("x.npy", poisoned(-np.inf), [], r"input \S+x.npy, frames 0..5: 1 -inf of its 1536 pixel values are not finite"),
    ("x.npy", FRAMES, ["--start_time=1"], "start_time needs a video file"),
    ("x.npy", FRAMES, ["--mask=MASK"], r"mask=.*m.npy .*: mask has shape \(5, 1, 16, 16\); expected a shape that "
                                       r"broadcasts to the observed future \(b, T, c, H, W\) = \(1, 3, 1, 16, 16\)"),
    ("x.npy", FRAMES, ["--mask=top", "--mask_frames=5"], "observed frame 5 is outside the 3 predicted frames"),
    ("x.npy", FRAMES[:4], ["--score"], r"--score needs the input's continuation: .* holds 4 frames, and context 3 "
                                       r"\+ horizon 3 = 6 are needed"),
    ("x.npy", FRAMES, ["--video=avi"], "video='avi': expected mp4 or gif"),
    ("x.npy", FRAMES, ["--background_fill=-0.1"], r"background_fill=-0.1: expected a share in \[0, 1\]"),
])
def test_bad_input_is_refused_with_a_message_naming_it(ckpt, tmp_path, capsys, name, content, extra, message):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        np.save(path, content)
    np.save(tmp_path / "m.npy", np.ones((5, 16, 16)))  # a mask of 5 frames: the horizon is 3
    extra = [e.replace("MASK", str(tmp_path / "m.npy")) for e in extra]
    code = main([f"--ckpt={ckpt}", f"--input={path}", f"--out={tmp_path / 'out'}", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vidpred-sample: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_required_options_and_the_console_script():
    assert main(["--input=x.mp4"]) == 2
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts["vidpred-sample"].split(":")
    assert getattr(__import__(module, fromlist=[func]), func) is main
