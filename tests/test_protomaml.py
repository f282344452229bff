"""Proto-MAML's head (Triantafillou et al. 2020): at 0 inner steps it is the nearest-prototype rule on the body's
features h = x + W₂ relu(W₁ x + b₁) + b₂ (checked against a hand-written loop), and its meta-gradient, which flows
through the prototypes, matches central finite differences."""

from __future__ import annotations

import torch

from iclkit.baselines.common import OuterLoop
from iclkit.baselines.maml import MAML, init_params, meta_loss, network, output_layer
from iclkit.baselines.synthetic import Lookup, gaussian_episodes


def _hand_nearest_prototype(params, lookup, ep):
    """Nearest class mean of h = x + W₂ relu(W₁ x + b₁) + b₂ on the episode's support-centred, rescaled vectors
    (CL2N), squared Euclidean, in float64 Python loops; ties to the first label."""
    w1, b1 = params["0.fc1.weight"].double().tolist(), params["0.fc1.bias"].double().tolist()
    w2, b2 = params["0.fc2.weight"].double().tolist(), params["0.fc2.bias"].double().tolist()
    support = [lookup.vectors[e.id].double().tolist() for e in ep.support]
    mean = [sum(col) / len(support) for col in zip(*support)]

    def h(example):
        x = [a - m for a, m in zip(lookup.vectors[example.id].double().tolist(), mean)]
        norm = sum(a * a for a in x) ** 0.5
        x = [a / norm * len(x) ** 0.5 for a in x]
        r = [max(0.0, sum(wi * xi for wi, xi in zip(row, x)) + bi) for row, bi in zip(w1, b1)]
        return [xi + sum(wi * ri for wi, ri in zip(row, r)) + bi for xi, row, bi in zip(x, w2, b2)]

    protos = {}
    for lab in ep.labels:
        feats = [h(e) for e in ep.support if e.label == lab]
        protos[lab] = [sum(col) / len(feats) for col in zip(*feats)]
    out = []
    for q in ep.query:
        hq = h(q)
        dist = {lab: sum((a - c) ** 2 for a, c in zip(hq, protos[lab])) for lab in ep.labels}
        out.append((min(ep.labels, key=lambda lab: (dist[lab], ep.labels.index(lab))), dist))
    return out


def test_proto_head_at_zero_inner_steps_is_the_nearest_prototype_rule():
    lookup = Lookup()
    train = gaussian_episodes(lookup, "train", 8, n_way=4, shots=3, n_query=4, dim=8, noise=1.0, seed=1)
    test = gaussian_episodes(lookup, "test", 6, n_way=4, shots=3, n_query=6, dim=8, noise=1.5, seed=2)
    maml = MAML(lookup, hidden=12, inner_steps=0, loop=OuterLoop(4, 1e-2, 2), cache=False, progress=False)
    assert maml.head_init == "proto"  # the default
    maml.meta_train(train)  # a few outer steps, so the body is not its random init
    assert maml.params is not None and not any(k.startswith("1.") for k in maml.params)  # only the body is learned
    assert maml.params["0.fc2.weight"].abs().max() > 0  # trained away from the identity body
    for ep in test:
        preds = maml.adapt(ep.support, ep.labels).predict(ep.query)
        for p, (nearest, dist) in zip(preds, _hand_nearest_prototype(maml.params, lookup, ep)):
            assert p.predicted == nearest
            # logits are ‖h‖² − ‖h − c_k‖²: score differences are distance differences
            first = ep.labels[0]
            for lab in ep.labels[1:]:
                assert abs((p.scores[lab] - p.scores[first]) + (dist[lab] - dist[first])) < 1e-3


def test_proto_meta_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    head = network(4, 3, 2)
    body = {k: v if not k.startswith("0.fc2.") else 0.5 * torch.randn(v.shape, generator=g, dtype=torch.float64)
            for k, v in init_params(head, g, torch.float64).items() if not k.startswith(output_layer(head))}
    batch = []
    for _ in range(2):
        xs = torch.randn(6, 4, generator=g, dtype=torch.float64)
        xq = torch.randn(6, 4, generator=g, dtype=torch.float64)
        batch.append((xs, torch.tensor([0, 1] * 3), xq, torch.tensor([1, 0] * 3)))

    def loss_at(params, first_order=False):
        return meta_loss(head, params, batch, steps=2, lr=0.5, first_order=first_order, head_init="proto")

    p = {k: v.clone().requires_grad_(True) for k, v in body.items()}
    analytic = torch.cat([x.flatten() for x in torch.autograd.grad(loss_at(p), list(p.values()))])
    flat = torch.cat([v.flatten() for v in body.values()])
    numeric = torch.zeros_like(flat)
    eps = 1e-6
    for i in range(flat.numel()):
        vals = []
        for sign in (1, -1):
            vec = flat.clone()
            vec[i] += sign * eps
            params, at = {}, 0
            for k, v in body.items():
                params[k] = vec[at:at + v.numel()].view(v.shape).clone().requires_grad_(True)
                at += v.numel()
            vals.append(float(loss_at(params).detach()))
        numeric[i] = (vals[0] - vals[1]) / (2 * eps)
    assert (analytic - numeric).norm() / numeric.norm() < 1e-3
    # first order still differentiates through the prototypes: a non-zero gradient, unlike the full one
    p = {k: v.clone().requires_grad_(True) for k, v in body.items()}
    fo = torch.cat([x.flatten() for x in torch.autograd.grad(loss_at(p, first_order=True), list(p.values()))])
    assert fo.norm() > 0 and (fo - analytic).norm() / analytic.norm() > 1e-3
