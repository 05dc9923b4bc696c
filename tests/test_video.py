"""Video folders: small mp4 / avi / mkv files written here with PyAV, a truncated one among them."""

import json
import warnings

import av
import numpy as np
import pytest

from vidpred.data import DataError, VideoFolder
from vidpred.data import video as video_module

FRAMES, H, W = 30, 40, 48


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def encoded_frames(shift: int = 0) -> np.ndarray:
    """(FRAMES, H, W, 3) uint8: frame i is a flat gray of level 7 i (which frame it is), with a
    white square moving right by one pixel a frame."""
    frames = np.zeros((FRAMES, H, W, 3), dtype=np.uint8)
    for i in range(FRAMES):
        frames[i] = 7 * i
        frames[i, 10:18, 4 + i + shift:12 + i + shift] = 255
    return frames


def write_video(path, frames: np.ndarray, codec: str = "libx264", fps: int = 25):
    with av.open(str(path), "w") as container:
        options = {"crf": "10"} if codec == "libx264" else {}
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "mjpeg":
            stream.codec_context.qmax = 2  # near-lossless, so decoded frames can be compared to the source
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_all(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    write_video(root / "a.mp4", encoded_frames(0))
    write_video(root / "sub" / "b.avi", encoded_frames(3), codec="mjpeg")
    write_video(root / "c.mkv", encoded_frames(6), codec="libx264")
    good = (root / "a.mp4").read_bytes()
    (root / "broken.mp4").write_bytes(good[: len(good) // 2])  # truncated: the index (moov) is lost
    (root / "notes.txt").write_text("not a video")
    return root


def test_a_truncated_file_is_reported_skipped_and_counted(folder, capsys):
    with pytest.warns(UserWarning, match=r"skipping video .*broken.mp4: InvalidDataError"):
        source = VideoFolder(folder, frames=6, size=16, val_share=0)
    assert list(source.skipped) == ["broken.mp4"]
    assert source.files == ["a.mp4", "c.mkv", "sub/b.avi"]
    assert len(source) == 3 * (FRAMES // 6)
    assert "4 files, 3 decodable, 1 skipped" in capsys.readouterr().out


@pytest.mark.parametrize("name, shift", [("a.mp4", 0), ("sub/b.avi", 3)])
def test_decoded_clips_match_the_encoded_frames(folder, name, shift):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = VideoFolder(folder, frames=5, size=H, channels=3, frame_step=2, stride=7, val_share=0)
    seq = source.files.index(name)
    truth = encoded_frames(shift)[:, :, 4:44].astype(np.float32) / 255  # centre crop 48 -> 40 columns
    first = int(source.windows.ends[seq] - source.windows.counts[seq])
    for j in range(int(source.windows.counts[seq])):
        clip = source.clip(first + j)  # (5, 3, 40, 40)
        expected = truth[7 * j + 2 * np.arange(5)].transpose(0, 3, 1, 2)
        assert clip.shape == (5, 3, H, H)
        assert np.abs(clip - expected).mean() < 3 / 255, f"{name} clip {j}"  # codec tolerance
        levels = clip[:, :, 30:, :].mean(axis=(1, 2, 3)) * 255 / 7  # rows below the square: the frame number
        np.testing.assert_allclose(levels, 7 * j + 2 * np.arange(5), atol=0.5)


@pytest.mark.parametrize("frame_step, stride", [(1, 1), (2, 3), (3, 0)])
def test_seeking_decodes_exactly_what_sequential_decoding_gives(folder, frame_step, stride):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = VideoFolder(folder, frames=4, size=16, frame_step=frame_step, stride=stride, val_share=0)
    full = {name: decode_all(folder / name) for name in source.files}
    for index in range(len(source)):
        seq, start = source.windows.locate(index)
        expected = full[source.files[seq]][start + frame_step * np.arange(4)]
        assert np.array_equal(source.read(index), expected), (source.files[seq], start)


def test_the_index_is_cached_and_only_changed_files_are_probed_again(folder, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        VideoFolder(folder, frames=6, size=16, val_share=0)
        cache = json.loads(video_module.index_file(folder).read_text())
        assert cache["files"]["a.mp4"]["frames"] == FRAMES and "error" in cache["files"]["broken.mp4"]
        probed = []
        real_probe = video_module.probe_video
        monkeypatch.setattr(video_module, "probe_video", lambda path: probed.append(path.name) or real_probe(path))
        again = VideoFolder(folder, frames=6, size=16, val_share=0)
        assert probed == [] and len(again) == 15
        write_video(folder / "c.mkv", encoded_frames(1)[:12])  # shorter now: 2 clips instead of 5
        again = VideoFolder(folder, frames=6, size=16, val_share=0)
    assert probed == ["c.mkv"] and len(again) == 12


def test_files_are_split_by_file_into_train_and_held_out(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(5):
        write_video(root / f"v{i}.mp4", encoded_frames(i)[:8])
    train = VideoFolder(root, split="train", frames=4, size=16, val_share=0.4)
    test = VideoFolder(root, split="test", frames=4, size=16, val_share=0.4)
    assert len(test.files) == 2 and len(train.files) == 3 and not set(train.files) & set(test.files)
    assert VideoFolder(root, split="val", frames=4, size=16, val_share=0.4).files == test.files
    (root / "train").mkdir()
    (root / "test").mkdir()
    for i, name in enumerate(["train/x.mp4", "train/y.mp4", "test/z.mp4"]):
        write_video(root / name, encoded_frames(i)[:8])
    assert VideoFolder(root, split="train", frames=4, size=16).files == ["train/x.mp4", "train/y.mp4"]
    assert VideoFolder(root, split="test", frames=4, size=16).files == ["test/z.mp4"]


def test_a_clip_that_fails_to_decode_is_replaced_by_the_next_one(folder, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = VideoFolder(folder, frames=6, size=16, val_share=0)
    expected = source.clip(1)
    real_read = source.read
    monkeypatch.setattr(source, "read", lambda i: (_ for _ in ()).throw(av.InvalidDataError(1, "bad")) if i == 0
                        else real_read(i))
    with pytest.warns(UserWarning, match="skipping clip 0 of"):
        assert np.array_equal(source.clip(0), expected)
    assert source.failed == {0}


def test_folders_without_usable_video_are_errors(tmp_path):
    with pytest.raises(DataError, match=f"video folder {tmp_path / 'none'} does not exist"):
        VideoFolder(tmp_path / "none", frames=4, size=16)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match=r"no video files under .*empty \(looked for .mp4, .avi"):
        VideoFolder(tmp_path / "empty", frames=4, size=16)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="none of the 1 video files under .*bad could"):
        VideoFolder(tmp_path / "bad", frames=4, size=16)
    (tmp_path / "short").mkdir()
    write_video(tmp_path / "short" / "s.mp4", encoded_frames()[:5])
    with pytest.raises(DataError, match=r"too short for clips of 8 frames 1 apart \(8 frames; the longest has 5\)"):
        VideoFolder(tmp_path / "short", frames=8, size=16, val_share=0)
    # one file is split in time: training gets the first 90% of its 5 frames
    with pytest.raises(DataError, match=r"short \(the first 90% of each file's frames\) are too short .* has 4\)"):
        VideoFolder(tmp_path / "short", frames=8, size=16)


def test_train_and_evaluate_on_a_video_folder(folder, tmp_path):
    from conftest import tiny_args

    from vidpred.config import parse_args
    from vidpred.evaluation import EvalConfig, evaluate
    from vidpred.training import train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = parse_args(tiny_args(tmp_path / "run", "--data.kind=video", f"--data.path={folder}", "--steps=2",
                                   "--prior.fit_clips=4", "--data.val_share=0.34"))
        ckpt = train(cfg)
        metrics = evaluate(EvalConfig(ckpt=str(ckpt), samples=2, context=3, horizon=3, clips=3, batch=3,
                                      out=str(tmp_path / "eval")))
    assert metrics["protocol"]["data"]["kind"] == "video" and metrics["coverage"] is None
    assert metrics["protocol"]["clips"] == 3 and len(metrics["best_of_k"]["psnr_per_frame"]) == 3
