"""What training and sampling cost, per model kind, and how much of the machine they use.

    python bench/throughput.py [--device=auto|cpu|cuda --timed_steps=10 --warmup_steps=3 --samples=100 --sample_horizon=20
                                --threads=0 --json=runs/bench/throughput.json] [training overrides: --data.size=64 ...]

For each model — the energy model with the configured inference steps and with 0 (amortized guess
only), the deterministic and the VAE baselines — on one fixed batch of the configured data (what
loading costs is bench/data_loading.py's subject), on the CPU and, when there is one, on the GPU:

- training clips/s: the median of `timed_steps` training steps (forward, latent inference,
  backward, gradient clipping, AdamW update), after `warmup_steps` untimed ones;
- the split of a step: wall time spent inside `infer_latent` (the N proximal steps on z), inside
  the amortized guess z⁰ = A(y - Dec(h, 0)), and the rest (forward at z*, backward, update);
  "inference adds" is the first divided by the step without it;
- sampling: one call of `sample_futures` for one clip, K futures of T frames (median of 3);
- peak memory above what the process held before (the model and the batch): on the CPU, the
  growth of the resident set, VmHWM - VmRSS from /proc/self/status after trimming glibc's free
  heap (malloc_trim) and resetting the high-water mark (/proc/self/clear_refs) — what the OS had
  to give the step, allocator overhead included; on a GPU, torch.cuda.max_memory_allocated above
  the memory allocated before;
- FLOP/s: the FLOPs of a training step (FlopCounterMode: convolutions and matrix products; norms
  and activations are not counted) over the median step time, against the machine's fp32 matmul
  peak measured in this run (a loop of large square matmuls), printed as a ratio.

FlopCounterMode cannot follow `torch.autograd.grad`, which latent inference uses (it raises "A leaf
node was passed to _will_engine_execute_node..."), so a step with N inference steps is counted as
F(step with N = 0, which makes no such call) + N * F(one inference step), and one inference step
— a decoder forward and a backward to z alone — is counted on a copy of the model with frozen
weights, where `.backward()` computes input gradients only, as `autograd.grad(E, z)` does. The
counter itself is checked against the analytic FLOPs of the decoder's convolutions (2 * MACs).
Figures taken while other jobs load the machine are disturbed: note `uptime` beside them.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import datetime
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vidpred.objectives as objectives  # noqa: E402
from vidpred.build import build_energy, build_model, build_objective, build_source  # noqa: E402
from common import finish_report, load_average, split_options  # noqa: E402  (bench/ is sys.path[0] when a bench runs)
from vidpred.config import Config, ConfigError, parse_args  # noqa: E402
from vidpred.sampling import sample_futures  # noqa: E402


@dataclass
class BenchConfig:
    device: str = "auto"  # auto: the CPU, and the GPU when there is one | cpu | cuda
    inference_steps: tuple[int, ...] = ()  # energy model variants by inference steps N (empty: 0, 1 and latent.steps)
    timed_steps: int = 10  # timed training steps per model
    warmup_steps: int = 3  # untimed steps first (oneDNN / cuDNN pick their kernels)
    samples: int = 100  # K futures ...
    sample_horizon: int = 20  # ... of T frames, for one clip
    threads: int = 0  # torch CPU threads (0: torch's default, one per core)
    matmul: int = 0  # side of the square matmuls that measure the peak (0: 2048 on CPU, 8192 on GPU)
    json: str = "runs/bench/throughput.json"


# --- timing, memory and FLOP counting helpers -----------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates the wall time spent inside a function (synchronizing the GPU around it)."""

    def __init__(self, fn, device: torch.device):
        self.fn, self.device, self.seconds = fn, device, 0.0

    def __call__(self, *args, **kwargs):
        sync(self.device)
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        return out


