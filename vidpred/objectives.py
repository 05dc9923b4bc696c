"""The model kinds, one small object each with the same interface; the only place that tells them apart.

Every kind shares the frame encoder, the predictor and the decoder of model.py. They differ in
where the decoder's z comes from, what the loss adds to the energy, which heads the model carries
and how futures draw z. An `Objective` answers, for its kind:

    heads(...)        the extra modules the model carries (amortized encoder, prior, posterior)
    draws(...)        the random draws of one training step, a function of (seed, step, clip) only
    loss(...)         the training loss of a batch, teacher-forced or free-running, its statistics,
                      and the latents the run keeps (the bank's rows)
    clip_latents(...) per predicted frame, the latent training would find and the energies around it
                      (validation, the bank refilled at the end of training)
    drawer(...)       how a sampled future draws each frame's z (sampling.py rolls it out)
    deterministic(...) the one best guess (the rollout that K futures must beat)

The kinds (`--model.kind`):

- `energy` (vidpred): z⁰ = A(y - Dec(h, 0)) by an amortized encoder that sees only the residual
  (EEN), z* = argmin_z E(x, y, z) by proximal steps with the weights frozen (inference.py), the
  decoder trained at z* straight-through into A, plus β·||z⁰ - sg(z*)||² and the NLL of z* under
  the learned conditional prior p(z | h). With probability `dropout` a frame is trained with z = 0,
  so the deterministic path must predict all that is predictable (PPUU's latent dropout).
  Futures draw z from the prior; the best guess decodes z = 0.
- `vae` (SVG-LP, Denton & Fergus 2018): a posterior q(z_k | x_<=k) = N(mu_q, sigma_q) from the
  state h_k and the encoded target y_k, a learned prior p(z_k | x_<k) = N(mu_p, sigma_p) from h_k;
  the loss is C(y_k, Dec(h_k, z_k)) + β·KL(q || p) with z_k ~ q reparameterized, both heads trained
  by the KL (no stop-gradient, as in SVG). Futures draw from p; the best guess decodes the prior
  mean (z = 0 need not be likely under p).
- `deterministic`: no latent, z = 0 always, the loss the cost alone; its K "futures" are K copies of
  its one prediction, the blurry mean of the futures that a multimodal model must beat.

The scale of the VAE's β (`latent.kl_weight`). SVG uses β = 1e-4 on a per-pixel *mean* squared
error summed over frames, with the KL summed over z's dimensions. Our C is a per-pixel mean too
(BCE on logits by default: the Bernoulli negative log-likelihood in nats per pixel), so
β = 1 / (c·H·W) is the exact negative ELBO per pixel: 9.8e-4 for 32x32 grey frames, 2.4e-4 at
64x64. A smaller β lets z carry more (sharper best of K, a prior that matches the posterior less well).

Free-running training (`--rollout=true`): a clip's T future frames are predicted one after the
other from the model's own outputs, as in sampling, with gradients through the whole rollout, and
each frame's latent is found *on the rollout's state* — the kinds differ only in their
`FrameLatents`:

    s_0 = begin(context)
    for k = 1 .. T:     h_k = Pred(s_{k-1})
                        z_k = latent of frame k given h_k and the true y_k      (per kind)
                        ŷ_k = Dec(h_k, z_k);   s_k = advance(s_{k-1}, ŷ_k)
    loss = mean_k [E(y_k, ŷ_k, z_k) + the kind's own terms]

Because the rollout follows z* (or the posterior draw), the fed-back frames stay on the true
branch of a multimodal future; the learned prior is fitted on the rollout's own states — the
states sampling will give it — and, chained, with the previous z*.

For validation and the bank the baselines give `clip_latents` their own meaning: "before" is the
cost at the guess made without the target (z = 0; the VAE's prior mean), "after" at what the
target tells (z = 0; the VAE's posterior mean, + β·KL), "zero" at z = 0.
"""

from __future__ import annotations

from typing import Callable, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .choices import EncoderInput, ModelKind, PriorKind, Proposal, check_choice
from .energy import Energy
from .inference import infer_latent
from .model import (Conditioning, ConditionalPrior, GaussianHead, LatentEncoder, Rows, TargetEncoder, VideoPredictor,
                    among, drawn_count)
from .prior import LatentBank

DrawZ = Callable[..., Tensor]  # (h (n, C, h, w), step k[, rows: `Rows`, which futures h holds]) -> z (n, d)
STILL_FLOOR = 1e-3  # still_weights: the copy error (30 dB) below which a frame counts as fully still


class StepDraws(NamedTuple):
    """The random draws of one training step, clip-major like the predicted frames (n = clips * T)."""

    keep: Tensor | None = None  # (n, 1) energy: 1 trains the frame at z*, 0 at z = 0 (latent dropout)
    noise: Tensor | None = None  # (n, d) vae: the reparameterization noise; energy: the channel noise (latent.noise)
    pick: Tensor | None = None  # (n, M) energy with latent.draws = M: uniforms choosing each prior draw's component
    spread: Tensor | None = None  # (n, M, d) and the Gaussian noise of each draw


class ClipLatents(NamedTuple):
    """Per predicted frame of a batch (n = b * T, clip-major), as training finds them, without dropout or noise."""

    z: Tensor  # (n, d) the latent kept (z*, the posterior mean, 0)
    after: Tensor  # (n,) the energy at z
    before: Tensor  # (n,) the energy at the guess made without inference (z⁰; the prior mean)
    zero: Tensor  # (n,) the energy at z = 0 when scored (score_zero), else `before`


