"""One dataclass config tree, overridable from the command line with `--key=value`.

Precedence is simple and total: dataclass defaults < `--config=FILE` (JSON or TOML) < command-line
overrides; the one refinement is that a data kind or a decoder may have its own default for a key neither
sets (mmnist: the 64x64 canvas and speed 4 of Stochastic Moving MNIST; a decoder other than glide: model.sharp
false and model.glide_mask features). An unknown key or a value of the
wrong type refuses to start with a message naming the key and what was expected (nanoGPT's
configurator, made strict).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli before it joined the standard library
    import tomli as tomllib

from . import choices
from .choices import (Auto, Bounce, Channels, Composite, Cost, DataKind, DecoderOutput, EncoderInput, Feedback, GlideMask, Layout, ModelKind, Precision,
                      PriorKind, Proposal, SkipSource, SplitBy, WandbMode)
from .errors import ConfigError

__all__ = ["Config", "ConfigError", "DataConfig", "LatentConfig", "ModelConfig", "PriorConfig", "parse_args",
           "parse_overrides", "set_key", "get_key", "from_dict", "saved_config", "to_dict", "describe", "validate", "check_numbers",
           "check_device"]


@dataclass
class DataConfig:
    kind: DataKind = "sprites"  # sprites | fork | mmnist | video | frames | array
    path: str | None = None  # MNIST folder, video folder or file, folder of frame folders, array file
    size: int = 32  # frames are size x size pixels (the canvas; mmnist: 64 unless set)
    channels: Channels = 1  # 1 (grayscale) or 3 (RGB)
    frames: int = 10  # length of a training clip; context + horizon must fit in it
    objects: int = 2  # moving objects per clip (sprites, mmnist)
    sprite_min: int = 6  # sprite side in pixels, drawn uniformly in [sprite_min, sprite_max]
    sprite_max: int = 10  # (the largest sprite side)
    max_speed: int = 3  # integer velocity per axis in [-max_speed, max_speed] (mmnist: 4 unless set)
    bounce: Bounce = "stochastic"  # stochastic | deterministic | discrete (one of `branches` directions per bounce)
    branches: int = 2  # fork toy: directions after the fork; discrete bounces: new directions per bounce
    workers: int = 0  # DataLoader worker processes (0: load in the training process)
    composite: Composite = "max"  # how overlapping objects combine: max | sum (clipped to 1)
    download: bool = False  # mmnist: let torchvision download MNIST into data.path when it is missing
    layout: Layout = "auto"  # array files: auto | tnhw (mnist_test_seq.npy) | nthw | nthwc | ntchw
    frame_step: int = 1  # video / frames / array: take every frame_step-th frame
    clip_stride: int = 0  # video / frames / array: frames between the starts of clips (0: clips back to back)
    val_share: float = 0.1  # video / frames: share of the videos held out for val/test (one video: of its frames)
    split_by: SplitBy = "auto"  # video / frames: auto (train/, test/ folders, else val_share) | subject | time
    test_subjects: str = "17-25"  # split_by=subject: the subjects held out for val/test (KTH: personNN), e.g. 21-25


@dataclass
class ModelConfig:
    widths: tuple[int, ...] = (16, 32, 64)  # channels at full, 1/2, 1/4 ... resolution
    window: int = 3  # frames the predictor looks back at (<= context)
    skip_frames: int = 2  # frames whose features reach the decoder through skips (<= window)
    skips: SkipSource = "recent"  # skips from the last S input frames (recent: predicted ones in a rollout) | the last S context frames, fixed (context, SVG's) | both
    content: int = 0  # size of a content code (DrNet, SRVP): the context frames' features pooled over space and time, read by the decoder at every predicted frame; 0: none
    recall: bool = False  # the decoder's bottleneck attends to the context frames' bottlenecks (those the state reads) and adds what each position finds there: a content code per position
    blocks: int = 1  # residual blocks in the predictor
    residual: bool = False  # decoder output is a correction of the last frame's logits
    encoder: bool = True  # amortized latent encoder A warm-starts inference
    encoder_reads: EncoderInput = "residual"  # what A reads: residual (y - Dec(h, 0), EEN) | target (the state and Enc(y), as a VAE posterior)
    kind: ModelKind = "energy"  # energy | deterministic (z = 0, no latent) | vae (SVG-LP-style baseline); see objectives.py
    recurrent: bool = False  # a ConvGRU memory in the predictor, carried through the whole clip
    decoder: DecoderOutput = "glide"  # glide (the last context frame carried on at each pixel's constant motion, a mask adds generated pixels) | pixels (generated) | kernels (per-pixel kernels move the last frame, a mask adds generated pixels) | splat (per-pixel kernels send the last frame's pixels)
    kernel: int = 7  # decoder=kernels|splat: side of the per-pixel kernels (moves up to kernel // 2 pixels a frame); glide: finds motion of up to kernel // 2 pixels a frame
    sharp: bool = True  # decoder=splat or kernels: each pixel moves by its likeliest displacement (kernels: copies its likeliest source), never a blend; glide: each pixel is the glided or the generated one (mask > 1/2), never a blend (unless set: true for glide, false for the others)
    generate: bool = True  # decoder=splat, kernels or glide: a generated branch, handed the pixels a mask takes from the moved frame; false: every pixel is moved from the last frame
    generate_after: int = 0  # decoder=splat, kernels or glide: training steps with every output pixel moved (the branch out of the output, as with generate=false), then the branch is blended in over as many steps again; 0: blended from the start
    glide_mask: GlideMask = "trust"  # decoder=glide: what sets its mask: a head on the decoder's features, z included, trained through the blend (features) | a head that reads the glided frame, its coverage and age only and is trained to tell where constant motion holds (trust: the same mask for every sampled future) (unless set: trust for glide with generate=true, else features)
    bounce_box: int = 0  # glide_mask=trust: the side of the square an object is drawn in, which sampled futures bounce off the walls (configs/smmnist.toml: 28, an MNIST digit's image; its visible box stays inside by the slack); 0: the visible box itself meets the wall (the sprites)
    feedback: Feedback = "frames"  # what a rollout feeds back for a predicted frame: the frame, encoded again (frames) | the decoder's features of it, z included (latent: SRVP-like dynamics in feature space; trains free-running, rollout=true)


@dataclass
class LatentConfig:
    dim: int = 8  # dimension of z per predicted frame
    l1: float = 0.0  # sparsity weight: proximal soft-threshold steps (ISTA); off by default: it cost 1.1 dB against the noisy channel (bench/README.md)
    min_active: float = 0.02  # while fewer latent entries than this share are nonzero, l1 is lowered (0: never)
    warmup: int = 300  # steps over which l1 and l2 ramp up from 0 (z must be used before it is sparse)
    l2: float = 0.0  # norm penalty weight
    ball: float = 2.0  # radius of the ball z is projected onto (0: no projection); with latent.noise it bounds what z carries
    dropout: float = 0.25  # probability of training a frame with z = 0 (PPUU's latent dropout)
    steps: int = 1  # inference steps of proximal gradient descent per training sample
    draws: int = 0  # inference starts from the best of this many proposed latents (0: from A's guess)
    proposal: Proposal = "prior"  # latent.draws: the learned prior's draws, or a standard normal's (IMLE)
    step_size: float = 0.03  # length of the first step, in latent units (adapted per sample)
    fused: bool = True  # energy: take the one inference step in the training pass's own backward (no decoder passes of its own); applies where latent.steps=1, latent.draws=0, latent.l1=0 and model.encoder=true, else inference runs in separate passes
    encoder_weight: float = 1.0  # beta: weight of ||A(x, y) - z*||^2 in the loss
    noise: float = 0.75  # energy: std of the Gaussian noise added to z* where the decoder is trained (a noisy channel; with l2 or ball it bounds what z carries)
    prior_weight: float = 0.0  # energy: weight of -log p(z | h) of the channel's latent with gradients into the state, the prior and A (the VAE's KL with a fixed sigma; 0: the prior is fitted alone on detached latents)
    kl_weight: float = 1e-3  # model.kind=vae: beta of KL(q || p), in nats of KL per nat of per-pixel-mean cost
    kl_warmup: int = 0  # steps over which the vae's beta (the energy's latent.prior_weight) rises linearly from 0 (0: in full from the start)


@dataclass
class PriorConfig:
    kind: PriorKind = "learned"  # bank | fitted | learned: what evaluation samples z from
    bank: int = 8192  # latents kept in the empirical bank
    fit_clips: int = 512  # training clips whose inferred z refill the bank at the end of training
    components: int = 4  # mixture components of the learned conditional prior p(z | h)
    chained: bool = False  # the learned prior also reads the previous frame's z: p(z_k | h_k, z_{k-1})


@dataclass
class Config:
    name: str = "default"  # the run's name (its folder under runs/, its wandb name)
    out: str = ""  # output folder; empty means runs/<name>
    seed: int = 0  # seeds the weights, the data (clip i is a function of seed and i) and every draw of a step
    steps: int = 2000  # optimizer steps (about 10 minutes of the default model on 2 CPU cores)
    batch_size: int = 16  # clips per optimizer step (the global batch, split over torchrun processes)
    lr: float = 2e-3  # AdamW learning rate (peak, after warmup)
    warmup: int = 100  # linear learning-rate warmup steps, then cosine decay to lr / 10
    head_lr: float = 1.0  # the kernels/splat decoder's moving heads (taps, mask) learn at head_lr x lr: below 1 they leave the copy-of-the-last-frame start slower
    grad_clip: float = 1.0  # gradient-norm clip of the predictor's weights (the prior head is clipped apart)
    ema: float = 0.0  # keep an exponential moving average of the weights with this decay per step, from the initial weights; evaluation, sampling, export, validation and previews use it (0: off; else in (0, 1), e.g. 0.99)
    cost: Cost = "bce"  # per-pixel cost C: bce (on logits) | mse | l1
    still_weight: float = 0.0  # teacher-forced frames count by 1 / (their copy-last-frame MSE + 1e-3), mean 1 over a step's frames, capped at still_weight: still scenes weigh in training as in the clip-mean PSNR (0: off; else >= 1)
    still_steps: int = 0  # still_weight holds for this many steps, then fades linearly to the plain cost over as many again (0: the whole run)
    context: int = 5  # frames given
    horizon: int = 5  # frames predicted per training clip
    rollout: bool = False  # train free-running: predictions are fed back, z inferred frame by frame along the rollout
    rollout_start: int = 0  # rollout=true: teacher-forced steps before free-running starts (a cheap, fast first phase)
    rollout_grad: bool = True  # rollout=true: gradients flow back through fed-back frames (false: each frame trains its own step, on the model's own inputs)
    pushforward: int = 0  # teacher-forced inputs are the model's own predictions, this many rounds deep (0: true frames)
    log_every: int = 25  # steps per log.jsonl line (means over the steps since the last)
    ckpt_every: int = 500  # steps between saves of checkpoints/last.pt (also saved at the end and when stopped)
    val_every: int = 250  # validation energy on held-out clips (split "val"); best.pt keeps the lowest (0: off)
    val_clips: int = 64  # held-out clips scored at each validation
    media_every: int = 500  # sampled futures of val clips: grid, video and best-of-K metrics (0: off)
    stop_at: int = 0  # stop after this step as if interrupted, to go on later with --resume (0: run to steps)
    max_minutes: float = 0.0  # stop after the step that passes this much training time, as stop_at does (0: no limit)
    wandb: WandbMode = "offline"  # offline | online | disabled
    wandb_project: str = "vidpred"  # wandb project of the run
    resume: bool | Auto = False  # go on from out/checkpoints/last.pt (auto: if it exists, else start)
    overwrite: bool = False  # start over where a run's checkpoint exists, removing that run's files (else refused)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads (0: torch's default)
    precision: Precision = "fp32"  # fp32 | bf16 (autocast of the forward pass and latent inference)
    compile: bool = False  # torch.compile the encoder, predictor and decoder
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/{self.name}")


# Stochastic Moving MNIST is defined on a 64x64 canvas at speed 4: those are mmnist's values of
# these keys unless the command line or the config file sets them.
KIND_DEFAULTS = {"mmnist": {"data.size": 64, "data.max_speed": 4}}


def decoder_defaults(model: ModelConfig) -> dict[str, object]:
    """The decoder's own values of the keys only some decoders read, for a decoder the command line or the config
    file names without setting them: the glide decoder (the default) picks each pixel sharp, under a mask that
    trusts constant motion where it holds; the others blend, and have no glided frame to trust."""
    glide = model.decoder == "glide"
    return {"model.sharp": glide, "model.glide_mask": "trust" if glide and model.generate else "features"}


DEVICE_NAMES = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def check_device(name: str, key: str = "device") -> str:
    """`name` if it names a device vidpred runs on (auto, cpu, cuda, cuda:N, mps); else a ConfigError naming `key`."""
    if not isinstance(name, str) or not DEVICE_NAMES.fullmatch(name):
        raise ConfigError(f"{key}={name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return name


def check_numbers(cfg, *, positive=(), nonneg=(), shares=()) -> None:
    """Refuse, naming the first offending key, a value of `positive` that is <= 0, of `nonneg` that is < 0 or of
    `shares` that is outside [0, 1]."""
    for key in positive:
        if get_key(cfg, key) <= 0:
            raise ConfigError(f"{key}={get_key(cfg, key)}: expected a positive number")
    for key in nonneg:
        if get_key(cfg, key) < 0:
            raise ConfigError(f"{key}={get_key(cfg, key)}: expected a number >= 0")
    for key in shares:
        if not 0 <= get_key(cfg, key) <= 1:
            raise ConfigError(f"{key}={get_key(cfg, key)}: expected a share in [0, 1]")


def float_keys(cfg, prefix: str = "") -> list[str]:
    """The keys of every float field of a config tree, e.g. 'lr', 'latent.l1'."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += float_keys(value, f"{prefix}{f.name}.")
        elif _field_type(cfg, f.name) is float:
            keys.append(prefix + f.name)
    return keys