def _proc_status_kib(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


class PeakMemory:
    """Peak memory above the level at entry, in MiB (see the module docstring for how)."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so it cannot hide growth
            except OSError:
                pass
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
            self.base = _proc_status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _proc_status_kib("VmHWM") * 1024
        self.mib = (peak - self.base) / 2**20
        return False


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def analytic_flops(module: nn.Module, run) -> int:
    """2 x multiply-accumulates of every Conv2d, ConvTranspose2d and Linear inside `module` while `run()` runs."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        x = inputs[0]
        if isinstance(layer, nn.Conv2d):
            total += 2 * output.numel() * layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, nn.ConvTranspose2d):  # each input pixel scatters a k x k x C_out patch
            total += 2 * x.numel() * layer.out_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, nn.Linear):
            total += 2 * x.numel() * layer.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return total


def matmul_peak(device: torch.device, side: int, seconds: float = 3.0) -> float:
    """fp32 FLOP/s of back-to-back (side x side) @ (side x side) products: the machine's practical peak."""
    a = torch.randn(side, side, device=device)
    b = torch.randn(side, side, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
        if device.type == "cuda" and reps % 10:
            continue
        sync(device)
    sync(device)
    return 2 * side**3 * reps / (time.perf_counter() - start)


# --- one model -----------------------------------------------------------------------------------


def training_step(objective, optimizer, video, cfg: Config, step: int = 0) -> None:
    """One step as the training loop takes it (without data loading and logging)."""
    draws = objective.draws(seed=cfg.seed, step=step, clips=range(video.shape[0]), frames=video.shape[1] - cfg.context)
    loss, _, _ = objective.loss(video, context=cfg.context, energy=build_energy(cfg), draws=draws, rollout=cfg.rollout)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(objective.model.parameters(), cfg.grad_clip)
    optimizer.step()


def step_flops(cfg: Config, model, video) -> tuple[int, int]:
    """(FLOPs of a step outside latent inference, FLOPs of one inference step); see the module docstring."""
    no_inference = dataclasses.replace(cfg, latent=dataclasses.replace(cfg.latent, steps=0))
    scratch = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(scratch.parameters(), lr=cfg.lr)
    outside = count_flops(lambda: training_step(build_objective(no_inference, scratch), optimizer, video, no_inference))
    if not isinstance(build_objective(cfg, model), objectives.EnergyObjective) or cfg.latent.steps == 0:
        return outside, 0
    frozen = copy.deepcopy(model).requires_grad_(False)
    cond, target = frozen.teacher_forced_pairs(video, cfg.context)
    z = torch.zeros(target.shape[0], model.z_dim, device=video.device, requires_grad=True)
    energy = build_energy(cfg)
    per_step = count_flops(lambda: energy.reconstruction(frozen.decode(cond, z), target).sum().backward())
    return outside, per_step


def measure(name: str, cfg: Config, bench: BenchConfig, device: torch.device, video: torch.Tensor) -> dict:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device).train()
    objective = build_objective(cfg, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    infer = Stopwatch(objectives.infer_latent, device)
    amortized = Stopwatch(model.amortized_latent, device)
    whole = Stopwatch(training_step, device)
    objectives.infer_latent, model.amortized_latent = infer, amortized  # timed stand-ins for this model's steps
    try:
        with PeakMemory(device) as train_memory:
            times, inside, guess = [], [], []
            for i in range(bench.warmup_steps + bench.timed_steps):
                infer.seconds = amortized.seconds = whole.seconds = 0.0
                whole(objective, optimizer, video, cfg, i)
                if i >= bench.warmup_steps:
                    times.append(whole.seconds)
                    inside.append(infer.seconds)
                    guess.append(amortized.seconds)
    finally:
        objectives.infer_latent = infer.fn
        del model.amortized_latent
    step = statistics.median(times)
    t_infer, t_guess = statistics.median(inside), statistics.median(guess)
    outside, per_inference_step = step_flops(cfg, model, video)
    # a fused step (latent.fused) is taken in the training pass's own backward: no inference passes to add
    fused = isinstance(objective, objectives.EnergyObjective) and objective.fuses(build_energy(cfg))
    flops = outside + (0 if fused else cfg.latent.steps * per_inference_step)  # (0 for the baselines)

    model.eval()
    context = video[:1, :cfg.context]
    sample_futures(objective, context, samples=bench.samples, horizon=bench.sample_horizon, seed=0)  # warm-up
    sampling, draw = [], Stopwatch(sample_futures, device)
    with PeakMemory(device) as sample_memory:
        for seed in range(3):
            draw.seconds = 0.0
            draw(objective, context, samples=bench.samples, horizon=bench.sample_horizon, seed=seed)
            sampling.append(draw.seconds)
    sample_s = statistics.median(sampling)
    return {
        "model": name, "kind": cfg.model.kind, "inference_steps": cfg.latent.steps if objective.regularized else 0,
        "fused": fused,
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_s": step, "clips_per_s": video.shape[0] / step,
        "inference_s": t_infer, "amortized_s": t_guess, "rest_s": step - t_infer - t_guess,
        "inference_adds": t_infer / (step - t_infer),
        "flops_per_step": flops, "flops_outside_inference": outside, "flops_per_inference_step": per_inference_step,
        "achieved_flops_per_s": flops / step,
        "sample_s": sample_s, "sample_frames_per_s": bench.samples * bench.sample_horizon / sample_s,
        "peak_train_mib": train_memory.mib, "peak_sample_mib": sample_memory.mib,
    }


def flop_check(cfg: Config, device: torch.device, video: torch.Tensor) -> dict:
    """FlopCounterMode against 2 x MACs computed from the layer shapes, for one decoder forward."""
    model = build_model(cfg).to(device).eval()
    with torch.no_grad():
        cond = model.teacher_forced(video, cfg.context)
        z = torch.zeros(cond.h.shape[0], model.z_dim, device=device)
        counted = count_flops(lambda: model.decode(cond, z))
        analytic = analytic_flops(model.decoder, lambda: model.decode(cond, z))
        first = model.decoder.inject[0][0]  # the convolution that mixes z (and the content code) into the state
        tiled = first.in_channels - cond.h.shape[1]  # z's and the content code's channels
        x = torch.cat([cond.h, torch.zeros(cond.h.shape[0], tiled, *cond.h.shape[2:], device=device)], 1)
        layer_counted = count_flops(lambda: first(x))
    n, c_in, h, w = x.shape
    layer_analytic = 2 * n * first.out_channels * c_in * first.kernel_size[0] * first.kernel_size[1] * h * w
    return {"decoder_forward_counted": counted, "decoder_forward_analytic": analytic,
            "layer": f"decoder.inject conv {c_in}->{first.out_channels}, 3x3, on {n}x{h}x{w}",
            "layer_counted": layer_counted, "layer_analytic": layer_analytic}


# --- the whole benchmark ---------------------------------------------------------------------------


def variants(base: Config, inference_steps: tuple[int, ...]) -> list[tuple[str, Config]]:
    def change(**sections):
        return dataclasses.replace(base, **{k: dataclasses.replace(getattr(base, k), **v) for k, v in sections.items()})

    out = []
    for n in sorted(set(inference_steps or (0, 1, base.latent.steps)), reverse=True):
        if n == 1:  # the one step fused into the training pass (the default), and in separate passes
            out.append(("energy, N = 1 (fused)", change(model={"kind": "energy"}, latent={"steps": 1, "fused": True})))
            out.append(("energy, N = 1 (separate)", change(model={"kind": "energy"}, latent={"steps": 1, "fused": False})))
            continue
        label = f"energy, N = {n}" + (" (amortized only)" if n == 0 else "")
        out.append((label, change(model={"kind": "energy"}, latent={"steps": n})))
    out += [("deterministic", change(model={"kind": "deterministic"})), ("vae", change(model={"kind": "vae"}))]
    return out


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": torch.get_num_threads(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version()}


def start_report(bench, base: Config, train_args: list[str]) -> tuple[dict, torch.Tensor]:
    """A bench report's opening fields (date, machine, load, the options, the data) and the batch it
    times: the first `batch_size` clips of the configured training data."""
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "load_average_start": load_average(), "bench": dataclasses.asdict(bench), "overrides": train_args,
              "batch": base.batch_size, "context": base.context, "horizon": base.horizon, "data": base.data.kind,
              "size": base.data.size}
    source = build_source(base.data, seed=base.seed, split="train", frames=base.context + base.horizon,
                          context=base.context)
    return report, torch.stack([source[i] for i in range(base.batch_size)])


