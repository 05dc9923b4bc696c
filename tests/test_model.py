import pytest
import torch
from torch import nn

from vidpred.model import ConditionalPrior, Recall, VideoPredictor


@pytest.mark.parametrize("channels, size, widths, window, skip_frames", [
    (1, 16, (8, 16), 1, 1), (3, 32, (8, 16, 16), 2, 2), (1, 32, (8, 8, 16, 16), 3, 2),
    (1, 16, (9, 18), 2, 1)])  # 9 and 18 channels: GroupNorm refused the 2 and 4 groups norm() used to ask for
def test_shapes_through_the_model(channels, size, widths, window, skip_frames):
    model = VideoPredictor(channels=channels, size=size, widths=widths, window=window, blocks=1, z_dim=5,
                           skip_frames=skip_frames)
    video = torch.rand(2, 7, channels, size, size)
    cond = model.teacher_forced(video, context=4)
    assert cond.h.shape == (2 * 3, widths[-1], size // 2 ** (len(widths) - 1), size // 2 ** (len(widths) - 1))
    assert cond.last.shape == (6, channels, size, size)
    assert torch.equal(cond.last[1], video[0, 4])  # target frame 5 of clip 0 sees frame 4 last
    logits = model.decode(cond, torch.randn(6, 5))
    assert logits.shape == (6, channels, size, size)
    z0 = model.amortized_latent(cond, video[:, 4:].flatten(0, 1))
    assert z0.shape == (6, 5)
    frames, zs = model.rollout(video[:, :4], horizon=5, draw_z=lambda h, k: torch.zeros(h.shape[0], 5))
    assert frames.shape == (2, 5, channels, size, size) and zs.shape == (2, 5, 5)
    # the rollout's first frame is the teacher-forced prediction from the same true context
    first = model.teacher_forced(video[:, :5], context=4)
    assert torch.allclose(frames[:, 0], torch.sigmoid(model.decode(first, torch.zeros(2, 5))), atol=1e-6)


def test_a_residual_decoder_corrects_the_last_frame_in_logit_space():
    """model.residual=True: the same weights give the plain decoder's logits plus logit(last frame),
    so at initialization (a constant output layer) the prediction follows the last frame."""
    torch.manual_seed(0)
    plain = VideoPredictor(channels=1, size=16, widths=(8, 16), window=2, blocks=1, z_dim=3)
    residual = VideoPredictor(channels=1, size=16, widths=(8, 16), window=2, blocks=1, z_dim=3, residual=True)
    residual.load_state_dict(plain.state_dict())
    video = torch.rand(2, 5, 1, 16, 16)
    cond = plain.teacher_forced(video, context=3)
    z = torch.randn(4, 3)
    last = video[:, 2:4].flatten(0, 1)
    assert torch.equal(cond.last, last)
    expected = plain.decode(cond, z) + torch.logit(last.clamp(0.02, 0.98))
    assert torch.allclose(residual.decode(cond, z), expected, atol=1e-6)
    bright, dark = last > 0.9, last < 0.1
    predicted = torch.sigmoid(residual.decode(cond, z))
    assert predicted[bright].min() > predicted[dark].max()  # brighter where the last frame was bright
    with pytest.raises(ValueError, match="kernels decoder already moves"):
        VideoPredictor(channels=1, size=16, widths=(8, 16), window=2, residual=True, output="kernels")


@pytest.mark.parametrize("skips, recurrent, content, recall", [
    ("recent", False, 0, False), ("context", False, 0, False), ("both", False, 0, False), ("context", True, 0, False),
    ("recent", False, 4, False), ("context", True, 4, False), ("recent", False, 0, True), ("recent", True, 0, True)])
def test_rollout_matches_teacher_forcing_on_its_own_predictions(skips, recurrent, content, recall):
    """Feeding a rollout's own frames back as 'truth' must reproduce the rollout's logits."""
    torch.manual_seed(0)
    model = VideoPredictor(channels=1, size=16, widths=(8, 16), window=2, blocks=1, z_dim=3, skip_frames=2,
                           skips=skips, recurrent=recurrent, content=content, recall=recall).eval()
    nn.init.normal_(model.decoder.out.weight, std=0.5)  # the zero-initialized output layer would hide the skips
    if recall:
        nn.init.normal_(model.decoder.recall.out.weight, std=0.5)  # and the zero-initialized recall
    context = torch.rand(2, 3, 1, 16, 16)
    z = torch.randn(2, 4, 3)
    frames, _ = model.rollout(context, horizon=4, draw_z=lambda h, k: z[:, k])
    video = torch.cat([context, frames], dim=1)
    cond = model.teacher_forced(video, context=3)
    replay = torch.sigmoid(model.decode(cond, z.flatten(0, 1))).view(2, 4, 1, 16, 16)
    assert torch.allclose(replay, frames, atol=1e-5)


def test_wrong_layout_is_refused():
    model = VideoPredictor(channels=1, size=16, widths=(8, 16), window=2)
    with pytest.raises(ValueError, match=r"shape \(2, 5, 16, 16, 1\); expected \(b, t, 1, 16, 16\)"):
        model.teacher_forced(torch.rand(2, 5, 16, 16, 1), context=3)
    with pytest.raises(ValueError, match="needs at least 3"):
        VideoPredictor(channels=1, size=16, widths=(8, 16), window=3).rollout(torch.rand(1, 2, 1, 16, 16), 2,
                                                                              lambda h, k: torch.zeros(1, 8))


@pytest.mark.parametrize("seed", [0, 1])
def test_conditional_prior_puts_mass_on_zero_and_samples_it(seed):
    """Half the latents exactly zero, half a code with noise 0.1: the prior learns both parts."""
    torch.manual_seed(seed)
    prior = ConditionalPrior(width=16, z_dim=4, components=2)
    h = torch.randn(64, 16, 4, 4)
    code = torch.tensor([1.0, -1.0, 0.5, 2.0])
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    noise = torch.Generator().manual_seed(seed)
    for _ in range(600):
        target = torch.zeros(64, 4)
        target[::2] = code + 0.1 * torch.randn(32, 4, generator=noise)
        opt.zero_grad()
        prior.nll(h, target).mean().backward()
        opt.step()
    draws = prior.sample(h.repeat(8, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    zero_share = (draws == 0).all(dim=1).float().mean().item()
    assert 0.4 < zero_share < 0.6
    nonzero = draws[(draws != 0).any(dim=1)]
    assert torch.allclose(nonzero.mean(dim=0), code, atol=0.2)
    assert torch.all((nonzero.std(dim=0) > 0.05) & (nonzero.std(dim=0) < 0.2))


def test_context_skips_stay_the_last_context_frames_for_every_target():
    """skips="context": every predicted frame's skips are the last S context frames' features (SVG's
    fixed skips), so what a rollout feeds back reaches the decoder only through the state h;
    "both" hands the decoder the recent and the context frames' features side by side."""
    torch.manual_seed(0)
    video = torch.rand(2, 7, 1, 16, 16)
    fixed = VideoPredictor(channels=1, size=16, widths=(8, 16), window=2, z_dim=3, skip_frames=2, skips="context").eval()
    cond = fixed.teacher_forced(video, context=3)
    feats = fixed.encode(video[:, 1:3])  # the last two context frames
    for level, f in zip(cond.skips, feats):
        per_target = level.view(2, 4, *level.shape[1:])
        assert torch.allclose(per_target, f.flatten(1, 2)[:, None].expand_as(per_target), atol=1e-6)
    changed = video.clone()
    changed[:, 3:] = torch.rand(2, 4, 1, 16, 16)  # other future frames: other states, the same skips
    other = fixed.teacher_forced(changed, context=3)
    assert all(torch.equal(a, b) for a, b in zip(cond.skips, other.skips))
    assert not torch.equal(cond.h[2:4], other.h[2:4])
    both = VideoPredictor(channels=1, size=16, widths=(8, 16), window=2, z_dim=3, skip_frames=2, skips="both")
    assert both.decoder.skip_fuses[0].in_channels == 2 * 2 * 8
    assert [s.shape[1] for s in both.teacher_forced(video, context=3).skips] == [32, 64]
    with pytest.raises(ValueError, match="skips='last': expected one of recent, context, both"):
        VideoPredictor(channels=1, size=16, widths=(8, 16), window=2, skips="last")


def test_the_content_code_reads_the_context_only_and_reaches_every_predicted_frame():
    """model.content = D: one code per clip from the context frames, the same for all its predicted
    frames, blind to the future frames; the decoder reads it."""
    torch.manual_seed(0)
    model = VideoPredictor(channels=1, size=16, widths=(8, 16), window=2, z_dim=3, content=5).eval()
    nn.init.normal_(model.decoder.out.weight, std=0.5)
    video = torch.rand(2, 6, 1, 16, 16)
    cond = model.teacher_forced(video, context=3)
    assert cond.content.shape == (6, 5)
    assert torch.equal(cond.content[0], cond.content[2]) and not torch.equal(cond.content[0], cond.content[3])
    changed = video.clone()
    changed[:, 3:] = torch.rand(2, 3, 1, 16, 16)
    assert torch.equal(model.teacher_forced(changed, context=3).content, cond.content)
    z = torch.zeros(6, 3)
    assert not torch.allclose(model.decode(cond, z), model.decode(cond._replace(content=torch.zeros_like(cond.content)), z))
    state = model.begin(video[:, :3], repeats=torch.tensor([2, 1]))
    assert torch.allclose(state.content, cond.content[[0, 0, 3]], atol=1e-6)


def test_recall_attends_to_the_context_bottlenecks_and_starts_as_a_no_op():
    """model.recall: every predicted frame's decoder reads the bottlenecks of the context frames the state
    reads (blind to the future frames); untrained it changes nothing; trained, it is an attention
    that fetches a value from wherever its key matches, at any position."""
    torch.manual_seed(0)
    video = torch.rand(2, 6, 1, 16, 16)
    plain = VideoPredictor(channels=1, size=16, widths=(8, 16), window=2, z_dim=3).eval()
    model = VideoPredictor(channels=1, size=16, widths=(8, 16), window=2, z_dim=3, recall=True).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    cond = model.teacher_forced(video, context=3)
    # (b T) rows: the keys (32) and values (16) of the 2 x 8 x 8 bottleneck positions of the window's 2 context frames
    assert cond.recall.shape == (6, 2 * 8 * 8, 32 + 16)
    bottlenecks = model.encode(video[:, 1:3])[-1]  # (2, 2, 16, 8, 8)
    position = bottlenecks[:, 1, :, 5, 2]  # frame 1, row 5, column 2: entry 1 * 64 + 5 * 8 + 2
    assert torch.allclose(cond.recall.view(2, 3, 128, 48)[:, :, 64 + 40 + 2, :32],
                          (position @ model.decoder.recall.key.weight[:, :, 0, 0].T + model.decoder.recall.key.bias)[:, None].expand(2, 3, 32), atol=1e-5)
    assert torch.allclose(cond.recall.view(2, 3, 128, 48)[:, :, 64 + 40 + 2, 32:],
                          (position @ model.decoder.recall.value.weight[:, :, 0, 0].T + model.decoder.recall.value.bias)[:, None].expand(2, 3, 16), atol=1e-5)
    changed = video.clone()
    changed[:, 3:] = torch.rand(2, 3, 1, 16, 16)
    assert torch.equal(model.teacher_forced(changed, context=3).recall, cond.recall)
    nn.init.normal_(plain.decoder.out.weight, std=0.5)
    model.decoder.out.load_state_dict(plain.decoder.out.state_dict())
    z = torch.randn(6, 3)
    assert torch.allclose(model.decode(cond, z), plain.decode(plain.teacher_forced(video, context=3), z), atol=1e-6)
    state = model.begin(video[:, :3], repeats=torch.tensor([2, 1]))
    assert torch.allclose(state.recall, cond.recall[[0, 0, 3]], atol=1e-6)
    # the attention itself: a memory holding one bright position; queries that match its key fetch its value
    recall = Recall(4, dim=4)
    with torch.no_grad():
        for conv in (recall.query, recall.key, recall.value, recall.out):
            conv.weight.copy_(torch.eye(4)[:, :, None, None])
            conv.bias.zero_()
        recall.query.weight.mul_(20.0)  # sharp attention
    memory = torch.zeros(1, 2, 4, 3, 3)
    memory[0, 1, :, 2, 0] = torch.tensor([1.0, 0.0, 0.0, 0.5])  # frame 1, position (2, 0)
    x = torch.zeros(1, 4, 3, 3)
    x[0, 0, 0, 2] = 1.0  # one position whose query matches that key, elsewhere the mean of the memory
    out = recall(x, recall.keys_values(memory))
    assert torch.allclose(out[0, :, 0, 2], x[0, :, 0, 2] + torch.tensor([1.0, 0.0, 0.0, 0.5]), atol=1e-3)
    assert torch.allclose(out[0, :, 1, 1], memory[0, 1, :, 2, 0] / 18, atol=1e-4)  # a query of zeros: uniform