def choice_keys(cfg, prefix: str = "") -> dict[str, object]:
    """The keys of every field of a config tree whose type is a closed set of names (choices.py), with that type."""
    keys = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys.update(choice_keys(value, f"{prefix}{f.name}."))
        elif typing.get_origin(_field_type(cfg, f.name)) is typing.Literal:
            keys[prefix + f.name] = _field_type(cfg, f.name)
    return keys


def validate(cfg: Config) -> Config:
    """Refuse configurations that cannot run, naming the key and what was expected."""
    for key in float_keys(cfg):  # (set_key refuses them too; a Config built in Python comes here only)
        if not math.isfinite(get_key(cfg, key)):
            raise ConfigError(f"{key}={get_key(cfg, key)}: expected a finite number")
    widths = cfg.model.widths
    if not widths or any(w <= 0 for w in widths):
        shown = ",".join(map(str, widths)) or "(empty)"
        raise ConfigError(f"model.widths={shown}: expected one or more positive channel counts, one per resolution, "
                          "e.g. --model.widths=16,32,64")
    for key, tp in choice_keys(cfg).items():  # (set_key refuses them too)
        choices.check_choice(key, get_key(cfg, key), tp, ConfigError)
    check_numbers(cfg, positive=["steps", "batch_size", "context", "horizon", "data.size", "data.frames",
                                 "data.objects", "data.max_speed", "data.branches", "data.frame_step", "model.window", "data.sprite_min",
                                 "latent.dim", "log_every", "ckpt_every", "prior.bank", "val_clips", "prior.components", "head_lr"],
                  nonneg=["latent.l1", "latent.l2", "latent.ball", "latent.steps", "latent.draws", "latent.step_size",
                          "latent.encoder_weight", "latent.noise", "latent.prior_weight", "latent.warmup", "lr", "warmup", "grad_clip", "data.workers",
                          "prior.fit_clips", "val_every", "rollout_start", "pushforward", "media_every", "stop_at", "data.clip_stride",
                          "latent.kl_weight", "latent.kl_warmup", "max_minutes", "seed", "model.blocks", "threads", "still_steps"])
    check_device(cfg.device)
    if cfg.resume and cfg.overwrite:
        raise ConfigError(f"resume={str(cfg.resume).lower()} and overwrite=true contradict each other: --resume continues the run in "
                          f"{cfg.out_dir}, --overwrite replaces it; give one of them")
    if cfg.still_weight and not cfg.still_weight >= 1:
        raise ConfigError(f"still_weight={cfg.still_weight}: expected 0 (off) or a cap of 1 or more on a frame's weight "
                          "(the weights have mean 1)")
    if not 0.0 <= cfg.ema < 1.0:
        raise ConfigError(f"ema={cfg.ema}: expected 0 (off) or a decay per step in (0, 1), e.g. 0.99 (an average over "
                          "about 1 / (1 - ema) steps)")
    if cfg.still_steps and not cfg.still_weight:
        raise ConfigError(f"still_steps={cfg.still_steps} schedules still_weight, which is 0 (off); set --still_weight too")
    if cfg.model.feedback == "latent" and (not cfg.rollout or cfg.rollout_start or cfg.pushforward):
        raise ConfigError(f"model.feedback=latent with rollout={str(cfg.rollout).lower()}, rollout_start={cfg.rollout_start}, "
                          f"pushforward={cfg.pushforward}: each predicted frame's state reads the decoder's features of the "
                          "frame before, so there are no teacher-forced steps; set --rollout=true (rollout_start=0, "
                          "pushforward=0)")
    if cfg.still_weight and cfg.rollout and cfg.rollout_start == 0:
        raise ConfigError(f"still_weight={cfg.still_weight} weighs teacher-forced steps, and rollout=true with "
                          "rollout_start=0 has none; set --rollout_start to weigh the steps before free-running")
    if not 0.0 <= cfg.latent.min_active < 1.0:
        raise ConfigError(f"latent.min_active={cfg.latent.min_active}: expected a share in [0, 1) (0: l1 stays fixed)")
    if not 0.0 <= cfg.latent.dropout < 1.0:
        raise ConfigError(f"latent.dropout={cfg.latent.dropout}: expected a probability in [0, 1)")
    if cfg.context + cfg.horizon > cfg.data.frames:
        raise ConfigError(
            f"context + horizon = {cfg.context} + {cfg.horizon} = {cfg.context + cfg.horizon} is longer "
            f"than the clips (data.frames={cfg.data.frames}); raise data.frames or shorten them")
    if cfg.model.content < 0:
        raise ConfigError(f"model.content={cfg.model.content}: expected 0 (no content code) or a positive size")
    if not 1 <= cfg.model.skip_frames <= cfg.model.window:
        raise ConfigError(f"model.skip_frames={cfg.model.skip_frames}: expected 1 .. model.window={cfg.model.window}")
    if cfg.model.window > cfg.context:
        raise ConfigError(f"model.window={cfg.model.window} must be <= context={cfg.context}: the "
                          "predictor looks back at most over the given frames")
    if cfg.model.kernel < 1 or cfg.model.kernel % 2 == 0:  # (checked whatever the decoder: a later --model.decoder=kernels reads it)
        raise ConfigError(f"model.kernel={cfg.model.kernel}: expected an odd size >= 1 (the kernel is centred on the pixel)")
    if cfg.model.residual and cfg.model.decoder != "pixels":
        raise ConfigError(f"model.residual=true needs model.decoder=pixels (got {cfg.model.decoder}): the {cfg.model.decoder} decoder "
                          "already moves the last frame")
    if cfg.model.sharp and cfg.model.decoder == "pixels":
        raise ConfigError("model.sharp=true needs model.decoder=kernels, splat or glide: it picks one source per output pixel, "
                          "and the pixels decoder moves none")
    if not cfg.model.generate and cfg.model.decoder == "pixels":
        raise ConfigError("model.generate=false needs model.decoder=kernels, splat or glide: the pixels decoder only generates")
    if cfg.model.generate_after < 0:
        raise ConfigError(f"model.generate_after={cfg.model.generate_after}: expected 0 (off) or a number of steps")
    if cfg.model.generate_after and (cfg.model.decoder == "pixels" or not cfg.model.generate):
        raise ConfigError(f"model.generate_after={cfg.model.generate_after} holds back a moving decoder's generated branch: "
                          "it needs model.decoder=kernels, splat or glide with model.generate=true")
    if cfg.model.glide_mask == "trust" and (cfg.model.decoder != "glide" or not cfg.model.generate):
        raise ConfigError(f"model.glide_mask=trust sets the glide decoder's mask (decoder={cfg.model.decoder}, generate="
                          f"{str(cfg.model.generate).lower()}): it needs model.decoder=glide with model.generate=true")
    if cfg.model.bounce_box and (cfg.model.glide_mask != "trust" or not 0 < cfg.model.bounce_box <= cfg.data.size):
        raise ConfigError(f"model.bounce_box={cfg.model.bounce_box}: the side of the square objects bounce in, in sampled "
                          f"futures; expected 0 (their visible box) or 1 .. data.size={cfg.data.size}, with "
                          f"model.glide_mask=trust (got {cfg.model.glide_mask})")
    levels = len(cfg.model.widths) - 1
    if cfg.data.size % (2 ** levels):
        raise ConfigError(f"data.size={cfg.data.size} must be divisible by 2^{levels} "
                          f"(model.widths has {levels + 1} entries, one per resolution)")
    if cfg.data.sprite_min > cfg.data.sprite_max or cfg.data.sprite_max > cfg.data.size:
        raise ConfigError(f"data.sprite_min={cfg.data.sprite_min}, data.sprite_max={cfg.data.sprite_max}: "
                          f"expected sprite_min <= sprite_max <= data.size={cfg.data.size}")
    validate_data(cfg.data)
    return cfg


