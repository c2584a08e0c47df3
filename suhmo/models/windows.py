"""Window-based multi-scale sequence discrimination (Sec. 3.2, eq. 5).

``D_S(x_{0:T}) = E_{tau,t}[ D_M(x_{t:t+tau}) ]``: a sequence discriminator D_M scores windows
of length tau starting at t; D_S is their expectation. A ``WindowSampler`` draws a *plan*
(the windows of one D step), and ``multiscale_score`` evaluates it with one batched D_M call
per window length. The same plan is given to the real and the fake sequences of a step.

Window range: windows lie within the discriminator's feature frames. For a position
sequence obs+future of ``O + S`` frames, ``motion_features`` yields ``T = O + S - 2`` frames of
[pos|vel|acc] (``num_feature_frames``), and ``plan(T)`` places windows anywhere in them,
observed frames included (as the authors' code does). With O = 5, S = 40 (T = 43), the fixed
scales [5, 10, 20, 40] and a stride of tau/2, the grid has 20 + 7 + 3 + 1 = 31 windows, the
authors' count; over the 40 generated frames only it would have 29.

tau distributions (``windows.family``, registry ``TAU_FAMILIES``):
  fixed    uniform over ``windows.scales`` (the authors' [5, 10, 20, 40])
  uniform  discrete uniform on [tau_min, tau_max] (the paper)
  texp     truncated exponential (mean ``texp_mean`` before truncation) on [tau_min, tau_max],
           drawn by inverse CDF on [tau_min, tau_max + 1) and floored
Start rules (``windows.starts``):
  random   ``num_windows`` windows per call, each (tau, t) with t ~ U{0..T-tau} (the paper).
           The score is the plain mean over windows, an unbiased estimate of eq. 5.
  grid     every start on a stride ``max(1, floor(grid_stride * tau))`` grid, for each scale
           (fixed: all scales; uniform/texp: ``num_windows`` draws, de-duplicated). Mean over
           the windows of a scale, then equal weight per scale (the authors' code).
``single_scale`` (ablation): one window of length ``seq_len`` ending on the last frame, i.e.
covering the generated frames. Lengths above T are clipped to T.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from suhmo.config import ConfigError, WindowConfig
from suhmo.registry import TAU_FAMILIES

TauFamily = Callable[[WindowConfig, int, Optional[torch.Generator]], Tensor]


def register_tau_family(name: str):
    """Decorator adding a tau distribution to ``suhmo.registry.TAU_FAMILIES`` (the built-in ones
    are listed there by name)."""
    def deco(fn: TauFamily) -> TauFamily:
        TAU_FAMILIES.register(name, fn)
        return fn

    return deco


def tau_fixed(cfg: WindowConfig, n: int, gen: Optional[torch.Generator]) -> Tensor:
    scales = torch.tensor([int(s) for s in cfg.scales], dtype=torch.long)
    return scales[torch.randint(len(scales), (n,), generator=gen)]


def tau_uniform(cfg: WindowConfig, n: int, gen: Optional[torch.Generator]) -> Tensor:
    return torch.randint(int(cfg.tau_min), int(cfg.tau_max) + 1, (n,), generator=gen)


def tau_texp(cfg: WindowConfig, n: int, gen: Optional[torch.Generator]) -> Tensor:
    a, b, mean = float(cfg.tau_min), float(cfg.tau_max) + 1.0, float(cfg.texp_mean)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    # inverse CDF of Exp(1/mean) truncated to [a, b)
    x = a - mean * torch.log1p(-u * (1.0 - torch.exp(torch.tensor(-(b - a) / mean, dtype=torch.float64))))
    return x.floor().long().clamp(int(cfg.tau_min), int(cfg.tau_max))


def num_feature_frames(n_position_frames: int) -> int:
    """Feature frames that ``motion_features`` gives for a position sequence (the first two are consumed)."""
    return n_position_frames - 2


class WindowPlan(list):
    """The windows of one D step: a list of ``(tau, starts LongTensor [n])`` grouped by tau, with
    ``weights`` (one per group, summing to 1) giving each group's share of eq. 5's expectation."""

    def __init__(self, groups=(), weights=None):
        super().__init__(groups)
        self.weights = list(weights) if weights is not None else [1.0 / max(len(self), 1)] * len(self)

    def num_windows(self) -> int:
        return sum(int(s.numel()) for _, s in self)

    def window_steps(self) -> int:
        """Sum of window lengths (per sequence): the D_M work of the plan."""
        return sum(int(t) * int(s.numel()) for t, s in self)


class WindowSampler:
    """Draws window plans for eq. 5 from ``cfg.windows`` (see the module docstring)."""

    def __init__(self, cfg: WindowConfig, seq_len: int):
        if cfg.family not in TAU_FAMILIES:
            raise ConfigError(f"windows.family={cfg.family!r}: choose one of {', '.join(TAU_FAMILIES)}")
        if cfg.starts not in ("random", "grid"):
            raise ConfigError(f"windows.starts={cfg.starts!r}: choose one of random, grid")
        self.cfg = cfg
        self.seq_len = int(seq_len)

    def taus(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` window lengths from the configured family (before clipping to T)."""
        return TAU_FAMILIES[self.cfg.family](self.cfg, n, generator)

    def plan(self, T: int, generator: Optional[torch.Generator] = None) -> WindowPlan:
        """Windows within ``T`` feature frames; use the same plan for real and fake."""
        c = self.cfg
        T = int(T)
        if T < 1:
            raise ConfigError(f"windows: need at least one feature frame, got T={T}")
        if c.single_scale:
            tau = min(self.seq_len, T)
            return WindowPlan([(tau, torch.tensor([T - tau]))], [1.0])
        if c.starts == "grid":
            if c.family == "fixed":
                taus = sorted({min(int(s), T) for s in c.scales})
            else:
                taus = sorted(set(self.taus(c.num_windows, generator).clamp(max=T).tolist()))
            groups = []
            for tau in taus:
                stride = max(1, int(c.grid_stride * tau))
                groups.append((tau, torch.arange(0, T - tau + 1, stride)))
            return WindowPlan(groups, [1.0 / len(groups)] * len(groups))
        taus = self.taus(c.num_windows, generator).clamp(max=T)
        u = torch.rand(len(taus), generator=generator, dtype=torch.float64)
        starts = (u * (T - taus + 1).double()).floor().long()  # t ~ U{0 .. T - tau}
        groups, weights = [], []
        for tau in sorted(set(taus.tolist())):
            sel = taus == tau
            groups.append((int(tau), starts[sel]))
            weights.append(float(sel.sum()) / len(taus))
        return WindowPlan(groups, weights)

    sample = plan  # name used in docs/ARCHITECTURE.md


