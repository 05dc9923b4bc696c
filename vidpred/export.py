"""Share a trained model: `vidpred export --ckpt=PATH --out=FOLDER` writes a folder a colleague loads
with `vidpred.load(FOLDER)`, no training state and no pickle in it:

    model.safetensors   the weights (the model's state dict; of a run trained with --ema, the weight average)
    prior.safetensors   the latent bank and its fitted distribution (what `bank` / `fitted` sampling draws)
    config.json         the run's full configuration (plain JSON, the same as the run folder's)
    vidpred.json        the format, the training step, the sparsity weight training ended with, the bank's counters,
                        which weights model.safetensors holds ("average" or "raw")
    metrics.json        the evaluation of the model, when there is one (the run's eval/metrics.json, or --metrics)
    README.md           a model card: what it is, what it was trained on, how it scores, how to load it

The optimizer state, RNG states and the wandb id stay behind: an export is for using a model, a
checkpoint for training it further.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, describe, parse_overrides, set_key
from .files import atomic_path

FORMAT = 1
FILES = ("model.safetensors", "prior.safetensors", "config.json", "vidpred.json")
PRIOR_TENSORS = ("z", "zero_prob", "loc", "scale")


def is_export(path: str | Path) -> bool:
    """Whether `path` is a folder that `export` wrote (it holds vidpred.json)."""
    return Path(path).is_dir() and (Path(path) / "vidpred.json").is_file()


def export(ckpt: str | Path, out: str | Path, *, metrics: str | Path | None = None) -> Path:
    """Write the exported folder `out` from checkpoint `ckpt` (see the module docstring); returns `out`.

    Refuses (CheckpointError) to write into a folder that already holds an export, so nothing a user
    made is replaced. `metrics` defaults to the run's `eval/metrics.json` beside `checkpoints/`."""
    from safetensors.torch import save_file

    ckpt, out = Path(ckpt), Path(out)
    state = load_checkpoint(ckpt)
    if (out / "vidpred.json").exists() or (out / "model.safetensors").exists():
        raise CheckpointError(f"{out} already holds an exported model; choose another --out or remove it first")
    if metrics is None:
        guess = ckpt.parent.parent / "eval" / "metrics.json"
        metrics = guess if guess.is_file() else None
    elif not Path(metrics).is_file():
        raise CheckpointError(f"metrics file not found: {metrics}")
    scores = json.loads(Path(metrics).read_text()) if metrics is not None else None
    out.mkdir(parents=True, exist_ok=True)
    chosen = state.get("ema", state["model"])  # under --ema the average is the model evaluation uses
    weights = {k: v.detach().contiguous().cpu() for k, v in chosen.items()}
    prior = {k: state["prior"][k].contiguous().cpu() for k in PRIOR_TENSORS}
    info = {"format": FORMAT, "step": int(state["step"]), "l1": state.get("progress", {}).get("l1"),
            "prior": {"seen": int(state["prior"]["seen"]), "capacity": int(state["prior"]["capacity"])},
            "exported_from": str(ckpt), "weights": "average" if "ema" in state else "raw"}
    texts = {"config.json": json.dumps(state["config"], indent=2) + "\n", "vidpred.json": json.dumps(info, indent=2) + "\n",
             "README.md": model_card(state, scores)}
    if scores is not None:
        texts["metrics.json"] = json.dumps(scores, indent=2) + "\n"
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(weights, str(tmp), metadata={"format": "pt", "vidpred": str(FORMAT)})
    with atomic_path(out / "prior.safetensors") as tmp:
        save_file(prior, str(tmp))
    for name, text in texts.items():  # vidpred.json last: its presence marks a whole export
        if name != "vidpred.json":
            with atomic_path(out / name) as tmp:
                tmp.write_text(text)
    with atomic_path(out / "vidpred.json") as tmp:
        tmp.write_text(texts["vidpred.json"])
    return out


