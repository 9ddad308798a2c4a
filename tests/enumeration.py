"""Exact enumeration: the gradient every unbiased estimator must average to.

On a tiny SBN (a few units per layer) the objective E_q[f] can be summed out
over every configuration of the stochastic units, and autodiff of that sum
gives the exact gradient. An estimator is checked by drawing N independent
estimates (each one full training batch, so leave-one-out centering couples
only rows of one draw) and comparing their mean with the exact gradient,
element by element, in units of the standard error of that mean.

The shared check of tests/test_estimators.py and tests/test_relax.py
(`z_scores`): N_DRAWS = 500 independent batches, each holding COPIES = 32
copies of 3 data rows (tiled n_samples times, as in training: 96 or 192 rows
per batch mean, far below the ~100,000 rows where float32 batch means carry a
rounding bias of the size of the standard error). For every element of every
model variable's gradient, z = (mean of the N_DRAWS estimates - exact
gradient) / (standard error of that mean). Under unbiasedness z follows
Student's t with N_DRAWS - 1 degrees of freedom, close to N(0, 1) by the CLT
over the draws; a case passes if every |z| < UNBIASED_BELOW = 4, which one
element misses by chance with probability 7.3e-5. A case has 24-168
elements, so a correct estimator fails by chance with probability at most
about 1.2%, and every seed is fixed, so the outcome is reproducible. Known
biases must show as |z| > BIASED_ABOVE = 10 on the variables that carry
them.
"""

import itertools

import numpy as np
import tensorflow as tf

from rebar import models
from rebar.hparams import parse_hparams

TINY = dict(n_input=6, n_hidden=3)
N_DRAWS = 500
COPIES = 32
UNBIASED_BELOW = 4.0
BIASED_ABOVE = 10.0


def tiny_model(text, seed=0, **overrides):
  """A model with tiny sizes and random, non-zero values in every variable.

  Baselines, etas and other auxiliary variables are randomised too, so that a
  bias that vanishes at their initial values cannot hide.
  """
  values = dict(TINY)
  values.update(overrides)
  hparams = parse_hparams(text, **values)
  rng = np.random.RandomState(seed)
  mean_xs = rng.uniform(0.2, 0.8, hparams.n_input).astype(np.float32)
  model = models.build_model(hparams, mean_xs, seed)
  for var in model.model_variables + model.aux_variables:
    var.assign(rng.normal(0.0, 0.7, var.shape).astype(np.float32))
  return model


def tiny_batch(model, n_rows=3, seed=1):
  rng = np.random.RandomState(seed)
  return (rng.rand(n_rows, model.hparams.n_input) < 0.5).astype(np.float32)


def flatten(grads, variables):
  return tf.concat([tf.reshape(tf.zeros_like(v) if g is None else g, [-1])
                    for g, v in zip(grads, variables)], axis=0)


def exact_objective(network, x):
  """mean over rows of x of E_q[f] = Σ_b q(b | x) f(x, b), summed exactly."""
  n_units = network.hparams.n_hidden
  n_layer = network.hparams.n_layer
  configs = np.array(list(itertools.product(
      [0.0, 1.0], repeat=n_units * n_layer)), np.float32)
  n_configs = configs.shape[0]
  rows = tf.repeat(tf.constant(x), n_configs, axis=0)
  b = np.tile(configs, (x.shape[0], 1))
  fixed = [tf.constant(b[:, i * n_units:(i + 1) * n_units])
           for i in range(n_layer)]
  result = network.run_pass(rows, lambda i, logits: fixed[i])
  q = tf.exp(tf.add_n(result.log_q))
  return tf.reduce_sum(q * result.elbo) / x.shape[0]


def exact_gradient(model, x):
  """Exact gradient of the loss -mean E_q[f] w.r.t. the model variables."""
  with tf.GradientTape() as tape:
    loss = -exact_objective(model.network, x)
  return flatten(tape.gradient(loss, model.model_variables),
                 model.model_variables).numpy().astype(np.float64)


def sample_gradients(model, x, n_draws, estimate=None, copies=1):
  """[n_draws, n_params] model gradients, each from one independent batch.

  Each batch holds `copies` copies of x, tiled n_samples times, exactly as
  train_step would pass it; rows are independent given x, so a batch of many
  copies is one estimate of the same expectation with a smaller variance
  (leave-one-out centering stays unbiased at any batch size).
  `estimate(x, noise) -> (model_grads, ...)` defaults to model.estimate.
  """
  estimate = estimate or model.estimate
  x = tf.tile(tf.constant(x), [copies * model.hparams.n_samples, 1])

  @tf.function
  def draws():
    out = tf.TensorArray(tf.float32, size=n_draws)
    for k in tf.range(n_draws):
      noise = model.network.sample_noise(model.noise_generator, tf.shape(x)[0])
      grads = estimate(x, noise)[0]
      out = out.write(k, flatten(grads, model.model_variables))
    return out.stack()

  return draws().numpy().astype(np.float64)


def bias_in_standard_errors(model, x, n_draws, estimate=None, copies=1):
  """(mean - exact) / standard error per element, and the exact gradient.

  Elements whose estimate has no variance (e.g. exact gradients) get a
  float-rounding scale instead of a zero standard error.
  """
  samples = sample_gradients(model, x, n_draws, estimate, copies)
  exact = exact_gradient(model, x)
  mean = samples.mean(axis=0)
  standard_error = samples.std(axis=0, ddof=1) / np.sqrt(n_draws)
  scale = np.maximum(standard_error, 1e-5 * (1.0 + np.abs(exact)))
  return (mean - exact) / scale, exact


def variable_slices(model):
  """Name -> slice of the flattened gradient vector."""
  slices, start = {}, 0
  for var in model.model_variables:
    size = int(np.prod(var.shape))
    slices[var.name] = slice(start, start + size)
    start += size
  return slices


def z_scores(text, estimate_name=None, seed=3, n_draws=N_DRAWS):
  """(z per gradient element, variable slices) of the model `text` (module
  docstring): its estimate, or the one `estimate_all` names `estimate_name`
  (SBNTrackGradVariances), over n_draws batches of COPIES copies of
  tiny_batch, against the exact gradient. Seeds are fixed (`seed` for the
  model, the model's own noise generator for the draws)."""
  model = tiny_model(text, seed=seed)
  x = tiny_batch(model)
  estimate = None
  if estimate_name is not None:
    def estimate(x, noise):
      return model.estimate_all(x, noise)[estimate_name]
  z, exact = bias_in_standard_errors(
      model, x, n_draws, estimate=estimate, copies=COPIES)
  assert np.abs(exact).max() > 1e-3, 'the exact gradient is trivially zero'
  return z, variable_slices(model)


def per_variable(z, slices):
  """Variable name -> largest |z| over its elements (for failure messages)."""
  return {name.split(':')[0]: float(np.abs(z[s]).max())
          for name, s in slices.items()}
