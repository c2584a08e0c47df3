"""SUHMo discriminators (Sec. 3.2-3.5): D_F per frame, D_s (marginal) and D_s^j (joint, one score
per pair) per window, each on ``[pos | vel | acc | centroid]`` features (410 per frame, ``suhmo.losses.sequence_features``).

Sequence discriminators score windows ``[N, tau, 410] -> [N]`` (joint: ``[N/2]``, rows
``(2n, 2n+1)`` being a pair); ``suhmo.models.windows.multiscale_score`` turns them into the
window-based multi-scale discriminator of eq. 5. A sequence D may also offer
``window_scores(feats [B, T, 410], plan) -> [n_windows, B]`` (joint ``[n_windows, B/2]``), which
``multiscale_score`` prefers: the RNN form uses it to run every window of a plan in one
recurrence (``lstm_window_states``) instead of one ``nn.LSTM`` call per window length, the
Transformer form to embed every frame once and cut the windows from the embeddings.

D_F uses LayerNorm, not the authors' BatchNorm: with BatchNorm the real and the fake batches
are normalised with their own statistics, so a sample's score depends on the rest of its
batch and D can separate the batches by their moments instead of judging frames; it also
makes train and eval modes differ. LayerNorm is per frame, which keeps scores per-sample and
lets one D call score real and fake together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from suhmo.models import kernels
from suhmo.models.kernels import WindowLSTM, amp_dtype
from suhmo.models.layers import (FEATURE_DIM, MLP, feature_dim, lstm_cell, MultiHeadAttention, pair_pool,
                                 sinusoidal_encoding)
from suhmo.models.windows import multiscale_score, plan_mean, window_batch


class FrameDiscriminator(nn.Module):
    """D_F (eq. 10): MLP (2 hidden layers, LayerNorm, LeakyReLU) on each frame's 410 features."""

    def __init__(self, width: int = 1024, *, spectral: bool = True, in_dim: int = FEATURE_DIM):
        super().__init__()
        self.net = MLP(in_dim, width, 1, depth=2, norm=True, spectral=spectral)

    def forward(self, feats: Tensor) -> Tensor:
        """``[..., 410] -> [...]`` raw scores (hinge loss)."""
        return self.net(feats).squeeze(-1)


@dataclass
class WindowTracks:
    """How ``lstm_window_states`` runs a plan: one *track* per distinct start frame, as long as
    the longest window starting there (shorter windows at the same start read its hidden state
    on the way: an LSTM from a zero state over ``x[s:s+tau]`` is a prefix of the one over
    ``x[s:s+L]``). Tracks are sorted longest first, so the tracks still running at step k are
    the first ``active[k]``."""

    starts: list  # start frame of each track, longest track first
    lengths: list  # steps of each track
    active: list  # active[k]: tracks running at step k (non-increasing)
    ends: list  # ends[k]: (window index in plan order, track) of the windows whose last step is k

    @property
    def steps(self) -> int:
        """Track steps in total (the recurrence's work per sequence)."""
        return sum(self.lengths)


def window_tracks(plan, num_frames: Optional[int] = None) -> WindowTracks:
    """Group the windows of ``plan`` (``[(tau, starts)]``) by start frame; see ``WindowTracks``."""
    windows = [(int(tau), int(t)) for tau, starts in plan for t in starts.tolist()]
    if not windows:
        raise ValueError("the window plan is empty")
    longest: dict[int, int] = {}
    for tau, t in windows:
        if tau < 1 or t < 0 or (num_frames is not None and t + tau > num_frames):
            raise ValueError(f"window of length {tau} at start {t} leaves the {num_frames} feature frames")
        longest[t] = max(longest.get(t, 0), tau)
    starts = sorted(longest, key=lambda t: (-longest[t], t))
    track = {t: j for j, t in enumerate(starts)}
    lengths = [longest[t] for t in starts]
    active = [sum(1 for L in lengths if L > k) for k in range(lengths[0])]
    ends: list = [[] for _ in range(lengths[0])]
    for w, (tau, t) in enumerate(windows):
        ends[tau - 1].append((w, track[t]))
    return WindowTracks(starts, lengths, active, ends)


