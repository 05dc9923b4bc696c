"""Training: minimize the energy over z for every sample, then over the weights at that z.

    z⁰  = A(y - Dec(h, 0))                        amortized guess (0 without an encoder)
    z*  = argmin_z E(x, y, z)                     N proximal steps from z⁰, weights frozen
    loss = E(x, y, z*) + β·||z⁰ - sg(z*)||² + NLL of z* under the conditional prior

(the energy model's loss; each model kind's is in objectives.py). z* enters the weight update
straight-through (z⁰ + sg(z* - z⁰)): the decoder is trained at z*, and with N = 0 the encoder A
gets the full autoencoder gradient (EEN); with N > 0 it is also pulled toward z*. With probability
`dropout` a frame is trained with z = 0, so the deterministic path must predict all that is
predictable (PPUU) and z carries only what the context cannot tell.

Runs that last: every random draw of a step is a function of (seed, step, clip index) — the data
(clip = f(seed, index), the loader yields indices step * batch_size + i), the crop, the latent
dropout mask — and the checkpoint holds everything else (weights, optimizer, latent bank, the
partial log window, the best validation energy), so a resumed run logs what an uninterrupted one
would, and N torchrun ranks (each with its slice of the global batch) compute what one process does.
"""

from __future__ import annotations

import errno
import json
import math
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .averaging import WeightAverage
from .build import build_energy, build_model, build_objective, build_source
from .checkpoint import CheckpointError, fitted_copy, last_good, load_checkpoint, mismatch_detail, save_checkpoint, training_state
from .config import Config, config_changes, to_dict
from .data import ClipSource, train_loader
from .distributed import (Interrupted, Ranks, StopRequest, barrier, data_parallel, gather_rows, local_first,
                          setup, sum_over_ranks, teardown)
from .energy import Energy
from .files import WriteError
from .monitor import preview
from .objectives import Objective, StepDraws
from .prior import LatentBank
from .runfolder import claim
from .tracking import Tracker

PREVIEW_CLIPS = 16  # val clips whose sampled futures are scored (and the first few drawn) at each preview
START_SHARE_TOLD = 0.05  # a run that ends (finished or stopped) says so when its weight average still holds this share of its first weights

__all__ = ["train", "learning_rate", "refit_prior", "steer_sparsity", "validation_energy", "Interrupted", "RunState"]


def steer_sparsity(l1: float, active: float, *, floor: float, cap: float) -> float:
    """The next l1 weight: below `floor` (a share of nonzero latent entries) it falls, above it it
    rises back, by at most 10% a step (proportional to the relative gap), never above `cap`, the
    configured l1.

    A fixed l1 can kill z for good: z = 0 is the exact ISTA solution whenever |dC/dz| <= l1, and
    once z is zero the decoder's z-weights get no gradient, so |dC/dz| never grows back (seen at
    batch 8 from step ~1000, and at batch 16 from step 25). Steered, l1 drops until z is used again;
    once the decoder relies on z, l1 returns to the configured price of information.
    """
    change = max(-0.1, min(0.1, 0.1 * (active - floor) / floor))
    return min(max(l1 * math.exp(change), 1e-6), cap)


def param_groups(model: nn.Module, head_lr: float) -> list[dict]:
    """The optimizer's parameter groups: one, or with head_lr != 1 a second for the moving decoder's
    taps and mask heads, whose learning rate is head_lr x lr ("lr_share", read at every step).

    Those heads start the kernels decoder as a copy of the last frame; at the full rate their first
    hundred steps move it off that copy (to a blur that hedges between motions) before the features
    they read have learned where things move.
    """
    heads = [p for name, p in model.named_parameters() if name.startswith(("decoder.taps.", "decoder.mask."))]
    if head_lr == 1.0 or not heads:
        return [{"params": list(model.parameters())}]
    chosen = {id(p) for p in heads}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    return [{"params": rest, "lr_share": 1.0}, {"params": heads, "lr_share": head_lr}]


