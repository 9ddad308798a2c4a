"""Exact enumeration: the gradient every unbiased estimator must average to.

On a tiny SBN (a few units per layer) the objective E_q[f] can be summed out
over every configuration of the stochastic units, and autodiff of that sum
gives the exact gradient. An estimator is checked by drawing N independent
estimates (each one full training batch, so leave-one-out centering couples
only rows of one draw) and comparing their mean with the exact gradient,
element by element, in units of the standard error of that mean.
"""

import itertools

import numpy as np
import tensorflow as tf

from rebar import models
from rebar.hparams import parse_hparams

TINY = dict(n_input=6, n_hidden=3)


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