# the data kinds that read files, and what their data.path must name
PATH_NEEDS = {"mmnist": "a folder with the MNIST IDX files (train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz])",
              "video": "a folder of video files, or one video file", "array": "an .npy or .npz file of clips",
              "frames": "a folder of frame folders (one folder of png/jpg images per video)"}


def validate_data(data: DataConfig) -> None:
    """The checks of the data section that depend on the kind of data."""
    if not 0.0 <= data.val_share < 1.0:
        raise ConfigError(f"data.val_share={data.val_share}: expected a share in [0, 1)")
    if data.bounce == "discrete" and not 2 <= data.branches <= 2 * data.max_speed + 1:
        raise ConfigError(f"data.branches={data.branches}: discrete bounces pick among 2 .. 2 * data.max_speed + 1 "
                          f"= {2 * data.max_speed + 1} distinct integer speeds")
    if data.split_by != "auto" and data.kind not in ("video", "frames"):
        raise ConfigError(f"data.split_by={data.split_by}: only data.kind=video and frames split their videos "
                          f"(data.kind={data.kind} has its own splits)")
    if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", data.test_subjects.replace(" ", "")):
        raise ConfigError(f"data.test_subjects={data.test_subjects!r}: expected subject numbers and ranges, "
                          "e.g. 17-25 or 9,11")
    if data.kind not in PATH_NEEDS:
        return
    if not data.path:
        raise ConfigError(f"data.kind={data.kind} needs --data.path: {PATH_NEEDS[data.kind]}")
    path = Path(data.path)
    exists = path.is_file() if data.kind == "array" else path.exists() if data.kind == "video" else path.is_dir()
    if not exists and not (data.kind == "mmnist" and data.download):
        raise ConfigError(f"data.path={data.path}: no such {'file' if data.kind == 'array' else 'folder'}; "
                          f"data.kind={data.kind} reads {PATH_NEEDS[data.kind]}")