def compile_parts(model: nn.Module) -> None:
    """--compile=true: torch.compile the encoder, predictor and decoder in place, so parameter names,
    and so checkpoints, stay as they are."""
    for part in (model.encoder, model.predictor, model.decoder):
        part.compile()


def learning_rate(step: int, *, lr: float, warmup: int, steps: int) -> float:
    """Linear warmup, then cosine decay to lr / 10 at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def refit_prior(objective: Objective, cfg: Config, device: torch.device, l1: float | None = None) -> LatentBank:
    """A fresh bank of z* inferred by the final model (with the final sparsity weight `l1`) on unseen
    training clips, with its fit."""
    source = build_source(cfg.data, seed=cfg.seed, split="train", frames=cfg.context + cfg.horizon,
                          context=cfg.context)
    bank = LatentBank(cfg.latent.dim, cfg.prior.bank)
    first = cfg.steps * cfg.batch_size  # indices after the last training clip
    energy = build_energy(cfg, l1=l1)
    model = objective.model
    model.eval()
    for start in range(0, cfg.prior.fit_clips, cfg.batch_size):
        count = min(cfg.batch_size, cfg.prior.fit_clips - start)
        video = torch.stack([source[first + start + i] for i in range(count)]).to(device)
        bank.add(objective.clip_latents(video, context=cfg.context, energy=energy, rollout=cfg.rollout).z.detach())
    bank.fit()
    model.train()
    return bank


@torch.no_grad()
def validation_energy(objective: Objective, source: ClipSource, indices: list[int], *, context: int, energy: Energy,
                      batch_size: int, rollout: bool, device: torch.device) -> Tensor:
    """Sums over the predicted frames of clips `indices` of `source`: (E at z*, E at z⁰, E at z = 0, frames).

    Trained the way training runs (teacher-forced or free-running), with the full regularizer `energy`
    (no warmup ramp) so that values compare across steps.
    """
    sums = torch.zeros(4, dtype=torch.float64)
    model = objective.model
    model.eval()
    for start in range(0, len(indices), batch_size):
        video = torch.stack([source[i] for i in indices[start:start + batch_size]]).to(device)
        found = objective.clip_latents(video, context=context, energy=energy, rollout=rollout, score_zero=True)
        sums += torch.tensor([found.after.sum().item(), found.before.sum().item(), found.zero.sum().item(),
                              found.after.shape[0]], dtype=torch.float64)
    model.train()
    return sums


class StepLoss(nn.Module):
    """`objective.loss` as a module's forward, for DistributedDataParallel.

    DDP averages gradients only in the backward pass of a forward that went through it, so the whole
    step runs inside. The latent inference's `torch.autograd.grad` calls differentiate with respect
    to z alone: they never run the parameters' gradient accumulators, where DDP's hooks sit, so
    they trigger no reduction; the step's one `loss.backward()` does.
    """

    def __init__(self, objective: Objective):
        super().__init__()
        self.objective, self.model = objective, objective.model  # (the model: so DDP sees its parameters)

    def forward(self, video: Tensor, *, context: int, energy: Energy, draws: StepDraws,
                rollout: bool) -> tuple[Tensor, dict, Tensor]:
        return self.objective.loss(video, context=context, energy=energy, draws=draws, rollout=rollout)


def _crop(video: Tensor, length: int, step: int, seed: int) -> Tensor:
    """A window of `length` frames from clips that may be longer, chosen reproducibly per step."""
    spare = video.shape[1] - length
    if spare == 0:
        return video
    start = int(torch.randint(spare + 1, (1,), generator=torch.Generator().manual_seed(seed * 7919 + step)))
    return video[:, start:start + length]


@dataclass
class RunState:
    """What the loop keeps besides weights, optimizer and bank; `progress()` is what a checkpoint holds of it."""

    l1: float  # the sparsity weight: lowered while the share of active latents is below latent.min_active
    step: int = 0  # steps done
    saved: int | None = None  # step of this run's last good checkpoint (None: none yet)
    best_energy: float = math.inf  # the lowest validation energy, and its step
    best_step: int = 0
    wandb_id: str | None = None
    sums: dict[str, float] = field(default_factory=dict)  # the log window: statistics summed since the last line
    count: int = 0  # steps in the log window
    clips: int = 0  # the log window's throughput (training time only; not kept by checkpoints)
    busy: float = 0.0
    wait: float = 0.0

    PROGRESS = ("sums", "count", "best_energy", "best_step", "wandb_id", "l1")

    def progress(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in self.PROGRESS}

    def add(self, stats: dict[str, float], clips: int) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.clips += clips

    def close_window(self, lr: float) -> dict[str, float]:
        """The log line of the window (means of its statistics, lr and throughput); starts a new window."""
        record = {k: v / self.count for k, v in self.sums.items()}
        record.update(lr=lr, clips_per_s=self.clips / (self.busy + self.wait),
                      data_wait=self.wait / (self.busy + self.wait))
        self.sums, self.count, self.clips, self.busy, self.wait = {}, 0, 0, 0.0, 0.0
        return record


def train(cfg: Config) -> Path:
    """Train as configured, data-parallel over the ranks when started by torchrun; returns the path of
    the last checkpoint.

    Raises `Interrupted` (after saving) when SIGINT or SIGTERM stopped the run, FloatingPointError
    (saving nothing) when the loss or the gradient norm is not finite, and RunFolderError (before
    training) when the output folder holds another run's checkpoint or another process is writing it.
    """
    ranks = setup(device=cfg.device, batch_size=cfg.batch_size)
    try:
        with claim(cfg.out_dir, ranks, resume=cfg.resume, overwrite=cfg.overwrite), StopRequest() as stop:
            return _Run(cfg, ranks).train(stop)  # the run folder is this process's while it trains
    finally:
        teardown(ranks)


class _Run:
    """One training run: its model, objective, optimizer, latent bank, state and outputs."""

    def __init__(self, cfg: Config, ranks: Ranks):
        self.cfg, self.ranks, self.device, self.main = cfg, ranks, ranks.device, ranks.main
        out = cfg.out_dir
        self.last_path, self.best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg).to(self.device)
        self.objective = build_objective(cfg, self.model)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.head_lr), lr=cfg.lr, weight_decay=0.0)
        self.average = WeightAverage(self.model, cfg.ema) if cfg.ema else None  # --ema: from the initial weights
        self.bank = LatentBank(cfg.latent.dim, cfg.prior.bank)
        self.state = RunState(l1=cfg.latent.l1)
        self.tracker: Tracker | None = None
        self.best_pending = False  # the final step's validation was the best: best.pt waits for the refitted prior
        self.out_of_time = False  # --max_minutes passed: stop as --stop_at does
        # --resume=auto: go on where this folder holds a checkpoint, else start (one command for the first
        # launch and every restart: torchrun --max-restarts, a requeued job)
        self.resuming = cfg.resume is True or (cfg.resume == "auto" and self.last_path.is_file())

    def train(self, stop: StopRequest) -> Path:
        cfg, state = self.cfg, self.state
        if self.resuming:
            self.resume()
        end = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps
        if state.step >= end:
            self.say(f"{self.last_path} is at step {state.step}: nothing to train up to step {end}; raise --steps to go on")
            return self.last_path
        self.prepare()
        bar = tqdm(total=cfg.steps, initial=state.step, dynamic_ncols=True, desc="train", disable=not self.main,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s
        try:
            end = self.loop(self.batches(end), end, stop, bar)
        except BaseException:
            bar.close()
            if self.tracker is not None:
                self.tracker.close(exit_code=1)
            raise
        bar.close()
        if end < cfg.steps:  # --stop_at or --max_minutes: the loop saved last.pt at that step
            self.stopped_early(end)
        elif self.main:
            self.finish()
        barrier(self.ranks)
        return self.last_path

    def averaged(self):
        """Within the block the model holds the weights evaluation will use: the average under --ema."""
        return self.average.applied(self.model) if self.average is not None else nullcontext()

    # --- the parts of a run, in the order they happen ----------------------------------------------

    def say(self, line: str) -> None:
        if self.main:
            print(line)

    def resume(self) -> None:
        """Go on from last.pt: weights, optimizer, bank, torch RNG and the run's state."""
        saved = load_checkpoint(self.last_path, map_location=self.device)
        changes = config_changes(saved["config"], self.cfg)
        try:
            self.model.load_state_dict(saved["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{self.last_path} does not fit the model this config describes (changed: "
                                  f"{', '.join(changes) or 'nothing'}; resume with the run's own settings, or "
                                  f"train in another --out): {mismatch_detail(e)}") from None
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
        except ValueError as e:  # head_lr = 1 (one group) on one side, another share (two) on the other
            raise CheckpointError(f"{self.last_path}: its optimizer state does not fit this run's parameter groups (changed: "
                                  f"{', '.join(changes) or 'nothing'}; head_lr 1 keeps one group, any other share two): {e}") from None
        for group in self.optimizer.param_groups[1:]:  # a changed head_lr (say 0.1 -> 0.3) holds from here on
            group["lr_share"] = self.cfg.head_lr
        self.bank = LatentBank.from_state_dict(saved["prior"])
        if self.average is not None:
            if "ema" in saved:
                try:
                    self.average.load_state_dict(saved["ema"])
                except ValueError as e:
                    raise CheckpointError(f"{self.last_path}: {e}") from None
            else:  # --ema turned on when resuming: the average can only start here
                self.average = WeightAverage(self.model, self.cfg.ema)
                self.say(f"{self.last_path} holds no weight average: --ema={self.cfg.ema} starts it from the weights "
                         f"of step {saved['step']}")
        elif "ema" in saved:  # --ema=0 when resuming an --ema run: its checkpoints go on without the average
            self.say(f"{self.last_path} holds a weight average that --ema=0 leaves behind: this run's checkpoints keep the "
                     "raw weights only (resume with --ema=<decay> from a copy of last.pt to keep it)")
        torch.set_rng_state(saved["rng"]["torch"])
        for key, value in saved.get("progress", {}).items():
            setattr(self.state, key, value)
        self.state.step = self.state.saved = int(saved["step"])
        self.say(f"resuming {self.last_path} at step {self.state.step}" +
                 (f" (changed: {', '.join(changes)})" if changes else ""))

    def prepare(self) -> None:
        """Compile, wrap for the ranks, open the run folder and the tracker, build the validation clips."""
        cfg, model, ranks = self.cfg, self.model, self.ranks
        if cfg.compile:
            compile_parts(model)
        self.step_loss = data_parallel(StepLoss(self.objective), ranks)
        self.predictor_params = [p for name, p in model.named_parameters() if not name.startswith("prior.")]
        if self.main:
            out = cfg.out_dir
            out.mkdir(parents=True, exist_ok=True)
            if not self.resuming:  # a best.pt left by an earlier run in this folder must not pass for this run's
                self.best_path.unlink(missing_ok=True)
            (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
            self.tracker = Tracker(out, config=to_dict(cfg), name=cfg.name, project=cfg.wandb_project, mode=cfg.wandb,
                                   resume_step=self.state.step if self.resuming else None, run_id=self.state.wandb_id)
            self.state.wandb_id = self.tracker.run_id
        with local_first(ranks):  # a video folder is indexed once per node, then read from its cache
            self.val_source = build_source(cfg.data, seed=cfg.seed, split="val", frames=cfg.context + cfg.horizon,
                                           context=cfg.context)
        self.n_val = min(cfg.val_clips, len(self.val_source))
        self.val_indices = list(range(ranks.rank, self.n_val, ranks.world))  # each rank scores its share
        local = cfg.batch_size // ranks.world
        self.mine = range(ranks.rank * local, (ranks.rank + 1) * local)  # this rank's positions in the global batch
        self.steered = self.objective.regularized and cfg.latent.min_active > 0 and cfg.latent.l1 > 0
        n_params = sum(p.numel() for p in model.parameters())
        spread = f" in {ranks.world} processes of {local}" if ranks.world > 1 else ""
        self.say(f"vidpred: {n_params / 1e6:.2f}M parameters, {cfg.steps} steps of {cfg.batch_size} clips{spread} "
                 f"({cfg.context} -> {cfg.horizon} frames, {cfg.data.kind} {cfg.data.size}x{cfg.data.size}) on "
                 f"{self.device}; writing {cfg.out_dir}")

    def batches(self, end: int):
        cfg = self.cfg
        with local_first(self.ranks):
            source = build_source(cfg.data, seed=cfg.seed, split="train", frames=cfg.data.frames, context=cfg.context)
        return train_loader(source, batch_size=cfg.batch_size, start_step=self.state.step, steps=end,
                            workers=cfg.data.workers, pin_memory=self.device.type == "cuda", rank=self.ranks.rank,
                            world=self.ranks.world)

    def loop(self, loader, end: int, stop: StopRequest, bar: tqdm) -> int:
        """The training steps up to `end`; returns the step it ended at (earlier when --max_minutes passed)."""
        cfg, state = self.cfg, self.state
        tick = started = time.perf_counter()
        for step, video in enumerate(loader, state.step):
            fetched = time.perf_counter()
            state.wait += fetched - tick  # time the step spent waiting for its batch
            lr = learning_rate(step, lr=cfg.lr, warmup=cfg.warmup, steps=cfg.steps)
            stats, stopping, timed_out = self.step(step, video, lr, stop, started)
            done = state.step = step + 1
            state.busy += time.perf_counter() - fetched
            bar.update(1)
            record, images, videos = {}, {}, {}
            if done % cfg.log_every == 0 or done == cfg.steps:
                record.update(state.close_window(lr))
                bar.set_postfix(**progress_line(record))
            improved = self.validate(done, record)
            if self.main and cfg.media_every and (done % cfg.media_every == 0 or done == cfg.steps):
                record.update(self.preview(done, images, videos))
            if self.main and record:
                self.tracker.log(done, record, images=images, videos=videos)
            unfinished = done < cfg.steps
            if timed_out and unfinished:
                self.out_of_time, end = True, done
            self.checkpoint(done, last=unfinished and (done % cfg.ckpt_every == 0 or stopping or done == end),
                            best=unfinished and improved)
            self.best_pending = improved and not unfinished
            if stopping and unfinished:  # (a signal during the last step lets the run finish normally)
                self.interrupted(done, stop, bar)
            if timed_out and unfinished:
                break
            tick = time.perf_counter()
        return end

    def step(self, step: int, video: Tensor, lr: float, stop: StopRequest,
             started: float) -> tuple[dict[str, float], bool, bool]:
        """One optimizer step: (its statistics, shared over the ranks; whether any rank was signalled;
        whether any ran out of --max_minutes)."""
        cfg, state, ranks = self.cfg, self.state, self.ranks
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_share", 1.0)
        video = _crop(video, cfg.context + cfg.horizon, step, cfg.seed).to(self.device, non_blocking=True)
        draws = self.objective.draws(seed=cfg.seed, step=step, clips=self.mine, frames=cfg.horizon)
        self.objective.at_step(step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss, stats, kept = self.step_loss(video, context=cfg.context, energy=build_energy(cfg, step, l1=state.l1),
                                               draws=draws, rollout=cfg.rollout and step >= cfg.rollout_start)
        # One small collective a step: the global batch's statistics, whether any rank was signalled
        # and whether any ran out of time, so that all ranks stop (or fail) at the same step.
        timed_out = bool(cfg.max_minutes) and time.perf_counter() - started > 60 * cfg.max_minutes
        shared = sum_over_ranks(torch.tensor([*stats.values(), float(stop.signum > 0), float(timed_out)],
                                             dtype=torch.float64), ranks).tolist()
        stats = {k: v / ranks.world for k, v in zip(stats, shared)}
        if self.objective.regularized:
            stats["l1"] = state.l1
        if not math.isfinite(stats["loss"]):
            raise _not_finite("the loss", stats["loss"], step + 1, state.saved, self.last_path, video)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The prior head fits z* on detached inputs; clip it apart so its NLL cannot shrink the
        # predictor's updates through a shared gradient norm.
        stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.predictor_params, cfg.grad_clip).item()
        if not math.isfinite(stats["grad_norm"]):  # same on every rank: gradients are already averaged
            raise _not_finite("the gradient norm", stats["grad_norm"], step + 1, state.saved, self.last_path, video)
        if self.model.prior is not None:  # (the deterministic baseline has no prior)
            torch.nn.utils.clip_grad_norm_(self.model.prior.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.model)
        self.bank.add(gather_rows(kept.detach(), ranks))
        if self.steered:  # the same on every rank: stats are shared
            state.l1 = steer_sparsity(state.l1, stats["latent_active"], floor=cfg.latent.min_active, cap=cfg.latent.l1)
        state.add(stats, cfg.batch_size)
        return stats, shared[-2] > 0, shared[-1] > 0

    def validate(self, done: int, record: dict) -> bool:
        """At validation steps, the validation energies into `record`; whether this is the best so far."""
        cfg, state = self.cfg, self.state
        if not cfg.val_every or not (done % cfg.val_every == 0 or done == cfg.steps):
            return False
        with self.averaged():
            sums = sum_over_ranks(validation_energy(
                self.objective, self.val_source, self.val_indices, context=cfg.context, energy=build_energy(cfg),
                batch_size=cfg.batch_size, rollout=cfg.rollout, device=self.device), self.ranks)
        energy = (sums[0] / sums[3]).item()
        improved = energy < state.best_energy
        if improved:
            state.best_energy, state.best_step = energy, done
        record.update({"val/energy": energy, "val/energy_z0": (sums[1] / sums[3]).item(),
                       "val/energy_z_zero": (sums[2] / sums[3]).item(), "val/best_energy": state.best_energy})
        return improved

    def preview(self, done: int, images: dict, videos: dict) -> dict:
        cfg = self.cfg
        shown = torch.stack([self.val_source[i] for i in range(min(self.n_val, PREVIEW_CLIPS))]).to(self.device)
        with self.averaged():
            metrics, images["samples"], videos["futures"] = preview(
                self.objective, shown, context=cfg.context, prior=cfg.prior.kind, bank=fitted_copy(self.bank),
                seed=cfg.seed, folder=cfg.out_dir / "media", step=done)
        return metrics

    def checkpoint(self, done: int, *, last: bool, best: bool) -> None:
        """Save last.pt (when `last`) and best.pt (when `best`) at step `done`; the main rank saves."""
        if not self.main or not (last or best):
            return
        state = training_state(self.model, self.optimizer, self.bank, to_dict(self.cfg), done, self.state.progress(),
                               average=self.average)
        if last:
            self.state.saved = _save(self.last_path, state, self.model, done, self.state.saved)
        if best:
            _save(self.best_path, state, self.model, done, self.state.saved)

    def interrupted(self, done: int, stop: StopRequest, bar: tqdm) -> None:
        signum = stop.signum or signal.SIGTERM  # a rank that was not signalled itself stops with its peers
        if self.main:
            self.tracker.log_checkpoints([self.last_path, self.best_path], step=done)
            self.tracker.close(exit_code=128 + signum)
        bar.close()
        barrier(self.ranks)
        raise Interrupted(signum, done, self.last_path)

    def stopped_early(self, end: int) -> None:
        if not self.main:
            return
        cfg = self.cfg
        self.tracker.log_checkpoints([self.last_path, self.best_path], step=end)
        self.tracker.close()
        asked = f"--max_minutes={cfg.max_minutes}" if self.out_of_time else f"--stop_at={cfg.stop_at}"
        print(f"stopped after step {end} as asked ({asked}); saved {self.last_path}; go on with --resume")
        self.tell_start_share(end)

    def finish(self) -> None:
        """The last step's checkpoint, with the latent bank refilled by the final model."""
        cfg, state = self.cfg, self.state
        with self.averaged():  # the bank's z* are those of the weights that evaluation will use
            bank = refit_prior(self.objective, cfg, self.device, l1=state.l1)
        saved = training_state(self.model, self.optimizer, bank, to_dict(cfg), cfg.steps, state.progress(),
                               average=self.average)
        _save(self.last_path, saved, self.model, cfg.steps, state.saved)
        if self.best_pending:
            _save(self.best_path, saved, self.model, cfg.steps, state.saved)
        self.tracker.log_checkpoints([self.last_path, self.best_path], step=cfg.steps)
        self.tracker.summary({"steps": cfg.steps, "best_val_energy": state.best_energy, "best_step": state.best_step})
        self.tracker.close()
        print(f"saved {self.last_path}" + (f" and {self.best_path} (validation energy {state.best_energy:.5f} "
                                           f"at step {state.best_step})" if self.best_path.exists() else ""))
        self.tell_start_share(cfg.steps)

    def tell_start_share(self, steps: int) -> None:
        """Say so when the weight average still leans on the weights it started from (decay ** steps of it)."""
        share = self.cfg.ema ** steps if self.average is not None else 0.0
        if share >= START_SHARE_TOLD:
            print(f"the weight average (--ema={self.cfg.ema}) that evaluation uses still holds {share:.0%} or more of the "
                  f"weights it started from after {steps} steps (python evaluate.py --weights=raw scores the raw weights)")


def progress_line(record: dict) -> dict[str, str]:
    """The progress bar's figures of a log line: the energy before > after inference, or a baseline's cost."""
    pace = {"clips_s": f"{record['clips_per_s']:.0f}", "data_wait": f"{record['data_wait']:.0%}"}
    if "energy_before" in record:
        return {"E": f"{record['energy_before']:.4f}>{record['energy_after']:.4f}",
                "z_active": f"{record['latent_active']:.2f}", **pace}
    if "kl" in record:
        return {"C": f"{record['energy']:.4f}", "KL": f"{record['kl']:.3f}", **pace}
    shown = {"C": f"{record['energy']:.4f}"}  # the deterministic baseline; the energy model with latent.fused
    if "latent_norm" in record:
        shown["|z|"] = f"{record['latent_norm']:.2f}"
    return {**shown, **pace}


def _not_finite(what: str, value: float, step: int, saved: int | None, last_path: Path,
                video: Tensor | None = None) -> FloatingPointError:
    """The stop for a non-finite `what`, saying what it saw: the step's batch `video` (when given)
    holding non-finite pixels blames the data; finite pixels blame the optimization."""
    last = f"the last good checkpoint is {last_path} (step {saved})" if saved is not None else \
        "no checkpoint of this run was saved yet"
    bad = 0 if video is None else int((~torch.isfinite(video)).sum())
    if bad:
        seen = (f"the step's batch holds {bad} non-finite pixel values (NaN or inf) of {video.numel()}, so the data is "
                "at fault, not the learning rate")
        advice = "Find and fix those clips in the data, then go on with --resume"
    else:
        seen = {"the loss": "its batch's pixels are all finite, so the model's output or loss diverged",
                "the gradient norm": "the loss and the batch's pixels were finite; the backward pass overflowed"}.get(
            what, "")
        advice = "Lower --lr or --grad_clip, then go on with --resume"
    return FloatingPointError(f"{what} is {value} in step {step}; {seen + '; ' if seen else ''}stopped without saving, "
                              f"so no checkpoint holds broken weights ({last}). {advice}")


def _save(path: Path, state: dict, model: nn.Module, step: int, saved: int | None) -> int:
    """Save a checkpoint, refusing weights that are not finite; returns its step."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise _not_finite("a weight", "not finite", step, saved, path.with_name("last.pt"))
    try:
        if not path.parent.parent.is_dir():  # the run folder vanished: do not silently make a new one
            raise WriteError(path, FileNotFoundError(errno.ENOENT, "no such folder", str(path.parent.parent)))
        save_checkpoint(path, state)
    except WriteError as e:  # disk full, read-only, the folder gone: name what is left to go on from
        raise WriteError(path, e, then=last_good(path.with_name("last.pt"))) from None
    return step
