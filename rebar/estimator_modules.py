"""Estimator modules: an estimator's auxiliary variables (baselines, etas)
and the wiring that turns its surrogates (rebar.estimators.sbn) into
gradients on a `Step` (reference sections 6.1-6.5; REINFORCE with a
per-example leave-one-out baseline, ARM and DisARM).

Every module's `estimate(step)` returns an `Estimate`. REBAR, Dynamic REBAR
and RELAX are in rebar.rebar_modules.
"""

from typing import NamedTuple

import tensorflow as tf

from rebar.estimators import sbn as estimators
from rebar.networks import Dense
from rebar.sbn import antithetic_sampler

BASELINE_HIDDEN = 100


def eta_scale(w):
  """η = 2 σ(w): a positive scale that starts at 1 for w = 0."""
  return 2.0 * tf.sigmoid(w)


class Baseline(tf.Module):
  """c(x): input x - mean_xs, dense 100 tanh, dense 1 linear; [B, D] -> [B]."""

  def __init__(self, network, generator, name='baseline'):
    super().__init__(name=name)
    self.mean_xs = network.mean_xs
    self.hidden = Dense(network.hparams.n_input, BASELINE_HIDDEN, generator,
                        name + '/hidden')
    self.output = Dense(BASELINE_HIDDEN, 1, generator, name + '/out')
    self.variables_in_order = (self.hidden.variables_in_order
                               + self.output.variables_in_order)

  def __call__(self, x):
    return self.output(tf.tanh(self.hidden(x - self.mean_xs)))[:, 0]


class Estimate(NamedTuple):
  """What an estimator module returns for one step.

  model_grads: gradients aligned with `network.variables_in_order`.
  aux_grads: gradients aligned with the module's `aux_variables`.
  metrics: name -> scalar tensor: the printed values (`printed_names`) and
    any other figure a caller may ask for by name (e.g.
    `temperature_gradient`, ∂V/∂t of Dynamic REBAR).
  """
  model_grads: list
  aux_grads: list
  metrics: dict


class Estimator(tf.Module):
  """An estimator with its auxiliary variables.

  `estimate(step)` returns an Estimate; its metrics hold at least
  `printed_names`.
  """

  printed_names = ()

  def __init__(self, network, generator, name):
    super().__init__(name=name)
    self.network = network
    self.hparams = network.hparams
    self.aux_variables = []

  def temperature(self):
    return tf.constant(self.hparams.temperature, tf.float32)

  def printed(self, *values):
    """The metrics of `printed_names`, from their values in that order."""
    return dict(zip(self.printed_names, values))

  def model_gradient(self, step, target):
    """∂target/∂θ for every model variable (zeros where unconnected)."""
    return step.tape.gradient(
        target, self.network.variables_in_order,
        unconnected_gradients=tf.UnconnectedGradients.ZERO)


class ReinforceEstimator(Estimator):
  """SBN: REINFORCE with leave-one-out centering (6.1)."""

  printed_names = ('elbo', 'rms_centered_elbo')

  def estimate(self, step):
    with step.tape:
      loss, rms = estimators.reinforce(step.hard)
    return Estimate(self.model_gradient(step, loss), [],
                    self.printed(tf.reduce_mean(step.hard.elbo), rms))


class NVILEstimator(Estimator):
  """NVIL (6.2)."""

  printed_names = ('elbo',)

  def __init__(self, network, generator, name='nvil'):
    super().__init__(network, generator, name)
    self.baseline = Baseline(network, generator, name + '_baseline')
    self.aux_variables = self.baseline.variables_in_order

  def estimate(self, step):
    with step.tape:
      loss, baseline_loss = estimators.nvil(step.hard, self.baseline(step.x))
    return Estimate(self.model_gradient(step, loss),
                    step.tape.gradient(baseline_loss, self.aux_variables),
                    self.printed(tf.reduce_mean(step.hard.elbo)))


class SimpleMuPropEstimator(Estimator):
  """SimpleMuProp (6.3)."""

  printed_names = ('elbo', 'mean_pass_elbo')

  def __init__(self, network, generator, name='simple_muprop'):
    super().__init__(network, generator, name)
    self.baseline = Baseline(network, generator, name + '_baseline')
    self.eta_w = tf.Variable(0.0, name=name + '_eta')
    self.aux_variables = [self.eta_w] + self.baseline.variables_in_order

  def estimate(self, step):
    mean = step.mean()
    with step.tape:
      loss, baseline_loss = estimators.simple_muprop(
          step.hard, mean.elbo, eta_scale(self.eta_w), self.baseline(step.x))
    return Estimate(self.model_gradient(step, loss),
                    step.tape.gradient(baseline_loss, self.aux_variables),
                    self.printed(tf.reduce_mean(step.hard.elbo),
                                 tf.reduce_mean(mean.elbo)))


