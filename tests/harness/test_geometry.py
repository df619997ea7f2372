import math

import pytest
import torch

from advbench.harness.geometry import (
    GeometryProbe,
    cosine,
    effective_rank,
    near_zero_fraction,
    singular_values,
    top_k_energy,
)


def test_rank_one_gradient():
    u, v = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, -1.0, 0.5, 2.0])
    values = singular_values(torch.outer(u, v))
    assert effective_rank(values) == pytest.approx(1.0, abs=1e-4)
    assert top_k_energy(values, 1) == pytest.approx(1.0, abs=1e-6)


def test_equal_and_unequal_spectra():
    values = singular_values(torch.eye(4))
    assert effective_rank(values) == pytest.approx(4.0)
    assert top_k_energy(values, 1) == pytest.approx(0.25)
    # singular values 3 and 1: p = .75, .25 -> exp(-(.75 ln .75 + .25 ln .25)); energy 9 / 10
    values = singular_values(torch.diag(torch.tensor([3.0, 1.0])))
    assert effective_rank(values) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert top_k_energy(values, 1) == pytest.approx(0.9)
    assert effective_rank(singular_values(torch.zeros(3, 3))) == 0.0


def test_near_zero_fraction_and_cosine():
    grad = torch.tensor([[1.0, 0.0, 1e-5], [0.5, 0.0, -2.0]])
    assert near_zero_fraction(grad, 1e-3) == pytest.approx(3 / 6)  # 0, 0 and 1e-5 <= 2e-3
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert cosine(torch.zeros(2), torch.ones(2)) == 0.0


def test_probe_reads_matching_gradients_every_step_and_svd_every_n():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(3, 2, bias=False))
    probe = GeometryProbe(model, [r"^0\.weight$"], every=2, top_k=1, zero_tol=1e-3)
    outs = []
    for step in (1, 2):
        model.zero_grad()
        model(torch.ones(1, 4)).sum().backward()
        outs.append(probe.observe(step))
    assert outs[0] == {}  # step 1: no previous gradient, not an SVD step
    assert outs[1]["geometry/0.weight/cosine_prev"] == pytest.approx(1.0)  # same gradient twice
    # d sum / d W0 = (column sums of W1) outer ones: rank one
    assert outs[1]["geometry/0.weight/effective_rank"] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="match no 2-D parameter"):
        GeometryProbe(model, ["nothing"], 1, 1, 1e-3)
