"""Building blocks shared by the generators and the discriminators.

Pairs are consecutive batch rows ``(2n, 2n+1)`` everywhere; the pair operators below
(batch-pool, eq. 13-14; batch-cross attention, eq. 15-17) rely on that layout and on an
even batch size. Everything here is TorchScript-compatible so that generators can be
exported (``Generator.export_module``).
"""


import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LANDMARKS = 68
FRAME_DIM = LANDMARKS * 2  # 136: one flattened frame of positions (or velocities)
FEATURE_DIM = LANDMARKS * 6 + 2  # 410: one frame of [pos | vel | acc | centroid] as seen by the discriminators
PAPER_FEATURE_DIM = LANDMARKS * 6  # 408: the paper's [pos | vel | acc] (model.d_centred = false)
POSE_DIM = 4  # the semantic space's head pose: centroid x, y, log scale, roll (models.space)
POSE3D_DIM = 6  # the pose3d space's head pose: centroid x, y, log scale, yaw, pitch, roll (models.pose3d)


def pose_dim(space: str) -> int:
    """The head-pose dimensions that lead the state of the space named ``space`` (0: landmarks)."""
    return {"semantic": POSE_DIM, "pose3d": POSE3D_DIM}.get(space, 0)


def feature_dim(m) -> int:
    """Per-frame discriminator input width of the model section ``m`` (``cfg.model``): 410 with
    ``model.d_centred``, else 408; plus ``2 (4 + K)`` with ``model.d_semantic`` (the semantic state
    and its velocity) and ``4 + K`` more with ``model.d_anchor`` (the state relative to the
    sequence's first frame)."""
    base = FEATURE_DIM if m.d_centred else PAPER_FEATURE_DIM
    z = pose_dim(m.space) + m.semantic_k
    return base + (2 * z if m.d_semantic else 0) + (z if m.d_anchor else 0)


