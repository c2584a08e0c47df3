"""Analytic matmul FLOP counts of SUHMo's networks (2 FLOPs per multiply-add).

Only matrix products are counted (Linear, LSTM gates, attention scores and mixing); the
elementwise work (activations, LayerNorm, LSTM cell updates) is left out, so the counts are
a lower bound of the work and ``flops / seconds`` is a fair "achieved GEMM rate".

The counts follow the work the code does, not a naive re-implementation: the Transformer
sequence D embeds every feature frame once and cuts its windows from the embeddings; the RNN
sequence D projects every feature frame that a window covers through W_ih once (``[U, B, 410] x
[410, 4H]``, U <= T, ``used_frames``) and runs one
recurrence per distinct window start, as long as the longest window there (``window_tracks``;
the first step of a track has h = 0, so no W_hh product); backward = 2x forward, except the
G step, where D is frozen and only input gradients are formed (1x).
"""

from __future__ import annotations

from suhmo.models.discriminators import window_tracks

try:
    from suhmo.models.discriminators import used_frames
except ImportError:  # an older checkout (train_step.py --phases run on it) projects every frame
    def used_frames(plan, num_frames):
        return None, plan
from suhmo.models.step import step_width
from suhmo.models.layers import feature_dim

FRAME = 136


def _mlp(d_in: int, width: int, d_out: int, depth: int) -> int:
    dims = [d_in] + [width] * depth + [d_out]
    return sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))


def generator_forward(cfg, batch: int, obs: int, n_future: int) -> int:
    step = step_width(cfg.model.g_centred and not cfg.model.delta)  # generator input per frame
    m = cfg.model
    steps = obs + n_future - 1  # tokens / LSTM steps
    if m.variant == "rnn":
        H, M = m.hidden_g, m.mlp_g
        d_in = step + (H if m.pair_g else 0)
        per_step = 2 * 4 * H * (d_in + H) + _mlp(H + step, M, FRAME, 2)
        init = _mlp(step, 2 * H, 2 * H, 1)
        return batch * (init + steps * per_step)
    E, F = m.emb_g, m.hidden_g
    n_att = 2 if m.pair_g else 1
    per_token = 2 * step * E + m.blocks_g * (n_att * 2 * 4 * E * E + 2 * 2 * E * F) + _mlp(E, F, FRAME, 1)
    ctx = steps * (steps + 1) // 2  # keys seen, summed over the tokens (causal)
    if m.attn_window_g is not None:  # at most W keys per token
        ctx = sum(min(t + 1, m.attn_window_g) for t in range(steps))
    attention = m.blocks_g * n_att * 2 * 2 * E * ctx
    return batch * (steps * per_token + attention)


def _seq_input(cfg, batch: int, n_feat: int) -> int:
    """A sequence D's layer that reads the features, once per frame: the LSTM's input projection
    (``[410, 4H]``) or the Transformer's embedding (``[410, E]``)."""
    width = 4 * cfg.model.hidden_d if cfg.d_form == "rnn" else cfg.model.emb_d
    return batch * n_feat * 2 * feature_dim(cfg.model) * width


def _seq_d(cfg, batch: int, plan, joint: bool, n_feat: int) -> int:
    m = cfg.model
    if cfg.d_form == "rnn":
        frames, _ = used_frames(plan, n_feat)
        total = _seq_input(cfg, batch, n_feat if frames is None else int(frames.numel()))
    else:
        total = _seq_input(cfg, batch, n_feat)
    if cfg.d_form == "rnn":
        H = m.hidden_d
        tracks = window_tracks(plan)
        total += batch * (tracks.steps - len(tracks.lengths)) * 2 * 4 * H * H  # recurrence
        n_win = sum(int(s.numel()) for _, s in plan)
        return total + (batch // 2 if joint else batch) * n_win * _mlp(H, H, 1, 1)
    E, F = m.emb_d, m.hidden_d
    for tau, starts in plan:
        n = int(starts.numel())
        rows = batch * n
        L = tau + 1  # + class token
        blocks = m.blocks_d
        att = 2 * 4 * E * E * L + 2 * 2 * E * L * L  # projections + scores/mixing
        ff = 2 * 2 * E * F * L
        if joint:  # the first block pools pairs after attention: FF and later blocks on half the rows
            total += rows * att + rows // 2 * ff + rows // 2 * (blocks - 1) * (att + ff)
            total += rows // 2 * _mlp(E, F, 1, 1)
        else:
            total += rows * blocks * (att + ff) + rows * _mlp(E, F, 1, 1)
    return total


def discriminator_forward(cfg, batch: int, n_frames_pos: int, plan, *, n_future: int) -> int:
    """All streams with a positive weight on ``batch`` sequences of ``n_frames_pos`` positions."""
    w, m = cfg.loss, cfg.model
    total = 0
    if w.w_frame > 0:
        n_frame = min(n_future, n_frames_pos - 2)
        total += batch * n_frame * _mlp(feature_dim(cfg.model), m.frame_d_hidden, 1, 2)
    if w.w_seq > 0:
        total += _seq_d(cfg, batch, plan, joint=False, n_feat=n_frames_pos - 2)
    if m.joint_d and w.w_joint > 0:
        total += _seq_d(cfg, batch, plan, joint=True, n_feat=n_frames_pos - 2)
    return total


def _input_layers(cfg, batch: int, n_frames_pos: int, plan, *, n_future: int) -> int:
    """The part of ``discriminator_forward`` done by the layers that read the per-frame features."""
    w, m = cfg.loss, cfg.model
    n_feat = n_frames_pos - 2
    total = batch * min(n_future, n_feat) * 2 * feature_dim(cfg.model) * m.frame_d_hidden if w.w_frame > 0 else 0
    streams = int(w.w_seq > 0) + int(m.joint_d and w.w_joint > 0)
    if cfg.d_form == "rnn":  # the RNN D projects the frames its windows cover (used_frames)
        frames, _ = used_frames(plan, n_feat)
        n_feat = n_feat if frames is None else int(frames.numel())
    return total + streams * _seq_input(cfg, batch, n_feat)


def train_iteration(cfg, batch: int, plan) -> int:
    """One D step + one G step with the fakes generated once.

    G: forward + backward (2x) = 3x. D step: D on real + fake (2B sequences, detached),
    forward and weight + hidden gradients = 3x, less the input gradient of the layers that
    read the features (nothing needs it). G step: D on the fakes with frozen weights,
    forward + input-gradient backward = 2x.
    """
    O, S = cfg.data.obs_len, cfg.data.seq_len
    g = generator_forward(cfg, batch, O, S)
    if not cfg.loss.adversarial:
        return 3 * g
    d_step = 3 * discriminator_forward(cfg, 2 * batch, O + S, plan, n_future=S)
    d_step -= _input_layers(cfg, 2 * batch, O + S, plan, n_future=S)
    g_step = discriminator_forward(cfg, batch, O + S, plan, n_future=S)
    return 3 * g + d_step + 2 * g_step
