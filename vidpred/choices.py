"""The closed sets of names the code chooses among, one `Literal` type each, written once.

Config fields are annotated with these types (config.py converts and refuses values by them), and
the modules that take a choice as an argument check it with `check_choice`, so the allowed values
and the refusal's wording live here and nowhere else.
"""

from __future__ import annotations

import typing
from typing import Literal

DataKind = Literal["sprites", "fork", "mmnist", "video", "frames", "array"]
SplitBy = Literal["auto", "subject", "time"]  # how a video or frame folder is split into train / val / test
Bounce = Literal["stochastic", "deterministic", "discrete"]  # discrete: one of `branches` directions per bounce
Composite = Literal["max", "sum"]  # how overlapping objects combine
Layout = Literal["auto", "tnhw", "nthw", "nthwc", "ntchw"]  # axes of an array file of clips
Channels = Literal[1, 3]  # grey or RGB
ModelKind = Literal["energy", "deterministic", "vae"]  # see objectives.py
# generated pixels, or per-pixel kernels that gather the last frame's pixels (kernels) or send them (splat), or
# the last context frame carried on at each pixel's own constant motion (glide); the moving ones add generated pixels
DecoderOutput = Literal["pixels", "kernels", "splat", "glide"]
# what sets the glide decoder's mask: a head on the decoder's features (z included) trained through the blend
# (features), or one that reads the glided frame alone and is trained to tell where constant motion holds (trust)
GlideMask = Literal["features", "trust"]
# where the decoder's skips come from: the last S input frames (predicted ones in a rollout), the last S
# context frames (true, fixed for the whole rollout, as SVG's), or both
SkipSource = Literal["recent", "context", "both"]
# what a rollout feeds back as the newest frame's encoding: the predicted frame, encoded again by the frame
# encoder (frames), or the decoder's own features of it, z included (latent: SRVP-like dynamics in feature space)
Feedback = Literal["frames", "latent"]
PriorKind = Literal["bank", "fitted", "learned"]  # what futures draw z from
EncoderInput = Literal["residual", "target"]  # what the energy model's amortized encoder reads
Proposal = Literal["prior", "normal"]  # latent.draws: what training draws its candidate latents from
Cost = Literal["bce", "mse", "l1"]  # the per-pixel cost C of the energy
WandbMode = Literal["offline", "online", "disabled"]
Precision = Literal["fp32", "bf16"]
Auto = Literal["auto"]  # decided at run time (--resume=auto: resume where a checkpoint exists)


def values(tp) -> tuple:
    """The allowed values of a Literal type (of `Literal[...] | None`: those of the Literal)."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    inner = [a for a in typing.get_args(tp) if typing.get_origin(a) is Literal]
    if not inner:
        raise TypeError(f"{tp} is not a Literal type")
    return typing.get_args(inner[0])


def check_choice(name: str, value, tp, error: type[Exception] = ValueError):
    """`value` if it is one of `tp`'s values; else `error` naming `name`, the value and what is allowed."""
    allowed = values(tp)
    if value not in allowed:
        raise error(f"{name}={value!r}: expected one of {', '.join(map(str, allowed))}")
    return value