# --- reading and writing keys -------------------------------------------------------------------

def _fields(obj) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _resolve(cfg, key: str):
    """The dataclass that holds `key` and the field name in it; ConfigError if there is none."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        fields = _fields(node)
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key {key!r}: {where} has no {part!r} (known: {known})")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(node, part)):
                raise ConfigError(f"config key {key!r} is a section; set one of its keys, e.g. --{key}.KEY=VALUE")
            return node, part
        node = getattr(node, part)
        if not dataclasses.is_dataclass(node):
            raise ConfigError(f"unknown config key {key!r}: {'.'.join(parts[:i + 1])} is not a section")
    raise ConfigError(f"empty config key {key!r}")


def get_key(cfg, key: str):
    node, name = _resolve(cfg, key)
    return getattr(node, name)


def _field_type(node, name: str):
    return typing.get_type_hints(type(node))[name]


def _convert(value, tp, key: str):
    """Convert `value` (a command-line string or a JSON/TOML value) to the field type `tp`."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:  # one of a closed set of names (or numbers): converted as its values are typed
        allowed = typing.get_args(tp)
        converted = _convert(value, type(allowed[0]), key)
        return choices.check_choice(key, converted, tp, ConfigError)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for option in inner:  # the first type that takes the value (bool | Literal["auto"]: true, false or auto)
            try:
                return _convert(value, option, key)
            except ConfigError as e:
                errors.append(str(e).split(": expected ", 1)[-1])
        raise ConfigError(f"{key}={value!r}: expected " + " or ".join(errors))
    if origin is tuple:
        (elem, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str):
            items = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{key}={value!r}: expected a comma-separated list of {elem.__name__}")
        return tuple(_convert(v, elem, key) for v in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}={value!r}: expected a boolean (true/false)")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        try:
            number = value if isinstance(value, int) else int(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{key}={value!r}: expected an integer") from None
        if abs(number) >= 2**31:  # no count, size or seed of a run comes near; numpy and torch would overflow
            raise ConfigError(f"{key}={value!r}: expected an integer below 2^31")
        return number
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r}: expected a number") from None
        if not math.isfinite(number):  # float() takes "nan" and "inf"; no key means anything by them
            raise ConfigError(f"{key}={value!r}: expected a finite number")
        return number
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {tp}")


