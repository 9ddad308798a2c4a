"""One training step's shared computation (reference sections 4-6).

A `Step` holds the data, the noise and the hard pass of one step, and
computes the other passes an estimator asks for (mean, relaxed, the
conditional noise) once, on one persistent tape, so that every estimator
run on the step differentiates its own surrogates.
"""

import tensorflow as tf

from rebar.sbn import conditional_noise, relaxed_sampler


class Step:
  """What one training step's estimators share: the data, the noise, the
  hard pass, and passes computed on demand once. Everything is recorded on
  one persistent tape, so each estimator differentiates its own surrogates.

  Args:
    network: SBNNetwork.
    x: [B, D] rows.
    noise: list of L uniform tensors [B, H].
  """

  def __init__(self, network, x, noise):
    self.network = network
    self.x = x
    self.noise = noise
    self.tape = tf.GradientTape(persistent=True)
    with self.tape:
      self.hard = network.hard_pass(x, noise)
    self._mean = None
    self._conditional_noise = None
    self._relaxed = {}

  def mean(self):
    """The mean (MuProp) pass."""
    if self._mean is None:
      with self.tape:
        self._mean = self.network.mean_pass(self.x)
    return self._mean

  def conditional_noise(self):
    """v per layer, from the hard pass's logits (reference section 4)."""
    if self._conditional_noise is None:
      with self.tape:
        self._conditional_noise = [
            conditional_noise(logits, u)
            for logits, u in zip(self.hard.logits, self.noise)]
    return self._conditional_noise

  def relaxed(self, temperature, key=None):
    """The relaxed pass over all layers with noise u.

    Passes with the same `key` (a fixed temperature) are computed once.
    """
    if key is not None and key in self._relaxed:
      return self._relaxed[key]
    with self.tape:
      result = self.network.run_pass(self.x, relaxed_sampler(
          self.noise, temperature, self.network.hparams.muprop_relaxation))
    if key is not None:
      self._relaxed[key] = result
    return result
