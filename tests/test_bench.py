"""The measuring instruments of bench/: FLOP counts, peak memory, and the quality table's JSON."""

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import tiny_args
from vidpred.build import load_predictor
from vidpred.config import parse_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import evaluation_cost  # noqa: E402
import oracle  # noqa: E402
import precision  # noqa: E402
import quality  # noqa: E402
import teacher_forced  # noqa: E402
import throughput  # noqa: E402


def _tiny_batch(cfg):
    return torch.rand(2, cfg.context + cfg.horizon, 1, cfg.data.size, cfg.data.size)


def test_flop_counter_agrees_with_the_layer_shapes(tmp_path):
    cfg = parse_args(tiny_args(tmp_path))
    check = throughput.flop_check(cfg, torch.device("cpu"), _tiny_batch(cfg))
    assert check["decoder_forward_counted"] == check["decoder_forward_analytic"] > 0
    assert check["layer_counted"] == check["layer_analytic"] > 0


def test_an_inference_step_costs_a_decoder_forward_and_a_backward_to_z_only(tmp_path):
    """Input gradients cost what the forward costs, weight gradients are not computed, and the 1x1
    skip fusions need no input gradient (skips are detached): between 1x and 2x the forward."""
    cfg = parse_args(tiny_args(tmp_path, "--latent.steps=2"))
    video = _tiny_batch(cfg)
    model = throughput.build_model(cfg)
    outside, per_step = throughput.step_flops(cfg, model, video)
    forward = throughput.flop_check(cfg, torch.device("cpu"), video)["decoder_forward_counted"]
    assert forward < per_step < 2 * forward
    assert outside > 3 * forward  # a whole step: encoder, decoder, amortized encoder, backward with weights
    no_latent = parse_args(tiny_args(tmp_path, "--model.kind=deterministic"))
    assert throughput.step_flops(no_latent, throughput.build_model(no_latent), video)[1] == 0


def test_throughput_counts_no_inference_passes_for_the_fused_step(tmp_path):
    """The one step fused into the training pass (the default) makes no inference passes: its FLOPs
    are the step's without inference; the separate step adds one decoder forward and backward; the
    variants measure both."""
    base = parse_args(tiny_args(tmp_path))
    labels = [label for label, _ in throughput.variants(base, ())]
    assert "energy, N = 1 (fused)" in labels and "energy, N = 1 (separate)" in labels
    video = _tiny_batch(base)
    bench = throughput.BenchConfig(warmup_steps=0, timed_steps=1, samples=2, sample_horizon=2)
    rows = {}
    for label, cfg in throughput.variants(base, (1,)):
        if label.startswith("energy"):
            rows[label] = throughput.measure(label, cfg, bench, torch.device("cpu"), video)
    fused, separate = rows["energy, N = 1 (fused)"], rows["energy, N = 1 (separate)"]
    assert fused["fused"] and not separate["fused"]
    assert fused["flops_per_step"] == fused["flops_outside_inference"] and fused["inference_s"] == 0.0
    assert separate["flops_per_step"] == separate["flops_outside_inference"] + separate["flops_per_inference_step"]
    assert separate["inference_s"] > 0


def test_peak_memory_sees_a_temporary_allocation():
    with throughput.PeakMemory(torch.device("cpu")) as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    assert 60 < peak.mib < 200


def test_quality_bench_trains_evaluates_and_writes_its_table(tmp_path, capsys):
    out, table = tmp_path / "q", tmp_path / "q.json"
    model_args = [a for a in tiny_args(tmp_path) if not a.startswith(("--out=", "--steps=", "--log_every=",
                                                                       "--ckpt_every=", "--wandb="))]
    code = quality.main(["--models=deterministic", "--minutes=0.01", "--clips=3", "--samples=4", "--eval_horizon=4",
                         "--warmup_steps=2", f"--out={out}", f"--json={table}", *model_args])
    assert code == 0
    report = json.loads(table.read_text())
    (row,) = report["models"]
    assert row["model"] == "deterministic" and 1 <= row["steps"] <= row["planned_steps"]
    assert row["diversity"] == 0.0 and 0.0 <= row["coverage"] <= 1.0  # discrete bounces: futures are listed
    assert set(row["best_of_k"]) == {"psnr", "psnr_ci95", "ssim", "ssim_ci95", "mse"}
    assert (out / "deterministic" / "eval" / "metrics.json").is_file()
    assert "deterministic" in capsys.readouterr().out
    assert quality.main(["--models=gan"]) == 2