def batch_pool(x: Tensor) -> Tensor:
    """Batch-pool BP (eq. 13-14): max over each pair of rows, repeated to keep the batch size.

    ``x [B, ...]`` with B even -> ``[B, ...]`` where rows 2n and 2n+1 both hold
    ``max(x_2n, x_2n+1)`` elementwise. Pairs never mix with each other.
    """
    shape = x.shape
    pooled = x.reshape(shape[0] // 2, 2, -1).amax(dim=1, keepdim=True)
    return pooled.expand(-1, 2, -1).reshape(shape)


def lstm_cell(gates: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
    """The pointwise part of one LSTM step, ``nn.LSTMCell``'s (gate order i, f, g, o): the gates'
    pre-activations ``[..., 4H]`` and the cell state ``c_{k-1} [..., H]`` -> ``(h_k, c_k)``."""
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def pair_pool(x: Tensor) -> Tensor:
    """BP keeping one row per pair: ``[B, ...] -> [B/2, ...]`` (the joint D scores each pair once)."""
    shape = x.shape
    return x.reshape(shape[0] // 2, 2, -1).amax(dim=1).reshape((shape[0] // 2,) + shape[1:])


def pair_swap(x: Tensor) -> Tensor:
    """Swap the two rows of every pair (eq. 16-17): row 2n gets 2n+1 and vice versa."""
    shape = x.shape
    return x.reshape(shape[0] // 2, 2, -1).flip(1).reshape(shape)


def sn_linear(d_in: int, d_out: int, spectral: bool) -> nn.Linear:
    """A Linear layer, spectrally normalised (power iteration, 1 step per forward) when asked."""
    lin = nn.Linear(d_in, d_out)
    if spectral:
        lin = nn.utils.parametrizations.spectral_norm(lin)
    return lin


class MLP(nn.Module):
    """``depth`` hidden Linear layers (optional LayerNorm, LeakyReLU 0.2) and a Linear output.

    Used as the RNN generator's deep output, the frame discriminator D_F and the sequence
    discriminators' heads. ``spectral_out`` controls spectral norm on the output layer
    separately: the generators' velocity heads keep it plain (see RNNGenerator).
    """

    def __init__(self, d_in: int, width: int, d_out: int, *, depth: int = 2, norm: bool = True,
                 spectral: bool = False, spectral_out: Optional[bool] = None, out_gain: float = 1.0):
        super().__init__()
        layers: List[nn.Module] = []
        d = d_in
        for _ in range(depth):
            layers.append(sn_linear(d, width, spectral))
            layers.append(nn.LayerNorm(width) if norm else nn.Identity())
            layers.append(nn.LeakyReLU(0.2))
            d = width
        out = nn.Linear(d, d_out)
        if out_gain != 1.0:
            with torch.no_grad():
                out.weight.mul_(out_gain)
                out.bias.zero_()
        if (spectral if spectral_out is None else spectral_out):
            out = nn.utils.parametrizations.spectral_norm(out)
        layers.append(out)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention with separate query and key/value projections.

    ``project_q(x) -> [B, h, n, dh]``, ``project_kv(x) -> ([B, h, n, dh], [B, h, n, dh])``,
    ``attend(q, k, v, mask) -> [B, n, dim]`` (mask: bool ``[n_q, n_k]``, True = may attend).
    Split in three so that callers can cache keys/values or take them from the pair partner
    (batch-cross attention, eq. 15-17). ``attend_memory`` serves a cache of raw inputs
    (the Transformer generator's): see there.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        B, n = x.shape[0], x.shape[1]
        return x.reshape(B, n, self.heads, self.head_dim).transpose(1, 2)

    def project_q(self, x: Tensor) -> Tensor:
        return self._split(self.q(x))

    def project_kv(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        k, v = self.kv(x).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor]) -> Tensor:
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    def merge(self, y: Tensor) -> Tensor:
        """Per-head attention outputs ``[B, h, n, dh]`` -> the output projection ``[B, n, dim]``."""
        B, n = y.shape[0], y.shape[2]
        return self.out(y.transpose(1, 2).reshape(B, n, self.heads * self.head_dim))

    def attend_memory(self, x: Tensor, memory: Tensor, mask: Optional[Tensor]) -> Tensor:
        """Queries from ``x [B, n, dim]``, keys and values projected from ``memory [B, m, dim]``
        -> ``[B, n, dim]``; equal to ``attend(project_q(x), *project_kv(memory), mask)`` up to
        float rounding.

        For one query without a mask (a cached generation step) the keys and values are never
        formed: ``q . (W_k m + b_k) = (W_k^T q) . m + q . b_k``, whose last term is the same for
        every key and cancels in the softmax, and ``sum_j a_j (W_v m_j + b_v) = W_v (sum_j a_j m_j)
        + b_v`` because the weights sum to 1. A step then keeps one ``[m, dim]`` tensor per
        attention instead of a key and a value tensor, for the same multiply count as projecting
        the new token's key and value: half the cache that a one-query attention has to stream
        through memory, which is what it spends its time on once the cache outgrows the CPU
        caches. The scores are computed as memory @ query, the matrix-vector orientation that
        reads the memory row by row (query @ memory^T, the form of the fused SDPA kernel, took
        2-3x longer on CPU at 800 rows; benchmarks/generation.py).
        """
        if x.shape[1] != 1 or mask is not None:
            k, v = self.project_kv(memory)
            return self.attend(self.project_q(x), k, v, mask)
        B, dim = x.shape[0], self.heads * self.head_dim
        w_k, w_v = self.kv.weight.chunk(2, dim=0)  # [dim, dim] each, rows = (head, head_dim)
        b_v = self.kv.bias.chunk(2, dim=0)[1]
        q = self.q(x[:, 0]).reshape(B, self.heads, self.head_dim) * (self.head_dim ** -0.5)
        # contiguous [B, heads, dim], transposed: the vector layout BLAS takes fastest here
        q_mem = torch.einsum("bhd,hde->bhe", q, w_k.reshape(self.heads, self.head_dim, dim)).contiguous()
        scores = torch.matmul(memory, q_mem.transpose(1, 2))  # [B, m, heads]
        mixed = torch.matmul(torch.softmax(scores, dim=1).transpose(1, 2), memory)  # [B, heads, dim]
        y = torch.einsum("bhe,hde->bhd", mixed, w_v.reshape(self.heads, self.head_dim, dim))
        return self.out(y.reshape(B, 1, dim) + b_v)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Self-attention of ``x [B, n, dim]`` on itself."""
        k, v = self.project_kv(x)
        return self.attend(self.project_q(x), k, v, mask)


class BatchCrossAttention(MultiHeadAttention):
    """Batch-cross attention BXA (eq. 15-17): ``MHA(q, k^r, v^r)`` with keys and values from the
    pair partner (rows 2n <-> 2n+1 swapped). With a causal ``mask`` each sample attends only to
    its partner's past (and present) tokens.

    The Transformer generator (``generators.GBlock``) caches what it reads: ``partner(x)`` is the
    partner's row of every pair (eq. 16-17's r), ``partner_kv(x)`` the partner's keys and values
    (eq. 16-17); ``forward`` is the uncached form of the same attention (eq. 15)."""

    def partner(self, x: Tensor) -> Tensor:
        return pair_swap(x)

    def partner_kv(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        k, v = self.project_kv(x)
        return self.partner(k), self.partner(v)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        k, v = self.partner_kv(x)
        return self.attend(self.project_q(x), k, v, mask)


def causal_mask(n_q: int, past: int, device: torch.device, window: Optional[int] = None) -> Tensor:
    """Bool ``[n_q, past + n_q]``: query i (absolute position past+i) may attend keys j <= past+i,
    and with a ``window`` W only the W most recent of them, past+i-W < j (itself included)."""
    q = torch.arange(n_q, device=device).unsqueeze(1) + past
    k = torch.arange(past + n_q, device=device).unsqueeze(0)
    allowed = k <= q
    if window is not None:
        allowed = allowed & (k > q - window)
    return allowed


def sinusoidal_encoding(length: int, dim: int, base: float = 1000.0) -> Tensor:
    """Sinusoidal positional encoding ``[length, dim]`` (used only by the Transformer D, optional)."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe
