"""Folders of frame folders (KTH's and BAIR's converted layouts), the split by subject, and one
video (a frame folder or a video file) split in time."""

import re
import warnings

import numpy as np
import pytest
from PIL import Image

from vidpred.config import ConfigError, parse_args
from vidpred.data import DataError, FrameFolders, VideoFolder
from vidpred.data.splits import parse_subjects, subject_of


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def frame(level: int, h: int = 8, w: int = 8, rgb: bool = False) -> np.ndarray:
    """A flat frame of grey `level` (RGB: level, level // 2, 255 - level)."""
    if not rgb:
        return np.full((h, w), level, np.uint8)
    return np.stack([np.full((h, w), v, np.uint8) for v in (level, level // 2, 255 - level)], axis=-1)


def write_frames(folder, levels, *, name="{}.png", **kw):
    folder.mkdir(parents=True, exist_ok=True)
    for i, level in enumerate(levels):
        Image.fromarray(frame(int(level), **kw)).save(folder / name.format(i))
    return folder


def test_frames_are_read_in_natural_order_with_split_folders_steps_and_strides(tmp_path):
    # BAIR's converted layout: processed_data/{train,test}/<shard>/<video>/<i>.png with i unpadded
    root = tmp_path / "bair"
    for v in range(2):
        write_frames(root / "train" / "traj_0_to_255" / str(v), 10 * v + np.arange(12), rgb=True)
    write_frames(root / "test" / "traj_256_to_511" / "0", 100 + np.arange(12), rgb=True)
    train = FrameFolders(root, split="train", frames=3, size=8, channels=3, frame_step=2, stride=5)
    assert train.videos == ["train/traj_0_to_255/0", "train/traj_0_to_255/1"]
    assert len(train) == 2 * 2  # starts 0 and 5 (a clip spans 5 frames of 12)
    clip = train[3].numpy()  # video 1, start 5: frames 5, 7, 9 (2.png before 10.png)
    assert clip.shape == (3, 3, 8, 8) and clip.dtype == np.float32
    levels = 10 + np.array([5, 7, 9])
    np.testing.assert_allclose(clip[:, 0, 0, 0] * 255, levels, atol=1e-4)
    np.testing.assert_allclose(clip[:, 1, 0, 0] * 255, levels // 2, atol=1e-4)
    np.testing.assert_allclose(clip[:, 2, 0, 0] * 255, 255 - levels, atol=1e-4)
    for split in ("test", "val"):  # without a val/ folder, val reads test/
        held = FrameFolders(root, split=split, frames=12, size=4, channels=1)
        assert held.videos == ["test/traj_256_to_511/0"]
        grey = held[0].numpy()
        assert grey.shape == (12, 1, 4, 4)
        luma = 0.299 * (100 + np.arange(12)) + 0.587 * ((100 + np.arange(12)) // 2) + 0.114 * (155 - np.arange(12))
        np.testing.assert_allclose(grey[:, 0, 0, 0] * 255, luma, atol=1.0)
    write_frames(root / "val" / "v", np.arange(4))
    assert FrameFolders(root, split="val", frames=4, size=8).videos == ["val/v"]
    assert FrameFolders(root, split="test", frames=4, size=8).videos == ["test/traj_256_to_511/0"]


def test_frames_are_resized_and_centre_cropped(tmp_path):
    image = np.zeros((40, 60), np.uint8)
    image[:, 10:50] = 200  # the centre 40 x 40 is bright, the sides dark
    (tmp_path / "v").mkdir()
    for i in range(2):
        Image.fromarray(image).save(tmp_path / "v" / f"{i}.jpg", quality=100)
    clip = FrameFolders(tmp_path, frames=2, size=20, val_share=0).clip(0)
    assert clip.shape == (2, 1, 20, 20)
    assert abs(float(clip.mean()) - 200 / 255) < 0.02


def kth(root, persons, frames=6):
    """A KTH-like folder: processed_64/<action>/person<NN>_<action>_d<k>/image-<i>.png."""
    for person in persons:
        for action in ("boxing", "walking"):
            write_frames(root / action / f"person{person:02d}_{action}_d1", [person] * frames,
                         name="image-{:03d}.png")
    return root


def test_kth_is_split_by_subject_and_no_subject_is_in_two_splits(tmp_path):
    root = kth(tmp_path / "processed_64", [1, 5, 16, 17, 20, 21, 25])
    subject = lambda video: int(re.search(r"person(\d+)", video)[1])  # noqa: E731
    for test_subjects, train_expected in (("17-25", {1, 5, 16}), ("21-25", {1, 5, 16, 17, 20})):
        sources = {split: FrameFolders(root, split=split, frames=6, size=8, split_by="subject",
                                       test_subjects=test_subjects) for split in ("train", "val", "test")}
        train, test = ({subject(v) for v in sources[s].videos} for s in ("train", "test"))
        assert train == train_expected and test == {1, 5, 16, 17, 20, 21, 25} - train_expected
        assert sources["val"].videos == sources["test"].videos and len(sources["train"].videos) == 2 * len(train)
        for split, source in sources.items():  # the pixels are the subject: each clip comes from its split
            levels = {round(float(source[i][0, 0, 0, 0]) * 255) for i in range(len(source))}
            assert levels == (train if split == "train" else test)
    # clips take turns among the videos: the first clips of a split come from all of its videos
    longer = kth(tmp_path / "longer", [21, 22], frames=9)
    source = FrameFolders(longer, split="test", frames=3, size=8, split_by="subject", test_subjects="21-25")
    assert [source.locate(i) for i in range(len(source))] == [(v, 3 * k) for k in range(3) for v in range(4)]
    assert source.videos[1] == "boxing/person22_boxing_d1" and float(source[1][0, 0, 0, 0]) * 255 == pytest.approx(22)
    (root / "boxing" / "extra_clip").mkdir()
    write_frames(root / "boxing" / "extra_clip", [0] * 6)
    with pytest.raises(DataError, match=r"1 of the 15 sequences .* name no subject \(first: boxing/extra_clip\)"):
        FrameFolders(root, frames=6, size=8, split_by="subject")


def test_subject_names_and_ranges():
    assert subject_of("walking/person07_walking_d1_uncomp") == 7
    assert subject_of("person23_handclapping_d4_uncomp.avi") == 23
    assert subject_of("S11/Walking.54138969.mp4") == 11 and subject_of("train/traj_0_to_255/3") is None
    assert parse_subjects("17-25") == set(range(17, 26)) and parse_subjects("9, 11") == {9, 11}
    with pytest.raises(DataError, match="runs backwards"):
        parse_subjects("25-17")
    with pytest.raises(ValueError, match="split_by='persons': expected one of auto, subject, time"):
        FrameFolders(".", frames=2, size=8, split_by="persons")  # evaluate.py's --data.* overrides come here


def test_raw_kth_videos_are_split_by_subject_too(tmp_path):
    from test_video import encoded_frames, write_video

    for person in (3, 18):
        write_video(tmp_path / f"person{person:02d}_running_d2_uncomp.avi", encoded_frames()[:8, :32, :32],
                    codec="mjpeg")
    train = VideoFolder(tmp_path, split="train", frames=4, size=16, split_by="subject")
    test = VideoFolder(tmp_path, split="test", frames=4, size=16, split_by="subject")
    assert train.files == ["person03_running_d2_uncomp.avi"] and test.files == ["person18_running_d2_uncomp.avi"]


def test_a_bad_image_is_reported_naming_the_file_and_its_clips_are_skipped(tmp_path):
    video = write_frames(tmp_path / "v", np.arange(12) * 10)
    good = (video / "3.png").read_bytes()
    (video / "3.png").write_bytes(good[: len(good) // 2])  # truncated
    Image.fromarray(frame(90, h=10, w=8)).save(video / "9.png")  # another size than the video's
    source = FrameFolders(tmp_path, frames=2, size=8, val_share=0)  # clips: 0-1, 2-3, ..., 10-11
    assert len(source) == 6
    with pytest.warns(UserWarning, match=re.escape(f"skipping image {video / '3.png'}: cannot be decoded")):
        clip = source[1]  # frames 2, 3: replaced by the next clip, frames 4, 5
    np.testing.assert_allclose(clip[:, 0, 0, 0].numpy() * 255, [40, 50], atol=1e-4)
    with pytest.warns(UserWarning, match=re.escape(f"skipping image {video / '9.png'}: 8x10 pixels, but its "
                                                   "video's frames are 8x8")):
        clip = source[4]  # frames 8, 9 -> frames 10, 11
    np.testing.assert_allclose(clip[:, 0, 0, 0].numpy() * 255, [100, 110], atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # each bad file is reported once
        assert np.array_equal(source[1].numpy(), source[2].numpy())
    assert source.failed == {1, 4} and set(source.bad) == {video / "3.png", video / "9.png"}


def test_folders_without_usable_frames_are_errors(tmp_path):
    with pytest.raises(DataError, match="frame folder .*none does not exist"):
        FrameFolders(tmp_path / "none", frames=2, size=8)
    (tmp_path / "empty" / "v").mkdir(parents=True)
    (tmp_path / "empty" / "v" / "notes.txt").write_text("no frames here")
    with pytest.raises(DataError, match=r"no image files under .*empty \(looked for .png"):
        FrameFolders(tmp_path / "empty", frames=2, size=8)
    write_frames(tmp_path / "short" / "v", [0, 1, 2])
    write_frames(tmp_path / "short" / "w", [0, 1, 2])
    with pytest.raises(DataError, match=r"too short for clips of 4 frames 1 apart \(4 frames; the longest has 3\)"):
        FrameFolders(tmp_path / "short", frames=4, size=8, val_share=0)


def test_one_frame_folder_is_split_in_time(tmp_path):
    root = write_frames(tmp_path / "one", np.arange(20))  # the root itself holds the frames
    train = FrameFolders(root, split="train", frames=2, size=8, val_share=0.2)
    val = FrameFolders(root, split="val", frames=2, size=8, val_share=0.2)
    seen = {split: {round(float(v)) for i in range(len(s)) for v in s[i][:, 0, 0, 0].numpy() * 255}
            for split, s in (("train", train), ("val", val))}
    assert seen == {"train": set(range(16)), "val": set(range(16, 20))}
    with pytest.raises(DataError, match=r"split in time .* data.val_share=0 holds no frames out for split 'val'"):
        FrameFolders(root, split="val", frames=2, size=8, val_share=0)
    # split_by=time cuts every video of a folder the same way
    write_frames(tmp_path / "two" / "a", np.arange(10))
    write_frames(tmp_path / "two" / "b", 100 + np.arange(10))
    test = FrameFolders(tmp_path / "two", split="test", frames=1, size=8, val_share=0.3, split_by="time")
    assert sorted(round(float(test[i][0, 0, 0, 0]) * 255) for i in range(len(test))) == [7, 8, 9, 107, 108, 109]


@pytest.mark.parametrize("name_the_file", [False, True])
def test_one_video_file_is_a_dataset_split_in_time(tmp_path, name_the_file, capsys):
    from test_video import FRAMES, encoded_frames, write_video

    (tmp_path / "long").mkdir()
    path = write_video(tmp_path / "long" / "only.avi", encoded_frames(), codec="mjpeg")  # 30 frames
    where = path if name_the_file else path.parent
    train = VideoFolder(where, split="train", frames=3, size=16, val_share=0.2)
    test = VideoFolder(where, split="test", frames=3, size=16, val_share=0.2)
    assert train.spans == [(0, 24)] and test.spans == [(24, 6)] and (len(train), len(test)) == (8, 2)
    said = f"video file {path}" if name_the_file else f"video folder {path.parent}"
    assert f"{said}: 1 files, 1 decodable, 0 skipped; split test (the last 20% of each file's frames)" in \
        capsys.readouterr().out
    frame_number = lambda clip: np.round(clip[:, 0, 14:, :].mean(axis=(1, 2)) * 255 / 7)  # noqa: E731
    np.testing.assert_allclose(frame_number(test.clip(1)), [27, 28, 29], atol=0.5)  # the last frames
    np.testing.assert_allclose(frame_number(train.clip(7)), [21, 22, 23], atol=0.5)
    assert FRAMES == 30
    cfg = parse_args(["--data.kind=video", f"--data.path={path}"])  # a file is a valid data.path for video
    assert cfg.data.path == str(path)


@pytest.mark.parametrize("args, message", [
    (["--data.kind=frames"], "data.kind=frames needs --data.path: a folder of frame folders"),
    (["--data.kind=frames", "--data.path=/no/such"], "data.path=/no/such: no such folder"),
    (["--data.split_by=subject"], "data.split_by=subject: only data.kind=video and frames split their videos"),
    (["--data.split_by=person"], "data.split_by='person': expected one of auto, subject, time"),
    (["--data.kind=frames", "--data.path=.", "--data.test_subjects=17..25"],
     "data.test_subjects='17..25': expected subject numbers and ranges"),
])
def test_bad_split_settings_refuse_to_start_naming_the_key(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_args(args)

