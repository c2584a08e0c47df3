"""SUHMo discriminators (Sec. 3.2-3.5): D_F per frame, D_s (marginal) and D_s^j (joint, one score
per pair) per window, each on ``[pos | vel | acc]`` features (408 per frame).

Sequence discriminators score windows ``[N, tau, 408] -> [N]`` (joint: ``[N/2]``, rows
``(2n, 2n+1)`` being a pair); ``suhmo.models.windows.multiscale_score`` turns them into the
window-based multi-scale discriminator of eq. 5.

D_F uses LayerNorm, not the authors' BatchNorm: with BatchNorm the real and the fake batches
are normalised with their own statistics, so a sample's score depends on the rest of its
batch and D can separate the batches by their moments instead of judging frames; it also
makes train and eval modes differ. LayerNorm is per frame, which keeps scores per-sample and
lets one D call score real and fake together.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from suhmo.models.layers import FEATURE_DIM, MLP, MultiHeadAttention, pair_pool, sinusoidal_encoding


class FrameDiscriminator(nn.Module):
    """D_F (eq. 10): MLP (2 hidden layers, LayerNorm, LeakyReLU) on each frame's 408 features."""

    def __init__(self, width: int = 1024, *, spectral: bool = True):
        super().__init__()
        self.net = MLP(FEATURE_DIM, width, 1, depth=2, norm=True, spectral=spectral)

    def forward(self, feats: Tensor) -> Tensor:
        """``[..., 408] -> [...]`` raw scores (hinge loss)."""
        return self.net(feats).squeeze(-1)


class RNNSeqDiscriminator(nn.Module):
    """D_M of eq. 5, RNN form: LSTM over the window from a zero state, (BP for the joint D),
    feed-forward head on the last hidden state."""

    def __init__(self, hidden: int = 1024, *, joint: bool = False, spectral: bool = True):
        super().__init__()
        self.joint = joint
        self.lstm = nn.LSTM(FEATURE_DIM, hidden, batch_first=True)
        self.head = MLP(hidden, hidden, 1, depth=1, norm=False, spectral=spectral)

    def forward(self, windows: Tensor) -> Tensor:
        _, (h, _) = self.lstm(windows)  # fused over all windows of one length
        h = h[-1]
        if self.joint:
            h = pair_pool(h)  # BP after the LSTM, one row per pair (eq. 13-14)
        return self.head(h).squeeze(-1)


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
                 spectral: bool = True, pos_enc: bool = True):
        super().__init__()
        self.joint = joint
        self.pos_enc = pos_enc
        self.embed = nn.Linear(FEATURE_DIM, emb)
        self.cls = nn.Parameter(0.1 * torch.randn(1, 1, emb))
        self.blocks = nn.ModuleList([DBlock(emb, heads, ff, pool=joint and i == 0) for i in range(blocks)])
        self.head = MLP(emb, ff, 1, depth=1, norm=True, spectral=spectral)
        self._pe: Optional[Tensor] = None

    def _encoding(self, tau: int, like: Tensor) -> Tensor:
        if self._pe is None or self._pe.shape[0] < tau or self._pe.device != like.device:
            self._pe = sinusoidal_encoding(max(tau, 64), like.shape[-1]).to(like)
        return self._pe[:tau]

    def forward(self, windows: Tensor) -> Tensor:
        N, tau = windows.shape[0], windows.shape[1]
        h = self.embed(windows)
        if self.pos_enc:
            h = h + 0.02 * self._encoding(tau, h)
        h = torch.cat([self.cls.expand(N, 1, -1), h], 1)
        for block in self.blocks:
            h = block(h)
        return self.head(h[:, 0]).squeeze(-1)


class Discriminator(nn.Module):
    """Holds D_F (``frame``), D_s (``seq``) and D_s^j (``joint``, None for the one-sample-D ablation)."""

    def __init__(self, frame: nn.Module, seq: nn.Module, joint: Optional[nn.Module]):
        super().__init__()
        self.frame = frame
        self.seq = seq
        self.joint = joint


def rnn_seq_discriminator(cfg, joint: bool) -> nn.Module:
    return RNNSeqDiscriminator(cfg.model.hidden_d, joint=joint, spectral=cfg.model.spectral_norm)


def transformer_seq_discriminator(cfg, joint: bool) -> nn.Module:
    m = cfg.model
    return TransformerSeqDiscriminator(m.emb_d, m.heads_d, m.blocks_d, m.hidden_d, joint=joint,
                                       spectral=m.spectral_norm, pos_enc=getattr(m, "pos_enc_d", True))