def used_frames(plan, num_frames: int) -> tuple:
    """``(frames, plan')``: the sorted frames that the windows of ``plan`` cover (LongTensor, None
    when that is all ``num_frames``) and the same windows with their starts counted in those
    frames. A window is contiguous and all its frames are covered, so it stays contiguous there:
    an LSTM over ``x[frames]`` with ``plan'`` reads exactly what one over ``x`` with ``plan`` reads."""
    covered = [False] * num_frames
    for tau, starts in plan:
        tau = int(tau)
        for t in starts.tolist():
            if tau < 1 or t < 0 or t + tau > num_frames:
                raise ValueError(f"window of length {tau} at start {t} leaves the {num_frames} feature frames")
            covered[t:t + tau] = [True] * tau
    if all(covered):
        return None, plan
    index, frames = {}, []
    for f, c in enumerate(covered):
        if c:
            index[f] = len(frames)
            frames.append(f)
    moved = [(tau, torch.tensor([index[t] for t in starts.tolist()], dtype=torch.long)) for tau, starts in plan]
    return torch.tensor(frames, dtype=torch.long), moved


def plan_layout(plan, num_frames: int) -> tuple:
    """``(frames, U, tracks)`` of ``plan`` over ``num_frames`` feature frames: ``used_frames``, the
    number of frames used, and the ``window_tracks`` of the windows counted in those frames.
    Kept on a ``WindowPlan`` (the D and the G step of an iteration score the same plan, with
    D_s and D_s^j), computed anew for a plain list."""
    cache = plan.__dict__.setdefault("_layouts", {}) if hasattr(plan, "__dict__") else {}
    if num_frames not in cache:
        frames, moved = used_frames(plan, num_frames)
        U = num_frames if frames is None else int(frames.numel())
        cache[num_frames] = (frames, U, window_tracks(moved, U))
    return cache[num_frames]


def _covered_rows(feats: Tensor, frames: Optional[Tensor]) -> Tensor:
    """``[U * B, F]`` rows of ``feats [B, T, F]``, frame-major, of the frames a plan covers
    (``frames`` from ``plan_layout``; None = all of them)."""
    B, T, Fdim = feats.shape
    x = feats.transpose(0, 1)  # [T, B, F], a view
    return x.reshape(T * B, Fdim) if frames is None else x.index_select(0, frames.to(feats.device)).view(-1, Fdim)


def lstm_window_states(xp: Tensor, w_hh: Tensor, tracks: WindowTracks) -> Tensor:
    """Last hidden state of a one-layer LSTM (zero initial state) over every window of a plan.

    ``xp [T, B, 4H]`` is the input projection ``x_t W_ih^T + b_ih + b_hh`` of every feature
    frame, computed once (the windows are slices of the same frames), gate order i, f, g, o as
    in ``nn.LSTM``; ``w_hh [4H, H]``. All tracks advance together: step k is one
    ``[active[k] * B, H] x [H, 4H]`` product for every window still running, so there is one
    step per frame of the longest window, whatever the number and spread of the windows.
    Returns ``[n_windows, B, H]`` in plan order. Differentiable in ``xp`` and ``w_hh``
    (``kernels.WindowLSTM``: backpropagation through time written out, buffers reused in place).
    Several LSTMs over the same plan: ``xp [S, T, B, 4H]``, ``w_hh [S, 4H, H]`` ->
    ``[S, n_windows, B, H]``, stepped together.
    """
    single = w_hh.dim() == 2
    if single:
        xp, w_hh = xp.unsqueeze(0), w_hh.unsqueeze(0)
    if not kernels.fast_enabled():
        h = reference_window_states(xp, w_hh, tracks)
        return h[0] if single else h
    lowp = amp_dtype(xp)
    with torch.autocast(xp.device.type, enabled=False):  # train.amp: bf16 products, the recurrence in w_hh's type
        h = WindowLSTM.apply(xp.to(w_hh.dtype), w_hh, tracks, None, None, None, lowp)
    return h[0] if single else h