def set_key(cfg, key: str, value) -> None:
    node, name = _resolve(cfg, key)
    setattr(node, name, _convert(value, _field_type(node, name), key))


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def from_dict(tree: dict, base: Config | None = None, *, source: str = "config") -> Config:
    """A Config from nested plain data (config.json, a checkpoint); unknown keys are errors."""
    cfg = base or Config()
    for key, value in _flatten(tree).items():
        try:
            set_key(cfg, key, value)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    return cfg


# Keys added after checkpoints were first written whose default is not what the older checkpoints were
# trained with: a saved config that lacks one was trained under the value here.
SAVED_BEFORE = {"model.skips": "recent", "model.content": 0, "model.recall": False,  # the decoder of checkpoints saved before stop 24
                "model.bounce_box": 0, "model.decoder": "pixels", "model.sharp": False, "model.glide_mask": "features"}


def saved_config(tree: dict, *, source: str = "saved config") -> Config:
    """The Config a checkpoint was saved under: `from_dict`, with the keys it predates (SAVED_BEFORE) set
    to what it was trained with rather than to today's defaults."""
    cfg = from_dict(tree, source=source)
    flat = _flatten(tree)
    for key, value in SAVED_BEFORE.items():
        if key not in flat:
            set_key(cfg, key, value)
    return cfg


