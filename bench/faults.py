"""The fault campaign: random kill -9, SIGTERM, a disk that refuses saves, and bad inputs; prints counts.

    python bench/faults.py [--kills=20] [--bad=200] [--seed=0] [--out=DIR]

1. An uninterrupted tiny run (the reference).
2. `--kills` times: the same command with --resume=auto is started and killed with SIGKILL after a
   random delay (during steps, checkpoint saves, validation, previews or the final prior refit),
   until a launch runs to the end. After every kill the checkpoint must load (else: corrupt), and the
   finished run must log the reference's losses and end with its weights and prior (else: lost).
3. SIGTERM mid-run: exit status 143, a checkpoint, and a resume that ends as the reference.
4. A disk that refuses the next save (RLIMIT_FSIZE below a checkpoint's size): one sentence naming
   the file and the last good checkpoint, exit status 1, the previous checkpoint intact.
5. `--bad` bad inputs: fuzzed command-line values of every config key (train.py and evaluate.py)
   plus broken checkpoints, array files and video files. Each must end in a clear refusal (exit
   status 2 with a message naming the key or file), a run that works, or a legal value that makes
   training diverge and is stopped by the NaN stop's sentence (exit status 1, nothing saved); a
   Python traceback counts against it.

Runs on a CPU in 10-40 minutes (tiny 16x16 models; most of it is starting Python 200 times).
Prints a summary table and every input that was not refused clearly. Exits 1 if anything was lost,
corrupt or unclear.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidpred.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from vidpred.config import Config  # noqa: E402
from vidpred.evaluation import EvalConfig  # noqa: E402

TINY = ["--wandb=disabled", "--steps=24", "--batch_size=4", "--log_every=2", "--ckpt_every=1", "--val_every=4",
        "--val_clips=8", "--media_every=12", "--data.size=16", "--data.sprite_min=3", "--data.sprite_max=5",
        "--data.max_speed=2", "--data.frames=6", "--context=3", "--horizon=3", "--model.widths=8,16,16",
        "--model.window=2", "--latent.dim=4", "--prior.fit_clips=32", "--prior.bank=256", "--warmup=2"]
BAD_VALUES = ["", "nan", "inf", "-inf", "-1", "0", "1e308", "99999999999999999999", "abc", "2.5", "true", "none",
              ",", "8,-16", "tnwh", "x\ty", "-0.5", "1e-320"]  # (a NUL byte cannot reach argv)


def train_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), f"--out={out}", *TINY, *extra]


ENV = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(Path.home()), "WANDB_SILENT": "true"}


def run(cmd: list[str], limit: int | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    def cap():
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, preexec_fn=cap,
                          env=ENV)


def losses(out: Path) -> list:
    return [{k: v for k, v in json.loads(line).items() if k not in ("clips_per_s", "data_wait", "seconds")}
            for line in (out / "log.jsonl").read_text().splitlines()]


def same_run(a: Path, b: Path) -> bool:
    x, y = (load_checkpoint(p / "checkpoints" / "last.pt") for p in (a, b))
    weights = all(torch.equal(x["model"][k], y["model"][k]) for k in x["model"])
    return weights and torch.equal(x["prior"]["z"], y["prior"]["z"]) and losses(a) == losses(b)


def kills(reference: Path, work: Path, n: int, rng: random.Random) -> dict:
    """Rounds of launches into a fresh folder, each launch killed after a random delay until one
    finishes; rounds until `n` kills. Every finished round is compared with the reference."""
    counts = {"kills": 0, "launches": 0, "corrupt": 0, "rounds": 0, "lost": 0}
    while counts["kills"] < n:
        out = work / f"killed-{counts['rounds']}"
        counts["rounds"] += 1
        while True:
            counts["launches"] += 1
            child = subprocess.Popen(train_cmd(out, "--resume=auto"), cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=ENV)
            if counts["kills"] < n:
                time.sleep(rng.uniform(1.5, 8.0))  # start-up takes ~2 s, then steps, saves, validation, refit
            if child.poll() is None and counts["kills"] < n:
                child.send_signal(signal.SIGKILL)
                counts["kills"] += 1
            code = child.wait()
            last = out / "checkpoints" / "last.pt"
            if last.exists():
                try:
                    load_checkpoint(last)
                except CheckpointError:
                    counts["corrupt"] += 1
            if code == 0:
                break
        counts["lost"] += int(not same_run(out, reference))
    return counts


def sigterm(reference: Path, work: Path) -> dict:
    out = work / "terminated"
    child = subprocess.Popen(train_cmd(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=ENV)
    first = out / "checkpoints" / "last.pt"
    began = time.perf_counter()
    while not first.exists() and child.poll() is None and time.perf_counter() - began < 300:
        time.sleep(0.1)  # mid-run means training has started (a loaded machine can take 10 s to import torch)
    time.sleep(1.0)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate()
    resumed = run(train_cmd(out, "--resume=auto"))
    return {"exit": child.returncode, "saved": "saved" in err or "SIGTERM" in err,
            "lost": int(resumed.returncode != 0 or not same_run(out, reference))}


def disk_full(work: Path) -> dict:
    out = work / "full"
    first = run(train_cmd(out, "--steps=2"))
    last = out / "checkpoints" / "last.pt"
    before = last.read_bytes()
    failed = run(train_cmd(out, "--steps=4", "--resume=true"), limit=len(before) // 2)
    clear = (failed.returncode == 1 and "Traceback" not in failed.stderr and f"could not write {last}" in failed.stderr
             and "is intact" in failed.stderr)
    return {"first": first.returncode, "clear": int(clear), "intact": int(last.read_bytes() == before)}


def keys(node, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        out += keys(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [prefix + f.name]
    return out


def bad_files(work: Path) -> list[tuple[str, list[str]]]:
    """(what, train.py or evaluate.py arguments) for broken checkpoints, arrays and videos."""
    work.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, data in [("empty.pt", b""), ("text.pt", b"weights"), ("random.pt", bytes(range(256)) * 8),
                       ("zip.pt", b"PK\x03\x04" + bytes(60))]:
        (work / name).write_bytes(data)
        cases.append((f"checkpoint {name}", ["evaluate", f"--ckpt={work / name}", "--clips=2", "--samples=2"]))
    arrays = {"nan.npy": np.full((4, 8, 16, 16), np.nan, np.float32), "big.npy": np.full((4, 8, 16, 16), 7.0, np.float32),
              "int16.npy": np.zeros((4, 8, 16, 16), np.int16), "flat.npy": np.zeros(10, np.uint8)}
    for name, array in arrays.items():
        np.save(work / name, array)
        cases.append((f"array {name}", ["train", "--data.kind=array", f"--data.path={work / name}"]))
    (work / "junk.npy").write_bytes(b"junk")
    cases.append(("array junk.npy", ["train", "--data.kind=array", f"--data.path={work / 'junk.npy'}"]))
    videos = work / "videos"
    videos.mkdir(exist_ok=True)
    (videos / "zero.mp4").write_bytes(b"")
    (videos / "random.mp4").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    cases.append(("video folder of broken files", ["train", "--data.kind=video", f"--data.path={videos}"]))
    return cases


def bad_inputs(work: Path, n: int, rng: random.Random) -> dict:
    train_keys = [k for k in keys(Config()) if k not in ("out", "name", "wandb_project")]
    eval_keys = [k for k in keys(EvalConfig()) if k not in ("out",)]
    files = bad_files(work / "files")
    trials = [(f"train --{k}={v!r}", ["train", f"--{k}={v}"]) for k, v in
              ((rng.choice(train_keys), rng.choice(BAD_VALUES)) for _ in range(n * 3 // 4))]
    trials += [(f"evaluate --{k}={v!r}", ["evaluate", "--ckpt=missing.pt", f"--{k}={v}"]) for k, v in
               ((rng.choice(eval_keys), rng.choice(BAD_VALUES)) for _ in range(max(0, n - len(trials) - len(files))))]
    trials += files  # n in all: the fuzzed keys fill what the broken files leave
    counts = {"bad inputs": len(trials), "clear refusals": 0, "ran": 0, "clear stops": 0, "tracebacks": 0}
    failures, stops = [], []
    for what, args in trials:
        script = "train.py" if args[0] == "train" else "evaluate.py"
        extra = [f"--out={work / 'bad'}", "--overwrite=true", *TINY, "--steps=1"] if args[0] == "train" else []
        # the fuzzed value comes last so it wins over TINY's; a run that starts is cut short by --steps=1
        result = run([sys.executable, str(ROOT / script), *extra, *args[1:]], timeout=300)
        if "Traceback" in result.stderr:
            counts["tracebacks"] += 1
            failures.append(f"{what}: {result.stderr.strip().splitlines()[-1]}")
        elif result.returncode == 0:
            counts["ran"] += 1
        elif result.returncode == 2 and result.stderr.strip():
            counts["clear refusals"] += 1
        elif result.returncode == 1 and "stopped without saving" in result.stderr:
            counts["clear stops"] += 1  # a value that is legal but diverges (a huge loss weight): the NaN stop says so
            stops.append(f"{what}: {result.stderr.strip().splitlines()[-1][:160]}")
        else:
            failures.append(f"{what}: exit {result.returncode}: {result.stderr.strip()[-200:]}")
    counts["unclear"] = len(failures) - counts["tracebacks"]
    return {**counts, "failures": failures, "stops": stops}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--bad", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.out or tempfile.mkdtemp(prefix="vidpred-faults-"))
    began = time.perf_counter()
    reference = work / "reference"
    done = run(train_cmd(reference))
    assert done.returncode == 0, done.stderr
    results = {"kill -9": kills(reference, work, args.kills, rng), "SIGTERM": sigterm(reference, work),
               "disk full": disk_full(work), "bad inputs": bad_inputs(work, args.bad, rng)}
    print(f"fault campaign in {work}, {time.perf_counter() - began:.0f} s, seed {args.seed}")
    k, t, d, b = (results[x] for x in ("kill -9", "SIGTERM", "disk full", "bad inputs"))
    print("| fault | trials | result |")
    print("|---|---|---|")
    print(f"| kill -9 at random moments | {k['kills']} kills over {k['launches']} launches in {k['rounds']} runs | "
          f"{k['corrupt']} corrupt checkpoints; {k['rounds'] - k['lost']} of {k['rounds']} resumed runs end equal to the "
          f"uninterrupted one |")
    print(f"| SIGTERM mid-run | 1 | exit {t['exit']}, {'saved' if t['saved'] else 'NOT saved'}, {t['lost']} lost runs |")
    print(f"| disk refuses the next save | 1 | {'one clear sentence' if d['clear'] else 'UNCLEAR'}, previous checkpoint "
          f"{'intact' if d['intact'] else 'DAMAGED'} |")
    print(f"| bad inputs (fuzzed keys, broken checkpoints, arrays, videos) | {b['bad inputs']} | {b['clear refusals']} clear "
          f"refusals, {b['ran']} ran, {b['clear stops']} clear stops at run time, {b['tracebacks']} tracebacks, "
          f"{b['unclear']} unclear |")
    for line in b["failures"]:
        print("   not clear:", line)
    for line in b["stops"]:
        print("   stopped clearly:", line)
    bad = k["corrupt"] + k["lost"] + t["lost"] + (1 - d["clear"]) + (1 - d["intact"]) + b["tracebacks"] + b["unclear"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
