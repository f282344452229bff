"""MAML's second-order meta-gradient against central finite differences (float64, tiny head); FOMAML differs."""

from __future__ import annotations

import torch

from iclkit.baselines.maml import init_params, meta_loss, network


def _setup():
    g = torch.Generator().manual_seed(0)
    head = network(4, 3, 2)
    params = {k: v.double() for k, v in init_params(head, g, torch.float64).items()}
    # the residual branch's last layer starts at zero; a random one exercises every path of the gradient
    params |= {k: 0.5 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in params.items()
               if k.startswith("0.fc2.")}
    batch = []
    for _ in range(2):
        xs, xq = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
        batch.append((xs, torch.tensor([0, 1] * 3), xq, torch.tensor([1, 0] * 3)))
    return head, params, batch


def _meta_grad(head, params, batch, first_order):
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss = meta_loss(head, p, batch, steps=2, lr=0.5, first_order=first_order)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(p.values()))])


def test_second_order_meta_gradient_matches_finite_differences():
    head, params, batch = _setup()
    analytic = _meta_grad(head, params, batch, first_order=False)
    flat = torch.cat([v.flatten() for v in params.values()])
    shapes = [(k, v.shape, v.numel()) for k, v in params.items()]

    def loss_at(vec):
        out, i = {}, 0
        for k, shape, n in shapes:
            out[k] = vec[i:i + n].view(shape).clone().requires_grad_(True)
            i += n
        return float(meta_loss(head, out, batch, steps=2, lr=0.5, first_order=False).detach())

    eps = 1e-6
    numeric = torch.zeros_like(flat)
    for i in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[i] = eps
        numeric[i] = (loss_at(flat + e) - loss_at(flat - e)) / (2 * eps)
    rel = (analytic - numeric).norm() / numeric.norm()
    assert rel < 1e-3, f"relative error {rel:.2e}"

    first_order = _meta_grad(head, params, batch, first_order=True)
    assert (first_order - analytic).norm() / analytic.norm() > 1e-3  # the dropped Hessian term matters here
