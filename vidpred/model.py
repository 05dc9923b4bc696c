"""The video predictor: frame encoder, window predictor, and a decoder of (h, z) with skips.

    h_k   = Pred(Enc(v_{k-W}), ..., Enc(v_{k-1}))     # state from the last W frames (true or predicted)
    ŷ_k   = sigmoid(Dec(h_k, z_k, skips of v_{k-S..k-1}))  # one future frame per latent z_k
                                                     # (skips="context": of the last S context frames;
                                                     # content=D: a code c of the context beside z_k)

The decoder takes skip connections from the last input frames at every resolution (SVG, PPUU),
which is what lets a small model stay sharp. The predictor looks at a fixed window of frame
encodings (SimVP-like), so teacher-forced training predicts every future frame of a clip in one
batched pass. Also here: the amortized latent encoder `A(y - Dec(h, 0))` that sees only the
residual (EEN), and a conditional prior p(z_k | h_k) fitted to inferred latents (SVG-LP's learned
prior, but trained on z* instead of a posterior).

Options for futures that hold together over long rollouts (off by default; see objectives.py for
free-running training): `recurrent=True` adds a ConvGRU memory to the predictor, carried through
every frame of the clip; `output="kernels"` makes the decoder move the last frame's pixels with
per-pixel softmax kernels (DNA, Finn et al. 2016) and generate only what a mask hands it;
`chained_prior=True` lets the learned prior read the previous frame's z; `skips="context"` takes the
decoder's skips from the last true context frames for the whole rollout (SVG's choice) instead of the
newest, possibly predicted, frames, so the appearance the decoder copies does not blur with them;
`recall=True` lets the decoder's bottleneck attend to the context frames' bottlenecks (`Recall`), a
content code per position. One rollout API
(`begin` / `condition` / `advance`) serves sampling, fill-in and free-running training.

The model kinds (objectives.py) share the frame encoder, predictor and decoder and attach their own
heads: the energy model the amortized encoder and the conditional prior, the VAE SVG-LP's Gaussian
posterior q(z_k | x_<=k) and learned prior p(z_k | x_<k), the deterministic baseline none. In einops
patterns here `b t c h w` are batch, time, channels, height and width, and `k` a window of frames.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from .choices import DecoderOutput, Feedback, GlideMask, SkipSource, check_choice

# --- helpers and blocks ---------------------------------------------------------------------------


def channels_last(x: Tensor) -> Tensor:
    """Convolutions here run 1.5-2.5x faster on CPU in NHWC memory (measured on 2 cores); the
    logical layout is unchanged."""
    return x.contiguous(memory_format=torch.channels_last)


def act() -> nn.LeakyReLU:
    """LeakyReLU (SVG's choice): as good as SiLU here, and its backward is 1.3-6x faster on CPU."""
    return nn.LeakyReLU(0.2)


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups of at least 4 channels; GroupNorm needs a group count that divides
    the channels, so a width like 9 or 18 takes the largest such count below that (1 and 3 groups)."""
    groups = min(8, max(1, channels // 4))
    return nn.GroupNorm(max(g for g in range(1, groups + 1) if channels % g == 0), channels)


def conv_norm_act(c_in: int, c_out: int, *, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    pad = (kernel - 1) // 2 if stride == 1 else (kernel - stride) // 2
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, pad), norm(c_out), act())


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_norm_act(channels, channels), nn.Conv2d(channels, channels, 3, 1, 1),
                                  norm(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.body(x), 0.2)


MOVED_EPS = 1e-3  # the kernels decoder's pixels lie in [eps, 1 - eps]: BCE of a moved black pixel <= 0.001
GLIDE_TIE = 1e-6  # constant_motion: the cost added per squared pixel of displacement, which settles ties only
GLIDE_AGE = 10.0  # VideoPredictor.glided: the age channel is the frames carried / GLIDE_AGE
TRUST_WIDTH = 16  # channels of the glide decoder's trust head (glide_mask='trust')
OBJECT_LEVEL = 0.1  # object_boxes: a pixel shows its object where it stands out of the background by more (every channel's largest)
PIECE_SHARE = 0.99  # piece_claims: a piece of an earlier frame moves whole by a d that keeps this share of its pixels in every later frame
PART_SHARE = 0.9  # two_objects: each of the two objects of a piece has one 4-connected region of this share of its pixels
REGION_SHARE = 0.2  # object_motion: a displacement held by this share of a region's pixels is one of the region's objects
OBJECT_PIXELS = 8  # object_boxes: an object with fewer pixels that show (a fringe of odd displacements) never bounces
BOUNCE_KEEP = 0.02  # drawn_glide: a bounced object is kept while the velocities its bounces drew had this chance or more
WALL_NEAR = 3  # GlideDraws.near_wall: the predicted frames within which an object's constant motion meets a wall
BOUNCE_PRIOR = 1.0  # VideoPredictor.bounce_law: the count every cell of the bounce law starts with
GLIDE_TRUST = 0.1  # VideoPredictor.trust_cost: a glided pixel is right where it is within this of the true one (every channel)
GLIDE_WINDOWS = (5, 11)  # constant_motion: the sides of the windows its block-matching costs are averaged over
COPY_WEIGHT = 0.99  # the kernels decoder's untrained centre tap: each pixel starts as 99% of the same pixel of the last frame


def straight_through(soft: Tensor, hard: Tensor) -> Tensor:
    """`hard` in the forward pass, the gradient of `soft` in the backward pass (Bengio et al. 2013)."""
    return soft + (hard - soft).detach()


def constant_head(c_in: int, c_out: int, bias: float) -> nn.Conv2d:
    """A 3x3 convolution that starts by outputting `bias` everywhere, whatever it reads (zero weights)."""
    conv = nn.Conv2d(c_in, c_out, 3, 1, 1)
    nn.init.zeros_(conv.weight)
    nn.init.constant_(conv.bias, bias)
    return conv


def sharpen(chances: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """`model.sharp`: in the forward pass the likeliest of `chances` (one-hot over dim 1) and the mask
    rounded to 0 or 1; in the backward pass the soft ones (straight-through)."""
    likeliest = torch.zeros_like(chances).scatter_(1, chances.argmax(1, keepdim=True), 1.0)
    return straight_through(chances, likeliest), None if mask is None else straight_through(mask, (mask > 0.5).to(mask))


@torch.no_grad()
def motion_costs(previous: Tensor, last: Tensor, *, radius: int) -> Tensor:
    """How badly each displacement explains the last frame: (n, c, H, W) x 2 -> (n, (2r+1)², H, W).

    Channel j is the displacement d_j = (j // k - r, j % k - r), k = 2r + 1: the squared difference
    between `last` at p and `previous` at p - d_j (replicate padding), averaged over the channels
    and over windows of about 6x6 and 12x12 pixels around p (block matching, as the cost volume of
    optical flow, PWC-Net). A pixel of a moving object costs ~0 at its displacement; the larger
    window settles the interior of a uniform object, which matches many displacements (aperture).
    The differences are taken at full resolution on every other row and column (the costs are
    per 2x2 block): a cost volume is k² values a pixel, and this one is read by every decoding.
    It is a cue, not a prediction: no gradient flows through it.
    """
    n, c, hh, ww = last.shape
    k = 2 * radius + 1
    padded = F.pad(previous, (radius,) * 4, mode="replicate")
    # unfold at stride 2 reads padded[p + o_j], o_j = (j // k, j % k) - r: previous at p - d with d = -o_j (the flip)
    patches = F.unfold(padded, k, stride=2).view(n, c, k * k, (hh + 1) // 2, (ww + 1) // 2).flip(2)
    diff = (patches - last[:, :, None, ::2, ::2]).pow(2).mean(dim=1)  # (n, k², ⌈H/2⌉, ⌈W/2⌉)
    cost = F.avg_pool2d(diff, 3, 1, 1, count_include_pad=False)
    if min(diff.shape[-2:]) >= 4:
        coarse = F.avg_pool2d(F.avg_pool2d(diff, 2, ceil_mode=True), 3, 1, 1, count_include_pad=False)
        cost = cost + double(coarse)[..., :cost.shape[-2], :cost.shape[-1]]
    return double(cost)[..., :hh, :ww].contiguous()  # per pixel


@torch.no_grad()
def constant_motion(previous: Tensor, last: Tensor, *, radius: int) -> Tensor:
    """Each pixel's displacement per frame between the last two frames: (n, c, H, W) x 2 -> (n, 2, H, W) integers
    (dy, dx) in [-radius, radius], the one of least block-matching cost; ties (a uniform region, which every
    displacement explains) go to the shortest, so what shows no motion stays where it is.

    The cost of d at p: the squared difference between `last` at p and `previous` at p - d (replicate padding),
    averaged over the channels, then over the windows of GLIDE_WINDOWS around p, summed. At full resolution, unlike
    `motion_costs` (read at every decoding, so taken on every other pixel): this runs once per clip, and on
    SM-MNIST's test clips the floor it gives (`evaluation.constant_motion_floor`) rose from 17.56 dB / 0.748 with
    `motion_costs` to 18.92 / 0.752 (bench/README.md).
    """
    cost, dy, dx = matching_costs(previous, last, radius=radius)
    best = cost.argmin(dim=1)
    return torch.stack([dy[best], dx[best]], dim=1)


def matching_costs(previous: Tensor, last: Tensor, *, radius: int) -> tuple[Tensor, Tensor, Tensor]:
    """`constant_motion`'s cost of every displacement at every pixel, (n, k², H, W) with GLIDE_TIE added, stored
    channels-last (each pixel's k² costs side by side: `by_pixel`), and the displacements of its channels, dy and dx
    (k²,): channel j is d_j = (j // k - r, j % k - r), k = 2r + 1."""
    n, c, hh, ww = last.shape
    k = 2 * radius + 1
    padded = F.pad(previous, (radius,) * 4, mode="replicate")
    # unfold reads padded[p + o_j], o_j = (j // k, j % k) - r: previous at p - d with d = -o_j (the flip)
    patches = F.unfold(padded, k).view(n, c, k * k, hh, ww).flip(2)
    diff = (patches - last[:, :, None]).pow(2).mean(dim=1)  # (n, k², H, W)
    # pooled with the k² displacements innermost: the same sums, 4-6x faster on the CPU than pooling each plane
    diff = diff.contiguous(memory_format=torch.channels_last)
    cost = sum(box_mean(diff, side) for side in GLIDE_WINDOWS)
    offsets = torch.arange(k, device=last.device) - radius
    dy, dx = offsets.repeat_interleave(k), offsets.repeat(k)
    return cost + GLIDE_TIE * (dy * dy + dx * dx).to(cost.dtype)[:, None, None], dy, dx


@torch.no_grad()
def object_motion(frames: Tensor, *, radius: int) -> Tensor:
    """`constant_motion` with one displacement per object, of the last of `frames` (n, m, c, H, W), m >= 2, oldest
    first: (n, 2, H, W) integers. Block matching reads the last two; `carried_pieces` reads the pieces of them all.

    An object that moves by a fraction of a pixel a frame (a clip resized to the model's size: 5 pixels a frame at
    64x64 are 2.5 at 32x32) is matched at the two integers around its speed, in bands of rows or columns, which
    would glide apart at their own speeds and tear it into stripes. So the pixels that show (brighter than
    OBJECT_LEVEL in some channel of `last`) and move are joined to their 4-neighbours whose displacement differs by
    at most one pixel per axis (`joined`), and a group whose displacements span at most one pixel per axis moves
    by the one displacement of least cost summed over its pixels (two objects that touch at speeds further apart
    keep their pixels' own). Where objects touch or overlap, the pixels between them match displacements of neither
    (a blend of both) and would glide off as fragments of their own; so, in each region of such pixels joined
    whatever their displacements (`regions`), every pixel then takes, of the displacements that REGION_SHARE of
    the region's pixels (or the most of them) hold, the one of least cost at it (`main_motion`). Last, the pixels
    that a piece of the frame before (or of an earlier frame) carried whole at one velocity lands on take that
    velocity (`carried_pieces`). The constant-motion floor of evaluation stays per pixel (`constant_motion`)."""
    last = frames[:, -1]
    cost, dy, dx = matching_costs(frames[:, -2], last, radius=radius)
    n, k2, hh, ww = cost.shape
    at_pixel = by_pixel(cost)  # (n, H·W, k²)
    best = at_pixel.argmin(dim=2)
    each = torch.stack([dy[best], dx[best]], dim=1)  # (n, 2, H·W)
    member = (last.amax(dim=1).flatten(1) > OBJECT_LEVEL) & (each.abs().sum(dim=1) > 0)
    group = joined(each.view(n, 2, hh, ww), member.view(n, hh, ww)).flatten(1)  # (n, H·W), 0: no group
    m = hh * ww + 1
    summed = cost.new_zeros(n, m, k2).scatter_add_(1, group[..., None].expand(-1, -1, k2), at_pixel)
    pick = summed.argmin(dim=2)  # (n, m): each group's displacement of least summed cost
    at = group[:, None].expand(-1, 2, -1)
    low = each.new_full((n, 2, m), radius + 1).scatter_reduce(2, at, each, reduce="amin")
    high = each.new_full((n, 2, m), -radius - 1).scatter_reduce(2, at, each, reduce="amax")
    rigid = ((high - low) <= 1).all(dim=1)  # (n, m)
    rigid[:, 0] = False  # the pixels in no group keep their own
    chosen = torch.stack([dy[pick], dx[pick]], dim=1).gather(2, at)  # (n, 2, H·W)
    moved = torch.where(rigid.gather(1, group)[:, None], chosen, each).view(n, 2, hh, ww)
    split = main_motion(cost, moved, member.view(n, hh, ww), dy, dx, radius=radius)
    return carried_pieces(frames, split, radius=radius)


@torch.no_grad()
def carried_pieces(frames: Tensor, displacement: Tensor, *, radius: int) -> Tensor:
    """`displacement` (n, 2, H, W) of the last of `frames` (n, m, c, H, W), m >= 2, with the pixels that a piece of an
    earlier frame, carried whole at one constant velocity, lands on given that velocity (`piece_claims`): the pieces
    of the frame before first (lag 1), then of the one before it, and so on to the first frame; a pixel keeps the claim
    of the nearest frame that makes one.

    Block matching (`constant_motion`, the frame's edge padded by repeating it) can tear a uniform object that
    leaves a wall into bands: a square of README's data leaving the top-left corner at (1, 2) was read as bands at
    (0, 0), (0, 2), (1, 0) and (1, 2), since the repeated edge looks like the square moved along it; moved whole,
    it lands on every pixel of itself at (1, 2) only. Two objects that touch or overlap in the last two frames make
    one piece there that no one move carries, and block matching splits them by the windows around each pixel,
    giving a band of one the other's move (README's test clips 25, 34, 168: a diamond's move tore off a third of
    the triangle beside it; a ring over a diamond glided off in fragments); if they were apart a few frames
    earlier, the pieces of that frame carry each on at its own velocity, and if they touched in every frame, the
    piece is carried as two objects where two moves keep it."""
    n, m, _, hh, ww = frames.shape
    flat = displacement.flatten(2)
    taken = torch.zeros(n, hh * ww, dtype=torch.bool, device=frames.device)
    offsets = object_velocities(1, radius, frames.device)[0]  # (k², 2)
    shown = frames[:, :-1].amax(dim=2) > OBJECT_LEVEL  # (n, m - 1, H, W)
    named = regions(shown.flatten(0, 1)).view(n, m - 1, hh, ww)  # every earlier frame's regions in one pass
    for lag in range(1, m):
        won = piece_claims(frames[:, m - 1 - lag:], named[:, m - 1 - lag], radius=radius)
        new = (won >= 0) & ~taken
        flat = torch.where(new[:, None], offsets[won.clamp(min=0)].permute(0, 2, 1), flat)
        taken |= new
    return flat.view(n, 2, hh, ww)


def piece_claims(frames: Tensor, named: Tensor, *, radius: int) -> Tensor:
    """Which move claims each pixel of the last of `frames` (n, L + 1, c, H, W): (n, H·W) the index j of d_j
    (`displacement_objects`' naming), -1 where none does.

    A piece is a 4-connected region of the first frame's pixels brighter than OBJECT_LEVEL (`named` (n, H, W): their
    `regions`, 0 elsewhere), of OBJECT_PIXELS or more. Moved by d ≠ 0 (at most `radius` per axis) a frame, its pixel
    q is *seen* in frame i (1..L) where that frame at q + i·d is within GLIDE_TRUST of it (every channel), and
    *under* where it is at least that bright (a brighter object drawn over it: objects combine by max); off the
    frame never. A piece is carried by the d that keeps PIECE_SHARE of its pixels seen or under in every frame, the
    one that sees them most often if several do (one rigid object at constant velocity); a piece no one d carries
    may be two rigid objects, each pixel carried by its own (`two_objects`). The pixels seen in the last frame at
    their move claim the pixels they land on there (where two land on one pixel, the larger move index, as
    `displacement_objects` names them)."""
    n, span, c, hh, ww = frames.shape
    lag, k = span - 1, 2 * radius + 1
    row, y, x = (named > 0).nonzero(as_tuple=True)  # (P,) each: the first frame's pixels that show, over the batch
    names, piece = torch.unique(named[row, y, x] + (hh * ww + 1) * row, return_inverse=True)  # (P,) into 0..count-1
    value = frames[row, 0, :, y, x]  # (P, c)
    offsets = object_velocities(1, radius, frames.device)[0]  # (k², 2)
    kept = torch.ones(len(row), k * k, dtype=torch.bool, device=frames.device)
    sightings = torch.zeros(len(row), k * k, device=frames.device)
    for i in range(1, span):
        ty, tx = y[:, None] + i * offsets[:, 0], x[:, None] + i * offsets[:, 1]  # (P, k²)
        inside = (ty >= 0) & (ty < hh) & (tx >= 0) & (tx < ww)
        landed = frames[row[:, None], i, :, ty.clamp(0, hh - 1), tx.clamp(0, ww - 1)]  # (P, k², c)
        differ = landed - value[:, None]
        seen = inside & (differ.abs() <= GLIDE_TRUST).all(dim=-1)
        kept &= inside & (differ >= -GLIDE_TRUST).all(dim=-1)
        sightings += seen
    kept[:, k * k // 2] = False  # only a moving piece is carried
    count = len(names)
    pixels = torch.bincount(piece, minlength=count)
    held = per_piece(kept, piece, count)  # (pieces, k²): the pixels each move keeps
    most, best = torch.where(held >= PIECE_SHARE * pixels[:, None], per_piece(sightings, piece, count), -1.0).max(dim=1)
    large = pixels >= OBJECT_PIXELS
    split = two_objects(kept, held, sightings, piece, pixels, large & (most < 0), (row, y, x), (n, hh, ww))
    j = torch.where((large & (most >= 0))[piece], best[piece], split)  # (P,): each pixel's move, -1: none
    claims = (j >= 0) & seen.gather(1, j.clamp(min=0)[:, None]).squeeze(1)  # seen in the last frame: landed inside
    to = row * (hh * ww) + (y + lag * offsets[j, 0]).clamp(0, hh - 1) * ww + (x + lag * offsets[j, 1]).clamp(0, ww - 1)
    won = j.new_full((n * hh * ww,), -1).scatter_reduce(0, to, torch.where(claims, j, -1), reduce="amax")
    return won.view(n, hh * ww)


def per_piece(values: Tensor, piece: Tensor, count: int) -> Tensor:
    """`values` (P, ...) summed over the pixels of each of `count` pieces (`piece` (P,) their pieces): (count, ...)."""
    return values.new_zeros((count, *values.shape[1:]), dtype=torch.float32).index_add_(0, piece, values.float())


def two_objects(kept: Tensor, held: Tensor, sightings: Tensor, piece: Tensor, pixels: Tensor, loose: Tensor,
                at: tuple[Tensor, Tensor, Tensor], shape: tuple[int, int, int]) -> Tensor:
    """`piece_claims`' `loose` pieces (no one move carries them) as two rigid objects each: (P,) each pixel's move
    index, -1 where its piece is not two.

    Two objects that touch in every earlier frame make one piece that no one move carries, which block matching
    tears by the windows around each pixel (README's test clip 209: a cross beside a square through the whole
    context went off with the square; clip 59: a ring half under a disc). Of the moves (`kept` (P, k²): the pixel
    seen or under in every frame; `held` (pieces, k²): those summed per piece), d1 keeps the most of the piece's
    pixels and d2 the most of those d1 does not; a pixel kept by one only takes it, one kept by both the one that
    `sightings` (P, k²) saw it more often with, a tie neither. The piece is two objects if d1 and d2 together keep
    PIECE_SHARE of its `pixels` and each takes OBJECT_PIXELS or more, PART_SHARE of them in one 4-connected region:
    a piece that one move almost carries (a shape that bounces inside the context, a uniform square at a wall) is
    "explained" by two moves only in interleaved bands, which this refuses. `at`: the pixels' (clip, row, column)
    in `shape` (n, H, W)."""
    count, (row, y, x) = len(pixels), at
    if not bool(loose.any()):
        return piece.new_full(piece.shape, -1)
    take = lambda j: (kept.gather(1, j[piece, None]).squeeze(1),  # noqa: E731
                      sightings.gather(1, j[piece, None]).squeeze(1))  # (P,) each: its piece's move j kept, seen
    d1 = held.argmax(dim=1)
    kept1, seen1 = take(d1)
    d2 = per_piece(kept & ~kept1[:, None], piece, count).argmax(dim=1)
    kept2, seen2 = take(d2)
    part = torch.where(kept1 & (~kept2 | (seen1 > seen2)), 0, torch.where(kept2 & (~kept1 | (seen2 > seen1)), 1, -1))
    both = per_piece(kept1 | kept2, piece, count) >= PIECE_SHARE * pixels
    mine = (part >= 0) & loose[piece]
    where = part[mine], row[mine], y[mine], x[mine]
    masks = torch.zeros(2, *shape, dtype=torch.bool, device=kept.device)
    masks[where] = True
    name = regions(masks.flatten(0, 1)).view(2, *shape)[where]
    slot = piece[mine] * 2 + part[mine]  # (the piece, its part)
    _, region, size = torch.unique(name + (shape[1] * shape[2] + 1) * slot, return_inverse=True, return_counts=True)
    whole = torch.bincount(slot, minlength=2 * count)
    largest = whole.new_zeros(2 * count).scatter_reduce(0, slot, size[region], reduce="amax")
    parts = ((whole >= OBJECT_PIXELS) & (largest >= PART_SHARE * whole)).view(count, 2).all(dim=1)
    two = (both & parts)[piece] & mine
    return torch.where(two, torch.where(part == 0, d1[piece], d2[piece]), -1)


def by_pixel(cost: Tensor) -> Tensor:
    """`matching_costs`' cost (n, k², H, W) as (n, H·W, k²): each pixel's k² costs side by side (a view of the
    channels-last tensor matching_costs returns; a copy of any other), where the reductions over displacements
    read them."""
    n, k2, hh, ww = cost.shape
    return cost.permute(0, 2, 3, 1).reshape(n, hh * ww, k2)


def main_motion(cost: Tensor, displacement: Tensor, member: Tensor, dy: Tensor, dx: Tensor, *, radius: int) -> Tensor:
    """`displacement` (n, 2, H, W) with each pixel of `member` (n, H, W) given, of the displacements its region
    (`regions`) holds on REGION_SHARE of its pixels or more (at least the most common one), the one of least `cost`
    (n, k², H, W; channel j the displacement (dy[j], dx[j])) at it; the other pixels keep theirs."""
    n, k2, hh, ww = cost.shape
    region = regions(member).flatten(1)  # (n, H·W), 0: no region
    m = hh * ww + 1
    index = region * k2 + displacement_objects(displacement, radius=radius).flatten(1)
    counts = cost.new_zeros(n, m * k2).scatter_add_(1, index, member.flatten(1).to(cost.dtype)).view(n, m, k2)
    bar = torch.minimum(REGION_SHARE * counts.sum(dim=2, keepdim=True), counts.amax(dim=2, keepdim=True))
    main = (counts >= bar) & (counts > 0)  # (n, m, k²): the displacements each region keeps
    allowed = main.gather(1, region[..., None].expand(-1, -1, k2))  # (n, H·W, k²)
    pick = torch.where(allowed, by_pixel(cost), torch.inf).argmin(dim=2)  # (n, H·W)
    snapped = torch.stack([dy[pick], dx[pick]], dim=1).view(n, 2, hh, ww)
    return torch.where(member[:, None], snapped, displacement)


def regions(member: Tensor) -> Tensor:
    """The 4-connected regions of the `member` pixels (n, H, W) bool, named as `joined` names its groups."""
    return joined(None, member)


def joined(displacement: Tensor | None, member: Tensor) -> Tensor:
    """Groups of the `member` pixels (n, H, W) bool, each joined to its 4-neighbours in `member` whose displacement
    (n, 2, H, W) differs by at most one pixel per axis (None: whatever it is): (n, H, W) integers, a group named by
    the largest 1 + flat index of its pixels, 0 outside `member`."""
    n, hh, ww = member.shape
    neighbours = ((0, 1), (2, 1), (1, 0), (1, 2))  # where each pixel's up, down, left, right neighbour sits, padded by 1
    near = []
    padded = None if displacement is None else F.pad(displacement, (1, 1, 1, 1))
    padded_member = F.pad(member, (1, 1, 1, 1))
    for oy, ox in neighbours:
        close = member & padded_member[:, oy:oy + hh, ox:ox + ww]
        if padded is not None:
            close = close & ((padded[:, :, oy:oy + hh, ox:ox + ww] - displacement).abs() <= 1).all(dim=1)
        near.append(close)
    names = torch.arange(1, hh * ww + 1, device=member.device).view(1, hh, ww)
    group = torch.where(member, names, 0)
    while True:  # each pass spreads the largest name one pixel on: as many passes as a group is long
        padded_group = F.pad(group, (1, 1, 1, 1))
        spread = group
        for (oy, ox), close in zip(neighbours, near):
            spread = torch.where(close, torch.maximum(spread, padded_group[:, oy:oy + hh, ox:ox + ww]), spread)
        if torch.equal(spread, group):
            return group
        group = spread


def box_mean(x: Tensor, side: int) -> Tensor:
    """The mean of x (n, C, H, W) over the side x side window around each pixel, the part inside the frame (two
    one-dimensional passes)."""
    x = F.avg_pool2d(x, (side, 1), 1, (side // 2, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, side), 1, (0, side // 2), count_include_pad=False)


@torch.no_grad()
def glide(frame: Tensor, displacement: Tensor, steps: Tensor) -> Tensor:
    """`frame` (n, c, H, W) carried on: its pixel p sent to p + steps_i · d_p (displacement (n, 2, H, W) from
    `constant_motion`, steps (n,) frames ahead). Returns (n, c + 1, H, W): the moved frame, then its coverage
    (1 where some pixel arrived, 0 in the holes a moving region leaves; what leaves the frame is gone).

    Hard and whole: a pixel moves by an integer displacement and keeps its value, so a shape carried on for 20
    frames is as sharp as in the last context frame (no blend to compound, unlike a rollout of soft kernels).
    Where several pixels arrive, a moving one wins over a still one (what moves is in front of what stays),
    then the brightest (objects combined by max, as SM-MNIST's digits are), each channel the winners' largest.
    """
    return shift(frame, steps.view(-1, 1, 1, 1) * displacement, displacement.abs().sum(dim=1) > 0)


@torch.no_grad()
def shift(frame: Tensor, offsets: Tensor, moving: Tensor) -> Tensor:
    """`frame` (n, c, H, W) with its pixel p sent to p + offsets_p (offsets (n, 2, H, W) integers; `moving` (n, H, W)
    the pixels that move): the moved frame and its coverage, (n, c + 1, H, W), by `glide`'s rules."""
    return placed(frame, *arrivals(frame, offsets, moving))


def placed(frame: Tensor, to: Tensor, wins: Tensor, best: Tensor) -> Tensor:
    """`frame` (n, c, H, W) with its winning pixels placed where `arrivals` sends them: the moved frame and its
    coverage, (n, c + 1, H, W)."""
    n, c, hh, ww = frame.shape
    values = torch.where(wins[:, None], frame.permute(0, 2, 3, 1).reshape(-1, c), torch.zeros((), dtype=frame.dtype))
    moved = frame.new_zeros(n * hh * ww, c).scatter_reduce(0, to[:, None].expand(-1, c), values, reduce="amax")
    moved = moved.view(n, hh, ww, c).permute(0, 3, 1, 2)
    return torch.cat([moved, (best >= 0).to(frame.dtype).view(n, 1, hh, ww)], dim=1).contiguous()


def placed_objects(objects: Tensor, to: Tensor, wins: Tensor, *, still: int) -> Tensor:
    """Which object each pixel of `placed`'s moved frame belongs to, (n, 1, H, W) integers, from the source pixels'
    `objects` (n, H, W) and where `arrivals` sends them; `still` where nothing arrives (the holes)."""
    n, hh, ww = objects.shape
    named = objects.new_full((n * hh * ww,), -1).scatter_reduce(0, to, torch.where(wins, objects.flatten(), -1), reduce="amax")
    return torch.where(named < 0, still, named).view(n, 1, hh, ww)


def arrivals(frame: Tensor, offsets: Tensor, moving: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where `shift` (and `placed`) sends each source pixel and which sources win their destination: (to, wins, best), flat over
    (n, H, W): the destination's flat index, whether the source is shown there, and each destination's winning key
    (-1 where nothing arrives)."""
    n, c, hh, ww = frame.shape
    ty = torch.arange(hh, device=frame.device).view(1, hh, 1) + offsets[:, 0]
    tx = torch.arange(ww, device=frame.device).view(1, 1, ww) + offsets[:, 1]
    inside = (ty >= 0) & (ty < hh) & (tx >= 0) & (tx < ww)  # (n, H, W) sources that land in the frame
    to = (ty.clamp(0, hh - 1) * ww + tx.clamp(0, ww - 1) + torch.arange(n, device=frame.device).view(n, 1, 1) * (hh * ww))
    key = frame.mean(dim=1) + 2.0 * moving.to(frame.dtype)  # moving first, then brightest
    key = torch.where(inside, key, torch.full_like(key, -1.0)).flatten()
    to = to.flatten()
    best = key.new_full((n * hh * ww,), -1.0).scatter_reduce(0, to, key, reduce="amax")
    return to, (key >= 0) & (key == best[to]), best  # wins: sources whose key is the best their destination received


def displacement_objects(displacement: Tensor, *, radius: int) -> Tensor:
    """The objects of a frame whose pixels move by `displacement` (n, 2, H, W): the pixels that share a displacement
    move together, one object per displacement, named by its index j in `constant_motion`'s (d_j = (j // k - r,
    j % k - r), k = 2r + 1, r = radius): (n, H, W) integers, the still object (d = 0) (k² - 1) / 2."""
    k = 2 * radius + 1
    return (displacement[:, 0] + radius) * k + displacement[:, 1] + radius


def background(context: Tensor) -> Tensor:
    """What stays behind moving objects: the per-pixel minimum over the context frames (b, C0, c, H, W) -> (b, c, H, W)
    (the black canvas of SM-MNIST and the sprites; a still background wherever no object covers it in every frame)."""
    return context.amin(dim=1)


def shows(frame: Tensor, back: Tensor) -> Tensor:
    """Where `frame` (n, c, H, W) shows an object: (n, H, W), over OBJECT_LEVEL from the background `back` in some
    channel."""
    return (frame - back).abs().amax(dim=1) > OBJECT_LEVEL


@torch.no_grad()
def object_boxes(frame: Tensor, back: Tensor, objects: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Where each of `count` objects shows in `frame` (n, c, H, W): the box (n, count, 4) of its pixels (`objects`
    (n, H, W) names them) that stand out of the background `back` by over OBJECT_LEVEL in some channel, as
    (top, bottom, left, right) rows and columns, and whether it has OBJECT_PIXELS such pixels (n, count)."""
    n, _, hh, ww = frame.shape
    seen = shows(frame, back)
    member = F.one_hot(objects, count).permute(0, 3, 1, 2).bool() & seen[:, None]  # (n, count, H, W)
    rows, cols = member.any(dim=3), member.any(dim=2)
    ys, xs = torch.arange(hh, device=frame.device), torch.arange(ww, device=frame.device)
    boxes = torch.stack([torch.where(rows, ys, hh).amin(dim=2), torch.where(rows, ys, -1).amax(dim=2),
                         torch.where(cols, xs, ww).amin(dim=2), torch.where(cols, xs, -1).amax(dim=2)], dim=-1)
    return boxes, member.flatten(2).sum(dim=2) >= OBJECT_PIXELS


class GlideDraws(NamedTuple):
    """How each of n sampled futures of a glide decoder with glide_mask='trust' realizes its glided frame, per
    object j of L (`displacement_objects`; `drawn_glide`, `bounce_step`). `sampling.glide_draws` makes them."""

    fill: Tensor  # (n,) 1.0: where a glided pixel is not kept, the background shows; 0.0: the generated pixels
    levels: Tensor  # (n, L) object j's glided pixels are kept where trust > levels[:, j]
    bounce: Tensor  # (n, L) bool: object j goes on by bouncing off the walls instead (kept while its path is likely)
    split: Tensor  # (n, L, 2) integers: per axis (rows, columns), the pixels of its box's slack beyond half on the low side
    speeds: Tensor  # (n, L, B, 2) uniforms in [0, 1): its velocity after its b-th bounce (the last B - 1 reused), per axis
    near_wall: Tensor  # (n, L) bool: it bounces too (whatever `bounce` says) if it meets a wall within WALL_NEAR frames

    def rows(self, index: Tensor | slice) -> "GlideDraws":
        """The draws of the futures `index` picks."""
        return GlideDraws(*(t[index] for t in self))


class Paths(NamedTuple):
    """Where the objects of n futures stand after `step` predicted frames (`bounce_step`)."""

    offsets: Tensor  # (n, L, 2) integers: each object's displacement from the last context frame
    velocity: Tensor  # (n, L, 2) integers: its displacement a frame
    hits: Tensor  # (n, L) integers: the walls it has bounced off
    chance: Tensor  # (n, L) the chance of the velocities its bounces drew, by the law they were drawn from


def start_paths(velocity: Tensor) -> Paths:
    """Objects (n, L) at their place in the last context frame, moving at `velocity` (n, L, 2), no bounce yet."""
    return Paths(torch.zeros_like(velocity), velocity.clone(), torch.zeros_like(velocity[..., 0]),
                 torch.ones(velocity.shape[:-1], device=velocity.device))


class BounceLaw(NamedTuple):
    """How sampled futures' objects leave a wall (`bounce_step`): per axis, a categorical law of the velocity after
    a bounce given the one before, learnt from the bounces the training clips show (`observed_bounces`,
    `VideoPredictor.bounce_law`). r = the glide radius."""

    normal: Tensor  # (r, r): row i, the chances of leaving the wall at 1..r pixels a frame, having met it at i + 1
    tangential: Tensor  # (2r + 1, 2r + 1): row i, the chances of going along it at -r..r, having gone along it at i - r


def drawn_from(chances: Tensor, uniform: Tensor) -> Tensor:
    """The category each uniform in [0, 1) picks from its row of `chances` (..., m) (the inverse of the rows'
    cumulative sums): integers in 0..m-1, shaped like `uniform`."""
    return (uniform[..., None] >= chances.cumsum(dim=-1)).sum(dim=-1).clamp(max=chances.shape[-1] - 1)


def wall_hits(offsets: Tensor, velocity: Tensor, boxes: Tensor, moves: Tensor, split: Tensor, *, size: tuple[int, int],
              box: int = 0) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Objects at `offsets` (n, L, 2) one frame on at `velocity` (n, L, 2), those of `moves` (n, L) whose visible
    box (`object_boxes`' (n, L, 4), shifted by its offset) crosses the margin of a wall they move toward put back on
    it: the new offsets and, per axis (rows, columns), which objects met the low wall (top, left) and the high one
    (n, L) each.

    The margins: each object is drawn in a square of side `box` that bounces where it meets a wall (an MNIST digit's
    28 x 28 image), and its visible box is smaller by a slack, per axis, shared by the two sides: the low side gets
    half of it (rounded down) plus `split` (n, L, 2), at most all of it, the high side the rest. `box` 0 (or an
    object wider than it): no slack, the visible box itself meets the wall (the sprites)."""
    offsets = offsets + velocity
    low, high = [], []
    for axis, extent in enumerate(size):
        top, bottom = boxes[..., 2 * axis], boxes[..., 2 * axis + 1]
        slack = (box - (bottom - top + 1)).clamp(min=0)
        margin = (slack // 2 + split[..., axis]).clamp(min=0).minimum(slack)  # the low side's; the high: the rest
        first, last = top + offsets[..., axis], bottom + offsets[..., axis]
        floor, ceiling = margin, extent - 1 - (slack - margin)
        heading = velocity[..., axis]  # only an object moving toward a wall meets it
        low.append(moves & (heading < 0) & (first < floor))
        high.append(moves & (heading > 0) & (last > ceiling))
        offsets[..., axis] += torch.where(low[-1], floor - first, 0) + torch.where(high[-1], ceiling - last, 0)
    return offsets, low, high


def any_wall(low: list[Tensor], high: list[Tensor]) -> Tensor:
    """Which objects met some wall, from `wall_hits`' low and high walls per axis: (n, L) bool."""
    return low[0] | high[0] | low[1] | high[1]


def meets_wall(velocity: Tensor, boxes: Tensor, moves: Tensor, split: Tensor, *, frames: int, size: tuple[int, int],
               box: int = 0) -> Tensor:
    """Which objects of `moves` (n, L), going on from the last context frame at `velocity` (n, L, 2), meet a wall
    (`wall_hits`, whose other arguments these are) within the first `frames` (at least 1) predicted frames: (n, L)
    bool. At constant velocity a box that has crossed a wall's margin toward it stays past it, so the place at the
    last of those frames tells."""
    _, low, high = wall_hits(velocity * (frames - 1), velocity, boxes, moves, split, size=size, box=box)
    return any_wall(low, high)


def bounced_velocity(velocity: Tensor, low: list[Tensor], high: list[Tensor], uniforms: Tensor, *, radius: int,
                     law: BounceLaw | None = None) -> tuple[Tensor, Tensor]:
    """The velocity (n, L, 2) objects at `velocity` leave with, those that met a wall (`wall_hits`' low and high)
    drawn from `uniforms` (n, L, 2), per axis: away from that wall at a speed of 1..r and, along it, -r..r, by the
    bounce `law` given the velocity before, or uniformly without one (the stochastic bounce of SVG's Moving MNIST);
    a corner draws both normal speeds. The others keep theirs. Also the chance (n, L) of what was drawn (1 where
    nothing was)."""
    hit = any_wall(low, high)
    out, chance = velocity.clone(), torch.ones(hit.shape, device=velocity.device)
    for axis in (0, 1):
        uniform, before = uniforms[..., axis], velocity[..., axis]
        if law is None:
            speed, along = 1 + (uniform * radius).long(), (uniform * (2 * radius + 1)).long() - radius
            normal_chance, along_chance = torch.full_like(uniform, 1 / radius), torch.full_like(uniform, 1 / (2 * radius + 1))
        else:
            normals, alongs = law.normal[before.abs().clamp(1, radius) - 1], law.tangential[before + radius]
            speed, along = 1 + drawn_from(normals, uniform), drawn_from(alongs, uniform) - radius
            normal_chance = normals.gather(-1, (speed - 1)[..., None]).squeeze(-1)
            along_chance = alongs.gather(-1, (along + radius)[..., None]).squeeze(-1)
        met = low[axis] | high[axis]
        out[..., axis] = torch.where(met, speed * torch.where(low[axis], 1, -1), torch.where(hit, along, before))
        chance = chance * torch.where(met, normal_chance, torch.where(hit, along_chance, 1.0))
    return out, chance


def bounce_uniforms(draws: GlideDraws, hits: Tensor) -> Tensor:
    """The uniforms (n, L, 2) of each object's next bounce: its draws.speeds after `hits` (n, L) bounces so far (the
    last ones again after B)."""
    index = hits.clamp(max=draws.speeds.shape[2] - 1)[..., None, None].expand(-1, -1, 1, 2)
    return draws.speeds.gather(2, index).squeeze(2)


def bounce_step(paths: Paths, boxes: Tensor, draws: GlideDraws, *, size: tuple[int, int], radius: int, box: int = 0,
                law: BounceLaw | None = None) -> Paths:
    """The objects one frame on. An object of `draws.bounce` that meets a wall (`wall_hits`: its box crosses the
    wall's margin, `box` and `draws.split` set it) is put back on it and leaves with a new velocity
    (`bounced_velocity`, from the uniforms of its next bounce and the `law`); every other object goes on at its
    velocity."""
    offsets, low, high = wall_hits(paths.offsets, paths.velocity, boxes, draws.bounce, draws.split, size=size, box=box)
    velocity, chance = bounced_velocity(paths.velocity, low, high, bounce_uniforms(draws, paths.hits), radius=radius,
                                        law=law)
    return Paths(offsets, velocity, paths.hits + any_wall(low, high).long(), paths.chance * chance)


def bounced_already(paths: Paths, before: Tensor, known: Tensor, boxes: Tensor, draws: GlideDraws, *,
                    size: tuple[int, int], radius: int, box: int = 0, law: BounceLaw | None = None) -> Paths:
    """`paths` (each object at offset 0, at its velocity between the last two context frames) with the objects that
    met a wall in the last context frame already bouncing. Such an object was put back on the wall there, so its
    last displacement is its velocity `before` (n, L, 2; where `known`, the displacement a frame earlier, toward
    the wall or along it) cut short; left as it is, it would stay on the wall one more frame. An object of
    `draws.bounce` whose box, at its place a frame earlier moved on at `before`, crosses a wall's margin
    (`wall_hits`) leaves it now, at the velocity its first bounce draws from `before`."""
    velocity = paths.velocity
    moves = draws.bounce & known & (before * velocity >= 0).all(dim=-1) & (before != velocity).any(dim=-1)
    _, low, high = wall_hits(-velocity, before, boxes, moves, draws.split, size=size, box=box)
    hit = any_wall(low, high)
    left, chance = bounced_velocity(before, low, high, bounce_uniforms(draws, paths.hits), radius=radius, law=law)
    return Paths(paths.offsets, torch.where(hit[..., None], left, velocity), paths.hits + hit.long(), paths.chance * chance)


def velocities_before(objects: Tensor, seen: Tensor, displacement: Tensor, before: Tensor, *, radius: int
                      ) -> tuple[Tensor, Tensor]:
    """Each object's velocity a frame earlier: over the pixels of `objects` (n, H, W; `displacement_objects`) that
    show (`seen` (n, H, W)), the displacement `before` (n, 2, H, W: `object_motion` of the two frames before) of
    the pixel each came from (p - `displacement` (n, 2, H, W)), the most common per object: (n, L, 2), and
    whether any of its pixels told (n, L)."""
    n, hh, ww = objects.shape
    count = (2 * radius + 1) ** 2
    ys = torch.arange(hh, device=objects.device).view(1, hh, 1) - displacement[:, 0]
    xs = torch.arange(ww, device=objects.device).view(1, 1, ww) - displacement[:, 1]
    inside = (ys >= 0) & (ys < hh) & (xs >= 0) & (xs < ww)
    came = (ys.clamp(0, hh - 1) * ww + xs.clamp(0, ww - 1)).flatten(1)
    earlier = displacement_objects(before, radius=radius).flatten(1).gather(1, came)
    votes = (seen & inside).flatten(1).long()
    tally = objects.new_zeros(n, count * count).scatter_add_(1, objects.flatten(1) * count + earlier, votes)
    tally = tally.view(n, count, count)
    return object_velocities(1, radius, objects.device)[0][tally.argmax(dim=-1)], tally.sum(dim=-1) > 0


def source_objects(source: Tensor, back: Tensor, *, channels: int, radius: int) -> tuple[Tensor, Tensor, Tensor]:
    """The objects of a glide source (n, c + 2, H, W; `VideoPredictor.glide_source`) over its background `back`:
    each pixel's object (n, H, W; `displacement_objects`), the objects' boxes (n, L, 4) and whether each shows
    (n, L; `object_boxes`), the still one never (what stays never bounces)."""
    objects = displacement_objects(source[:, channels:].long(), radius=radius)
    count = (2 * radius + 1) ** 2
    boxes, present = object_boxes(source[:, :channels], back, objects, count)
    present[:, count // 2] = False
    return objects, boxes, present


def object_velocities(n: int, radius: int, device: torch.device) -> Tensor:
    """The velocity (n, L, 2) of each object `displacement_objects` names, L = (2r + 1)², for n rows."""
    k, each = 2 * radius + 1, torch.arange((2 * radius + 1) ** 2, device=device)
    return torch.stack([each // k - radius, each % k - radius], dim=-1).expand(n, k * k, 2)


def template_costs(frame: Tensor, ys: Tensor, xs: Tensor, values: Tensor, shifts: Tensor) -> Tensor:
    """How far `frame` (c, H, W) is from pixels of `values` (c, P) put at (ys + dy, xs + dx) for each of `shifts`
    (m, 2): the mean absolute difference over the pixels and channels, a pixel put off the frame costing 1: (m,)."""
    _, hh, ww = frame.shape
    y, x = ys + shifts[:, :1], xs + shifts[:, 1:]  # (m, P)
    inside = (y >= 0) & (y < hh) & (x >= 0) & (x < ww)
    found = frame[:, y.clamp(0, hh - 1), x.clamp(0, ww - 1)]  # (c, m, P)
    differ = (found - values[:, None]).abs().mean(dim=0)
    return torch.where(inside, differ, torch.ones_like(differ)).mean(dim=1)


@torch.no_grad()
def observed_bounces(source: Tensor, frames: Tensor, back: Tensor, *, radius: int, box: int = 0
                     ) -> tuple[Tensor, Tensor]:
    """The bounces off the walls that `frames` (n, T, c, H, W) show after a glide source (n, c + 2, H, W:
    `VideoPredictor.glide_source` of the context before them; `back` (n, c, H, W) their background), as counts
    of `BounceLaw`'s cells: normal (r, r) and tangential (2r + 1, 2r + 1) integers, r = `radius`.

    Each object of the source (`displacement_objects`, one with OBJECT_PIXELS that show) goes straight on, as
    sampled futures carry it, until it meets a wall (`wall_hits`, no split). If the true frame there shows its
    pixels where that put it (back on the wall; within GLIDE_TRUST, `template_costs`), the velocity it leaves with
    is the displacement, of the (2r + 1)², that puts its pixels closest to the next true frame: the energy of this
    discrete latent minimized by trying every value. It counts when within GLIDE_TRUST too and moving away from
    the wall it met: per axis that met a wall, a normal cell (speed before, speed after), and a tangential one
    (velocity along the wall before, after) for the other axis where only one did."""
    n, steps, c, hh, ww = frames.shape
    k = 2 * radius + 1
    normal = torch.zeros(radius, radius, dtype=torch.long, device=frames.device)
    tangential = torch.zeros(k, k, dtype=torch.long, device=frames.device)
    last = source[:, :c]
    objects, boxes, present = source_objects(source, back, channels=c, radius=radius)
    seen = shows(last, back)
    velocity = object_velocities(n, radius, frames.device)
    shifts = object_velocities(1, radius, frames.device)[0]
    offsets, split = torch.zeros_like(velocity), torch.zeros_like(velocity)
    for step in range(steps - 1):  # frames[:, step] is where the objects stand `step + 1` frames on
        offsets, low, high = wall_hits(offsets, velocity, boxes, present, split, size=(hh, ww), box=box)
        met = any_wall(low, high)
        for i, j in met.nonzero().tolist():
            ys, xs = ((objects[i] == j) & seen[i]).nonzero(as_tuple=True)
            values, at = last[i][:, ys, xs], offsets[i, j]
            if template_costs(frames[i, step], ys, xs, values, at[None])[0] >= GLIDE_TRUST:
                continue  # the true frame does not show it there: it met the wall elsewhere, or was not one object
            costs = template_costs(frames[i, step + 1], ys, xs, values, at + shifts)
            best = int(costs.argmin())
            after, before = shifts[best], velocity[i, j]
            walls = [(axis, 1 if low[axis][i, j] else -1) for axis in (0, 1) if low[axis][i, j] or high[axis][i, j]]
            if costs[best] >= GLIDE_TRUST or any(after[axis] * away <= 0 for axis, away in walls):
                continue
            for axis, away in walls:
                normal[before[axis].abs() - 1, after[axis] * away - 1] += 1
            if len(walls) == 1:
                along = 1 - walls[0][0]
                tangential[before[along] + radius, after[along] + radius] += 1
        present = present & ~met  # each object's first bounce only: the velocity it had before is known
    return normal, tangential


def drawn_glide(source: Tensor, objects: Tensor, paths: Paths, trust: Tensor, glided: Tensor, draws: GlideDraws,
                back: Tensor) -> tuple[Tensor, Tensor]:
    """One sampled future's glided frame (n, c + 2, H, W) and the hard mask (n, 1, H, W) to blend by (glide_mask=
    'trust'): each row's last context frame `source` (n, c, H, W) with its pixels' objects (n, H, W) moved where
    `paths` has them, and the mask from the trust probabilities `trust` (n, 1, H, W) of the shared glided frame
    `glided` (n, c + 2, H, W; its coverage and age are kept), the `draws` and each row's background `back`.

    Row i keeps object j's pixels where trust > levels[i, j], one level per object for the whole future: drawn
    uniformly, every pixel is then kept with probability trust, an object's pixels, which share a trust, go together
    (a sample of the chance that constant motion still holds for it, e.g. that it has not yet bounced), and whether
    one object is kept says nothing of another's. An object that bounces instead (draws.bounce) is kept, whatever
    its trust (which was learnt of objects that go straight), while the chance of the velocities its bounces drew
    is at least BOUNCE_KEEP (paths.chance): a path that about one in fifty futures would follow, those that bounce
    an object at K = 100. By a uniform law (SVG's bounces; r = 3 or 4) that is until its second bounce; by a law
    learnt of two-branch bounces, until its fifth. Where it does not keep them,
    the generated pixels fill in, or, where draws.fill is 1, the background: what a glided object that has left
    leaves behind. The deterministic prediction (no draws) keeps the pixels with trust over 1/2 and fills in the
    generated ones, as training does."""
    n, c, hh, ww = source.shape
    still = paths.offsets.shape[1] // 2
    by = paths.offsets.gather(1, objects.view(n, -1, 1).expand(-1, -1, 2)).view(n, hh, ww, 2).permute(0, 3, 1, 2)
    to, wins, best = arrivals(source, by, objects != still)  # once: the frame and its objects land alike
    frame = placed(source, to, wins, best)[:, :c]
    named = placed_objects(objects, to, wins, still=still).flatten(1)
    pick = lambda per_object: per_object.gather(1, named).view_as(trust)  # noqa: E731  each pixel's object's
    bounced = pick(draws.bounce)
    keep = torch.where(bounced, pick(paths.chance >= BOUNCE_KEEP), trust > pick(draws.levels))
    fill = draws.fill.view(n, 1, 1, 1) > 0.5
    frame = torch.where(fill & ~keep, back, frame)
    return torch.cat([frame, glided[:, c:]], dim=1), (keep | fill).to(trust.dtype)


def double(x: Tensor) -> Tensor:
    """(..., h, w) -> (..., 2h, 2w), each value repeated over a 2x2 block."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


# --- the three parts of the predictor -------------------------------------------------------------


class FrameEncoder(nn.Module):
    """(n, c, H, W) -> one feature map per resolution: [(n, w0, H, W), (n, w1, H/2, W/2), ...]."""

    def __init__(self, *, channels: int, widths: tuple[int, ...]):
        super().__init__()
        self.stem = conv_norm_act(channels, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(conv_norm_act(w_in, w_out, kernel=4, stride=2), conv_norm_act(w_out, w_out))
            for w_in, w_out in zip(widths[:-1], widths[1:]))

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.stem(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        return feats


class ConvGRU(nn.Module):
    """A convolutional GRU cell (Ballas et al. 2016): memory (n, C, h, w) updated from input (n, C, h, w)."""

    def __init__(self, width: int):
        super().__init__()
        self.gates = nn.Conv2d(2 * width, 2 * width, 3, 1, 1)
        self.candidate = nn.Conv2d(2 * width, width, 3, 1, 1)

    def forward(self, x: Tensor, memory: Tensor | None) -> Tensor:
        if memory is None:
            memory = torch.zeros_like(x)
        reset, update = torch.sigmoid(self.gates(torch.cat([x, memory], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * memory], dim=1)))
        return update * memory + (1 - update) * candidate


class Predictor(nn.Module):
    """A window of bottleneck encodings (n, W, C, h, w) [+ a memory] -> the state h (n, C, h, w) of the next frame.

    `recurrent=False`: h depends on the window alone (SimVP-like), so teacher-forced training
    predicts every frame of a clip in one batched pass. `recurrent=True`: a ConvGRU memory runs
    through every frame seen so far, so motion that the window cannot show (an object hidden
    behind another, the speed before a bounce) persists across the whole rollout.
    """

    def __init__(self, *, width: int, window: int, blocks: int, recurrent: bool = False):
        super().__init__()
        self.fuse = conv_norm_act(window * width, width, kernel=1)
        self.memory = ConvGRU(width) if recurrent else None
        self.blocks = nn.Sequential(*(ResBlock(width) for _ in range(blocks)))

    def forward(self, window: Tensor, memory: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(h, the memory after this frame; None without one)."""
        x = self.fuse(rearrange(window, "n t c h w -> n (t c) h w"))
        if self.memory is not None:
            memory = self.memory(x, memory)
            x = x + memory
        return self.blocks(x), memory


class Recall(nn.Module):
    """Attention from each bottleneck position of a frame being decoded to every bottleneck position of the
    context frames: (x (n, C, h, w), keys_values) -> x + what x finds there, where `keys_values(bottlenecks)` holds
    the keys and values of the context frames' positions.

    The query is read from the decoder's own bottleneck (the state with z mixed in), keys and values from
    the context frames' encodings, which are sharp: so an object that the state places somewhere new can
    fetch what it looked like in the context, each object its own (a content code per position, where
    `model.content` pools one code for the whole clip). The output map starts at zero: an untrained
    recall leaves the decoder as it was. The keys and values depend on the context only, so a rollout
    computes them once, before its rows are repeated for K samples, not once per frame and sample.
    """

    def __init__(self, width: int, dim: int = 32):
        super().__init__()
        self.dim = dim
        self.query, self.key = nn.Conv2d(width, dim, 1), nn.Conv2d(width, dim, 1)
        self.value, self.out = nn.Conv2d(width, width, 1), nn.Conv2d(width, width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def keys_values(self, bottlenecks: Tensor) -> Tensor:
        """(n, R, C, h, w) context bottlenecks -> (n, R h w, dim + C): each position's key, then its value."""
        frames = rearrange(bottlenecks, "n r c h w -> (n r) c h w")
        both = torch.cat([self.key(frames), self.value(frames)], dim=1)
        return rearrange(both, "(n r) e h w -> n (r h w) e", r=bottlenecks.shape[1])

    def forward(self, x: Tensor, keys_values: Tensor) -> Tensor:
        keys, values = keys_values[:, None, :, :self.dim], keys_values[:, None, :, self.dim:]
        queries = rearrange(self.query(x), "n d h w -> n 1 (h w) d")
        found = F.scaled_dot_product_attention(queries, keys, values)  # (n, 1, h w, C)
        return x + self.out(channels_last(rearrange(found, "n 1 (h w) c -> n c h w", h=x.shape[-2], w=x.shape[-1])))


class Decoder(nn.Module):
    """(h (n, C, h, w), z (n, d), skips of the last S frames) -> logits (n, c, H, W).

    z (and the content code, when there is one) is tiled over the bottleneck and mixed in by a
    convolution; each upsampling (a transposed convolution) adds the skip frames' features (the recent
    or the context frames, `VideoPredictor.skips`) at that resolution (additive U-Net skips: half
    the cost of concatenation, and every latent-inference step pays for the decoder). With S = 2
    the decoder sees where each object was in the last two frames at every resolution, so it can
    extrapolate constant motion at pixel precision instead of recovering it from the bottleneck.
    """

    def __init__(self, *, channels: int, widths: tuple[int, ...], z_dim: int, skip_frames: int = 1,
                 output: DecoderOutput = "pixels", kernel: int = 7, sharp: bool = False, content: int = 0,
                 recall: bool = False, generate: bool = True, generate_after: int = 0, glide_mask: GlideMask = "features"):
        super().__init__()
        check_choice("output", output, DecoderOutput)
        if check_choice("glide_mask", glide_mask, GlideMask) == "trust" and (output != "glide" or not generate):
            raise ValueError(f"glide_mask='trust' sets the glide decoder's mask; output={output!r}, generate={generate}: "
                             "expected output='glide' and generate=True")
        if not generate and output == "pixels":
            raise ValueError("generate=False leaves the pixels decoder nothing to output: it needs output='kernels', "
                             "'splat' or 'glide'")
        if generate_after < 0 or generate_after and (output == "pixels" or not generate):
            raise ValueError(f"generate_after={generate_after}: expected 0, or a number of steps with output='kernels', "
                             "'splat' or 'glide' and generate=True (it holds back the generated branch of a moving decoder)")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel={kernel}: expected an odd size >= 1")
        self.output, self.kernel, self.sharp, self.generate, self.channels = output, kernel, sharp, generate, channels
        # The generated branch's share of the output (1 - m) is scaled by `release`, which training raises
        # from 0 to 1 (at_step); saved with the weights, so a checkpoint samples as it was trained.
        self.generate_after = generate_after
        if generate_after:
            self.register_buffer("release", torch.zeros(()))
        top = widths[-1]
        self.inject = nn.Sequential(conv_norm_act(top + z_dim + content, top), conv_norm_act(top, top))
        self.recall = Recall(top) if recall else None
        self.ups = nn.ModuleList()
        self.refines = nn.ModuleList()
        self.skip_fuses = nn.ModuleList()
        for w_in, w_out in zip(widths[::-1][:-1], widths[::-1][1:]):
            self.ups.append(nn.Sequential(nn.ConvTranspose2d(w_in, w_out, 4, 2, 1), norm(w_out), act()))
            self.refines.append(conv_norm_act(w_out, w_out))
            self.skip_fuses.append(nn.Conv2d(skip_frames * w_out, w_out, 1) if skip_frames > 1 else nn.Identity())
        # The generated pixels (the whole frame for output=pixels; with a moving decoder, what its mask
        # hands them). Start from a dark, uncertain frame: zero weights, bias at the logit of a mostly-black image.
        # The glide decoder's heads also read the glided frame, its coverage and its age (`VideoPredictor.glided`),
        # to see where it holds.
        heads_in = widths[0] + (channels + 2 if output == "glide" else 0)
        self.out = constant_head(heads_in, channels, -3.0) if generate else None
        if output == "glide":
            # per output pixel: the glided frame's share (1) or the generated pixels' (0). Start at the glided
            # frame (99.3%): untrained, the model carries the last context frame on at constant motion, the
            # constant-motion floor (bench/README.md), and training hands the generated pixels what it gets wrong.
            self.mask = constant_head(heads_in, 1, 5.0) if generate and glide_mask == "features" else None
        # glide_mask='trust': the mask reads the glided frame, its coverage and age only, never z, and is trained
        # on its own cost (VideoPredictor.trust_cost) to be the chance that the glided pixel is right. With the
        # mask on the decoder's features it is trained through the blend, where the generated pixels decode the
        # z inferred from the target itself: they beat the glided frame there, so the mask learned to prefer them
        # (0.54 on digits at frame 1, 0.07 at frame 10, on SM-MNIST), while sampled z decode blurs.
        self.trust = nn.Sequential(nn.Conv2d(channels + 2, TRUST_WIDTH, 3, 1, 1), act(),
                                   nn.Conv2d(TRUST_WIDTH, TRUST_WIDTH, 3, 1, 1), act(),
                                   constant_head(TRUST_WIDTH, 1, 5.0)) if glide_mask == "trust" else None
        if output == "splat":
            # per pixel of the last frame, logits over the displacements it may move by: learned features
            # plus -scale x the motion cost of each displacement (motion_costs), so that before any
            # training every pixel continues the motion it showed between the last two frames
            self.taps = nn.Conv2d(widths[0], kernel * kernel, 3, 1, 1)
            self.motion_scale = nn.Parameter(torch.tensor(math.log(50.0)))
            self.mask = constant_head(widths[0], 1, 3.0) if generate else None  # per output pixel: moved (1) or generated (0)
            nn.init.zeros_(self.taps.weight)
            with torch.no_grad():
                self.taps.bias.zero_()
                self.taps.bias[kernel * kernel // 2] = 1.0  # ties (a uniform region) stay where they are
        if output == "kernels":
            self.taps = nn.Conv2d(widths[0], kernel * kernel, 3, 1, 1)  # per-pixel kernel over the last frame
            self.mask = constant_head(widths[0], 1, 5.0) if generate else None  # per pixel: moved (1) or generated (0)
            # Start as a copy of the last frame, the copy-last-frame floor (99% of the weight on the centre tap,
            # 99.3% moved pixels), so that the untrained model already scores that floor on real video and
            # training moves pixels from there. (Until stop 28 the start was a blur: centre tap e^5 / (e^5 + k² - 1),
            # 3/4 of the weight at k = 7, and 88% moved pixels; it scored 1.25 dB under the floor after 98 steps
            # on camera clips, bench/README.md.) Adam's normalized steps move the saturated taps all the same.
            nn.init.zeros_(self.taps.weight)
            with torch.no_grad():
                self.taps.bias.zero_()
                if kernel > 1:  # (a 1 x 1 kernel has one tap, the copy, whatever its logit)
                    self.taps.bias[kernel * kernel // 2] = math.log(COPY_WEIGHT / (1 - COPY_WEIGHT) * (kernel * kernel - 1))

    def forward(self, h: Tensor, z: Tensor, skips: list[Tensor], last: Tensor | None = None,
                motion: Tensor | None = None, content: Tensor | None = None, keys_values: Tensor | None = None,
                glided: Tensor | None = None, trust: Tensor | None = None, *,
                with_levels: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits (n, c, H, W); with `with_levels`, (logits, `levels`' features), through the module's call either
        way, so that a compiled decoder (`--compile=true`) runs compiled for both."""
        levels = self.levels(h, z, skips, content, keys_values)
        logits = self.to_logits(levels, last, motion, glided, trust)
        return (logits, levels) if with_levels else logits

    def levels(self, h: Tensor, z: Tensor, skips: list[Tensor], content: Tensor | None = None,
               keys_values: Tensor | None = None) -> list[Tensor]:
        """The decoder's features per resolution, finest first as the frame encoder's: [(n, w0, H, W), ...,
        (n, w_top, h, w)], the last being the bottleneck with z mixed in. `to_logits` turns them into logits;
        a model with latent feedback (`VideoPredictor.feedback`) keeps them as the predicted frame's encoding."""
        if content is not None:  # the context's appearance code travels beside z, tiled alike
            z = torch.cat([z, content], dim=1)
        zmap = repeat(z, "n d -> n d h w", h=h.shape[-2], w=h.shape[-1])
        x = self.inject(torch.cat([h, zmap], dim=1))
        if self.recall is not None:  # each position fetches what it finds in the context frames' bottlenecks
            x = self.recall(x, keys_values)
        levels = [x]
        # skips[-1] is the bottleneck itself, already inside h; add the finer ones on the way up
        for up, refine, fuse, skip in zip(self.ups, self.refines, self.skip_fuses, skips[-2::-1]):
            x = refine(up(x) + fuse(skip))
            levels.append(x)
        return levels[::-1]

    def to_logits(self, levels: list[Tensor], last: Tensor | None = None, motion: Tensor | None = None,
                  glided: Tensor | None = None, trust: Tensor | None = None) -> Tensor:
        """Logits (n, c, H, W) from the features `levels` gives (the glide decoder: and the glided frame with its
        coverage and age, (n, c + 2, H, W) from `VideoPredictor.glided`, of logits m · glided + (1 - m) · sigmoid(generated),
        m the mask head's, or with glide_mask='trust' `trust` (n, 1, H, W), `VideoPredictor.glide_trust`'s)."""
        x = levels[0]
        if self.output == "glide":  # the heads see where the glided frame has content and holes
            x = torch.cat([x, glided], dim=1)
        generated = self.out(x) if self.generate else None
        if self.output == "pixels":
            return generated
        if self.output == "splat":
            return self.splat(last, motion, x, generated)
        if self.output == "glide":
            if self.trust is not None and trust is None:
                raise ValueError("glide_mask='trust': the decoder blends by the trust head's mask, which the conditioning "
                                 "carries (VideoPredictor.glide_trust); got none")
            mask = self.moved_share(x) if trust is None else trust
            if self.sharp:  # forward: the glided or the generated pixel; backward (features mask): the soft mix's
                mask = straight_through(mask, (mask > 0.5).to(mask))
            return self.blend(glided[:, :self.channels], mask, generated)
        return self.move(last, x, generated)

    def splat(self, last: Tensor, motion: Tensor, x: Tensor, generated: Tensor | None) -> Tensor:
        """Logits of m · S(last) + (1 - m) · sigmoid(generated), S moving every pixel forward.

        Forward warping by per-pixel kernels (softmax splatting, Niklaus & Liu 2020; the transpose
        of DNA's kernels): pixel q of the last frame sends its value to q + d with probability
        P_q(d), a softmax over the k x k displacements of learned logits minus the motion cost of
        each displacement at q. An object is moved by the displacement its own pixels show, not by
        what the destination must guess, so a confident P moves it whole, with no blur, frame
        after frame; z changes P where the motion changes (a bounce). What arrives from two
        sources adds up (clipped to 1); what no pixel reaches (what appears) is the mask's to hand
        to the generated branch.
        """
        n, c, hh, ww = last.shape
        k = self.kernel
        logits = self.taps(x).contiguous() - self.motion_scale.exp() * motion  # (n, k², H, W) over displacements d_j
        chances = logits.softmax(dim=1)
        mask = self.moved_share(x)
        if self.sharp:  # forward: each pixel takes its likeliest displacement and branch; backward: the soft ones
            chances, mask = sharpen(chances, mask)
        sent = chances[:, None] * last.contiguous()[:, :, None]  # (n, c, k², H, W): q's value sent by d_j
        moved = F.fold(sent.reshape(n, c * k * k, hh * ww), (hh, ww), k, padding=k // 2)  # arrives at q + d_j
        return self.blend(moved.clamp(max=1.0), mask, generated)

    def move(self, last: Tensor, x: Tensor, generated: Tensor | None) -> Tensor:
        """Logits of m · K_p * last + (1 - m) · sigmoid(generated) (DNA, Finn et al. 2016).

        Each output pixel p is a convex combination of the last frame's pixels in the k x k window
        around p (softmax taps K_p predicted per pixel), so content that moves by up to k // 2
        pixels is moved, not redrawn: a one-hot kernel shifts a digit exactly, with no blur, however
        many frames are rolled out. The mask m hands pixels that the last frame cannot supply
        (what appears, what was hidden) to the generated branch. With `sharp` the forward pass
        takes each pixel's likeliest tap and branch (the start is then an exact copy of the last
        frame, and nothing is ever blended); gradients are the soft mix's (straight-through).
        Without a generated branch (`generate=False`, `generated` None) every pixel is moved: in its first
        hundred steps on camera clips the branch is still a blur that the mask mixes into scenes the copy
        gets right, and without it the model stays at or over the copy of the last frame (bench/README.md).
        """
        n, c, hh, ww = last.shape
        k = self.kernel
        taps = self.taps(x).softmax(dim=1)  # (n, k*k, H, W)
        mask = self.moved_share(x)
        if self.sharp:  # forward: each pixel copies its likeliest source pixel, or is generated; backward: the soft mix
            taps, mask = sharpen(taps, mask)
        patches = F.unfold(last, k, padding=k // 2).view(n, c, k * k, hh, ww)  # neighbours of every pixel
        moved = (patches * taps[:, None]).sum(dim=2)  # (an einsum here spends more in permuting copies than in the sum)
        return self.blend(moved, mask, generated)

    def at_step(self, step: int) -> None:
        """Training's schedule for the generated branch (generate_after = N > 0): out of the output for the
        first N steps (every output pixel the moved one, as with generate=False; the branch and the mask get
        zero gradients), then blended in linearly over the next N. On camera clips a young branch is a blur
        that costs 0.4-0.9 dB against copying the last frame, while a model trained without it drifts later
        (bench/README.md)."""
        if self.generate_after:
            self.release.fill_(min(1.0, max(0.0, (step + 1 - self.generate_after) / self.generate_after)))

    def moved_share(self, x: Tensor) -> Tensor | None:
        """The mask m (n, 1, H, W): per pixel, the share moved from the last frame; None without a generated branch."""
        return torch.sigmoid(self.mask(x)) if self.generate else None

    def blend(self, moved: Tensor, mask: Tensor | None, generated: Tensor | None) -> Tensor:
        """Logits of m · moved + (1 - m) · sigmoid(generated), or of `moved` alone without a generated branch.

        With generate_after, the generated share 1 - m is scaled by `release` (0: `moved` alone)."""
        if mask is not None and self.generate_after:  # the generated share, and its gradients, scaled by release
            mask = 1 - self.release * (1 - mask)
        pixels = moved if mask is None else mask * moved + (1 - mask) * torch.sigmoid(generated)
        # back to logits (the energy's cost reads logits); eps keeps log(0) out of the BCE
        return torch.logit(MOVED_EPS + (1 - 2 * MOVED_EPS) * pixels)


class LatentEncoder(nn.Module):
    """A(residual): (n, c, H, W) -> z⁰ (n, d), the amortized guess that warm-starts inference.

    It sees only y - Dec(h, 0) (EEN), so it has nothing to encode where the context suffices.
    """

    def __init__(self, *, channels: int, size: int, widths: tuple[int, ...], z_dim: int):
        super().__init__()
        layers, c_in, side = [], channels, size
        for w in widths[:3]:
            layers.append(conv_norm_act(c_in, w, kernel=4, stride=2))
            c_in, side = w, side // 2
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * side * side, z_dim)

    def forward(self, residual: Tensor) -> Tensor:
        return self.head(self.convs(residual).flatten(1))


def state_trunk(width_in: int, width: int) -> nn.Sequential:
    """(n, width_in, h, w) -> (n, 128) features: the shared body of the heads that read the state (the
    conditional prior, the VAE's prior and posterior, the target-reading amortized encoder)."""
    return nn.Sequential(conv_norm_act(width_in, width // 2), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(width // 2 * 16, 128), act())


class TargetEncoder(nn.Module):
    """A(h, Enc(y)): (n, 2C, h, w) -> z⁰ (n, d), the amortized guess read from the state and the target's
    bottleneck features, as the VAE's posterior reads them (its mean alone): it sees what the frame
    is, not only where the deterministic prediction missed. It reads the shared frame encoder and the
    state without sending them gradients (`VideoPredictor.amortized_latent`)."""

    def __init__(self, *, width: int, z_dim: int):
        super().__init__()
        self.trunk = state_trunk(2 * width, width)
        self.head = nn.Linear(128, z_dim)

    def forward(self, state_and_target: Tensor) -> Tensor:
        return self.head(self.trunk(state_and_target))


class Rows(NamedTuple):
    """The rows of a batch that a smaller one holds: `index` (m,) into `total` rows. A rollout gives them to its
    drawer when only some futures run the network (`VideoPredictor.rollout_logits`): the drawer draws the noise of
    all `total` rows, so that each future's z is the same whatever the others are, and reads the states of these."""

    index: Tensor
    total: int


def drawn_count(held: int, rows: Rows | None) -> int:
    """How many rows a drawer draws noise for: all rows.total where it is told the rows, else the `held` it is given."""
    return held if rows is None else rows.total


def among(drawn: Tensor, rows: Rows | None) -> Tensor:
    """The rows `rows` picks of a draw made for all rows.total (all of `drawn` where rows is None)."""
    return drawn if rows is None else drawn[rows.index]


class ConditionalPrior(nn.Module):
    """p(z_k | h_k [, z_{k-1}]): a point mass at z = 0 (sparse codes are often exactly zero) plus a
    mixture of `components` diagonal Gaussians, all weights and parameters predicted from the state
    h_k and, with `chained=True`, from the previous latent z_{k-1} — so a sampled future can keep
    an event going (a bounce that lasts two frames) instead of drawing every frame's z afresh."""

    def __init__(self, *, width: int, z_dim: int, components: int, chained: bool = False):
        super().__init__()
        self.z_dim, self.components, self.chained = z_dim, components, chained
        self.trunk = state_trunk(width, width)
        self.head = nn.Linear(128 + (z_dim if chained else 0), (components + 1) + 2 * components * z_dim)

    def params(self, h: Tensor, z_prev: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Mixture logits (n, M+1) [index 0: z = 0], means (n, M, d), log-scales (n, M, d).
        `z_prev` (n, d) is the previous frame's latent (zeros before the first predicted frame)."""
        features = self.trunk(h)
        if self.chained:
            features = torch.cat([features, h.new_zeros(h.shape[0], self.z_dim) if z_prev is None else z_prev], dim=1)
        out = self.head(features)
        m, d = self.components, self.z_dim
        logits, mu, log_sigma = out.split([m + 1, m * d, m * d], dim=1)
        return logits, mu.view(-1, m, d), log_sigma.view(-1, m, d).clamp(-5.0, 3.0)  # sigma >= 0.007: a tighter floor makes the NLL of near-constant codes oscillate

    def nll(self, h: Tensor, z: Tensor, z_prev: Tensor | None = None) -> Tensor:
        """-log p(z | h, z_prev) per sample (n,): probability mass for z = 0, density elsewhere."""
        logits, mu, log_sigma = self.params(h, z_prev)
        log_pi = logits.log_softmax(dim=1)
        zero = (z == 0).all(dim=1)
        gauss = -0.5 * (((z[:, None] - mu) / log_sigma.exp()) ** 2) - log_sigma - 0.5 * math.log(2 * math.pi)
        log_dense = torch.logsumexp(log_pi[:, 1:] + gauss.sum(dim=2), dim=1)
        return -torch.where(zero, log_pi[:, 0], log_dense)

    @torch.no_grad()
    def draw(self, h: Tensor, uniform: Tensor, normal: Tensor, z_prev: Tensor | None = None) -> Tensor:
        """Draws (n, d) made from given noise: `uniform` (n,) in [0, 1) picks the component by inverse
        CDF (the first is the point mass at 0), `normal` (n, d) the Gaussian's draw; so training can
        draw from the prior with noise that is a function of (seed, step, clip)."""
        logits, mu, log_sigma = self.params(h, z_prev)
        cdf = logits.softmax(dim=1).cumsum(dim=1)
        comp = (cdf < uniform[:, None].to(cdf)).sum(dim=1).clamp(max=self.components)  # (n,) in 0..M
        pick = (comp - 1).clamp(min=0)
        rows = torch.arange(h.shape[0], device=h.device)
        z = mu[rows, pick] + log_sigma[rows, pick].exp() * normal.to(mu)
        return torch.where((comp == 0)[:, None], torch.zeros_like(z), z)

    @torch.no_grad()
    def sample(self, h: Tensor, generator: torch.Generator | None = None, z_prev: Tensor | None = None,
               rows: Rows | None = None) -> Tensor:
        """A draw (n, d) for the states h (n, C, h, w); with `rows`, h holds those rows of rows.total, whose noise is
        all drawn (the others' dropped), so a row's draw is the same whichever rows are asked."""
        logits, mu, log_sigma = self.params(h, z_prev)
        chances = logits.softmax(dim=1)
        if rows is not None:  # multinomial draws each row from its own noise: the rows not asked draw from any law
            chances = chances.new_ones(rows.total, chances.shape[1]).index_copy_(0, rows.index, chances)
        comp = torch.multinomial(chances, 1, generator=generator).squeeze(1)  # (n,)
        eps = torch.randn(comp.shape[0], mu.shape[2], device=h.device, generator=generator)
        comp, eps = among(comp, rows), among(eps, rows)
        pick = (comp - 1).clamp(min=0)
        index = torch.arange(h.shape[0], device=h.device)
        z = mu[index, pick] + log_sigma[index, pick].exp() * eps
        return torch.where((comp == 0)[:, None], torch.zeros_like(z), z)


class GaussianHead(nn.Module):
    """A feature map (n, C_in, h, w) -> a diagonal Gaussian over z (n, d): the VAE baseline's learned
    prior p(z_k | h_k) and posterior q(z_k | h_k, Enc(y_k)) (SVG-LP's two LSTMs, as heads on the state)."""

    chained = False  # p(z_k | h_k) alone: the VAE's prior does not read the previous z

    def __init__(self, *, width_in: int, width: int, z_dim: int):
        super().__init__()
        self.trunk = state_trunk(width_in, width)
        self.head = nn.Linear(128, 2 * z_dim)

    def params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (n, d) and log standard deviation (n, d), the latter in [-6, 2] so that a KL between
        two heads stays finite."""
        mu, log_sigma = self.head(self.trunk(x)).chunk(2, dim=1)
        return mu, log_sigma.clamp(-6.0, 2.0)

    @torch.no_grad()
    def sample(self, x: Tensor, generator: torch.Generator | None = None, z_prev: Tensor | None = None,
               rows: Rows | None = None) -> Tensor:
        """A draw (n, d); `z_prev` is accepted as the chained prior's is, and not read (chained = False); `rows`: as
        `ConditionalPrior.sample`'s."""
        mu, log_sigma = self.params(x)
        eps = torch.randn(drawn_count(mu.shape[0], rows), mu.shape[1], device=mu.device, dtype=mu.dtype,
                          generator=generator)
        return mu + log_sigma.exp() * among(eps, rows)


# --- the whole predictor ----------------------------------------------------------------------------


class Conditioning(NamedTuple):
    """What the decoder needs for a batch of frames to predict, besides z."""

    h: Tensor  # (n, C, h, w) predictor state
    skips: list[Tensor]  # encoder features of the skip frames (the last S input or context frames), (n, S·C_l, H_l, W_l) per resolution
    last: Tensor  # (n, c, H, W) the last input frame
    motion: Tensor | None = None  # (n, k², H, W) the splat decoder's motion costs of the last two frames
    content: Tensor | None = None  # (n, D) the context frames' appearance code (model.content > 0)
    recall: Tensor | None = None  # (n, R h w, d + C) keys and values of the context frames' bottleneck positions (model.recall; `Recall.keys_values`)
    glided: Tensor | None = None  # (n, c + 2, H, W) the glide decoder's last context frame carried on to this frame, its coverage and age (`VideoPredictor.glided`)
    trust: Tensor | None = None  # (n, 1, H, W) the glide decoder's mask with glide_mask='trust' (`VideoPredictor.glide_trust`)

    def repeat(self, k: int) -> "Conditioning":
        """Each entry k times in a row (n -> n * k), for k samples per clip."""
        rep = lambda t: None if t is None else t.repeat_interleave(k, dim=0)  # noqa: E731
        return Conditioning(rep(self.h), [rep(s) for s in self.skips], rep(self.last), rep(self.motion), rep(self.content),
                            rep(self.recall), rep(self.glided), rep(self.trust))

    def rows(self, index: Tensor) -> "Conditioning":
        """The conditioning of the rows `index` picks."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Conditioning(self.h[index], [s[index] for s in self.skips], self.last[index], pick(self.motion),
                            pick(self.content), pick(self.recall), pick(self.glided), pick(self.trust))

    def detach(self) -> "Conditioning":
        """The same conditioning cut from the graph: latent inference moves z only."""
        cut = lambda t: None if t is None else t.detach()  # noqa: E731
        return Conditioning(self.h.detach(), [s.detach() for s in self.skips], self.last.detach(), cut(self.motion),
                            cut(self.content), cut(self.recall), cut(self.glided), cut(self.trust))


class RolloutState(NamedTuple):
    """Where an autoregressive rollout stands: what the next frame's prediction depends on."""

    history: list[list[Tensor]]  # per resolution, the features (n, C_l, H_l, W_l) of the last W frames
    memory: Tensor | None  # (n, C, h, w) the recurrent predictor's memory; None for the window predictor
    last: Tensor  # (n, c, H, W) the newest frame (true or predicted)
    previous: Tensor  # (n, c, H, W) the frame before it (the splat decoder reads the motion between the two)
    anchor: list[Tensor] | None = None  # skips="context"|"both": per resolution, the last S context frames' features (n, S·C_l, H_l, W_l)
    content: Tensor | None = None  # (n, D) the context's appearance code (model.content > 0), fixed over the rollout
    recall: Tensor | None = None  # (n, R h w, d + C) keys and values of the context frames' positions the decoder attends to (model.recall)
    glide: Tensor | None = None  # (b, c + 2, H, W) the glide decoder's last context frame and its displacement per frame (`constant_motion`), one row per context
    step: int = 0  # frames predicted so far (the glide decoder carries its frame step + 1 frames on for the next)
    rows: Tensor | None = None  # (n,) with repeats: the context (row of `glide`) of each of the n rows; None: n = b
    draws: GlideDraws | None = None  # glide_mask='trust': how each future realizes its glided frame (`drawn_glide`); None: mask > 1/2
    background: Tensor | None = None  # (n, c, H, W) with draws: each row's context background (`background`)
    objects: Tensor | None = None  # (n, H, W) with draws: the object of each pixel of the row's last context frame (`displacement_objects`)
    boxes: Tensor | None = None  # (n, L, 4) with draws: where each object of the row's last context frame shows (`object_boxes`)
    paths: Paths | None = None  # with draws: where each row's objects stand in the next frame to predict, step + 1 (`bounce_step`)

    def take(self, index: Tensor) -> "RolloutState":
        """The state of the rows `index` picks; `glide`, one row per context, stays whole (`rows` names each row's)."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return self._replace(history=[[f[index] for f in level] for level in self.history], memory=pick(self.memory),
                             last=self.last[index], previous=self.previous[index],
                             anchor=None if self.anchor is None else [a[index] for a in self.anchor],
                             content=pick(self.content), recall=pick(self.recall),
                             rows=index if self.rows is None else self.rows[index],
                             draws=None if self.draws is None else self.draws.rows(index),
                             background=pick(self.background), objects=pick(self.objects), boxes=pick(self.boxes),
                             paths=None if self.paths is None else Paths(*(t[index] for t in self.paths)))


def uncounted_bounces(module: nn.Module, state: dict, prefix: str, *_) -> None:
    """Load hook: a checkpoint saved before bounce laws were counted gets empty counts (the uniform law it sampled
    with) where its model has a bounce law."""
    for name in ("bounce_normal", "bounce_tangential"):
        counts = getattr(module, name)
        if counts is not None and prefix + name not in state:
            state[prefix + name] = torch.zeros_like(counts)


class VideoPredictor(nn.Module):
    def __init__(self, *, channels: int = 1, size: int = 32, widths: tuple[int, ...] = (16, 32, 64),
                 window: int = 3, blocks: int = 1, z_dim: int = 8, residual: bool = False, skip_frames: int = 2,
                 skips: SkipSource = "recent", recurrent: bool = False, output: DecoderOutput = "pixels", kernel: int = 7,
                 sharp: bool = False, content: int = 0, recall: bool = False, generate: bool = True,
                 generate_after: int = 0, feedback: Feedback = "frames", glide_mask: GlideMask = "features",
                 bounce_box: int = 0, trained_horizon: int = 0):
        super().__init__()
        if not 1 <= skip_frames <= window:
            raise ValueError(f"skip_frames={skip_frames} must be between 1 and the window ({window})")
        if residual and output != "pixels":
            raise ValueError("residual=True corrects the generated pixels; the kernels decoder already moves the last frame")
        self.channels, self.size, self.window, self.z_dim, self.residual = channels, size, window, z_dim, residual
        check_choice("skips", skips, SkipSource)
        # What a rollout feeds back for each predicted frame: the frame itself, encoded again (frames), or the
        # decoder's features of it (latent). With latent feedback the state evolves in feature space, as SRVP's
        # latent dynamics do: a predicted frame is never re-read from its pixels (where a blurred guess is all
        # there is), the features carry what the decoder knew, z included, and the encoder runs on the context
        # only. Every predicted frame then depends on the one before, so such a model trains free-running.
        self.feedback = check_choice("feedback", feedback, Feedback)
        self.skip_frames, self.skips, self.recurrent, self.widths = skip_frames, skips, recurrent, tuple(widths)
        self.motion_radius = kernel // 2 if output == "splat" else None  # the splat decoder reads motion costs
        self.glide_radius = kernel // 2 if output == "glide" else None  # the glide decoder's largest displacement a frame
        if bounce_box and (glide_mask != "trust" or not 0 < bounce_box <= size):
            raise ValueError(f"bounce_box={bounce_box}: the side of the box sampled futures bounce objects in; it needs "
                             f"glide_mask='trust' (got {glide_mask!r}) and 0 < bounce_box <= size ({size})")
        self.bounce_box = bounce_box  # sampled futures: the square each object bounces in (`bounce_step`)
        if trained_horizon < 0:
            raise ValueError(f"trained_horizon={trained_horizon}: the frames a training clip predicts, or 0 (unknown); expected >= 0")
        self.trained_horizon = trained_horizon  # `glided`: the age the heads read stops where training's clips stop
        self.encoder = FrameEncoder(channels=channels, widths=widths)
        self.predictor = Predictor(width=widths[-1], window=window, blocks=blocks, recurrent=recurrent)
        self.decoder = Decoder(channels=channels, widths=widths, z_dim=z_dim,
                               skip_frames=2 * skip_frames if skips == "both" else skip_frames,
                               output=output, kernel=kernel, sharp=sharp, content=content, recall=recall, generate=generate,
                               generate_after=generate_after, glide_mask=glide_mask)
        # The bounce law of sampled futures (glide_mask='trust'): counts of the bounces training clips show
        # (`count_bounces`), integers, so a weight average copies them; none yet: the uniform law (`bounce_law`).
        laws = self.decoder.trust is not None
        r = self.glide_radius or 0
        self.register_buffer("bounce_normal", torch.zeros(r, r, dtype=torch.long) if laws else None)
        self.register_buffer("bounce_tangential", torch.zeros(2 * r + 1, 2 * r + 1, dtype=torch.long) if laws else None)
        self.register_load_state_dict_pre_hook(uncounted_bounces)
        # The content code (DrNet, SRVP): what the context's objects look like, wherever they are: the
        # bottleneck features of the context frames the state reads, pooled over space (mean and max) and
        # time, then a linear map; it reaches the decoder beside z for every predicted frame.
        self.content = nn.Linear(2 * widths[-1], content) if content > 0 else None
        # The heads a model kind adds (objectives.py `Objective.heads` attaches them): the energy model's
        # amortized encoder and conditional prior, the VAE's Gaussian prior and posterior; none for the
        # deterministic baseline.
        self.latent_encoder: LatentEncoder | TargetEncoder | None = None
        self.prior: ConditionalPrior | GaussianHead | None = None
        self.posterior: GaussianHead | None = None

    def check_video(self, video: Tensor, name: str = "video") -> None:
        if video.ndim != 5 or video.shape[2:] != (self.channels, self.size, self.size):
            raise ValueError(f"{name} has shape {tuple(video.shape)}; expected (b, t, {self.channels}, "
                             f"{self.size}, {self.size}) with pixels in [0, 1]")

    def check_context(self, frames: int, error: type[Exception] = ValueError) -> None:
        """Refuse (with `error`) a context of fewer frames than the predictor's window (or than the two
        frames whose motion the splat decoder continues)."""
        if frames < self.window:
            raise error(f"context={frames}: this model's predictor needs at least {self.window} frames (its window)")
        if (self.motion_radius is not None or self.glide_radius is not None) and frames < 2:
            raise error(f"context={frames}: the {self.decoder.output} decoder continues the motion of the last two frames; "
                        "give 2 or more")

    def motion(self, previous: Tensor, last: Tensor) -> Tensor | None:
        """The motion costs (n, k², H, W) the splat decoder reads; None for the other decoders."""
        if self.motion_radius is None:
            return None
        return motion_costs(previous, last, radius=self.motion_radius)

    @property
    def glide_objects(self) -> int:
        """How many objects `displacement_objects` tells apart: one per displacement the glide decoder carries, (2r + 1)²
        (0 without a glide decoder)."""
        return 0 if self.glide_radius is None else (2 * self.glide_radius + 1) ** 2

    def glide_source(self, context: Tensor) -> Tensor | None:
        """What the glide decoder carries on after `context` (n, C0, c, H, W): (n, c + 2, H, W), the last context frame
        and each pixel's displacement per frame (`object_motion` of the last two frames, the earlier ones telling
        objects that touch apart: one per object; a context of one frame shows none); None for the other decoders."""
        if self.glide_radius is None:
            return None
        frames = context if context.shape[1] > 1 else context.repeat(1, 2, 1, 1, 1)  # one frame: as if still
        moves = object_motion(frames, radius=self.glide_radius)
        return torch.cat([context[:, -1], moves.to(context.dtype)], dim=1)

    def count_bounces(self, video: Tensor, context: int, source: Tensor | None) -> None:
        """Add the bounces the future frames of `video` (b, t, ...) show to the bounce law's counts (`observed_bounces`;
        `source`: `glide_source` of its context); nothing without a bounce law. Under torchrun every
        rank adds the bounces of the whole global batch, so the counts are those one process would make."""
        if self.bounce_normal is None or source is None:
            return
        normal, tangential = observed_bounces(source, video[:, context:], background(video[:, :context]),
                                              radius=self.glide_radius, box=self.bounce_box)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:  # every rank's clips
            both = torch.cat([normal.flatten(), tangential.flatten()])
            dist.all_reduce(both, op=dist.ReduceOp.SUM)
            normal, tangential = both[:normal.numel()].view_as(normal), both[normal.numel():].view_as(tangential)
        self.bounce_normal += normal
        self.bounce_tangential += tangential

    def bounce_law(self) -> BounceLaw | None:
        """The law sampled futures' objects leave a wall by (`bounce_step`): the bounces counted in training, each row
        with BOUNCE_PRIOR more of every cell (a row never seen: uniform); None (uniform) before any is counted."""
        if self.bounce_normal is None or not (self.bounce_normal.any() or self.bounce_tangential.any()):
            return None
        chances = lambda counts: (counts + BOUNCE_PRIOR) / (counts + BOUNCE_PRIOR).sum(dim=1, keepdim=True)  # noqa: E731
        return BounceLaw(chances(self.bounce_normal.float()), chances(self.bounce_tangential.float()))

    def glided(self, source: Tensor | None, steps: Tensor) -> Tensor | None:
        """`glide_source`'s frame carried `steps` (n,) frames on, with its coverage and its age, steps / GLIDE_AGE
        everywhere: (n, c + 2, H, W); None without one. The age tells the decoder's heads how far constant motion has
        been carried (exact at frame 1, wrong after a bounce), which the frame alone does not show.

        Past `trained_horizon` (the frames a training clip predicts; 0: not capped) the age stays the horizon's, while
        the frame glides on: the heads never saw older ages, and read at them they extrapolated (README's run, 5
        frames trained and rolled out to 20: the trust head's mean trust in the black background fell from 0.93 at
        frame 5 to 0.62 at frame 20, a third of the pixels under 1/2, and the generated branch filled them grey in
        the z = 0 future from frame 13 on; bench/README.md, "The glide age stops at the trained horizon")."""
        if source is None:
            return None
        n, _, hh, ww = source.shape
        aged = steps.clamp(max=self.trained_horizon) if self.trained_horizon else steps
        age = (aged.to(source.dtype) / GLIDE_AGE).view(n, 1, 1, 1).expand(n, 1, hh, ww)
        return torch.cat([glide(source[:, :self.channels], source[:, self.channels:].long(), steps), age], dim=1)

    def encode(self, frames: Tensor) -> list[Tensor]:
        """(b, t, c, H, W) -> per resolution (b, t, C_l, H_l, W_l)."""
        b = frames.shape[0]
        feats = self.encoder(channels_last(rearrange(frames, "b t c h w -> (b t) c h w")))
        return [rearrange(f, "(b t) c h w -> b t c h w", b=b) for f in feats]

    def teacher_forced_pairs(self, video: Tensor, context: int, inputs: Tensor | None = None,
                             glided: Tensor | None = None) -> tuple[Conditioning, Tensor]:
        """`teacher_forced` with the frames it predicts: (conditioning, targets (n, c, H, W)), n = b * T clip-major.

        With `inputs` (shaped like `video`) the conditioning reads those frames instead of the true
        ones (the pushforward trick feeds the model's own predictions), and the targets stay `video`'s."""
        if inputs is not None and inputs.shape != video.shape:
            raise ValueError(f"inputs have shape {tuple(inputs.shape)}; expected the video's {tuple(video.shape)}")
        cond = self.teacher_forced(video if inputs is None else inputs, context, glided)
        return cond, rearrange(video[:, context:], "b t c h w -> (b t) c h w")

    def teacher_forced(self, video: Tensor, context: int, glided: Tensor | None = None) -> Conditioning:
        """Conditioning for every future frame of `video` (b, t, ...) from the *true* past frames; `glided`: the
        glide decoder's frames `glided_targets(video, context)` where the caller already has them.

        Returns tensors for n = b * (t - context) frames, ordered clip-major `(b T)`. Every frame is
        encoded once; the window predictor then runs all frames in one batch, the recurrent one
        steps its memory through the clip (from the first window, so it has seen the whole context).
        """
        self.check_video(video)
        self.check_context(context)
        if self.feedback == "latent":
            raise ValueError("feedback='latent': each predicted frame's state reads the decoder's features of the frame "
                             "before, so there is no teacher-forced conditioning; train free-running (rollout=true, "
                             "rollout_start=0)")
        first = 0 if self.recurrent else context - self.window  # the first frame any state depends on
        inputs = video[:, first:-1]  # every frame some target sees
        feats = self.encode(inputs)
        windows = feats[-1].unfold(1, self.window, 1)  # (b, t', C, h, w, k = W): window j ends at inputs[j + W - 1]
        if self.recurrent:
            memory, states = None, []
            for j in range(windows.shape[1]):
                h, memory = self.predictor(rearrange(windows[:, j], "b c h w k -> b k c h w"), memory)
                states.append(h)
            h = rearrange(torch.stack(states[context - self.window:], dim=1), "b t c h w -> (b t) c h w")
        else:
            h, _ = self.predictor(rearrange(windows, "b t c h w k -> (b t) k c h w"))  # (b T, C, h, w)
        s, end = self.skip_frames, context - first  # target j sees inputs end - S + j .. end - 1 + j
        recent = None if self.skips == "context" else [
            rearrange(f[:, end - s:].unfold(1, s, 1), "b t c h w s -> (b t) (s c) h w") for f in feats]
        horizon = video.shape[1] - context  # with skips from the context, every target sees its last S frames
        anchor = None if self.skips == "recent" else [
            repeat(f[:, end - s:end], "b s c h w -> (b t) (s c) h w", t=horizon) for f in feats]
        skips = self.skip_features(recent, anchor)
        last = rearrange(inputs[:, end - 1:], "b t c h w -> (b t) c h w")
        previous = rearrange(video[:, context - 2:-2], "b t c h w -> (b t) c h w") if self.motion_radius else None
        content = self.content_code(feats[-1][:, :end])  # the context frames encoded here (those `begin` encodes)
        content = None if content is None else content.repeat_interleave(horizon, dim=0)
        recall = self.recall_keys_values(feats[-1][:, :end])  # once per clip, then one copy per target
        recall = None if recall is None else recall.repeat_interleave(horizon, dim=0)
        glided = self.glided_targets(video, context) if glided is None else glided
        return Conditioning(h, skips, last, None if previous is None else self.motion(previous, last), content, recall, glided,
                            self.glide_trust(glided))

    def glided_targets(self, video: Tensor, context: int, source: Tensor | None = None) -> Tensor | None:
        """The glide decoder's frame for every future frame of `video` (b, t, ...): the last context frame carried
        on, target j by j + 1 frames, as a rollout does: (b T, c + 2, H, W) clip-major (`glided`); None without one.
        `source`: `glide_source` of the context where the caller already has it."""
        source = self.glide_source(video[:, :context]) if source is None else source
        if source is None:
            return None
        horizon = video.shape[1] - context
        steps = torch.arange(1, horizon + 1, device=video.device).repeat(video.shape[0])
        return self.glided(source.repeat_interleave(horizon, dim=0), steps)

    @torch.no_grad()
    def glide_trust(self, glided: Tensor | None) -> Tensor | None:
        """The glide decoder's mask with glide_mask='trust', (n, 1, H, W) from `glided`'s (n, c + 2, H, W): per pixel,
        the chance that the glided frame is right there; None otherwise. It reads no z, so a rollout computes it
        once per context and step; only its own cost (`trust_cost`) trains it."""
        return None if glided is None or self.decoder.trust is None else torch.sigmoid(self.decoder.trust(glided))

    def trust_cost(self, video: Tensor, context: int, glided: Tensor | None = None, source: Tensor | None = None
                   ) -> Tensor | None:
        """The glide decoder's trust head (glide_mask='trust') as a classifier: the mean BCE of its logits against
        where each future frame of `video` is right in the glided frame (within GLIDE_TRUST in every channel);
        None for other decoders. It reads no z, so the mask is the same for every sampled future and does not
        learn from the generated pixels of a z inferred from the target. `glided`: `glided_targets(video, context)`
        where the caller already has them; else `source`: `glide_source` of the context, likewise."""
        if self.decoder.trust is None:
            return None
        with torch.no_grad():
            glided = self.glided_targets(video, context, source) if glided is None else glided
            target = rearrange(video[:, context:], "b t c h w -> (b t) c h w")
            right = (glided[:, :self.channels] - target).abs().amax(dim=1, keepdim=True) < GLIDE_TRUST
        return F.binary_cross_entropy_with_logits(self.decoder.trust(glided), right.to(glided.dtype))

    def recall_keys_values(self, bottleneck: Tensor) -> Tensor | None:
        """(b, R, C, h, w) features of the context frames the state reads -> (b, R h w, d + C) the keys and values
        the decoder's recall attends to; None without recall."""
        return None if self.decoder.recall is None else self.decoder.recall.keys_values(bottleneck)

    def content_code(self, bottleneck: Tensor) -> Tensor | None:
        """(b, t, C, h, w) features of context frames -> (b, D) their appearance code; None without one."""
        if self.content is None:
            return None
        pooled = torch.cat([bottleneck.mean(dim=(1, 3, 4)), bottleneck.amax(dim=(3, 4)).mean(dim=1)], dim=1)
        return self.content(pooled)

    def skip_features(self, recent: list[Tensor] | None, anchor: list[Tensor] | None) -> list[Tensor]:
        """The decoder's skips per resolution from the recent frames' and the context's (`self.skips` chooses;
        the callers build only the set it reads)."""
        if self.skips == "recent":
            return recent
        if self.skips == "context":
            return anchor
        return [torch.cat([r, a], dim=1) for r, a in zip(recent, anchor)]

    def decode(self, cond: Conditioning, z: Tensor) -> Tensor:
        """Logits (n, c, H, W) of the predicted frames; sigmoid gives pixels."""
        return self.corrected(self.decoder(cond.h, z, cond.skips, cond.last, cond.motion, cond.content, cond.recall,
                                           cond.glided, cond.trust), cond)

    def decode_levels(self, cond: Conditioning, z: Tensor) -> tuple[Tensor, list[Tensor]]:
        """`decode`'s logits and the decoder's features per resolution (`Decoder.levels`), which a rollout with
        latent feedback keeps as the predicted frame's encoding."""
        logits, levels = self.decoder(cond.h, z, cond.skips, cond.last, cond.motion, cond.content, cond.recall,
                                      cond.glided, cond.trust, with_levels=True)
        return self.corrected(logits, cond), levels

    def decode_step(self, cond: Conditioning, z: Tensor, *, glided_only: Tensor | None = None
                    ) -> tuple[Tensor, list[Tensor] | None]:
        """A rollout step's logits and what `advance` needs of the decoder: its features with latent feedback,
        None with frame feedback (the plain decoder call then, the one training compiles and runs).

        `glided_only` (n,) bool, with frame feedback: rows whose mask keeps every glided pixel (a sampled future of a
        trust glide decoder that fills with the background, `drawn_glide`), so that their frame is the glided one
        whatever the decoder generates: the decoder runs on the other rows only (the same logits: theirs to float
        rounding, as the convolutions see fewer rows)."""
        if self.feedback == "latent":
            return self.decode_levels(cond, z)
        if glided_only is None or not glided_only.any():
            return self.decode(cond, z), None
        logits = self.glided_logits(cond.glided)
        rest = (~glided_only).nonzero().squeeze(1)
        if len(rest):
            logits[rest] = self.decode(cond.rows(rest), z[rest])
        return logits, None

    def glided_logits(self, glided: Tensor) -> Tensor:
        """The logits (n, c, H, W) of a frame that is the glided one (n, c + 2, H, W) at every pixel: a future whose
        mask keeps every glided pixel, whatever the decoder generates."""
        return self.decoder.blend(glided[:, :self.channels], None, None)

    def corrected(self, logits: Tensor, cond: Conditioning) -> Tensor:
        """The decoder's logits, as a correction of the last frame's where the model is `residual`."""
        return logits + torch.logit(cond.last.clamp(0.02, 0.98)) if self.residual else logits

    def amortized_latent(self, cond: Conditioning, target: Tensor) -> Tensor:
        """z⁰ = A(y - Dec(h, 0)), or A(h, Enc(y)) for a `TargetEncoder`; zeros when the model has no latent encoder."""
        n = target.shape[0]
        if self.latent_encoder is None:
            return target.new_zeros(n, self.z_dim)
        if isinstance(self.latent_encoder, TargetEncoder):
            # A reads the state and the target's features without training them, as the residual path below
            # reads Dec(h, 0): its gradient (the straight-through cost and inference's pull, a normalized
            # gradient per row) reaching the frame encoder and the predictor cost 5.3 dB (bench/README.md)
            with torch.no_grad():
                seen = self.encoder(channels_last(target))[-1]  # (n, C, h, w)
            return self.latent_encoder(torch.cat([cond.h.detach(), seen], dim=1))
        with torch.no_grad():
            blur = torch.sigmoid(self.decode(cond, target.new_zeros(n, self.z_dim)))
        return self.latent_encoder(target - blur)

    def posterior_params(self, cond: Conditioning, target: Tensor) -> tuple[Tensor, Tensor]:
        """The VAE's q(z_k | x_<=k): mean and log-sigma (n, d) from the state h_k and the bottleneck
        features of the target frame y_k (n, c, H, W), encoded by the shared frame encoder."""
        seen = self.encoder(channels_last(target))[-1]  # (n, C, h, w)
        return self.posterior.params(torch.cat([cond.h, seen], dim=1))

    # --- autoregressive rollouts, one frame at a time --------------------------------------------

    def begin(self, context: Tensor, *, repeats: Tensor | None = None, draws: GlideDraws | None = None) -> RolloutState:
        """The state after the context frames (b, C0, c, H, W); with `repeats` (b,), row i repeated
        repeats[i] times (each context encoded once). The recurrent memory runs through the whole context.
        `draws`: with glide_mask='trust', how each of the n futures realizes its glided frame (`drawn_glide`, L =
        `glide_objects`)."""
        self.check_video(context, "context")
        self.check_context(context.shape[1])
        n = context.shape[0] if repeats is None else int(repeats.sum())
        if draws is not None and (self.decoder.trust is None or draws.levels.shape != (n, self.glide_objects)):
            raise ValueError(f"draws: expected levels (n = {n}, L = {self.glide_objects}) for a glide decoder with "
                             f"glide_mask='trust' (decoder {self.decoder.output}, trust head {self.decoder.trust is not None}); "
                             f"got {tuple(draws.levels.shape)}")
        frames = context if self.recurrent else context[:, -self.window:]
        feats = self.encode(frames)
        memory, content = None, self.content_code(feats[-1])
        recall = self.recall_keys_values(feats[-1])  # the frames the state reads, as `teacher_forced`'s
        if self.recurrent:  # windows ending at context frames W-1 .. C0-2: the memory of the context
            for j in range(self.window, frames.shape[1]):
                _, memory = self.predictor(feats[-1][:, j - self.window:j], memory)
        last, previous = context[:, -1], context[:, -2 if context.shape[1] > 1 else -1]
        source = self.glide_source(context)  # one row per context, glided for its rows (`condition`)
        history = [[f[:, i] for i in range(f.shape[1] - self.window, f.shape[1])] for f in feats]
        anchor = None if self.skips == "recent" else [torch.cat(level[-self.skip_frames:], dim=1) for level in history]
        state = RolloutState(history, memory, last, previous, anchor, content, recall, source)
        if repeats is not None:  # every context's row repeated; `glide` stays one row per context (`rows`)
            state = state.take(torch.arange(len(repeats), device=context.device).repeat_interleave(repeats))
        return state if draws is None else self.begin_paths(state, context, draws)

    def begin_paths(self, state: RolloutState, context: Tensor, draws: GlideDraws) -> RolloutState:
        """`state` with what a rollout of sampled futures (`draws`) adds, fixed over the rollout and one copy per row,
        made once: each row's background, its pixels' objects and the objects' boxes, which objects bounce (those of
        `draws.bounce`, and those of `draws.near_wall` whose constant motion meets a wall within WALL_NEAR frames:
        gliding on, such an object would leave through the wall, where the data puts it back on it; measured on
        README's run and SM-MNIST, bench/README.md) and where its objects stand in the first predicted frame (each
        one frame on at its own velocity, or off the wall that cut its last context step short: `bounced_already`)."""
        c, radius = self.channels, self.glide_radius
        back = background(context)
        objects, boxes, present = source_objects(state.glide, back, channels=c, radius=radius)
        before = known = None
        if context.shape[1] >= 3:  # the objects' velocities a frame earlier: which met a wall in the last context frame
            before, known = velocities_before(objects, shows(state.glide[:, :c], back), state.glide[:, c:].long(),
                                              object_motion(context[:, :-1], radius=radius), radius=radius)
        if state.rows is not None:
            back, objects, boxes, present = back[state.rows], objects[state.rows], boxes[state.rows], present[state.rows]
            before, known = (None, None) if before is None else (before[state.rows], known[state.rows])
        velocity = object_velocities(len(boxes), radius, context.device)
        near = meets_wall(velocity, boxes, present, draws.split, frames=WALL_NEAR, size=tuple(context.shape[-2:]),
                          box=self.bounce_box)
        draws = draws._replace(bounce=(draws.bounce | (draws.near_wall & near)) & present)
        paths = start_paths(velocity)
        if before is not None:
            paths = bounced_already(paths, before, known, boxes, draws, size=tuple(context.shape[-2:]), radius=radius,
                                    box=self.bounce_box, law=self.bounce_law())
        state = state._replace(draws=draws, background=back, objects=objects, boxes=boxes, paths=paths)
        return state._replace(paths=self.next_paths(state))

    def next_paths(self, state: RolloutState) -> Paths:
        """Where the rows' objects stand one frame after `state.paths` (`bounce_step`)."""
        return bounce_step(state.paths, state.boxes, state.draws, size=tuple(state.last.shape[-2:]), radius=self.glide_radius,
                           box=self.bounce_box, law=self.bounce_law())

    def context_glide(self, glide: Tensor | None, step: int) -> tuple[Tensor, Tensor | None] | None:
        """The glided frame and its trust of the frame after `step` predicted ones, once per context (the K futures of a
        clip share them): one row per row of a rollout's `glide`; None without a glide decoder."""
        if glide is None:
            return None
        glided = self.glided(glide, torch.full((glide.shape[0],), step + 1, device=glide.device))
        return glided, self.glide_trust(glided)

    def row_glide(self, state: RolloutState, shared: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None]:
        """`context_glide`'s frame and trust for each row of `state`; with draws, as each future moves the last context
        frame's objects its own way (`drawn_glide`)."""
        glided, trust = shared
        if state.rows is not None:
            glided, trust = glided[state.rows], None if trust is None else trust[state.rows]
        if state.draws is not None:
            source = state.glide[:, :self.channels]
            source = source if state.rows is None else source[state.rows]
            glided, trust = drawn_glide(source, state.objects, state.paths, trust, glided, state.draws, state.background)
        return glided, trust

    def condition(self, state: RolloutState, shared: tuple[Tensor, Tensor | None] | None = None
                  ) -> tuple[Conditioning, Tensor | None]:
        """The conditioning of the next frame, and the predictor memory that includes it. `shared`: `context_glide`'s,
        where the caller has it."""
        h, memory = self.predictor(torch.stack(state.history[-1], dim=1), state.memory)
        recent = None if self.skips == "context" else [torch.cat(level[-self.skip_frames:], dim=1) for level in state.history]
        glided = trust = None
        if state.glide is not None:
            glided, trust = self.row_glide(state, shared if shared is not None else self.context_glide(state.glide, state.step))
        return Conditioning(h, self.skip_features(recent, state.anchor), state.last, self.motion(state.previous, state.last),
                            state.content, state.recall, glided, trust), memory

    def advance(self, state: RolloutState, memory: Tensor | None, frame: Tensor,
                levels: list[Tensor] | None = None) -> RolloutState:
        """The state once `frame` (n, c, H, W) is the newest frame; `memory` from `condition`. With latent
        feedback the frame's encoding is `levels`, the decoder's features of it (`decode_levels`), not its pixels'."""
        if self.feedback == "latent":
            if levels is None:
                raise ValueError("feedback='latent' advances on the decoder's features of the predicted frame; got none")
            new = levels
        else:
            new = self.encoder(channels_last(frame))
        history = [level[1:] + [f] for level, f in zip(state.history, new)]  # keep only the window
        paths = None if state.paths is None else self.next_paths(state)
        return state._replace(history=history, memory=memory, last=frame, previous=state.last, step=state.step + 1,
                              paths=paths)

    def rollout(self, context: Tensor, horizon: int, draw_z, *, repeats: Tensor | None = None,
                draws: GlideDraws | None = None) -> tuple[Tensor, Tensor]:
        """Autoregressive prediction: (b, C0, c, H, W) -> frames (b, horizon, c, H, W), z (b, horizon, d).

        `draw_z(h, k)` gives the latent (b, d) of step k from the state h (b, C, h, w); each
        predicted frame is encoded and fed back as the newest frame of the window (with latent
        feedback, the decoder's features of it are). Where `draws` leave some futures to the glide
        alone, the states are those of the others and it is called `draw_z(h, k, rows)` (`Rows`:
        which of all the futures they are), returning theirs. With `repeats`
        (b,) the rollout runs repeats[i] futures of context i in a row (n = repeats.sum() rows
        instead of b), encoding each context once. `draws`: see `begin`.
        """
        logits, zs = self.rollout_logits(context, horizon, draw_z, repeats=repeats, draws=draws)
        return torch.sigmoid(logits), zs

    def rollout_logits(self, context: Tensor, horizon: int, draw_z, *,
                       repeats: Tensor | None = None, draws: GlideDraws | None = None) -> tuple[Tensor, Tensor]:
        """`rollout`, returning the logits (n, horizon, c, H, W) of the frames instead of pixels.

        The energy's BCE cost is computed on logits (exact where the sigmoid saturates), and the
        rollout is differentiable: when `draw_z` returns slices `z[:, k]` of a tensor that requires
        grad, the energy of the whole future can be minimized over z (fill-in-the-blank inference).
        """
        state = self.begin(context, repeats=repeats, draws=draws)
        n = state.last.shape[0]
        apart = self.unread_network(state)
        run, fixed = None, None
        if apart.any():  # those futures are glided only; the network runs on the others
            run = (~apart).nonzero().squeeze(1)
            fixed, state = state.take(apart.nonzero().squeeze(1)), state.take(run)
        logits, zs, glided = [], [], []
        for k in range(horizon):
            shared = self.context_glide(state.glide, k)
            if fixed is not None:
                glided.append(self.glided_logits(self.row_glide(fixed, shared)[0]))
                if k + 1 < horizon:
                    fixed = fixed._replace(step=k + 1, paths=self.next_paths(fixed))
                if not len(run):
                    continue
            cond, memory = self.condition(state, shared)
            # told the rows among all, the drawer draws every row's noise, so each future's z is as if all ran
            z = draw_z(cond.h, k) if run is None else draw_z(cond.h, k, Rows(run, n))
            glided_only = None if state.draws is None else (cond.trust == 1).flatten(1).all(dim=1)
            out, levels = self.decode_step(cond, z, glided_only=glided_only)
            if k + 1 < horizon:  # the last frame is not fed back: nothing reads it
                state = self.advance(state, memory, torch.sigmoid(out), levels)
            logits.append(out)
            zs.append(z)
        if fixed is None:
            return torch.stack(logits, dim=1), torch.stack(zs, dim=1)
        frames = context.new_empty(n, horizon, *context.shape[2:])
        frames[apart] = torch.stack(glided, dim=1)
        latents = context.new_zeros(n, horizon, self.z_dim)  # a future that reads no z: 0, its energy's least over z
        if len(run):
            frames[run], latents[run] = torch.stack(logits, dim=1), torch.stack(zs, dim=1)
        return frames, latents

    def unread_network(self, state: RolloutState) -> Tensor:
        """(n,) bool: the rows of a rollout whose frames read nothing the encoder, predictor, decoder or z give: with
        draws, the futures that fill with the background (`drawn_glide`'s mask keeps every pixel, glided or the
        background's). `rollout_logits` runs the network on the others only."""
        if state.draws is None:
            return torch.zeros(state.last.shape[0], dtype=torch.bool, device=state.last.device)
        return state.draws.fill > 0.5
