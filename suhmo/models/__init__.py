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
    """``factory(cfg, joint: bool) -> nn.Module`` scoring windows ``[N, tau, 410] -> [N]`` (joint: ``[N/2]``)."""
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
    make = SEQ_DISCRIMINATORS[form]
    frame = FrameDiscriminator(cfg.model.frame_d_hidden, spectral=cfg.model.spectral_norm, in_dim=feature_dim(cfg))
    return Discriminator(frame, make(cfg, False), make(cfg, True) if cfg.model.joint_d else None)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "ActorGenerator", "HitDVAEGenerator", "GENERATORS", "SEQ_DISCRIMINATORS", "TAU_FAMILIES", "Discriminator", "FrameDiscriminator", "GenOutput",
    "Generator", "RNNGenerator", "RNNSeqDiscriminator", "TransformerGenerator", "TransformerSeqDiscriminator",
    "WindowPlan", "WindowSampler", "batch_pool", "build_discriminator", "build_generator", "count_parameters",
    "multiscale_score", "num_feature_frames", "pair_pool", "pair_swap", "register_generator",
    "register_seq_discriminator", "register_tau_family",
]