def projected_window_states(x: Tensor, w_ih: Tensor, bias: Tensor, w_hh: Tensor, tracks: WindowTracks) -> Tensor:
    """``lstm_window_states`` of the streams' input projections ``x W_ih^T + bias`` of the
    covered frames ``x [U, B, F]`` (``w_ih [S, 4H, F]``, ``bias [S, 4H]``, ``w_hh [S, 4H, H]``)
    -> ``[S, n_windows, B, H]``, the projection inside the recurrence's autograd node
    (``kernels.WindowLSTM`` with ``x``): one oneDNN product per stream and its gradients written
    out (``kernels.linear``), where an autograd ``baddbmm`` over the streams ran MKL's. Under
    bf16 autocast (``train.amp``) every product of the node, the projection's and the steps', takes
    bf16 operands (``WindowLSTM``'s ``lowp``); its states and gradient buffers stay fp32."""
    if not kernels.fast_enabled():
        U, B, F = x.shape
        xp = torch.baddbmm(bias.unsqueeze(1), x.reshape(1, U * B, F).expand(w_ih.shape[0], -1, -1),
                           w_ih.transpose(1, 2))
        return reference_window_states(xp.view(w_ih.shape[0], U, B, -1), w_hh, tracks)
    lowp = amp_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return WindowLSTM.apply(None, w_hh, tracks, x.to(w_ih.dtype), w_ih, bias, lowp)


def reference_window_states(xp: Tensor, w_hh: Tensor, tracks: WindowTracks) -> Tensor:
    """The reference of ``WindowLSTM``, recorded by autograd: the streams' LSTMs (``xp [S, T, B, 4H]``,
    ``w_hh [S, 4H, H]``) over the tracks of a plan, step after step, the tracks still running
    at step k being the first ``active[k]`` -> ``[S, n_windows, B, H]`` in plan order."""
    S, _, B, G4 = xp.shape
    h = c = xp.new_zeros(S, tracks.active[0] * B, G4 // 4)  # the zero initial state
    outs: list = [None] * sum(len(e) for e in tracks.ends)
    for k, n_tr in enumerate(tracks.active):
        g = xp[:, [t + k for t in tracks.starts[:n_tr]]].reshape(S, n_tr * B, G4)
        h, c = lstm_cell(g + torch.bmm(h[:, :n_tr * B], w_hh.transpose(1, 2)), c[:, :n_tr * B])
        for w, tr in tracks.ends[k]:
            outs[w] = h[:, tr * B:(tr + 1) * B]
    return torch.stack(outs, 1)


class RNNSeqDiscriminator(nn.Module):
    """D_M of eq. 5, RNN form: LSTM over the window from a zero state, (BP for the joint D),
    feed-forward head on the last hidden state.

    ``forward(windows)`` scores one batch of equal-length windows with ``nn.LSTM``;
    ``window_scores(feats, plan)`` scores a whole plan with the same weights through
    ``lstm_window_states`` (equal results, see tests/test_models.py), which is what training uses.
    """

    def __init__(self, hidden: int = 1024, *, joint: bool = False, spectral: bool = True, in_dim: int = FEATURE_DIM):
        super().__init__()
        self.joint = joint
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True)
        self.head = MLP(hidden, hidden, 1, depth=1, norm=False, spectral=spectral)

    def _score(self, h: Tensor) -> Tensor:
        if self.joint:
            h = pair_pool(h)  # BP after the LSTM, one row per pair (eq. 13-14)
        return self.head(h).squeeze(-1)

    def forward(self, windows: Tensor) -> Tensor:
        _, (h, _) = self.lstm(windows)  # fused over all windows of one length
        return self._score(h[-1])

    def window_scores(self, feats: Tensor, plan) -> Tensor:
        """``feats [B, T, 410]`` -> raw scores ``[n_windows, B]`` (joint: ``[n_windows, B/2]``) of
        every window of ``plan``, in plan order.

        Only the frames that some window covers are projected (``used_frames``): the input
        projection is the largest product of the step, and a sampled plan covers ~60 % of the
        frames (``cpu`` preset: 41 of 67 on average)."""
        B, T, _ = feats.shape
        lstm = self.lstm
        frames, U, tracks = plan_layout(plan, T)
        x = _covered_rows(feats, frames).view(U, B, -1)
        h = projected_window_states(x, lstm.weight_ih_l0.unsqueeze(0), (lstm.bias_ih_l0 + lstm.bias_hh_l0).unsqueeze(0),
                                    lstm.weight_hh_l0.unsqueeze(0), tracks)[0]
        n = h.shape[0]
        return self._score(h.reshape(n * B, -1)).reshape(n, -1)