def test_quality_bench_at_equal_steps_compares_models_clip_by_clip(tmp_path, capsys):
    out, table = tmp_path / "q", tmp_path / "q.json"
    model_args = [a for a in tiny_args(tmp_path) if not a.startswith(("--out=", "--steps=", "--log_every=",
                                                                       "--ckpt_every=", "--wandb="))]
    code = quality.main(["--models=deterministic,energy", "--equal_steps=3", "--reference=deterministic",
                         "--clips=3", "--samples=4", "--eval_horizon=4", f"--out={out}", f"--json={table}",
                         *model_args])
    assert code == 0
    det, energy = json.loads(table.read_text())["models"]
    assert det["steps"] == energy["steps"] == det["planned_steps"] == 3
    assert len(energy["per_clip"]["psnr"]) == 3 and len(energy["per_frame"]["ssim"]) == 4
    mean, half = quality.paired(energy["per_clip"]["psnr"], det["per_clip"]["psnr"])
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("energy ")]
    assert row.split()[-6:-3] == f"{mean:+.2f} ± {half:4.2f}".split()  # energy's row ends with its paired difference


def test_paired_interval_is_the_standard_error_of_the_differences():
    mean, half = quality.paired([3.0, 5.0, 7.0, 9.0], [1.0, 2.0, 3.0, 4.0])  # differences 2, 3, 4, 5
    assert mean == 3.5 and half == pytest.approx(1.96 * (5 / 3) ** 0.5 / 2)
    assert quality.paired([1.0, 2.0], [1.0, 2.0]) == (0.0, 0.0)  # same clips, same scores: no doubt


