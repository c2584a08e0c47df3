"""SUHMo networks: generators, discriminators and the window sampler, chosen by config through registries.

The registries (names -> implementations) live in ``suhmo.registry``, readable without torch.
``build_generator(cfg)`` picks ``GENERATORS[cfg.model.variant]`` (the SUHMo GANs ``rnn``,
``transformer``, or the VAE baselines ``actor``, ``hitdvae``); ``build_discriminator(cfg)``
picks the sequence-D form ``SEQ_DISCRIMINATORS[cfg.d_form]`` for D_s and D_s^j and adds D_F.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from suhmo.config import ConfigError
from suhmo.registry import GENERATORS, SEQ_DISCRIMINATORS, TAU_FAMILIES
from suhmo.models.actor import ActorGenerator
from suhmo.models.discriminators import (
    Discriminator,
    FrameDiscriminator,
    RNNSeqDiscriminator,
    TransformerSeqDiscriminator,
)
from suhmo.models.generators import GenOutput, Generator, TransformerGenerator
from suhmo.models.hitdvae import HitDVAEGenerator
from suhmo.models.layers import batch_pool, feature_dim, pair_pool, pair_swap
from suhmo.models.rnn import RNNGenerator
from suhmo.models.windows import (
    WindowPlan,
    WindowSampler,
    multiscale_score,
    num_feature_frames,
    register_tau_family,
)



def register_generator(name: str, factory: Callable) -> None:
    """``factory(cfg) -> Generator``."""
    GENERATORS.register(name, factory)


def register_seq_discriminator(name: str, factory: Callable) -> None:
    """``factory(cfg.model, joint: bool) -> nn.Module`` scoring windows ``[N, tau, 410] -> [N]`` (joint: ``[N/2]``)."""
    SEQ_DISCRIMINATORS.register(name, factory)


def build_generator(cfg) -> Generator:
    name = cfg.model.variant
    if name not in GENERATORS:
        raise ConfigError(f"model.variant={name!r}: choose one of {', '.join(GENERATORS)}")
    return GENERATORS[name](cfg)


def build_discriminator(cfg) -> Discriminator:
    form = cfg.d_form
    if form not in SEQ_DISCRIMINATORS:
        raise ConfigError(f"model.d_form={form!r}: choose one of auto, {', '.join(SEQ_DISCRIMINATORS)}")
    make, m = SEQ_DISCRIMINATORS[form], cfg.model
    frame = FrameDiscriminator(m.frame_d_hidden, spectral=m.spectral_norm, in_dim=feature_dim(m))
    return Discriminator(frame, make(m, False), make(m, True) if m.joint_d else None)


def estimated_parameters(cfg) -> int:
    """An upper estimate of the parameters of G and D from ``cfg``'s widths, computed without
    building anything (each width w of a block costs at most ~8 w^2: an LSTM's four gates over
    input and state, a Transformer block's attention and feed-forward), so that a width from a
    config, a search space or a checkpoint is checked before torch allocates it."""
    m = cfg.model
    io = 410  # per-frame features / landmark state

    def block(width: int, blocks: int = 1) -> int:
        return 8 * int(width) * (int(width) + io) * max(1, int(blocks))

    if m.variant == "actor":
        a = cfg.actor
        g = 2 * int(a.layers) * (4 * a.width * a.width + 2 * a.width * a.ff) + block(a.latent)
    elif m.variant == "hitdvae":
        h = cfg.hitdvae
        g = 2 * int(h.layers) * (4 * h.width * h.width + 2 * h.width * h.ff) + block(h.latent)
    else:
        g = block(m.hidden_g, m.blocks_g) + block(m.mlp_g) + block(m.emb_g, m.blocks_g)
    d = block(m.hidden_d, m.blocks_d) * 2 + block(m.emb_d, m.blocks_d) * 2 + block(m.frame_d_hidden)
    return int(g + d)


def check_model_memory(cfg, where: str, *, training: bool) -> None:
    """SuhmoError before building a model whose widths need more memory than this machine has:
    4 bytes a parameter, x4 when training (weights, gradients, Adam's two moments). The
    message names the widest field."""
    from suhmo.utils import check_memory

    n = estimated_parameters(cfg)
    m = cfg.model
    fields = {f"model.{k}": getattr(m, k) for k in ("hidden_g", "mlp_g", "emb_g", "hidden_d", "emb_d",
                                                     "frame_d_hidden")}
    if m.variant in ("actor", "hitdvae"):
        v = getattr(cfg, m.variant)
        fields.update({f"{m.variant}.{k}": getattr(v, k) for k in ("width", "ff", "latent")})
    widest = max(fields, key=lambda k: int(fields[k]))
    check_memory(n * 4 * (4 if training else 1),
                 f"{where}: a model of up to {n:.3g} parameters ({widest}={fields[widest]})",
                 f"lower {widest}")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "ActorGenerator", "HitDVAEGenerator", "GENERATORS", "SEQ_DISCRIMINATORS", "TAU_FAMILIES", "Discriminator", "FrameDiscriminator", "GenOutput",
    "Generator", "RNNGenerator", "RNNSeqDiscriminator", "TransformerGenerator", "TransformerSeqDiscriminator",
    "WindowPlan", "WindowSampler", "batch_pool", "build_discriminator", "build_generator", "count_parameters",
    "multiscale_score", "num_feature_frames", "pair_pool", "pair_swap", "register_generator",
    "register_seq_discriminator", "register_tau_family",
]