def rnn_window_scores_together(nets: list, feats: Tensor, plan) -> Optional[list]:
    """``[net.window_scores(feats, plan) for net in nets]`` for RNN sequence discriminators of one
    width (D_s and D_s^j), their LSTMs run as streams of one recurrence (``lstm_window_states``)
    after one input projection of the covered frames with their weights side by side: half the
    operations of two calls, the same values within float rounding. None when
    the nets are not all such discriminators of one width."""
    if len(nets) < 2 or not all(type(n) is RNNSeqDiscriminator for n in nets):
        return None
    lstms = [n.lstm for n in nets]
    if len({(m.input_size, m.hidden_size) for m in lstms}) != 1:
        return None
    B, T, _ = feats.shape
    frames, U, tracks = plan_layout(plan, T)
    x = _covered_rows(feats, frames).view(U, B, -1)
    w_ih = torch.stack([m.weight_ih_l0 for m in lstms], 0)  # [S, 4H, F]
    bias = torch.stack([m.bias_ih_l0 + m.bias_hh_l0 for m in lstms], 0)  # [S, 4H]
    w_hh = torch.stack([m.weight_hh_l0 for m in lstms], 0)
    # each stream's projection [U, B, 4H] is gathered into the recurrence's stream-major rows (a
    # permuted [U, B, S, 4H] product would make the gather, and the gradient's scatter, strided
    # copies: 3x slower at the grid's sizes)
    h = projected_window_states(x, w_ih, bias, w_hh, tracks)  # [S, n, B, H]
    n = h.shape[1]
    return [net._score(h[j].reshape(n * B, -1)).reshape(n, -1) for j, net in enumerate(nets)]


class DBlock(nn.Module):
    """Post-LN Transformer D block: self-attention, [batch-pool in place of BXA], feed-forward."""

    def __init__(self, dim: int, heads: int, ff: int, pool: bool):
        super().__init__()
        self.pool = pool
        self.sa = MultiHeadAttention(dim, heads)
        self.ln1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.LeakyReLU(0.2), nn.Linear(ff, dim))
        self.ln2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.ln1(x + self.sa(x))
        if self.pool:
            # joint D: BP replaces BXA; the pooled rows of a pair are equal, so keep one per pair
            y = pair_pool(y)
        return self.ln2(y + self.ff(y))