def to_dict(cfg) -> dict:
    """Plain nested data (tuples become lists), safe for JSON and for `torch.load(weights_only=True)`."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def load_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config={path}: no such file")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text())
        return json.loads(path.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"--config={path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {e}") from None


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """`--key=value`, `--key value` and bare `--flag` (meaning true) into an ordered dict."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}: options are --key=value")
        body = arg[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            key, value = body, argv[i + 1]
            i += 1
        else:
            key, value = body, "true"
        out[key.replace("-", "_")] = value
        i += 1
    return out


def parse_args(argv: list[str], base: Config | None = None) -> Config:
    """The training config: defaults, then `--config=FILE`, then the other overrides; validated.
    Keys of KIND_DEFAULTS that neither sets take the data kind's own default, and those of `decoder_defaults`
    the decoder's own."""
    overrides = parse_overrides(argv)
    cfg = base or Config()
    given = set(overrides)
    if "config" in overrides:
        path = overrides.pop("config")
        tree = load_file(path)
        given |= set(_flatten(tree))
        cfg = from_dict(tree, cfg, source=str(path))
    for key, value in overrides.items():
        set_key(cfg, key, value)
    implied = {**KIND_DEFAULTS.get(cfg.data.kind, {}), **decoder_defaults(cfg.model)}
    for key, value in implied.items():
        if key not in given:
            set_key(cfg, key, value)
    return validate(cfg)


def config_changes(saved: dict, cfg: Config) -> list[str]:
    """`key old -> new` for each setting a resumed run changes from the checkpoint's config (plain data)."""
    before, now = {**SAVED_BEFORE, **_flatten(saved)}, _flatten(to_dict(cfg))
    return [f"{k} {before.get(k)} -> {v}" for k, v in now.items()
            if before.get(k) != v and k not in ("resume", "stop_at")]


def field_meanings(cls) -> dict[str, str]:
    """The trailing `# comment` of each field in a dataclass's source: what `--help` says the key means
    (the comment beside a default is where this code documents it; installed packages keep their source)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (a frozen application): the help lists keys and defaults only
        return {}
    meanings = {}
    for line in source.splitlines():
        match = re.match(r"\s+(\w+)\s*:[^=#]+=[^#]*#\s*(.+)$", line)
        if match:
            meanings[match.group(1)] = match.group(2).strip()
    return meanings


def describe(cfg, prefix: str = "") -> list[str]:
    """Every key of a config tree, one line each, for `--help`: `--key=default`, its type, its meaning,
    and for a closed set of names the values it allows."""
    lines = []
    meanings = field_meanings(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            lines += describe(value, f"{prefix}{f.name}.")
            continue
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else ("" if value is None else value)
        tp = _field_type(cfg, f.name)
        meaning = meanings.get(f.name, "")
        if typing.get_origin(tp) is typing.Literal or any(typing.get_origin(a) is typing.Literal
                                                         for a in typing.get_args(tp)):
            allowed = choices.values(tp)
            kind = "choice" if typing.get_origin(tp) is typing.Literal or type(None) in typing.get_args(tp) else \
                " or ".join(_type_name(a) if typing.get_origin(a) is not typing.Literal else " | ".join(map(str, typing.get_args(a)))
                            for a in typing.get_args(tp))
            if not all(re.search(rf"\b{re.escape(str(v))}\b", meaning) for v in allowed):  # the comment lists them
                listed = " | ".join(map(str, allowed))
                meaning = f"{meaning} [{listed}]" if meaning else f"[{listed}]"
        else:
            kind = _type_name(tp)
        key = f"--{prefix}{f.name}={shown}"
        lines.append(f"  {key:<34} ({kind}) {meaning}".rstrip())
    return lines


def _type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return f"list of {typing.get_args(tp)[0].__name__}"
    inner = [a for a in typing.get_args(tp) if a is not type(None)]
    if inner:  # X | None
        return f"{_type_name(inner[0])} or none"
    return getattr(tp, "__name__", str(tp))
