"""The fast implementations of the models' heavier passes: custom ``torch.autograd.Function``s
with their backward written out, each computing what autograd computes over its reference
expression with fewer operations and copies, each justified by a benchmark and checked
against autograd by ``torch.autograd.gradcheck`` (tests/test_kernels.py):

- ``attention.CachedAttention``: causal attention over a preallocated key/value cache written in
  place, for the Transformer generator's training pass (``generators.GBlock``).
- ``window_lstm.WindowLSTM``: one LSTM over every window of a window plan, for the RNN
  sequence discriminators (``discriminators.lstm_window_states``; reference:
  ``discriminators.reference_window_states``).
- ``rollout.RNNRollout``: the RNN generator's training pass over all its steps as one node
  (``rnn.RNNCore``; reference: the step loop ``rnn.RNNCore.reference``,
  tests/test_step_equivalence.py).
- ``features.SequenceFeatures``, ``features.MotionL2``: the discriminators' per-frame features
  and eq. 11's L2 (``losses``; reference: the autograd expressions beside them), whose autograd
  graphs were dozens of full-size operations on ``[B, T, 68, 2]`` tensors with 2-element inner
  loops, written out with each point as one element of twice the float's size
  (``geometry.points``). The shape normalisation of the semantic encoding has the same form in
  ``geometry.CentreScale``.

``ops`` holds what the recurrences share: the products by :func:`ops.linear` (oneDNN's where
torch's MKL one is slower on the CPU, the same float32 maths summed in another order), tanh as
``2 sigmoid(2 y) - 1`` (:func:`ops.tanh_sigmoid`; torch's CPU tanh is ~5x the cost of its
sigmoid) on pre-activations doubled by the weight rows (:func:`ops.double_g`, exact), and under
``train.amp`` bf16 operands of the recurrences' products (``lowp``, :func:`ops.low`; states,
pointwise work and gradient buffers stay fp32: mixed precision inside the nodes that autocast
cannot see into, benchmarks/old_new.py ``--amp``).

The switch: :func:`fast_enabled` is True by default; inside :func:`reference` the models run
the reference implementations instead (the RNN generator's step loop, the window LSTM's autograd
recurrence, the autograd features and L2), for checks and for reading. The paper's concepts
(eq. 4, 5, 13-17) live in ``step``, ``rnn``, ``generators``, ``windows`` and ``layers``.
"""

import contextlib
from typing import Iterator

from suhmo.models.kernels.attention import CachedAttention
from suhmo.models.kernels.features import MotionL2, SequenceFeatures
from suhmo.models.kernels.ops import amp_dtype, cpu_native_bf16, linear
from suhmo.models.kernels.rollout import RNNRollout
from suhmo.models.kernels.window_lstm import WindowLSTM

_FAST = [True]  # the switch's state: fast implementations (True) or references (False)


def fast_enabled() -> bool:
    """Whether the models run the fast implementations (default) rather than their references."""
    return _FAST[0]


@contextlib.contextmanager
def reference(on: bool = True) -> Iterator[None]:
    """Run the reference implementations inside (``on=False``: the fast ones), restored after."""
    was = _FAST[0]
    _FAST[0] = not on
    try:
        yield
    finally:
        _FAST[0] = was


__all__ = ["CachedAttention", "MotionL2", "RNNRollout", "SequenceFeatures", "WindowLSTM", "amp_dtype",
           "cpu_native_bf16", "fast_enabled", "linear", "reference"]