class TransformerSeqDiscriminator(nn.Module):
    """D_M of eq. 5, Transformer form: embedding (emb_d), learnable class token, optional
    sinusoidal positional encoding (x0.02, the authors' scale), blocks_d blocks, head on the class token."""

    def __init__(self, emb: int = 128, heads: int = 1, blocks: int = 1, ff: int = 1024, *, joint: bool = False,
                 spectral: bool = True, pos_enc: bool = True, in_dim: int = FEATURE_DIM):
        super().__init__()
        self.joint = joint
        self.pos_enc = pos_enc
        self.embed = nn.Linear(in_dim, emb)
        self.cls = nn.Parameter(0.1 * torch.randn(1, 1, emb))
        self.blocks = nn.ModuleList([DBlock(emb, heads, ff, pool=joint and i == 0) for i in range(blocks)])
        self.head = MLP(emb, ff, 1, depth=1, norm=True, spectral=spectral)
        self._pe: Optional[Tensor] = None

    def _encoding(self, tau: int, like: Tensor) -> Tensor:
        if self._pe is None or self._pe.shape[0] < tau or self._pe.device != like.device:
            self._pe = sinusoidal_encoding(max(tau, 64), like.shape[-1]).to(like)
        return self._pe[:tau]

    def forward(self, windows: Tensor) -> Tensor:
        """``windows [N, tau, 410]`` -> raw scores ``[N]`` (joint: ``[N/2]``)."""
        return self._encode(self.embed(windows))

    def window_scores(self, feats: Tensor, plan) -> Tensor:
        """``feats [B, T, 410]`` -> raw scores ``[n_windows, B]`` (joint: ``[n_windows, B/2]``) of
        every window of ``plan``, in plan order; equal to ``forward`` on each window batch.

        The embedding is per frame, so every frame is embedded once and the windows are cut
        from the embeddings: overlapping windows (the grid's 31 cover the 43 frames ~6x) no
        longer embed a frame once per window, and the copies are E wide instead of 410.
        """
        emb = self.embed(feats)
        return torch.cat([self._encode(window_batch(emb, int(tau), starts)).reshape(int(starts.numel()), -1)
                          for tau, starts in plan], 0)

    def _encode(self, h: Tensor) -> Tensor:
        """Embedded windows ``[N, tau, E]`` -> scores: position code, class token, blocks, head."""
        N, tau = h.shape[0], h.shape[1]
        if self.pos_enc:
            h = h + 0.02 * self._encoding(tau, h)
        h = torch.cat([self.cls.expand(N, 1, -1), h], 1)
        for block in self.blocks:
            h = block(h)
        return self.head(h[:, 0]).squeeze(-1)


STREAMS = ("seq", "joint", "frame")  # the score streams of a Discriminator, in the order it returns them


class Discriminator(nn.Module):
    """Holds D_F (``frame``), D_s (``seq``) and D_s^j (``joint``, None for the one-sample-D ablation)."""

    def __init__(self, frame: nn.Module, seq: nn.Module, joint: Optional[nn.Module]):
        super().__init__()
        self.frame = frame
        self.seq = seq
        self.joint = joint

    def forward(self, feats: Tensor, plan, n_frame: int, streams=STREAMS) -> dict[str, Tensor]:
        """Raw scores of ``feats [B, T, F]`` per stream named in ``streams`` (a D it lacks, or D_F
        with ``n_frame`` 0, is left out), in ``STREAMS`` order: ``seq [B]`` and ``joint [B/2]``, the
        windows of ``plan`` (eq. 5), and ``frame [B, n_frame]``, D_F on the last ``n_frame`` frames."""
        seqs = {name: net for name, net in (("seq", self.seq), ("joint", self.joint))
                if net is not None and name in streams}
        # the RNN D_s and D_s^j read the same windows of the same features: one recurrence for both
        together = rnn_window_scores_together(list(seqs.values()), feats, plan)
        out = {name: plan_mean(together[j], plan) if together is not None else multiscale_score(net, feats, plan)
               for j, (name, net) in enumerate(seqs.items())}
        if "frame" in streams and n_frame > 0:
            # D_F scores every frame, the last n_frame kept: a slice of the scores, not of the features
            # (which would be copied, and in the G step zero-filled and copied back by its backward)
            out["frame"] = self.frame(feats)[:, -n_frame:]
        return out


def rnn_seq_discriminator(m, joint: bool) -> nn.Module:
    """The RNN D_s (D_s^j with ``joint``) of the model section ``m`` (``cfg.model``)."""
    return RNNSeqDiscriminator(m.hidden_d, joint=joint, spectral=m.spectral_norm, in_dim=feature_dim(m))


def transformer_seq_discriminator(m, joint: bool) -> nn.Module:
    """The Transformer D_s (D_s^j with ``joint``) of the model section ``m`` (``cfg.model``)."""
    return TransformerSeqDiscriminator(m.emb_d, m.heads_d, m.blocks_d, m.hidden_d, joint=joint,
                                       spectral=m.spectral_norm, pos_enc=m.pos_enc_d, in_dim=feature_dim(m))
