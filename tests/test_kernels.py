"""The hand-written backward passes (suhmo/models/kernels.py) against autograd: gradcheck in float64."""

import torch

from suhmo.models import WindowPlan
from suhmo.models.discriminators import lstm_window_states, window_tracks
from suhmo.models.kernels import CachedAttention
from suhmo.models.layers import causal_mask


def _plan(groups):
    return WindowPlan([(tau, torch.tensor(starts)) for tau, starts in groups])


def test_cached_attention_backward_passes_gradcheck():
    torch.manual_seed(0)
    B, h, T, dh = 2, 2, 5, 3
    q, k, v = (torch.randn(B, h, T, dh, dtype=torch.float64, requires_grad=True) for _ in range(3))

    def run(q, k, v):  # 3 tokens in one masked call, then 2 one-token steps (window 3) reading the cache
        store = [torch.zeros(B, h, T, dh, dtype=torch.float64) for _ in range(4)]
        outs = [CachedAttention.apply(q[:, :, :3], k[:, :, :3], v[:, :, :3], store, 0, 0, causal_mask(3, 0, "cpu"))]
        for t in (3, 4):
            outs.append(CachedAttention.apply(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], store, t,
                                              max(0, t - 2), None))
        return torch.cat(outs, 2)

    assert torch.autograd.gradcheck(run, (q, k, v))


def test_window_lstm_backward_passes_gradcheck():
    torch.manual_seed(0)
    T, B, H = 7, 2, 3
    xp = torch.randn(T, B, 4 * H, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(4 * H, H, dtype=torch.float64, requires_grad=True)
    tracks = window_tracks(_plan([(2, [0, 4]), (5, [0, 1]), (3, [1])]), T)
    assert torch.autograd.gradcheck(lambda x, w: lstm_window_states(x, w, tracks), (xp, w_hh))
    # one input at a time, as in the D step (w only matters through xp's producer) and the G step
    assert torch.autograd.gradcheck(lambda x: lstm_window_states(x, w_hh.detach(), tracks), (xp,))
    assert torch.autograd.gradcheck(lambda w: lstm_window_states(xp.detach(), w, tracks), (w_hh,))
