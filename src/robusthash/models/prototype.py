"""PrototypeNet (Wang et al., SIGIR 2021): a label row to a prototype hash code, ``label -> 4096 -> 512 -> K``.

Used by the THA attack (its target code), the ATRDH defence (the target of its training attack) and ProS-GAN.
ProS-GAN's prototype network is the same trunk with a label head (``Linear(512, C) + sigmoid``) and another
objective (:func:`prosgan_prototype_loss`); both objectives train with :func:`train_prototype_net`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm


class PrototypeNet(nn.Module):
    """``tanh(W3 (W2 relu(W1 y)))``: Linear(C, 4096), ReLU, Linear(4096, 512), Linear(512, K), tanh; with
    ``label_head`` also ``sigmoid(W4 f)`` from the 512-d feature f (ProS-GAN's label prediction)."""

    def __init__(self, num_classes: int, bits: int, label_head: bool = False) -> None:
        super().__init__()
        self.num_classes, self.bits = num_classes, bits
        self.feature = nn.Sequential(
            nn.Linear(num_classes, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 512)
        )
        self.hashing = nn.Sequential(nn.Linear(512, bits), nn.Tanh())
        self.classify = nn.Sequential(nn.Linear(512, num_classes), nn.Sigmoid()) if label_head else None

    def forward(self, labels: Tensor) -> Tensor:
        return self.hashing(self.feature(labels))


def prototype_loss(prototypes: Tensor, target_labels: Tensor, codes: Tensor, labels: Tensor) -> Tensor:
    """The published PrototypeNet objective: a circle loss (m = 0, gamma = 1) on ``s = p b^T / K`` against the
    bank codes b, positives sharing a label with the target, plus ``sum (sign p - p)^2 / (1e4 B)``.

    Circle loss: ``logsumexp(a_n s_n) + logsumexp(-a_p s_p)`` with ``a_p = [2 - s_p]_+``, ``a_n = [s_n + 2]_+``
    (detached), divided by the batch size B. (The public code keeps only the upper triangle of the B x N
    similarity matrix, an artefact of square matrices; all pairs are used here.)
    """
    batch, bits = prototypes.shape
    sim = prototypes @ codes.T / bits
    positive = (target_labels @ labels.T) > 0
    sp, sn = sim[positive], sim[~positive]
    ap = (2 - sp.detach()).clamp_min(0)
    an = (sn.detach() + 2).clamp_min(0)
    zero = prototypes.new_zeros(())
    loss_n = torch.logsumexp(an * sn, 0) if sn.numel() else zero
    loss_p = torch.logsumexp(-ap * sp, 0) if sp.numel() else zero
    reg = (torch.sign(prototypes) - prototypes).pow(2).sum() / (1e4 * batch)
    return (loss_n + loss_p) / batch + reg


def prosgan_prototype_loss(net: PrototypeNet, target_labels: Tensor, codes: Tensor, labels: Tensor) -> Tensor:
    """ProS-GAN's prototype objective: the DPSH negative log-likelihood of the prototype h against the bank codes
    b (``theta = h b^T / 2``, S = 1 where the labels share a class; mean over pairs), plus MSE(label prediction,
    target label), plus ``sum (sign h - h)^2 / (1e4 B)``."""
    assert net.classify is not None, "ProS-GAN's prototype network has a label head"
    feature = net.feature(target_labels)
    h = net.hashing(feature)
    theta = h @ codes.T / 2
    similar = ((target_labels @ labels.T) > 0).to(h.dtype)
    nll = (F.softplus(theta) - similar * theta).mean()
    label = F.mse_loss(net.classify(feature), target_labels)
    reg = (torch.sign(h) - h).pow(2).sum() / (1e4 * h.shape[0])
    return nll + label + reg


def train_prototype_net(
    codes: Tensor,
    labels: Tensor,
    candidates: Tensor,
    steps: int = 30_000,
    batch_size: int = 32,
    lr: float = 1e-4,
    generator: torch.Generator | None = None,
    quiet: bool = True,
    objective: str = "tha",
) -> PrototypeNet:
    """Fit a PrototypeNet to a code bank: Adam (lr 1e-4, betas 0.5 / 0.999) on batches of target label rows
    drawn from ``candidates``, lr divided by 10 at 1/2 and 3/4 of the steps (the public THA and ProS-GAN
    schedule: 100 epochs of 300 steps). ``objective``: ``tha`` (:func:`prototype_loss`) or ``prosgan``
    (:func:`prosgan_prototype_loss`, with the label head; ProS-GAN's batch is 64)."""
    device = codes.device
    generator = generator or torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        net = PrototypeNet(labels.shape[1], codes.shape[1], label_head=objective == "prosgan").to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[steps // 2, steps * 3 // 4], gamma=0.1)
    codes, labels, candidates = codes.float(), labels.float().to(device), candidates.float().to(device)
    for _ in tqdm(range(steps), desc="PrototypeNet", disable=quiet, leave=False):
        pick = torch.randint(0, len(candidates), (batch_size,), generator=generator).to(device)
        target = candidates[pick]
        if objective == "prosgan":
            loss = prosgan_prototype_loss(net, target, codes, labels)
        else:
            loss = prototype_loss(net(target), target, codes, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()