def print_device(device: str, result: dict) -> None:
    print(f"\n== {device}: {result['precision']} matmul peak {result['matmul_peak_flops'] / 1e9:.1f} GFLOP/s "
          f"before, {result['matmul_peak_flops_after'] / 1e9:.1f} after the models "
          f"({result['matmul_side']}^2 matmuls, {result['threads']} threads)")
    print(f"{'model':30}{'clips/s':>8}{'step s':>8}{'infer s':>8}{'A(.) s':>8}{'adds':>7}{'GFLOP/step':>11}"
          f"{'GFLOP/s':>9}{'of peak':>8}{'K x T s':>9}{'mem MiB':>9}{'smp MiB':>8}")
    for m in result["models"]:
        print(f"{m['model']:30}{m['clips_per_s']:>8.1f}{m['step_s']:>8.3f}{m['inference_s']:>8.3f}"
              f"{m['amortized_s']:>8.3f}{m['inference_adds']:>7.0%}{m['flops_per_step'] / 1e9:>11.2f}"
              f"{m['achieved_flops_per_s'] / 1e9:>9.1f}{m['achieved_flops_per_s'] / result['matmul_peak_flops']:>8.1%}"
              f"{m['sample_s']:>9.2f}{m['peak_train_mib']:>9.0f}{m['peak_sample_mib']:>8.0f}")
    check = result["flop_check"]
    print(f"FLOP counter check: one decoder forward {check['decoder_forward_counted'] / 1e9:.4f} GFLOP counted, "
          f"{check['decoder_forward_analytic'] / 1e9:.4f} from layer shapes; {check['layer']}: "
          f"{check['layer_counted']} counted, {check['layer_analytic']} analytic")