def read_export(folder: str | Path) -> dict:
    """The state of an exported folder, in the shape `load_checkpoint` returns (model, config, prior,
    step, progress), so the same builders load it; CheckpointError naming a missing or bad file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} is not a whole exported vidpred model: {name} is missing "
                                  f"(an export holds {', '.join(FILES)})")
    try:
        info = json.loads((folder / "vidpred.json").read_text())
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{folder}: a JSON file could not be read ({e})") from None
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{folder / 'vidpred.json'} has format {info.get('format')!r}; this vidpred reads format {FORMAT}")
    try:
        model = load_file(str(folder / "model.safetensors"))
        prior = load_file(str(folder / "prior.safetensors"))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{folder}: the weights could not be read ({e})") from None
    missing = [k for k in PRIOR_TENSORS if k not in prior]
    if missing:
        raise CheckpointError(f"{folder / 'prior.safetensors'} lacks {', '.join(missing)}")
    prior.update(seen=info["prior"]["seen"], capacity=info["prior"]["capacity"])
    progress = {} if info.get("l1") is None else {"l1": info["l1"]}
    return {"model": model, "config": config, "prior": prior, "step": int(info["step"]), "progress": progress,
            "weights": info.get("weights", "raw")}


def model_card(state: dict, scores: dict | None) -> str:
    cfg, step = state["config"], int(state["step"])
    params = sum(v.numel() for v in state["model"].values())
    model, data, latent = cfg["model"], cfg["data"], cfg["latent"]
    lines = [
        f"# vidpred model: {cfg.get('name', 'unnamed')}", "",
        f"A {model['kind']} video predictor (vidpred) with {params / 1e6:.2f} M parameters, trained for {step} "
        f"steps of {cfg['batch_size']} clips on `{data['kind']}` data ({data['size']}x{data['size']}, "
        f"{data['channels']} channel{'s' if data['channels'] != 1 else ''}), {cfg['context']} context frames -> "
        f"{cfg['horizon']} predicted frames per training clip, seed {cfg['seed']}.", "",
        f"Network: widths {model['widths']}, window {model['window']}, decoder `{model['decoder']}`, "
        f"recurrent {str(model['recurrent']).lower()}; latent z of dimension {latent['dim']} per frame "
        f"(l1 {latent['l1']}, dropout {latent['dropout']}), futures drawn from the `{cfg['prior']['kind']}` prior.",
        "", "## Use", "", "```python", "import vidpred", "", "predictor = vidpred.load(\"THIS_FOLDER\")",
        "futures = predictor.sample(context, k=8, horizon=10, seed=0)  # context (b, t, c, H, W) in [0, 1]",
        "```", "",
    ]
    if scores is None:
        lines += ["## Evaluation", "", "Not evaluated when exported (`vidpred evaluate --ckpt=...` writes metrics.json).", ""]
        return "\n".join(lines)
    p = scores.get("protocol", {})
    lines += ["## Evaluation", "",
              f"{p.get('context')} -> {p.get('horizon')} frames, K = {p.get('samples')} futures per clip, "
              f"{p.get('clips')} clips of `{p.get('data', {}).get('kind')}` (split {p.get('split')}), seed {p.get('seed')}:", "",
              "| | PSNR | SSIM |", "|---|---|---|"]
    groups = [("best of K", scores.get("best_of_k")), ("mean of K", scores.get("mean_of_k")),
              ("deterministic (z = 0)", scores.get("deterministic"))]
    groups += [(f"{name} (floor)", group) for name, group in scores.get("floors", {}).items()]
    for name, group in groups:
        if group:
            lines.append(f"| {name} | {group['psnr']:.2f} | {group['ssim']:.4f} |")
    lines.append("")
    return "\n".join(lines)


@dataclass
class ExportConfig:
    ckpt: str = ""  # the checkpoint to export (a run's checkpoints/last.pt or best.pt); required
    out: str = ""  # the folder to write; required, and must not hold an export already
    metrics: str = ""  # the metrics.json to include (empty: the run's eval/metrics.json when there is one)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        print(__doc__.split("\n\n")[0] + "\n\nKeys:\n" + "\n".join(describe(ExportConfig())))
        return 0
    cfg = ExportConfig()
    try:
        for key, value in parse_overrides(argv).items():
            set_key(cfg, key, value)
        for key in ("ckpt", "out"):
            if not getattr(cfg, key):
                raise ConfigError(f"--{key} is required (vidpred export --ckpt=PATH --out=FOLDER)")
        folder = export(cfg.ckpt, cfg.out, metrics=cfg.metrics or None)
    except (ConfigError, CheckpointError) as e:
        print(f"vidpred export: {e}", file=sys.stderr)
        return 2
    print(f"exported {cfg.ckpt} to {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))
    return 0