class MuPropEstimator(Estimator):
  """MuProp (6.4): per-layer η0_i, η1_i and baseline c_i(x)."""

  printed_names = ('elbo', 'mean_pass_elbo')

  def __init__(self, network, generator, name='muprop'):
    super().__init__(network, generator, name)
    n_layer = network.n_layer
    self.eta0_w = [tf.Variable(0.0, name='%s_eta0_%d' % (name, i))
                   for i in range(n_layer)]
    self.eta1_w = [tf.Variable(0.0, name='%s_eta1_%d' % (name, i))
                   for i in range(n_layer)]
    self.baselines = [Baseline(network, generator, '%s_baseline_%d'
                               % (name, i)) for i in range(n_layer)]
    self.aux_variables = self.eta0_w + self.eta1_w + [
        v for b in self.baselines for v in b.variables_in_order]

  def estimate(self, step):
    mean = step.mean()
    with step.tape:
      total = tf.reduce_sum(mean.elbo)
    mean_grads = step.tape.gradient(total, mean.activations)
    with step.tape:
      loss, baseline_loss = estimators.muprop(
          step.hard, mean, mean_grads,
          [eta_scale(w) for w in self.eta0_w],
          [eta_scale(w) for w in self.eta1_w],
          [b(step.x) for b in self.baselines])
    return Estimate(self.model_gradient(step, loss),
                    step.tape.gradient(baseline_loss, self.aux_variables),
                    self.printed(tf.reduce_mean(step.hard.elbo),
                                 tf.reduce_mean(mean.elbo)))


class GumbelEstimator(Estimator):
  """Concrete relaxation at the fixed temperature (6.5)."""

  printed_names = ('elbo', 'relaxed_elbo')

  def estimate(self, step):
    relaxed = step.relaxed(self.hparams.temperature,
                           key=self.hparams.temperature)
    with step.tape:
      loss = estimators.gumbel(relaxed)
    return Estimate(self.model_gradient(step, loss), [],
                    self.printed(tf.reduce_mean(step.hard.elbo),
                                 tf.reduce_mean(relaxed.elbo)))


class ReinforceLOOEstimator(Estimator):
  """REINFORCE with a leave-one-out baseline over each example's
  n_samples samples (Kool et al. 2019): the baseline of a sample is the mean
  f of the example's other samples."""

  printed_names = ('elbo',)

  def estimate(self, step):
    with step.tape:
      loss = estimators.reinforce_loo(step.hard, self.hparams.n_samples)
    return Estimate(self.model_gradient(step, loss), [],
                    self.printed(tf.reduce_mean(step.hard.elbo)))


class AntitheticEstimator(Estimator):
  """ARM (Yin and Zhou 2019) or DisARM (Dong, Mnih and Tucker 2020) per
  stochastic layer (`kind` 'arm' or 'disarm').

  For layer l, with the layers below at their hard samples, the hard
  sample b~_l = 1[u_l > σ(-ℓ_l)] and its antithetic partner
  b_l = 1[u_l < σ(ℓ_l)] each continue the pass above l with the same noise
  u (common random numbers: the two f values differ only through b_l and
  what it changes above). The per-unit estimate of ∂E[f]/∂ℓ_l
  (estimators.sbn.antithetic_layer_estimate) is backpropagated to layer
  l's variables through ℓ_l; the generative variables get the exact
  gradient of m. One extra pass from each layer up; no auxiliary variables.

  `above_noise`, a tf.random.Generator, makes the partner's pass draw fresh
  noise for the layers above l instead (independent branches; also
  unbiased). Shared noise is the default because it gives the lower
  variance (bench/antithetic_noise.py; docs/estimators.md has the figures).
  """

  printed_names = ('elbo',)

  def __init__(self, network, generator, kind, name=None, above_noise=None):
    super().__init__(network, generator, name or kind)
    self.kind = kind
    self.above_noise = above_noise

  def partner_noise(self, step, layer):
    """The noise of layer `layer`'s partner pass: the step's, or with
    `above_noise` fresh draws above `layer`."""
    if self.above_noise is None:
      return step.noise
    fresh = self.network.sample_noise(self.above_noise, tf.shape(step.x)[0])
    return step.noise[:layer + 1] + fresh[layer + 1:]

  def estimate(self, step):
    hard = step.hard
    estimates = []
    for layer in range(self.network.n_layer):
      with step.tape:
        partner = self.network.run_pass(
            step.x, antithetic_sampler(self.partner_noise(step, layer), layer),
            start=hard, start_layer=layer)
      estimates.append(estimators.antithetic_layer_estimate(
          self.kind, hard, partner, layer, step.noise[layer]))
    with step.tape:
      loss = estimators.per_layer_surrogate(hard, estimates)
    return Estimate(self.model_gradient(step, loss), [],
                    self.printed(tf.reduce_mean(hard.elbo)))