class FrameLatent(NamedTuple):
    """What a kind gives for one predicted frame of a free-running batch (n rows)."""

    z: Tensor  # (n, d) the latent the frame is decoded with (carries gradients where the kind trains through it)
    kept: Tensor  # (n, d) the latent to keep: the bank's entry, the prior's target, the next frame's z_{k-1}
    extra: Tensor  # (n,) the kind's loss terms besides the energy at z (encoder pull, prior NLL, KL)
    stats: dict[str, Tensor]  # (n,) per-row figures averaged into the step's statistics


FrameLatents = Callable[[int, Conditioning, Tensor, Tensor], FrameLatent]  # (k, cond, y_k, z_{k-1}) -> latent


def clip_seeds(*, seed: int, step: int, clips: range, tag: int) -> list[np.random.Generator]:
    """One generator per clip position of a step's global batch: its draws depend only on (seed, step,
    position), so a resumed run draws the same, and N ranks together draw what one process draws."""
    return [np.random.default_rng([seed, step, i, tag]) for i in clips]


def latent_keep(*, seed: int, step: int, clips: range, frames: int, dropout: float) -> Tensor:
    """The latent-dropout mask (len(clips) * frames, 1), clip-major like the predicted frames: 0 trains
    that frame with z = 0. `clips` are positions in the step's global batch (see `clip_seeds`)."""
    draws = [g.random(frames) for g in clip_seeds(seed=seed, step=step, clips=clips, tag=0x6B656570)]
    u = torch.from_numpy(np.concatenate(draws)) if draws else torch.zeros(0, dtype=torch.float64)
    return (u >= dropout).float().view(-1, 1)


def latent_noise(*, seed: int, step: int, clips: range, frames: int, dim: int) -> Tensor:
    """The VAE's reparameterization noise (len(clips) * frames, dim), clip-major (see `clip_seeds`)."""
    draws = [g.standard_normal((frames, dim)) for g in clip_seeds(seed=seed, step=step, clips=clips, tag=0x6E6F6973)]
    if not draws:
        return torch.zeros(0, dim)
    return torch.from_numpy(np.concatenate(draws)).float()


def prior_noise(*, seed: int, step: int, clips: range, frames: int, draws: int, dim: int) -> tuple[Tensor, Tensor]:
    """The noise of `draws` prior draws per predicted frame: uniforms (n, draws) and normals (n, draws, dim),
    n = len(clips) * frames clip-major (see `clip_seeds`)."""
    gens = clip_seeds(seed=seed, step=step, clips=clips, tag=0x7072696F)
    u = [g.random((frames, draws)) for g in gens]
    e = [g.standard_normal((frames, draws, dim)) for g in gens]
    if not gens:
        return torch.zeros(0, draws), torch.zeros(0, draws, dim)
    return torch.from_numpy(np.concatenate(u)).float(), torch.from_numpy(np.concatenate(e)).float()


def gaussian_kl(mu_q: Tensor, log_sigma_q: Tensor, mu_p: Tensor, log_sigma_p: Tensor) -> Tensor:
    """KL(N(mu_q, sigma_q²) || N(mu_p, sigma_p²)) of diagonal Gaussians, summed over the last dim: (n, d) -> (n,)."""
    var_ratio = (2 * (log_sigma_q - log_sigma_p)).exp()
    mean_term = ((mu_q - mu_p) / log_sigma_p.exp()).pow(2)
    return 0.5 * (var_ratio + mean_term - 1.0).sum(dim=-1) - (log_sigma_q - log_sigma_p).sum(dim=-1)


class RolloutPass(NamedTuple):
    loss: Tensor  # () the mean over the rollout's frames of energy + the kind's terms
    stats: dict[str, float]  # means over the frames, the keys the teacher-forced steps log
    kept: Tensor  # (b * T, d) clip-major, the latents the kind keeps
    per_frame: dict[str, Tensor]  # (b, T) the energy at z and each latent statistic, per frame


def free_running(model: VideoPredictor, video: Tensor, *, context: int, energy: Energy,
                 latents: FrameLatents, feedback_grad: bool = True) -> RolloutPass:
    """Roll out the future of `video` (b, t, c, H, W) from its first `context` frames on the model's
    own predictions, each frame decoded with the latent `latents` finds for it; see the module docstring.

    `feedback_grad=False` feeds the predictions back detached: every frame's cost still trains the
    step that made it from the model's own past outputs, but no gradient runs through time."""
    model.check_video(video)
    b, horizon = video.shape[0], video.shape[1] - context
    state = model.begin(video[:, :context])
    z_prev = video.new_zeros(b, model.z_dim)
    terms, kept, outputs, per_frame = [], [], [], {}
    for k in range(horizon):
        cond, memory = model.condition(state)
        target = video[:, context + k]
        found = latents(k, cond, target, z_prev)
        logits, levels = model.decode_step(cond, found.z)
        e = energy(logits, target, found.z)  # (b,)
        terms.append(e + found.extra)
        for name, value in {"energy": e.detach(), **found.stats}.items():
            per_frame.setdefault(name, []).append(value)
        pixels = torch.sigmoid(logits)
        outputs.append(pixels.detach().mean())
        if k + 1 < horizon:
            fed = pixels if feedback_grad else pixels.detach()  # with gradients, the rollout is trained whole
            if not feedback_grad and levels is not None:
                levels = [level.detach() for level in levels]
            state = model.advance(state, memory if feedback_grad or memory is None else memory.detach(), fed, levels)
        kept.append(found.kept)
        z_prev = found.kept.detach()
    loss = torch.stack(terms, dim=1).mean()
    per_frame = {name: torch.stack(values, dim=1) for name, values in per_frame.items()}
    stats = {"loss": loss.item(), **{name: values.float().mean().item() for name, values in per_frame.items()},
             "out_mean": torch.stack(outputs).mean().item(), "target_mean": video[:, context:].mean().item()}
    return RolloutPass(loss, stats, torch.stack(kept, dim=1).flatten(0, 1), per_frame)


