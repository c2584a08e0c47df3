"""Training speed options: ``train.compile``, ``train.amp`` and the device set-up of a run.

- :func:`compile_for_training` (``train.compile``): ``torch.compile`` of the modules that every
  autoregressive step calls (the RNN generator's velocity head, the Transformer generator's
  feed-forward layers and head) and of D_F. (The RNN generator's training pass reads its LSTM
  cell's and head's weights directly, ``RNNCore._rollout_fused``, not the modules: for the RNN
  only D_F's compilation acts in training, and at the cpu preset its compile time is not won
  back: experiments/README.md, "Speed options: measurements".) Compiled in place
  (``nn.Module.compile``), so state dicts, checkpoints and the moving average of G are
  unchanged. Compilation is lazy in torch; here it is forced at once by a *probe*, the
  trainer's one forward and backward of the real losses at the real shapes, after which every weight,
  buffer, gradient and RNG state is restored: the run is the one it would be uncompiled. When
  the probe fails (no C compiler, an unsupported op), the modules are returned to eager mode
  and the run continues uncompiled after one warning.
- :func:`autocast` (``train.amp``): bf16 autocast of the forward passes and losses where bf16
  is native (CUDA with bf16, or a CPU with AVX512-BF16 or AMX: :func:`amp_supported`); weights,
  optimiser states and the Euler integration of positions stay fp32. The recurrences' autograd
  nodes (``kernels.WindowLSTM`` for the RNN sequence discriminators, ``kernels.RNNRollout`` for
  the RNN generator) take the same mixed precision inside: their matrix products, forward and
  backward, on bf16 operands (fp32 sums, results rounded to bf16 as under autocast), their
  states, pointwise work and gradient buffers fp32. On a CPU with native bf16 products (oneDNN
  runs them at about twice the fp32 rate) this is where the small size's time goes (see
  benchmarks/vs_reference.py ``--amp``); elsewhere bf16 products are emulated and slower, and
  ``train.amp`` stays off after one warning.
- :func:`prepare_device`: ``torch.backends.cudnn.benchmark`` on CUDA, and freed host memory kept
  for reuse instead of returned to the kernel page by page (:func:`reuse_freed_memory`);
  :func:`to_device`: batches go through pinned memory to a CUDA device (asynchronous copy).
- :func:`eager`: evaluation and sampling run the compiled modules eagerly (other batch sizes and
  no-grad mode would otherwise trigger recompilations for a few calls per evaluation).
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from suhmo.models.kernels import cpu_native_bf16  # train.amp's CPU check (amp_supported)


def prepare_device(device: torch.device) -> None:
    """Per-process settings for ``device``: cuDNN picks its fastest kernels for fixed shapes;
    freed host memory is kept for reuse (:func:`reuse_freed_memory`)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    reuse_freed_memory()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
REUSE_LIMIT_BYTES = 1 << 30


def reuse_freed_memory(limit_bytes: int = REUSE_LIMIT_BYTES) -> bool:
    """glibc: serve allocations up to ``limit_bytes`` from the heap and keep freed memory there.

    By default glibc maps every allocation above 128 KiB-32 MiB afresh (``mmap``) and unmaps it
    when freed, so each training iteration's activations and buffers land on new pages that the
    kernel must fault in and zero again. Keeping freed memory in the heap removes most of
    those page faults and their system time for a few per cent more resident memory
    (experiments/README.md, "Speed options: measurements"). Process-wide; returns False where
    this is not glibc (nothing changed)."""
    global _reuse_done
    if _reuse_done is not None:
        return _reuse_done
    _reuse_done = False
    try:
        import ctypes
        import ctypes.util
        import platform

        if platform.libc_ver()[0] != "glibc":
            return False
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        _reuse_done = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(limit_bytes)) == 1
                           and libc.mallopt(_M_TRIM_THRESHOLD, int(limit_bytes)) == 1)
    except (OSError, AttributeError, TypeError):
        pass
    return _reuse_done


_reuse_done: Optional[bool] = None


def to_device(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy batch on ``device``; to CUDA through pinned memory, without blocking the host."""
    t = torch.from_numpy(batch)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def amp_supported(device: torch.device) -> bool:
    """bf16 mixed precision pays here: a CUDA device with bf16 support, or a CPU with native bf16
    products (:func:`cpu_native_bf16`; elsewhere they are emulated, slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_native_bf16()


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast context for ``device`` when ``enabled`` (and supported), else a no-op."""
    if enabled and amp_supported(device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_amp(device: torch.device, enabled: bool) -> bool:
    """``train.amp`` as it will run: off, with one warning, where bf16 is not supported."""
    if enabled and not amp_supported(device):
        what = ("has no native bf16 products (AVX512-BF16 or AMX)" if device.type == "cpu"
                else "does not support bf16")
        warnings.warn(f"train.amp: {device} {what}; training continues in fp32", stacklevel=2)
        return False
    return bool(enabled)


def eager():
    """Run compiled modules eagerly inside (evaluation, sampling)."""
    return torch.compiler.set_stance("force_eager")


BACKEND = "inductor"  # torch.compile backend of compile_for_training (the tests use cheaper ones)


def step_modules(G: nn.Module, D: Optional[nn.Module]) -> list[nn.Module]:
    """The modules :func:`compile_for_training` compiles (see the module docstring)."""
    core = G.core
    mods: list[nn.Module] = []
    if hasattr(core, "cell"):  # RNN generator (its training pass does not call core.cell, see above)
        mods += [core.head]
    else:  # Transformer generator
        mods += [block.ff for block in core.blocks] + [core.head]
    if D is not None and getattr(D, "frame", None) is not None:
        mods.append(D.frame)
    return mods


def _uncompile(mods: list[nn.Module]) -> None:
    for m in mods:
        m._compiled_call_impl = None


def compile_for_training(G: nn.Module, D: Optional[nn.Module], probe: Callable[[], None],
                         device: torch.device) -> Optional[float]:
    """Compile :func:`step_modules` in place and force their compilation by ``probe()``, one
    training iteration's forward and backward passes (the trainer's); the weights, gradients and
    RNG states are as before afterwards.

    Returns the seconds spent (compilation of the forward and backward graphs at the training
    shapes), or None when compiling failed and the modules run eagerly (one warning)."""
    from suhmo.checkpoint import rng_state, set_rng_state

    mods = step_modules(G, D)
    nets = [net for net in (G, D) if net is not None]
    t0 = time.perf_counter()
    saved = ([copy.deepcopy(net.state_dict()) for net in nets], rng_state())
    try:
        for m in mods:
            m.compile(backend=BACKEND)
        probe()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - any compiler failure: the run goes on uncompiled
        _uncompile(mods)
        root = e
        while (getattr(root, "inner_exception", None) or root.__cause__) is not None:
            root = getattr(root, "inner_exception", None) or root.__cause__  # the compiler's own error
        first = (str(root).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"train.compile: compiling failed ({type(root).__name__}: {first}); training continues "
                      f"uncompiled", stacklevel=2)
        seconds = None
    finally:
        for net, state in zip(nets, saved[0]):
            for p in net.parameters():
                p.grad = None
            net.load_state_dict(state)
        set_rng_state(saved[1])
    return seconds