def main(argv: list[str]) -> int:
    bench = BenchConfig()
    try:
        train_args = split_options(argv, bench)
        base = parse_args(train_args)
        if bench.device == "auto":
            devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        elif bench.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={bench.device}: this machine has no CUDA device; use --device=cpu or auto")
        else:
            devices = [bench.device]
    except ConfigError as e:
        print(f"throughput.py: {e}", file=sys.stderr)
        return 2
    if bench.threads:
        torch.set_num_threads(bench.threads)
    report, clips = start_report(bench, base, train_args)
    report["devices"] = {}
    print(f"{report['date']}  {report['machine']['cpu']}, torch {torch.__version__}, load average "
          f"{' '.join(map(str, report['load_average_start']))}; batch {base.batch_size} clips of "
          f"{base.context} -> {base.horizon} frames, {base.data.kind} {base.data.size}x{base.data.size}; "
          f"sampling K = {bench.samples} futures of {bench.sample_horizon} frames for one clip")
    for name in devices:
        device = torch.device(name)
        video = clips.to(device)
        side = bench.matmul or (8192 if device.type == "cuda" else 2048)
        result = {"matmul_side": side, "threads": torch.get_num_threads(), "precision": "fp32", "models": []}
        if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
            # cuDNN convolutions run in TF32 by default, so the fair peak is TF32's (fp32's is kept too)
            result["matmul_peak_flops_fp32"] = matmul_peak(device, side)
            torch.backends.cuda.matmul.allow_tf32, result["precision"] = True, "tf32 (cuDNN's default for convolutions)"
        result["matmul_peak_flops"] = matmul_peak(device, side)
        for label, cfg in variants(base, bench.inference_steps):
            result["models"].append(measure(label, cfg, bench, device, video))
        result["matmul_peak_flops_after"] = matmul_peak(device, side)  # did the machine change under us?
        torch.backends.cuda.matmul.allow_tf32 = False
        result["flop_check"] = flop_check(base, device, video)
        report["devices"][name] = result
        print_device(name, result)
    finish_report(report, bench.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