def rollout_clip_latents(pass_: RolloutPass) -> ClipLatents:
    """`ClipLatents` from a free-running pass: a kind that infers nothing has "before" = "after"."""
    after = pass_.per_frame["energy"]
    before = pass_.per_frame.get("energy_before", after)
    zero = pass_.per_frame.get("energy_zero", before)
    return ClipLatents(pass_.kept, after.flatten(), before.flatten(), zero.flatten())


# --- the kinds ----------------------------------------------------------------------------------


class Objective:
    """What one model kind does; see the module docstring. Subclasses fill in the kind's parts."""

    kind: ClassVar[str]
    regularized: ClassVar[bool] = False  # the energy's R(z) (l1, l2, ball) applies to z
    stochastic: ClassVar[bool] = True  # its K futures differ (False: K copies of one rollout)

    def __init__(self, model: VideoPredictor, *, steps: int = 1, step_size: float = 0.03,
                 encoder_weight: float = 1.0, kl_weight: float = 1e-3, dropout: float = 0.0,
                 feedback_grad: bool = True, prior_draws: int = 0, proposal: Proposal = "prior",
                 kl_warmup: int = 0, pushforward: int = 0, noise: float = 0.0, prior_weight: float = 0.0,
                 fused: bool = True, still_weight: float = 0.0, still_steps: int = 0):
        self.model = model
        if still_weight and not still_weight >= 1 or still_steps < 0:
            raise ValueError(f"still_weight={still_weight}, still_steps={still_steps}: expected a cap of 0 (off) or "
                             "1 or more, and 0 or more steps")
        # teacher-forced frames' costs weighed by how still they are (still_weights), in full for still_steps steps
        # (0: the whole run), then fading to the plain cost over as many again
        self.still_weight, self.still_steps, self.still_share = still_weight, still_steps, 1.0
        # energy: the one step from the amortized guess taken in the training pass's backward (EnergyObjective.fused_latent);
        # more steps, a start from prior draws, no amortized encoder or an l1 energy (whose exact zeros are the
        # proximal step's) infer in separate passes
        self.fused = bool(fused and steps == 1 and not prior_draws and model.latent_encoder is not None)
        if not prior_weight >= 0:
            raise ValueError(f"prior_weight={prior_weight}: expected a weight of 0 or more")
        self.prior_weight = prior_weight  # energy: weight of the joint prior term (see EnergyObjective.joint_prior)
        if not noise >= 0:
            raise ValueError(f"noise={noise}: expected a standard deviation of 0 or more")
        self.noise = noise  # energy: std of the Gaussian noise on z* where the decoder is trained
        if pushforward < 0:
            raise ValueError(f"pushforward={pushforward}: expected 0 or more rounds of fed-back predictions")
        self.pushforward = pushforward  # teacher-forced steps: inputs are this many rounds of own predictions
        self.kl_warmup, self.kl_scale = kl_warmup, 1.0  # β (vae), prior_weight (energy) ramp from 0 over kl_warmup steps
        self.prior_draws = prior_draws  # energy: inference starts from the best of this many prior draws (0: from A)
        self.proposal = check_choice("proposal", proposal, Proposal)
        self.feedback_grad = feedback_grad  # free-running training: backpropagate through the fed-back frames
        self.steps, self.step_size, self.encoder_weight = steps, step_size, encoder_weight
        self.kl_weight, self.dropout = kl_weight, dropout

    @staticmethod
    def heads(model: VideoPredictor, *, amortized: bool, components: int, chained: bool,
              reads: EncoderInput = "residual") -> None:
        """Attach the kind's own modules to a freshly built `model` (none by default)."""

    def draws(self, *, seed: int, step: int, clips: range, frames: int) -> StepDraws:
        return StepDraws()

    def at_step(self, step: int) -> None:
        """Set what the training loss schedules by step: the VAE's KL warm-up (Bowman et al. 2016), β
        rising linearly over `kl_warmup` steps so the posterior is used before it is priced (the energy's
        `prior_weight` ramps the same way); the moving decoder's generated branch (`Decoder.at_step`)."""
        self.kl_scale = min(1.0, (step + 1) / self.kl_warmup) if self.kl_warmup else 1.0
        fade = self.still_steps and max(0, step - self.still_steps)
        self.still_share = max(0.0, 1.0 - fade / self.still_steps) if fade else 1.0
        self.model.decoder.at_step(step)

    def still_weights(self, video: Tensor, context: int) -> Tensor | None:
        """Each teacher-forced target's weight in the loss (n = b * T, clip-major), or None for the plain cost.

        The clip-mean PSNR that evaluation reports is dominated by near-still clips (copying the last frame
        scores 30 dB there), where the plain cost, a mean over pixels, asks little: a model that beats copying
        on moving clips early in training still loses to it in dB. So each target counts in proportion to
        1 / (MSE of copying its previous frame + STILL_FLOOR), normalized to a mean of 1 over the step's
        targets and capped at `still_weight`; after `still_steps` the weights fade linearly to 1. A frame's
        whole energy is scaled, so the z that minimizes it, and what inference finds, do not change."""
        if not self.still_weight or self.still_share == 0:
            return None
        with torch.no_grad():
            copy = (video[:, context:] - video[:, context - 1:-1]).float().pow(2).mean(dim=(-3, -2, -1)).reshape(-1)
            inverse = 1 / (copy + STILL_FLOOR)
            weights = (inverse / inverse.mean()).clamp(max=self.still_weight)
            return self.still_share * weights + (1 - self.still_share)

    def loss(self, video: Tensor, *, context: int, energy: Energy, draws: StepDraws,
             rollout: bool = False) -> tuple[Tensor, dict, Tensor]:
        """The loss of one batch `(b, t, c, H, W)` (`context` frames given), its statistics (floats),
        and the latents to keep (n, d); free-running with `rollout`."""
        # the glide decoder's source, once: the bounce law and the glided frames read it, and the conditioning and
        # the trust cost the same glided frames (all read only the context frames, which the pushforward's inputs keep)
        source, glided = self.model.glide_source(video[:, :context]), None
        if self.model.training:
            self.model.count_bounces(video, context, source)
        if not rollout:
            inputs = self.pushed_inputs(video, context=context, energy=energy) if self.pushforward else None
            glided = self.model.glided_targets(video, context, source)
            loss, stats, kept = self.teacher_forced_loss(video, context=context, energy=energy, draws=draws, inputs=inputs,
                                                         glided=glided)
        else:
            b, frames = video.shape[0], video.shape[1] - context
            per_clip = lambda t: None if t is None else t.view(b, frames, *t.shape[1:])  # noqa: E731
            latents = self.frame_latents(energy, StepDraws(*(per_clip(t) for t in draws)))
            result = free_running(self.model, video, context=context, energy=energy, latents=latents,
                                  feedback_grad=self.feedback_grad)
            loss, stats, kept = result.loss, result.stats, result.kept
        trust = self.model.trust_cost(video, context, glided, source)  # the glide decoder's trust head, on the true frames either way
        if trust is not None:
            loss = loss + trust
            stats = {**stats, "loss": loss.item(), "trust_cost": trust.item()}
        return loss, stats, kept

    def teacher_forced_loss(self, video: Tensor, *, context: int, energy: Energy, draws: StepDraws,
                            inputs: Tensor | None = None, glided: Tensor | None = None) -> tuple[Tensor, dict, Tensor]:
        """The teacher-forced loss; with `inputs` the conditioning reads those frames (the pushforward's); `glided`:
        the glide decoder's frames if already computed (`VideoPredictor.teacher_forced`)."""
        raise NotImplementedError

    def target_latent(self, cond: Conditioning, target: Tensor, energy: Energy) -> Tensor:
        """The latent (n, d) that decodes `target` best as training finds it, without dropout or noise."""
        raise NotImplementedError

    @torch.no_grad()
    def pushed_inputs(self, video: Tensor, *, context: int, energy: Energy) -> Tensor:
        """`video` (b, t, ...) with every frame after the context replaced by the model's own prediction
        of it, `pushforward` rounds deep (the pushforward trick, Brandstetter et al. 2022).

        Round 1 predicts each future frame teacher-forced from the true frames; round r predicts it
        from round r - 1's predictions, so a target's inputs carry up to r steps of the model's own
        error, as a sampled rollout's do. Each prediction decodes the latent training would find
        for its true frame (`target_latent`), so it follows the true branch of the future. Nothing
        here carries gradients: the loss then trains one step that maps the model's own imperfect
        frames back to the true next frame, at a fraction of a free-running rollout's cost."""
        model = self.model
        b, frames = video.shape[0], video.shape[1] - context
        inputs = video
        for _ in range(self.pushforward):
            cond, target = model.teacher_forced_pairs(video, context, inputs)
            z = self.target_latent(cond, target, energy)
            predicted = torch.sigmoid(model.decode(cond, z)).view(b, frames, *video.shape[2:])
            # the last frame is no target's input; it keeps the true one so the shapes match
            inputs = torch.cat([video[:, :context], predicted[:, :-1], video[:, -1:]], dim=1)
        return inputs

    def frame_latents(self, energy: Energy, draws: StepDraws | None = None, *, train: bool = True,
                      score_zero: bool = False) -> FrameLatents:
        """How the kind finds each frame's latent along a free-running rollout; `draws` (b, T, ·) per clip."""
        raise NotImplementedError

    def clip_latents(self, video: Tensor, *, context: int, energy: Energy, rollout: bool = False,
                     score_zero: bool = False) -> ClipLatents:
        """Per predicted frame, the latent training would find (without dropout or noise) and the energies."""
        if rollout:
            latents = self.frame_latents(energy, train=False, score_zero=score_zero)
            return rollout_clip_latents(free_running(self.model, video, context=context, energy=energy,
                                                     latents=latents))
        return self.teacher_forced_latents(video, context=context, energy=energy, score_zero=score_zero)

    def teacher_forced_latents(self, video: Tensor, *, context: int, energy: Energy,
                               score_zero: bool) -> ClipLatents:
        raise NotImplementedError

    def drawer(self, prior: PriorKind, bank: LatentBank | None, generator: torch.Generator | None) -> DrawZ:
        """A `draw_z(h, k)` for `VideoPredictor.rollout` that samples from the named prior: the learned
        head (chained: reading the z it drew the step before), or the latent bank and its fit."""
        check_choice("prior", prior, PriorKind)
        model = self.model
        if prior == "learned":
            if not model.prior.chained:
                return lambda h, k, rows=None: model.prior.sample(h, generator=generator, rows=rows)
            previous: list[Tensor] = []  # the z this drawer gave at the step before, which a chained prior reads

            def draw_chained(h: Tensor, k: int, rows: Rows | None = None) -> Tensor:
                z = model.prior.sample(h, generator=generator, z_prev=previous[-1] if k > 0 and previous else None,
                                       rows=rows)
                previous[:] = [z]
                return z
            return draw_chained
        if bank is None:
            raise ValueError(f"prior {prior!r} needs the latent bank saved in the checkpoint")
        return lambda h, k, rows=None: among(bank.sample(drawn_count(h.shape[0], rows), prior, generator=generator),
                                             rows).to(h.device, h.dtype)

    def best_guess(self) -> DrawZ:
        """The latent of the deterministic prediction: z = 0."""
        z_dim = self.model.z_dim
        return lambda h, k, rows=None: h.new_zeros(h.shape[0], z_dim)

    @torch.no_grad()
    def deterministic(self, context: Tensor, *, horizon: int) -> Tensor:
        """(b, C0, c, H, W) -> (b, horizon, c, H, W): the rollout of the kind's best single guess."""
        return self.model.rollout(context, horizon, self.best_guess())[0]


