"""The PyTorch side of experiments.benchmark: the same MLP, weights, data and P as gzone's.

Importing this module imports torch (the optional ``bench`` extra: ``pip install -e '.[bench]'``);
experiments.benchmark catches the ImportError and marks the torch rows skipped.

Weights come from gzone's flat theta through the flat segments (``dense_00/kernel`` is flax's
[in, out] kernel, torch's ``Linear.weight`` is its transpose [out, in]), so both frameworks
evaluate the same function. Layers are ``(kernel_segment, bias_segment)`` pairs of
``(start, size, shape)`` tuples, in depth order.

Two routes to the exact subspace Hessian H_sub = P^T H P [d, d], as PyTorch codes do it:
  * ``functional``: ``torch.autograd.functional.hessian`` of z -> L(a + P z) at z = 0, the route
    of the published Goldilocks code (a loop of d double-backward passes through the network);
  * ``double_backward``: PyHessian's HVP: g = dL/dtheta with ``create_graph=True`` once, then
    for each column p_j of P: H p_j = d(g . p_j)/dtheta, pulled back by P^T.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Layer = tuple[tuple[int, int, tuple[int, ...]], tuple[int, int, tuple[int, ...]]]


def version() -> str:
    return torch.__version__


def setup(threads: int) -> str:
    """Sets the CPU thread count; returns the device torch runs on (cuda when it can)."""
    torch.set_num_threads(threads)
    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A torch copy of a (numpy views of JAX arrays are read-only)."""
    return torch.from_numpy(np.array(a)).to(_device())


def _forward(theta: torch.Tensor, layers: Sequence[Layer], x: torch.Tensor) -> torch.Tensor:
    """Logits of the MLP (ReLU between layers) whose flat flax parameters are theta [D]."""
    h = x
    for l, ((k0, k_size, k_shape), (b0, b_size, _)) in enumerate(layers):
        weight = theta[k0 : k0 + k_size].view(k_shape).T  # flax [in, out] -> torch [out, in]
        h = F.linear(h, weight, theta[b0 : b0 + b_size])
        if l < len(layers) - 1:
            h = torch.relu(h)
    return h


def hessian_fns(
    layers: Sequence[Layer], theta: np.ndarray, P: np.ndarray, x: np.ndarray, y: np.ndarray
) -> dict[str, Callable[[], np.ndarray]]:
    """{route: () -> H_sub [d, d] as numpy} for the loss at theta on (x, y), P: [D, d] dense."""
    a, Pt, xt, yt = _tensor(theta), _tensor(P), _tensor(x), _tensor(y).long()
    d = P.shape[1]

    def loss(th):
        return F.cross_entropy(_forward(th, layers, xt), yt)

    def functional():
        z0 = torch.zeros(d, dtype=a.dtype, device=a.device)
        h = torch.autograd.functional.hessian(lambda z: loss(a + Pt @ z), z0)
        return h.detach().cpu().numpy()

    def double_backward():
        th = a.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(th), th, create_graph=True)
        rows = [Pt.T @ torch.autograd.grad(g, th, Pt[:, j], retain_graph=True)[0] for j in range(d)]
        h = torch.stack(rows).detach()
        return (0.5 * (h + h.T)).cpu().numpy()

    return {"functional": functional, "double_backward": double_backward}


def warm_up(layers: Sequence[Layer], theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """One gradient: thread pool and allocator started before anything is timed."""
    th = _tensor(theta).requires_grad_(True)
    F.cross_entropy(_forward(th, layers, _tensor(x)), _tensor(y).long()).backward()


def epoch_fn(
    layers: Sequence[Layer],
    theta: np.ndarray,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    batch_size: int,
    lr: float,
    seed: int = 0,
) -> Callable[[], float]:
    """() -> test accuracy after one more epoch of the usual PyTorch loop.

    nn.Sequential of Linear/ReLU with theta's weights, Adam, shuffled batches (the last partial
    batch dropped), per-step loss and accuracy kept as tensors (as gzone's trainer records
    them), then the test loss and accuracy in chunks of 2000: the work gzone's epoch does.
    """
    device = _device()
    modules: list[torch.nn.Module] = []
    for l, ((k0, k_size, k_shape), (b0, b_size, _)) in enumerate(layers):
        lin = torch.nn.Linear(k_shape[0], k_shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(theta[k0 : k0 + k_size].reshape(k_shape).T.copy()))
            lin.bias.copy_(torch.from_numpy(theta[b0 : b0 + b_size].copy()))
        modules += [lin] + ([torch.nn.ReLU()] if l < len(layers) - 1 else [])
    model = torch.nn.Sequential(*modules).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y, x_test, y_test = (_tensor(a) for a in data)
    y, y_test = y.long(), y_test.long()
    gen = torch.Generator().manual_seed(seed)
    steps = x.shape[0] // batch_size

    def epoch() -> float:
        order = torch.randperm(x.shape[0], generator=gen).to(device)
        losses, hits = [], []
        for s in range(steps):
            idx = order[s * batch_size : (s + 1) * batch_size]
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            hits.append((logits.detach().argmax(-1) == y[idx]).float().mean())
        torch.stack(losses), torch.stack(hits)
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for xc, yc in zip(x_test.split(2000), y_test.split(2000)):
                logits = model(xc)
                loss_sum += float(F.cross_entropy(logits, yc, reduction="sum"))
                correct += int((logits.argmax(-1) == yc).sum())
        return correct / x_test.shape[0]

    return epoch