def window_batch(feats: Tensor, tau: int, starts: Tensor) -> Tensor:
    """``feats [B, T, F]`` -> ``[n * B, tau, F]``, window-major so that pairs stay consecutive rows."""
    B, T, Fdim = feats.shape
    starts = starts.to(feats.device)
    if starts.numel() and (int(starts.min()) < 0 or int(starts.max()) + tau > T):
        raise ValueError(f"window of length {tau} at starts {starts.tolist()} leaves the {T} feature frames")
    idx = starts.unsqueeze(1) + torch.arange(tau, device=feats.device)  # [n, tau]
    return feats[:, idx].transpose(0, 1).reshape(-1, tau, Fdim)


def multiscale_score(net, feats: Tensor, plan) -> Tensor:
    """Window-based multi-scale score, eq. 5: the plan-weighted mean of ``net`` over the windows.

    ``net`` maps ``[N, tau, F] -> [N]`` (or ``[N/2]`` for the joint D); all windows of one length
    go through ``net`` in one call. A ``net`` with ``window_scores(feats, plan) -> [n_windows, B']``
    (both sequence D forms) scores the whole plan in one call instead. Returns ``[B]`` (joint: ``[B/2]``).
    """
    sizes = [int(starts.numel()) for _, starts in plan]
    if not plan or sum(sizes) == 0:
        raise ValueError("multiscale_score: the window plan is empty")
    if hasattr(net, "window_scores"):
        per_window = net.window_scores(feats, plan)
    else:
        per_window = torch.cat([net(window_batch(feats, int(tau), starts)).reshape(n, -1)
                                for (tau, starts), n in zip(plan, sizes)], 0)
    return plan_mean(per_window, plan)


def plan_mean(per_window: Tensor, plan) -> Tensor:
    """Eq. 5's expectation from the scores of every window of ``plan`` (``[n_windows, B']``, plan
    order): the mean over each group's windows, weighted by the plan's weights."""
    weights = getattr(plan, "weights", None) or [1.0 / len(plan)] * len(plan)
    sizes = [int(starts.numel()) for _, starts in plan]
    total: Optional[Tensor] = None
    for group, w in zip(per_window.split(sizes, 0), weights):
        scores = group.mean(0) * w
        total = scores if total is None else total + scores
    return total
