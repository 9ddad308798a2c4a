"""Models: a network, an estimator and two Adams (reference sections 5-6).

A model's `train_step(x)` (called inside a compiled function, never eagerly
per example) draws the step's noise, runs the passes once, asks the estimator
for a surrogate loss, applies the model gradient and the auxiliary gradient,
and updates the gradient-variance tracker.
"""

import math

import tensorflow as tf

from rebar import estimators
from rebar.optim import Adam, GradVarianceTracker
from rebar.sbn import SBNNetwork

# How much faster the auxiliary parameters (baselines, etas, temperature)
# learn than the model parameters (reference section 5).
AUX_LEARNING_RATE_SCALE = 10.0


class SBNModel(tf.Module):
  """Base of every model: the SBN network, optimizers and variance tracking.

  Subclasses set `printed_names` and implement `estimate`.

  Args:
    hparams: HParams.
    mean_xs: [D] per-pixel training mean.
    seed: int seed of the initial weights and the noise generator.
  """

  printed_names = ()

  def __init__(self, hparams, mean_xs, seed):
    super().__init__(name=hparams.model)
    self.hparams = hparams
    init_generator = tf.random.Generator.from_seed(seed)
    self.network = SBNNetwork(hparams, mean_xs, init_generator)
    self.model_variables = self.network.variables_in_order
    self.aux_variables = self.build_aux_variables(init_generator)
    # Separate streams so that evaluation does not shift training's noise.
    self.noise_generator = tf.random.Generator.from_seed(seed + 1)
    self.eval_generator = tf.random.Generator.from_seed(seed + 2)
    self.model_optimizer = Adam(self.model_variables, hparams.learning_rate,
                                beta2=hparams.beta2, name='model_adam')
    self.aux_optimizer = Adam(
        self.aux_variables, AUX_LEARNING_RATE_SCALE * hparams.learning_rate,
        beta2=hparams.beta2, name='aux_adam')
    self.tracker = GradVarianceTracker(self.model_variables)

  def build_aux_variables(self, generator):
    """Creates the auxiliary variables (baselines, etas); returns the list."""
    del generator
    return []

  @property
  def rows_per_example(self):
    return self.hparams.n_samples

  def temperature(self):
    """The relaxation temperature now (for summaries)."""
    return tf.constant(self.hparams.temperature, tf.float32)

  def estimate(self, x, noise):
    """Returns (model_grads, aux_grads, printed) for one step.

    Args:
      x: [B, D] rows (examples already tiled n_samples times).
      noise: list of L uniform tensors [B, H].
    Returns:
      model_grads aligned with `model_variables`, aux_grads aligned with
      `aux_variables`, printed: [len(printed_names)] float32.
    """
    raise NotImplementedError

  def train_step(self, x):
    """One update on a batch [batch, D]; returns (printed, variance figure)."""
    x = tf.tile(x, [self.hparams.n_samples, 1])
    noise = self.network.sample_noise(self.noise_generator, tf.shape(x)[0])
    model_grads, aux_grads, printed = self.estimate(x, noise)
    self.model_optimizer.apply(model_grads)
    self.aux_optimizer.apply(aux_grads)
    variance = self.tracker.update(model_grads)
    return printed, variance

  def iw_bound(self, x, n_samples):
    """Importance-weighted bound per image with `n_samples` hard samples.

    log(1/K Σ_k exp f_k) for each image, K = n_samples. Rows are laid out
    sample-major so that one [K * n, D] pass serves n images.

    Args:
      x: [n, D] images.
    Returns:
      (bound [n], mean single-sample ELBO [n]).
    """
    n = tf.shape(x)[0]
    rows = tf.tile(x, [n_samples, 1])
    noise = self.network.sample_noise(self.eval_generator, tf.shape(rows)[0])
    f = tf.reshape(self.network.hard_pass(rows, noise).elbo, [n_samples, n])
    return (tf.reduce_logsumexp(f, axis=0) - math.log(n_samples),
            tf.reduce_mean(f, axis=0))


class SBN(SBNModel):
  """REINFORCE with leave-one-out centering (reference 6.1)."""

  printed_names = ('elbo', 'rms_centered_elbo')

  def estimate(self, x, noise):
    with tf.GradientTape() as tape:
      hard = self.network.hard_pass(x, noise)
      loss, printed = estimators.reinforce(hard)
    return tape.gradient(loss, self.model_variables), [], printed


MODEL_CLASSES = {'SBN': SBN}


def build_model(hparams, mean_xs, seed):
  """Instantiates the model class named by `hparams.model`."""
  if hparams.model not in MODEL_CLASSES:
    raise NotImplementedError(
        'model %s is not implemented yet; available: %s'
        % (hparams.model, ', '.join(sorted(MODEL_CLASSES))))
  return MODEL_CLASSES[hparams.model](hparams, mean_xs, seed)