class EnergyObjective(Objective):
    __doc__ = "The latent-variable energy model: z* = argmin_z E, warm-started by an amortized encoder."
    kind = "energy"
    regularized = True

    @staticmethod
    def heads(model: VideoPredictor, *, amortized: bool, components: int, chained: bool,
              reads: EncoderInput = "residual") -> None:
        widths = model.widths
        check_choice("reads", reads, EncoderInput)
        if not amortized:
            model.latent_encoder = None
        elif reads == "residual":
            model.latent_encoder = LatentEncoder(channels=model.channels, size=model.size, widths=widths, z_dim=model.z_dim)
        else:
            model.latent_encoder = TargetEncoder(width=widths[-1], z_dim=model.z_dim)
        model.prior = ConditionalPrior(width=widths[-1], z_dim=model.z_dim, components=components, chained=chained)

    def draws(self, *, seed: int, step: int, clips: range, frames: int) -> StepDraws:
        keep = latent_keep(seed=seed, step=step, clips=clips, frames=frames, dropout=self.dropout)
        noise = latent_noise(seed=seed, step=step, clips=clips, frames=frames,
                             dim=self.model.z_dim) * self.noise if self.noise else None
        if not self.prior_draws:
            return StepDraws(keep=keep, noise=noise)
        pick, spread = prior_noise(seed=seed, step=step, clips=clips, frames=frames, draws=self.prior_draws,
                                   dim=self.model.z_dim)
        return StepDraws(keep=keep, noise=noise, pick=pick, spread=spread)

    @staticmethod
    def channel(z: Tensor, noise: Tensor | None) -> Tensor:
        """z as the decoder is trained on it: through the noisy channel z + σ·ε where `latent.noise` = σ > 0.

        The noise is the energy model's capacity limit by a channel rather than by sparsity: with z
        bounded (l2 or ball), a frame's z can carry only so many nats above the noise, the decoder
        learns to read nearby latents alike, and the prior fitted to these noisy latents covers
        what it samples (the fixed-variance posterior of a VAE, with z* found by inference).
        """
        return z if noise is None else z + noise.to(z)

    def joint_prior(self, h: Tensor, z: Tensor, keep: Tensor | None, z_prev: Tensor | None = None) -> Tensor:
        """prior_weight · -log p(z | h) per frame (n,), with gradients into the state h, the prior and,
        through the straight-through z, the amortized encoder; 0 on frames trained at z = 0.

        The prior is otherwise fitted alone to detached latents, after the fact: nothing makes the
        latents a frame is trained at ones the prior will draw, nor the state carry what the prior
        needs. With z the channel's noisy latent (z* + σε) this is the VAE's β·KL with the
        posterior's σ fixed at `latent.noise` (the entropy of a fixed-σ Gaussian is a constant), so
        `latent.prior_weight` plays β's part, in nats per frame against the per-pixel cost, ramped
        by `latent.kl_warmup` like β."""
        if not self.prior_weight:
            return z.new_zeros(z.shape[0])
        nll = self.model.prior.nll(h, z, z_prev)
        if keep is not None:
            nll = nll * keep.to(nll).view(-1)
        return self.prior_weight * self.kl_scale * nll

    def fuses(self, energy: Energy) -> bool:
        """Whether a training step with `energy` takes its inference step in its own backward
        (`fused_latent`): `self.fused` where the energy has no l1 term, whose exact zeros are the
        proximal step's (l1 may change during training: its warm-up and floor)."""
        return self.fused and not energy.l1

    def fused_latent(self, z0: Tensor, energy: Energy, *, rows: int) -> tuple[Tensor, Tensor]:
        """`latent.fused`: the latent to send, z⁰ projected (straight-through into A), and to keep, for one
        training pass whose backward also takes the inference step, so that step costs no decoder pass.

        The separate step (`latent.steps=1`) decodes z⁰ forward and backward for ∇E and once more to
        check the step, then trains the decoder at z* + σε. With the step (RMS 0.03 an entry) that
        small against the channel's noise (0.75), the decoder gains nothing from z* over z⁰; what
        the step does is pull A, by w·||z⁰ - z*||², toward z⁰ - η·∇E / rms(∇E) (bench/README.md:
        without it A learns to say nothing above the noise). Here the pull comes from the gradient the
        training loss already sends to the latent, in the same backward: a hook adds
        ∂(w·||z⁰ - z*||²)/∂z⁰ = 2w (z⁰ - z*) / rows to it, with z* = prox(z⁰ - s·g, s), s = η / rms(g)
        per row, g that row's gradient of the loss (rows: how many rows the loss averages over). The
        gradient is taken at the latent the decoder is trained at, through the channel's noise:
        the descent direction of the noise-smoothed energy. A row the loss sends no gradient (a
        dropped frame) is pulled only onto the constraint set.

        Where it differs from the separate step (with no noise, no dropout and no joint prior, it is the
        same pull; tests/test_futures.py): the step is not checked against the energy; a dropped frame
        (latent.dropout) gets no pull, so the pull's mean weight is w·(1 - dropout); g is the gradient of
        everything the loss puts on that latent: with `latent.prior_weight` it includes the joint prior's
        term (z* moves toward the prior's mode as well), and over a rollout trained through its fed-back
        frames (`rollout_grad`, the default) the later frames' costs, so the step descends the rest of
        the rollout's energy, not frame k's alone (inference over the rollout's z, one step of it).
        """
        start = energy.project(z0.detach())
        z = z0 + (start - z0).detach()
        if z.requires_grad and self.encoder_weight:
            weight, eta = 2.0 * self.encoder_weight / rows, self.step_size

            def pull(grad: Tensor) -> Tensor:
                g = grad * rows  # the row's gradient of the loss, undone of the loss's mean over rows
                rms = g.pow(2).mean(dim=1, keepdim=True).sqrt()
                step = torch.where(rms > 0, eta / rms.clamp(min=1e-30), torch.zeros_like(rms))
                z_star = energy.prox(start - step * g, step)
                return grad + weight * (z0.detach() - z_star)

            z.register_hook(pull)
        return z, start

    def start(self, cond: Conditioning, target: Tensor, energy: Energy, draws: StepDraws | None,
              z_prev: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Where inference starts, and what the amortized encoder guessed (trained toward z* either way).

        Without prior draws: z⁰ = A(y - Dec(h, 0)). With M draws (`latent.draws`): z⁰ is the draw of
        the learned prior p(z | h) that gives the lowest energy — the search sampling makes, with
        one sample in M instead of K, so the decoder is trained at latents the prior proposes and
        every draw is pulled toward a real future rather than their mean (IMLE, Li & Malik 2018;
        the winner-takes-all loss of multiple-hypothesis prediction). Without `draws` (validation,
        the bank) the noise comes from a fixed seed, so the figures compare across steps.
        """
        model = self.model
        guess = model.amortized_latent(cond, target)  # (n, d)
        m = self.prior_draws
        if not m:
            return guess, guess
        n = target.shape[0]
        if draws is None or draws.pick is None:
            fixed = torch.Generator().manual_seed(0)
            pick, spread = torch.rand(n, m, generator=fixed), torch.randn(n, m, model.z_dim, generator=fixed)
        else:
            pick, spread = draws.pick, draws.spread
        with torch.no_grad():
            rows = cond.detach().repeat(m)  # (n * m): each frame's m draws in a row
            if self.proposal == "normal":
                candidates = spread.reshape(n * m, -1).to(target)
            else:
                previous = None if z_prev is None else z_prev.repeat_interleave(m, dim=0)
                candidates = model.prior.draw(rows.h, pick.reshape(-1), spread.reshape(n * m, -1), previous)
            # chosen by the cost alone: R is the price the steps after pay; on it the smallest draw would win
            # whatever it predicts, and the latent would die
            scores = energy.reconstruction(model.decode(rows, candidates), target.repeat_interleave(m, dim=0))
            best = scores.view(n, m).argmin(dim=1)
            z0 = candidates.view(n, m, -1)[torch.arange(n, device=best.device), best]
        return z0, guess

    def infer(self, video: Tensor, *, context: int, energy: Energy, draws: StepDraws | None = None,
              inputs: Tensor | None = None, glided: Tensor | None = None):
        """Teacher-forced conditioning, target frames, the amortized guess and the inference result of a batch
        (the conditioning read from `inputs` where given; `glided` as in `teacher_forced_loss`)."""
        model = self.model
        cond, target = model.teacher_forced_pairs(video, context, inputs, glided)  # n = b * T frames to predict
        z0, guess = self.start(cond, target, energy, draws)
        frozen = cond.detach()
        inference = infer_latent(lambda z: model.decode(frozen, z), target, z0, energy, steps=self.steps,
                                 step_size=self.step_size)
        return cond, target, guess, inference

    def target_latent(self, cond: Conditioning, target: Tensor, energy: Energy) -> Tensor:
        """z*: inference from the start training uses (the amortized guess, or the best prior draw)."""
        start, _ = self.start(cond, target, energy, None)
        frozen = cond.detach()
        return infer_latent(lambda z: self.model.decode(frozen, z), target, start, energy, steps=self.steps,
                            step_size=self.step_size).z

    def teacher_forced_loss(self, video: Tensor, *, context: int, energy: Energy, draws: StepDraws,
                            inputs: Tensor | None = None, glided: Tensor | None = None) -> tuple[Tensor, dict, Tensor]:
        model = self.model
        if self.fuses(energy):  # the step is taken in this pass's backward (fused_latent): no inference passes
            cond, target = model.teacher_forced_pairs(video, context, inputs, glided)
            z, z_star = self.fused_latent(model.amortized_latent(cond, target), energy, rows=target.shape[0])
            encoder_loss, inferred = None, {}
        else:
            cond, target, z0, inference = self.infer(video, context=context, energy=energy, draws=draws, inputs=inputs,
                                                     glided=glided)
            z_star = inference.z
            z = z0 + (z_star - z0).detach()  # straight-through into A
            encoder_loss = (z0 - z_star).pow(2).sum(dim=1).mean()
            inferred = {"energy_before": inference.energy_before.mean().item(),
                        "energy_after": inference.energy_after.mean().item(), "encoder_loss": encoder_loss.item()}
        keep = draws.keep.to(z_star)
        sent = self.channel(z, draws.noise)
        logits = model.decode(cond, sent * keep)  # dropped frames use z = 0
        e = energy.reconstruction(logits, target) + energy.penalty(z * keep)  # (n,) R priced on z*, not on its noise
        weights = self.still_weights(video, context)  # (the stats below report the plain energy)
        weighted = e if weights is None else e * weights
        prior_nll = model.prior.nll(cond.h.detach(), self.channel(z_star, draws.noise).detach()).mean() / model.z_dim
        joint = self.joint_prior(cond.h, sent, keep)
        pull = 0.0 if encoder_loss is None else self.encoder_weight * encoder_loss  # (fused: in the backward)
        loss = weighted.mean() + pull + prior_nll + joint.mean()
        stats = {
            "loss": loss.item(),
            "energy": e.mean().item(),
            **inferred,
            "prior_nll": prior_nll.item(),
            **({"joint_prior": joint.mean().item()} if self.prior_weight else {}),
            "latent_norm": z_star.norm(dim=1).mean().item(),
            "latent_active": (z_star != 0).float().mean().item(),  # share of nonzero latent entries
            "out_mean": torch.sigmoid(logits).mean().item(),  # watch for the all-black collapse
            "target_mean": target.mean().item(),
        }
        return loss, stats, z_star

    def teacher_forced_latents(self, video: Tensor, *, context: int, energy: Energy,
                               score_zero: bool) -> ClipLatents:
        cond, target, z0, inference = self.infer(video, context=context, energy=energy)
        zero = torch.zeros_like(z0)
        at_zero = energy(self.model.decode(cond, zero), target, zero) if score_zero else inference.energy_before
        return ClipLatents(inference.z, inference.energy_after, inference.energy_before, at_zero)

    def frame_latents(self, energy: Energy, draws: StepDraws | None = None, *, train: bool = True,
                      score_zero: bool = False) -> FrameLatents:
        """Inference from the amortized guess on the rollout state; `draws.keep` (b, T, 1) drops frames
        to z = 0 (none without draws). `score_zero` adds the energy at z = 0 to the statistics."""
        model, keep = self.model, None if draws is None else draws.keep
        noise = None if draws is None else draws.noise
        encoder_weight = self.encoder_weight if train else 0.0
        joint_prior = bool(train and self.prior_weight)  # a training term: validation neither adds nor logs it
        fused = train and self.fuses(energy)  # validation infers with separate passes, to report the energies
        shaped = None if draws is None else draws.keep if draws.keep is not None else draws.noise  # (b, T, ...)
        rows = None if shaped is None else shaped.shape[0] * shaped.shape[1]
        if fused and rows is None:  # the pull is scaled by the frames the rollout's loss averages over: b * T
            raise ValueError("a fused training rollout needs the step's draws (keep (b, T, 1) or noise (b, T, d)), "
                             "which give the b * T frames its loss averages over; got neither")

        def latent(k: int, cond: Conditioning, target: Tensor, z_prev: Tensor) -> FrameLatent:
            if fused:  # the rollout's loss averages over its b * T frames
                via, z_star = self.fused_latent(model.amortized_latent(cond, target), energy, rows=rows)
                encoder_loss, inferred = torch.zeros_like(via[:, 0]), {}
            else:
                at_k = None if draws is None or draws.pick is None else StepDraws(pick=draws.pick[:, k],
                                                                                  spread=draws.spread[:, k])
                start, z0 = self.start(cond, target, energy, at_k, z_prev if model.prior.chained else None)
                frozen = cond.detach()
                inference = infer_latent(lambda z: model.decode(frozen, z), target, start, energy, steps=self.steps,
                                         step_size=self.step_size)
                z_star = inference.z
                via = z0 + (z_star - z0).detach()  # straight-through into A
                encoder_loss = (z0 - z_star).pow(2).sum(dim=1)
                inferred = {"energy_before": inference.energy_before, "energy_after": inference.energy_after,
                            "encoder_loss": encoder_loss.detach()}
            eps = None if noise is None else noise[:, k]
            sent = self.channel(via, eps)  # through the channel
            kept = None if keep is None else keep[:, k]
            z = sent if kept is None else sent * kept.to(sent)
            prior_nll = model.prior.nll(cond.h.detach(), self.channel(z_star, eps).detach(), z_prev) / model.z_dim
            joint = self.joint_prior(cond.h, sent, kept, z_prev) if joint_prior else sent.new_zeros(sent.shape[0])
            stats = {**inferred, "prior_nll": prior_nll.detach(),
                     "latent_norm": z_star.norm(dim=1), "latent_active": (z_star != 0).float().mean(dim=1)}
            if score_zero:
                with torch.no_grad():
                    zero = torch.zeros_like(z_star)
                    stats["energy_zero"] = energy(model.decode(cond.detach(), zero), target, zero)
            if joint_prior:
                stats["joint_prior"] = joint.detach()
            return FrameLatent(z, z_star, encoder_weight * encoder_loss + prior_nll + joint, stats)

        return latent


class VAEObjective(Objective):
    __doc__ = "SVG-LP's VAE: a Gaussian posterior from the state and the target, a learned Gaussian prior, β·KL."
    kind = "vae"

    @staticmethod
    def heads(model: VideoPredictor, *, amortized: bool, components: int, chained: bool,
              reads: EncoderInput = "residual") -> None:
        top = model.widths[-1]
        model.prior = GaussianHead(width_in=top, width=top, z_dim=model.z_dim)
        model.posterior = GaussianHead(width_in=2 * top, width=top, z_dim=model.z_dim)

    def draws(self, *, seed: int, step: int, clips: range, frames: int) -> StepDraws:
        return StepDraws(noise=latent_noise(seed=seed, step=step, clips=clips, frames=frames, dim=self.model.z_dim))

    def target_latent(self, cond: Conditioning, target: Tensor, energy: Energy) -> Tensor:
        """The posterior mean."""
        return self.model.posterior_params(cond, target)[0]

    def teacher_forced_loss(self, video: Tensor, *, context: int, energy: Energy, draws: StepDraws,
                            inputs: Tensor | None = None, glided: Tensor | None = None) -> tuple[Tensor, dict, Tensor]:
        model = self.model
        cond, target = model.teacher_forced_pairs(video, context, inputs, glided)
        mu_q, log_sigma_q = model.posterior_params(cond, target)  # (n, d) each
        mu_p, log_sigma_p = model.prior.params(cond.h)
        z = mu_q + log_sigma_q.exp() * draws.noise.to(mu_q)  # reparameterized z ~ q
        logits = model.decode(cond, z)
        cost = energy.reconstruction(logits, target)  # (n,)
        kl = gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p)  # (n,) nats per frame
        weights = self.still_weights(video, context)  # a frame's whole loss, cost and KL: the posterior it asks for stays
        frame_loss = cost + self.kl_weight * self.kl_scale * kl
        loss = (frame_loss if weights is None else frame_loss * weights).mean()
        stats = {"loss": loss.item(), "energy": cost.mean().item(), "kl": kl.mean().item(),
                 "latent_norm": z.norm(dim=1).mean().item(), "posterior_sigma": log_sigma_q.exp().mean().item(),
                 "prior_sigma": log_sigma_p.exp().mean().item(), "out_mean": torch.sigmoid(logits).mean().item(),
                 "target_mean": target.mean().item()}
        return loss, stats, z.detach()

    @torch.no_grad()
    def teacher_forced_latents(self, video: Tensor, *, context: int, energy: Energy,
                               score_zero: bool) -> ClipLatents:
        model = self.model
        cond, target = model.teacher_forced_pairs(video, context)
        mu_q, log_sigma_q = model.posterior_params(cond, target)
        mu_p, log_sigma_p = model.prior.params(cond.h)
        before = energy.reconstruction(model.decode(cond, mu_p), target)  # KL(p || p) = 0
        after = energy.reconstruction(model.decode(cond, mu_q), target) + \
            self.kl_weight * gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p)
        zero = torch.zeros_like(mu_p)
        at_zero = energy(model.decode(cond, zero), target, zero) if score_zero else before
        return ClipLatents(mu_q, after, before, at_zero)

    def frame_latents(self, energy: Energy, draws: StepDraws | None = None, *, train: bool = True,
                      score_zero: bool = False) -> FrameLatents:
        """A reparameterized posterior draw (its mean without `draws.noise` (b, T, d))."""
        model, noise = self.model, None if draws is None else draws.noise
        beta = self.kl_weight * (self.kl_scale if train else 1.0)  # validation prices the KL in full

        def latent(k: int, cond: Conditioning, target: Tensor, z_prev: Tensor) -> FrameLatent:
            mu_q, log_sigma_q = model.posterior_params(cond, target)  # (n, d) each
            mu_p, log_sigma_p = model.prior.params(cond.h)
            z = mu_q if noise is None else mu_q + log_sigma_q.exp() * noise[:, k].to(mu_q)
            kl = gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p)  # (n,) nats per frame
            stats = {"kl": kl.detach(), "latent_norm": z.detach().norm(dim=1),
                     "posterior_sigma": log_sigma_q.detach().exp().mean(dim=1),
                     "prior_sigma": log_sigma_p.detach().exp().mean(dim=1)}
            return FrameLatent(z, z.detach(), beta * kl, stats)

        return latent

    def best_guess(self) -> DrawZ:
        """The prior's mean at every step."""
        prior = self.model.prior
        return lambda h, k, rows=None: prior.params(h)[0]


class DeterministicObjective(Objective):
    __doc__ = "No latent: z = 0 always, the loss the cost alone, K futures are K copies of the one prediction."
    kind = "deterministic"
    stochastic = False

    def target_latent(self, cond: Conditioning, target: Tensor, energy: Energy) -> Tensor:
        """z = 0: there is no latent."""
        return target.new_zeros(target.shape[0], self.model.z_dim)

    def teacher_forced_loss(self, video: Tensor, *, context: int, energy: Energy, draws: StepDraws,
                            inputs: Tensor | None = None, glided: Tensor | None = None) -> tuple[Tensor, dict, Tensor]:
        model = self.model
        cond, target = model.teacher_forced_pairs(video, context, inputs, glided)
        z = target.new_zeros(target.shape[0], model.z_dim)
        logits = model.decode(cond, z)
        cost = energy.reconstruction(logits, target)  # (n,)
        weights = self.still_weights(video, context)
        loss = cost.mean() if weights is None else (cost * weights).mean()
        stats = {"loss": loss.item(), "energy": cost.mean().item(), "out_mean": torch.sigmoid(logits).mean().item(),
                 "target_mean": target.mean().item()}
        return loss, stats, z

    @torch.no_grad()
    def teacher_forced_latents(self, video: Tensor, *, context: int, energy: Energy,
                               score_zero: bool) -> ClipLatents:
        model = self.model
        cond, target = model.teacher_forced_pairs(video, context)
        z = target.new_zeros(target.shape[0], model.z_dim)
        cost = energy.reconstruction(model.decode(cond, z), target)
        return ClipLatents(z, cost, cost, cost)

    def frame_latents(self, energy: Energy, draws: StepDraws | None = None, *, train: bool = True,
                      score_zero: bool = False) -> FrameLatents:
        z_dim = self.model.z_dim

        def latent(k: int, cond: Conditioning, target: Tensor, z_prev: Tensor) -> FrameLatent:
            z = target.new_zeros(target.shape[0], z_dim)
            return FrameLatent(z, z, target.new_zeros(target.shape[0]), {})

        return latent

    def drawer(self, prior: PriorKind, bank: LatentBank | None, generator: torch.Generator | None) -> DrawZ:
        check_choice("prior", prior, PriorKind)
        return self.best_guess()  # no latent to draw, whatever the prior


OBJECTIVES: dict[str, type[Objective]] = {o.kind: o for o in (EnergyObjective, VAEObjective, DeterministicObjective)}


def objective_class(kind: ModelKind) -> type[Objective]:
    """The objective of a model kind; ValueError naming the kinds there are."""
    return OBJECTIVES[check_choice("model.kind", kind, ModelKind)]
