"""The latent bank: a ring buffer of inferred z*, and the spike-and-Laplace fit `fitted` samples from."""

import pytest
import torch

from vidpred.prior import LatentBank


def test_the_bank_keeps_the_last_latents_in_ring_order_and_round_trips():
    bank = LatentBank(dim=2, capacity=4)
    bank.add(torch.arange(6.0).view(3, 2))
    assert len(bank) == 3
    bank.add(torch.tensor([[10.0, 11.0], [12.0, 13.0]]))  # overwrites the oldest row
    assert len(bank) == 4 and bank.seen == 5
    assert sorted(bank.z[:, 0].tolist()) == [2.0, 4.0, 10.0, 12.0]
    again = LatentBank.from_state_dict(bank.state_dict())
    again.add(torch.tensor([[20.0, 21.0]]))  # the write position survives the round trip: row 2.0 goes next
    assert sorted(again.z[:, 0].tolist()) == [4.0, 10.0, 12.0, 20.0]
    draws = bank.sample(50, "bank", generator=torch.Generator().manual_seed(0))
    assert {tuple(r) for r in draws.tolist()} <= {tuple(r) for r in bank.z.tolist()}  # rows of the bank, unchanged


def test_fit_measures_each_dimension_s_zeros_median_and_spread():
    z = torch.tensor([[0.0, 1.0], [0.0, 2.0], [3.0, 0.0], [5.0, 6.0]])
    bank = LatentBank(dim=2, capacity=8)
    bank.add(z)
    bank.fit()
    assert bank.zero_prob.tolist() == [0.5, 0.25]
    # nonzero values: dim 0 {3, 5} (torch's median takes the lower middle: 3), dim 1 {1, 2, 6} (median 2)
    assert bank.loc.tolist() == [3.0, 2.0]
    assert torch.allclose(bank.scale, torch.tensor([(0 + 2) / 2, (1 + 0 + 4) / 3]))


def test_fitted_samples_have_the_fitted_zero_share_median_and_spread():
    g = torch.Generator().manual_seed(0)
    n = 20000
    laplace = torch.distributions.Laplace(torch.tensor([1.5, -0.5]), torch.tensor([0.4, 2.0]))
    z = laplace.sample((n,))
    z[torch.rand(n, generator=g) < 0.7, 0] = 0.0  # dim 0: 70% exact zeros (a sparse code)
    bank = LatentBank(dim=2, capacity=n)
    bank.add(z)
    bank.fit()
    draws = bank.sample(n, "fitted", generator=torch.Generator().manual_seed(1))
    assert (draws[:, 0] == 0).float().mean().item() == pytest.approx(0.7, abs=0.02)
    assert (draws[:, 1] == 0).float().mean().item() == 0.0
    for d, (loc, scale) in enumerate([(1.5, 0.4), (-0.5, 2.0)]):
        values = draws[draws[:, d] != 0, d]
        assert values.median().item() == pytest.approx(loc, abs=0.06 * scale + 0.02)
        assert (values - loc).abs().mean().item() == pytest.approx(scale, rel=0.06)


def test_an_empty_bank_and_an_unknown_kind_are_refused():
    bank = LatentBank(dim=2, capacity=4)
    with pytest.raises(ValueError, match="holds no latents"):
        bank.fit()
    with pytest.raises(ValueError, match="bank is empty"):
        bank.sample(1, "bank")
    bank.add(torch.ones(1, 2))
    with pytest.raises(ValueError, match="'learned'"):
        bank.sample(1, "learned")