def test_pair_compares_models_of_two_reports_clip_by_clip_and_refuses_other_clips(tmp_path, capsys):
    import pair

    def report(path, models, clips=3):
        rows = [{"model": name, "steps": 10, "coverage": 0.5, "best_of_k": {"psnr": sum(p) / 3, "ssim": sum(s) / 3},
                 "per_clip": {"psnr": p, "ssim": s}} for name, p, s in models]
        bench = {"clips": clips, "samples": 4, "eval_context": 5, "eval_horizon": 20, "seed": 0}
        path.write_text(json.dumps({"bench": bench, "common_overrides": ["--data.objects=1"], "models": rows}))
        return str(path)

    old = report(tmp_path / "old.json", [("energy", [10.0, 12.0, 14.0], [0.5, 0.6, 0.7])])
    new = report(tmp_path / "new.json", [("noisy", [11.0, 14.0, 17.0], [0.5, 0.6, 0.7])])
    assert pair.main([old, new, "--reference=energy"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("noisy"))
    assert "+2.00 ± 1.13" in line and "+0.0000 ± 0.0000" in line and "new.json" in line  # differences 1, 2, 3
    other = report(tmp_path / "other.json", [("noisy", [1.0] * 4, [0.1] * 4)], clips=4)
    with pytest.raises(SystemExit, match="clips=4 but .*old.json has clips=3"):
        pair.main([old, other])
    with pytest.raises(SystemExit, match="reference=vae: no such model"):
        pair.main([old, new, "--reference=vae"])
    assert pair.main(["--bogus"]) == 2


def test_pair_reads_evaluate_results_and_pairs_runs_with_each_other_and_the_floors(tmp_path, capsys):
    import pair

    def metrics(run, psnr, ssim, folder="eval", clips=3, motion=False):
        group = lambda p, s, f, g: {"psnr": sum(p) / len(p), "ssim": sum(s) / len(s), "psnr_per_clip": p,  # noqa: E731
                                    "ssim_per_clip": s, "psnr_per_frame": list(f), "ssim_per_frame": list(g)}
        protocol = {"context": 5, "horizon": 2, "samples": 4, "clips": clips, "seed": 0, "split": "test",
                    "data": {"kind": "sprites"}, "checkpoint_step": 30}
        floors = {"blank": group([9.0] * clips, [0.4] * clips, (11.0, 11.0), (0.4, 0.4)),
                  "copy_last": group([8.0] * clips, [0.3] * clips, (9.0, 9.0), (0.3, 0.3))}
        if motion:  # files from 2026-12-06 on: a third floor
            floors["constant_motion"] = group([11.0] * clips, [0.45] * clips, (13.0, 9.0), (0.45, 0.45))
        path = tmp_path / run / folder / "metrics.json"
        path.parent.mkdir(parents=True)
        best = group(psnr, ssim, (12.0, 10.0), (0.5, 0.35))
        path.write_text(json.dumps({"protocol": protocol, "best_of_k": best, "floors": floors, "coverage": None}))
        return str(path)

    a = metrics("a", [10.0, 12.0, 14.0], [0.5, 0.6, 0.7])
    b = metrics("b", [11.0, 14.0, 17.0], [0.5, 0.6, 0.7], folder="eval_5_2")
    assert pair.main([a, b]) == 0  # the first run is the reference
    lines = capsys.readouterr().out.splitlines()
    assert "vs a PSNR" in lines[0]
    row = next(x for x in lines if x.startswith("b/eval_5_2 "))
    assert "+2.00 ± 1.13" in row and "+0.0000 ± 0.0000" in row  # differences 1, 2, 3
    # per frame: PSNR 12, 10 and SSIM 0.5, 0.35 against blank's 11, 0.4 and copy_last's 9, 0.3
    assert row.split()[5:10] == ["1;", "1", "2;", "2", "-"]  # these files have no constant-motion floor
    newer = metrics("d", [11.0, 14.0, 17.0], [0.5, 0.6, 0.7], motion=True)
    assert pair.main([newer, "--reference=constant_motion"]) == 0
    rows = {x.split()[0]: x for x in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == {"d", "blank", "copy_last", "constant_motion"}
    assert rows["d"].split()[5:11] == ["1;", "1", "2;", "2", "1;", "1"]  # PSNR 10 > 9 at frame 2, SSIM 0.5 > 0.45 at 1
    assert "+3.00 ± 3.39" in rows["d"]  # 11, 14, 17 against the floor's 11 on each clip: differences 0, 3, 6
    assert pair.main([a, "--reference=copy_last"]) == 0
    row = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("a "))
    assert "+4.00 ± 2.26" in row and "+0.3000 ± 0.1132" in row  # best of K against copying the last frame
    other = metrics("c", [1.0] * 4, [0.1] * 4, clips=4)
    with pytest.raises(SystemExit, match="clips=4 but .*a/eval/metrics.json has clips=3"):
        pair.main([a, other])
    report = tmp_path / "bench.json"
    report.write_text(json.dumps({"bench": {}, "common_overrides": [], "models": []}))
    with pytest.raises(SystemExit, match="not both"):
        pair.main([a, str(report)])
    broken = tmp_path / "broken" / "eval" / "metrics.json"
    broken.parent.mkdir(parents=True)
    broken.write_text(json.dumps({"protocol": {}, "best_of_k": {}}))
    with pytest.raises(SystemExit, match="broken/eval/metrics.json: not an evaluate.py metrics.json .*KeyError"):
        pair.main([str(broken)])


def test_oracle_scores_true_futures_and_refuses_what_it_cannot_compare(tmp_path, capsys):
    table = tmp_path / "o.json"
    small = ["--clips=3", "--samples=5", "--horizon=6", "--data.size=16", "--data.sprite_min=4", "--data.sprite_max=5"]
    # deterministic bounces have one future: every draw is it, so best of K and the mean are exact (the PSNR cap)
    assert oracle.main([*small, "--data.bounce=deterministic", f"--json={table}"]) == 0
    figures = json.loads(table.read_text())
    assert figures["best_of_k"]["psnr"] == 100.0 and figures["deterministic"]["psnr"] == 100.0
    assert figures["best_of_k"]["ssim"] == pytest.approx(1.0)
    assert figures["blank"]["psnr"] < 30 and len(figures["blank"]["psnr_per_frame"]) == 6
    assert "above the blank floor at 6 of 6 frames in PSNR" in capsys.readouterr().out
    # stochastic bounces: the K draws part, so their mean is no longer exact, and best of K is at least one draw
    assert oracle.main([*small, "--samples=20", f"--json={table}"]) == 0
    figures = json.loads(table.read_text())
    assert figures["deterministic"]["psnr"] < 100.0
    assert figures["best_of_k"]["psnr"] >= figures["mean_of_k"]["psnr"]
    # a model's evaluation is printed beside the ceiling only if it scored the same clips
    model = {"floors": {"blank": figures["blank"]}, "best_of_k": figures["mean_of_k"]}
    (tmp_path / "metrics.json").write_text(json.dumps(model))
    capsys.readouterr()
    assert oracle.main([*small, "--samples=20", f"--eval={tmp_path / 'metrics.json'}"]) == 0
    assert "the model's best of K (--eval)" in capsys.readouterr().out
    assert oracle.main([*small, "--samples=20", "--clips=2", f"--eval={tmp_path / 'metrics.json'}"]) == 2
    assert "pass the same --clips" in capsys.readouterr().err
    assert oracle.main([*small, "--data.kind=fork"]) == 2
    assert "needs a generator of moving objects" in capsys.readouterr().err
    # bad numbers and an unreadable --eval are refused before any clip is drawn, naming what is wrong
    assert oracle.main([*small, "--samples=0"]) == 2
    assert "samples=0: expected at least 1" in capsys.readouterr().err
    assert oracle.main([*small, "--context=1"]) == 2
    assert "context=1: expected at least 2 frames" in capsys.readouterr().err
    (tmp_path / "other.json").write_text(json.dumps({"best_of_k": {"psnr": 1.0}}))
    for bad, why in ((tmp_path / "none.json", "FileNotFoundError"), (tmp_path / "other.json", "KeyError: 'floors'")):
        assert oracle.main([*small, "--data.kind=fork", f"--eval={bad}"]) == 2
        assert f"eval={bad}: not an evaluate.py metrics.json ({why}" in capsys.readouterr().err


def test_evaluation_cost_times_the_model_its_options_describe(tmp_path, capsys):
    ckpt = evaluation_cost.make_checkpoint(tmp_path / "b.pt", size=16, channels=1,
                                           options=["--model.recall=true", "--model.skips=context"])
    model, cfg, _, _ = load_predictor(ckpt)
    assert cfg.model.recall and model.decoder.recall is not None and cfg.data.size == 16 and cfg.model.skips == "context"
    parts, inside = evaluation_cost.time_parts(ckpt, samples=8, horizon=4, clips=2)  # some futures run the network
    assert set(parts) == {"rollouts", "deterministic", "psnr/ssim/mse", "diversity"} and min(parts.values()) > 0
    # the rollouts' own parts, and the rest of their time
    assert {"begin", "condition", "decode_step", "advance", "sample", "other"} <= set(inside)
    assert set(inside) <= set(evaluation_cost.ROLLOUT_PARTS) | {"other"} and min(inside.values()) >= 0
    assert evaluation_cost.main(["--model.recal=true"]) == 2  # refused before any model is built
    assert "model.recal" in capsys.readouterr().err
    assert evaluation_cost.main([f"--ckpt={ckpt}", "--model.recall=true"]) == 2  # a checkpoint is its own model
    assert "--ckpt times its own model; drop --model.recall=true" in capsys.readouterr().err
    assert evaluation_cost.main([f"--ckpt={tmp_path / 'none.pt'}"]) == 2
    assert f"--ckpt={tmp_path / 'none.pt'}: no such checkpoint file" in capsys.readouterr().err


def test_rollout_part_timers_count_each_part_without_the_timed_parts_it_calls(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(evaluation_cost.time, "perf_counter", lambda: clock[0])

    def takes(seconds, then=None):
        def part(*args, **kwargs):
            clock[0] += seconds
            return then() if then else "out"
        return part
    model = types.SimpleNamespace(prior=types.SimpleNamespace(sample=takes(1.0)))
    for name in evaluation_cost.ROLLOUT_PARTS:
        if name != "sample":
            setattr(model, name, takes(0.5))
    model.row_glide = takes(3.0)
    model.condition = takes(2.0, then=lambda: model.row_glide())  # as VideoPredictor.condition calls row_glide
    totals = dict.fromkeys(evaluation_cost.ROLLOUT_PARTS, 0.0)
    evaluation_cost.timed_methods(model, totals)
    assert model.condition() == "out" and model.prior.sample(1, rows=None) == "out"
    assert totals == {**dict.fromkeys(evaluation_cost.ROLLOUT_PARTS, 0.0), "condition": 2.0, "row_glide": 3.0,
                      "sample": 1.0}


def test_precision_bench_times_each_variant_from_the_same_weights_and_refuses_unknown_ones(tmp_path, capsys):
    table = tmp_path / "p.json"
    model_args = [a for a in tiny_args(tmp_path) if not a.startswith(("--out=", "--wandb="))]
    assert precision.main(["--variants=fp32,bf16", "--rounds=2", "--warmup_rounds=1", f"--json={table}",
                           *model_args]) == 0
    report = json.loads(table.read_text())
    assert [v["variant"] for v in report["variants"]] == ["fp32, eager", "bf16, eager"]
    first, bf16 = report["variants"]
    assert first["speed_vs_first"] == 1.0 and len(first["step_times_s"]) == len(bf16["step_times_s"]) == 2
    assert bf16["speed_vs_first"] == pytest.approx(first["step_s"] / bf16["step_s"])
    assert report["batch"] == 4 and not bf16["compiled"] and min(first["first_step_s"], bf16["step_s"]) > 0
    assert "bf16, eager" in capsys.readouterr().out
    # the same seed gives every variant the same starting weights
    a, b = (precision.Variant(parse_args(model_args), "fp32", False) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))
    assert precision.main(["--variants=fp32,fp16"]) == 2
    assert "fp16" in capsys.readouterr().err


def test_teacher_forced_bench_decodes_three_ways_and_refuses_bad_input(tmp_path, capsys):
    from vidpred.training import train

    small = ["--clips=3", "--samples=4", "--context=3", "--horizon=3"]
    for kind in ("energy", "deterministic"):
        train(parse_args(tiny_args(tmp_path / kind, f"--model.kind={kind}")))
    energy, deterministic = (str(tmp_path / kind / "checkpoints" / "last.pt") for kind in ("energy", "deterministic"))
    table = tmp_path / "tf.json"
    assert teacher_forced.main([energy, deterministic, *small, f"--json={table}"]) == 0
    figures = json.loads(table.read_text())["checkpoints"]
    assert figures[energy]["kind"] == "energy" and figures[energy]["step"] == 6
    for group in teacher_forced.GROUPS:
        assert len(figures[energy][group]["psnr_per_frame"]) == 3 and 0 < figures[energy][group]["ssim"] <= 1
    # no latent: the inferred z, the guess and every draw are z = 0, so the three lines agree
    det = figures[deterministic]
    assert det["inferred"] == det["guess"] == det["best_of_k"]
    out = capsys.readouterr().out
    assert "best of K prior draws" in out and "teacher-forced, 3 clips, 3 -> 3, K = 4" in out
    assert teacher_forced.main([*small]) == 2
    assert "expected one or more checkpoints" in capsys.readouterr().err
    assert teacher_forced.main([energy, "--bogus=1"]) == 2
    assert "--bogus" in capsys.readouterr().err
    assert teacher_forced.main([str(tmp_path / "none.pt"), *small]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert teacher_forced.main([energy, "--clips=3", "--samples=0"]) == 2
    assert "at least 1, got 3, 0" in capsys.readouterr().err
