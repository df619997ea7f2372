"""Gradient geometry ("On the Policy Gradient Foundations of GRPO", arXiv 2606.29238): how many
directions a step's gradient uses and how sparse it is, for chosen weight matrices.

    effective rank   exp(H(p)), p_i = s_i / sum_j s_j over the singular values (Roy & Vetterli 2007):
                     1 for a rank-one gradient, n for n equal singular values
    top-k energy     sum_{i<=k} s_i^2 / sum_j s_j^2: the share of the squared norm in k directions
    near-zero        fraction of entries with |g| <= zero_tol * max |g|
    cosine           between this step's gradient and the previous step's (computed every step)

The SVD metrics run every ``geometry.every`` steps; the cosine every step (a dot product).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(matrix.detach().float())


def effective_rank(values: torch.Tensor) -> float:
    """exp of the entropy of the normalised singular values; 0 for a zero matrix."""
    total = values.sum()
    if total <= 0:
        return 0.0
    p = values / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def top_k_energy(values: torch.Tensor, k: int) -> float:
    energy = values.pow(2)
    total = energy.sum()
    return float(energy[:k].sum() / total) if total > 0 else 0.0


def near_zero_fraction(matrix: torch.Tensor, zero_tol: float) -> float:
    magnitude = matrix.detach().abs()
    peak = magnitude.max()
    return float((magnitude <= zero_tol * peak).float().mean()) if peak > 0 else 1.0


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    denominator = a.norm() * b.norm()
    return float((a.flatten() @ b.flatten()) / denominator) if denominator > 0 else 0.0


class GeometryProbe:
    """Reads the gradients of the parameters whose names match ``patterns`` after a backward; of a
    pack's model (harness/pack.py), replica ``replica``'s slice of each."""

    def __init__(
        self,
        model: torch.nn.Module,
        patterns: Iterable[str],
        every: int,
        top_k: int,
        zero_tol: float,
        replica: int | None = None,
    ):
        regexes = [re.compile(p) for p in patterns]
        matrix_dims = 2 if replica is None else 3  # a pack's weights have a replica dimension first
        self.replica = replica
        self.parameters = {
            name: param
            for name, param in model.named_parameters()
            if param.dim() == matrix_dims and any(r.search(name) for r in regexes)
        }
        if not self.parameters:
            raise ValueError(f"geometry.modules {list(patterns)} match no 2-D parameter of the model")
        self.every, self.top_k, self.zero_tol = every, top_k, zero_tol
        self.previous: dict[str, torch.Tensor] = {}

    def observe(self, step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for name, param in self.parameters.items():
            if param.grad is None:
                continue
            grad = param.grad.detach() if self.replica is None else param.grad[self.replica].detach()
            key = f"geometry/{name}"
            if name in self.previous:
                metrics[f"{key}/cosine_prev"] = cosine(grad, self.previous[name])
            self.previous[name] = grad.clone()
            if step % self.every == 0:
                values = singular_values(grad)
                metrics[f"{key}/effective_rank"] = effective_rank(values)
                metrics[f"{key}/top{self.top_k}_energy"] = top_k_energy(values, self.top_k)
                metrics[f"{key}/near_zero_fraction"] = near_zero_fraction(grad, self.zero_tol)
        return metrics
