"""Models: a network, estimator modules and two Adams (reference sections 5-6).

A model's `train_step(x)` (called inside a compiled function, never eagerly
per example) draws the step's noise, runs the hard pass once (`Step`), lets
each estimator module add the passes it needs and compute its gradients,
applies the model gradient and the auxiliary gradient, and updates the
variance tracker. SBNTrackGradVariances runs five estimator modules on one
shared `Step`.

The estimator modules are in rebar.estimator_modules (REINFORCE, NVIL,
MuProp, Concrete) and rebar.rebar_modules (REBAR, Dynamic REBAR, RELAX);
their equations in rebar.estimators.
"""

import math

import tensorflow as tf

# pylint: disable=unused-import
from rebar.categorical_vae import CategoricalTrackGradVariances
from rebar.categorical_vae import CategoricalVAE
# pylint: enable=unused-import
from rebar.estimator_modules import (AntitheticEstimator, GumbelEstimator,
                                     MuPropEstimator, NVILEstimator,
                                     ReinforceEstimator,
                                     ReinforceLOOEstimator,
                                     SimpleMuPropEstimator)
from rebar.hparams import MODELS
from rebar.optim import (Adam, GradVarianceTracker,
                         MultiEstimatorVarianceTracker)
from rebar.rebar_modules import RebarEstimator, relax_estimator
from rebar.sbn import SBNNetwork
from rebar.step import Step

# How much faster the auxiliary parameters (baselines, etas, temperature)
# learn than the model parameters (reference section 5).
AUX_LEARNING_RATE_SCALE = 10.0


class SBNModel(tf.Module):
  """Base of every model: the SBN network, estimators, optimizers, tracking.

  Args:
    hparams: HParams.
    mean_xs: [D] per-pixel training mean.
    seed: int seed of the initial weights and the noise generators.
  """

  def __init__(self, hparams, mean_xs, seed):
    super().__init__(name=hparams.model)
    self.hparams = hparams
    init_generator = tf.random.Generator.from_seed(seed)
    self.network = SBNNetwork(hparams, mean_xs, init_generator)
    self.model_variables = self.network.variables_in_order
    self.estimators = self.build_estimators(init_generator)
    self.aux_variables = [v for e in self.estimators for v in e.aux_variables]
    # Separate streams so that evaluation does not shift training's noise.
    self.noise_generator = tf.random.Generator.from_seed(seed + 1)
    self.eval_generator = tf.random.Generator.from_seed(seed + 2)
    self.model_optimizer = Adam(self.model_variables, hparams.learning_rate,
                                beta2=hparams.beta2, name='model_adam')
    self.aux_optimizer = Adam(
        self.aux_variables, self.aux_learning_rate_scale * hparams.learning_rate,
        beta2=hparams.beta2, name='aux_adam')
    self.tracker = self.build_tracker()

  def build_tracker(self):
    return GradVarianceTracker(self.model_variables)

  # Learning-rate multiple of the auxiliary Adam.
  aux_learning_rate_scale = AUX_LEARNING_RATE_SCALE

  def build_estimators(self, generator):
    raise NotImplementedError

  @property
  def printed_names(self):
    return self.estimators[0].printed_names

  # Names of the variance figures take_accumulated returns. Every model but
  # SBNTrackGradVariances has one, printed without its name.
  variance_names = ('model',)
  variances_by_name = False

  def temperature(self):
    """The relaxation temperature now (for summaries)."""
    return self.estimators[0].temperature()

  def estimate(self, x, noise):
    """The applied Estimate for rows x [B, D] and noise."""
    return self.estimators[0].estimate(Step(self.network, x, noise))

  def sample_step_inputs(self, x):
    """The step's rows (each batch row n_samples times) and its noise."""
    x = tf.tile(x, [self.hparams.n_samples, 1])
    return x, self.network.sample_noise(self.noise_generator, tf.shape(x)[0])

  def train_step(self, x):
    """One update on a batch [batch, D]; returns metrics name -> scalar,
    among them the printed values (`printed_names`) of this step.

    The variance figures are accumulated by the tracker; see
    `take_accumulated`.
    """
    estimate = self.estimate(*self.sample_step_inputs(x))
    self.model_optimizer.apply(estimate.model_grads)
    self.aux_optimizer.apply(estimate.aux_grads)
    self.tracker.update(estimate.model_grads)
    return estimate.metrics

  def take_accumulated(self):
    """Sums over the steps since the last call of what the tracker
    accumulates rather than train_step returns: (printed values by name,
    variances by name, `variance_names`). The trainer adds the printed ones
    to the sums of train_step's values once per block.
    """
    return {}, {'model': self.tracker.take()}

  def iw_bound(self, x, n_samples, noise):
    """Importance-weighted bound per image with `n_samples` hard samples.

    log(1/K Σ_k exp f_k) for each image, K = n_samples. Rows are laid out
    sample-major so that one [K * n, D] pass serves n images.

    Args:
      x: [n, D] images.
      n_samples: K.
      noise: the uniforms of the hard pass (sample_eval_noise; drawn by the
        caller, outside any XLA cluster, see evaluation.make_iw_bound_fn).
    Returns:
      (bound [n], mean single-sample ELBO [n]).
    """
    n = tf.shape(x)[0]
    f = tf.reshape(
        self.network.hard_pass_of_copies(x, noise, n_samples).elbo,
        [n_samples, n])
    return (tf.reduce_logsumexp(f, axis=0) - math.log(n_samples),
            tf.reduce_mean(f, axis=0))

  def sample_eval_noise(self, x, n_samples):
    """The uniforms of iw_bound's hard pass: per layer [n_samples * n, H]."""
    return self.network.sample_noise(self.eval_generator,
                                     n_samples * tf.shape(x)[0])


class SBN(SBNModel):
  """REINFORCE (6.1)."""

  def build_estimators(self, generator):
    return [ReinforceEstimator(self.network, generator, 'reinforce')]


class SBNNVIL(SBNModel):
  def build_estimators(self, generator):
    return [NVILEstimator(self.network, generator)]


class SBNSimpleMuProp(SBNModel):
  def build_estimators(self, generator):
    return [SimpleMuPropEstimator(self.network, generator)]


class SBNMuProp(SBNModel):
  def build_estimators(self, generator):
    return [MuPropEstimator(self.network, generator)]


class SBNGumbel(SBNModel):
  def build_estimators(self, generator):
    return [GumbelEstimator(self.network, generator, 'gumbel')]


class SBNRebar(SBNModel):
  def build_estimators(self, generator):
    return [RebarEstimator(self.network, generator)]


class SBNDynamicRebar(SBNModel):
  def build_estimators(self, generator):
    return [RebarEstimator(self.network, generator, dynamic=True,
                           name='dynamic_rebar')]


class SBNRelax(SBNModel):
  """RELAX with c chosen by `relax_cv` (Grathwohl et al. 2018)."""

  @property
  def aux_learning_rate_scale(self):
    return self.hparams.var_lr_scale

  def build_estimators(self, generator):
    return [relax_estimator(self.network, generator)]


class SBNRebarPerLayer(SBNRelax):
  """REBAR estimated per layer through the logits, with a learned
  temperature and eta per layer: RELAX with c = f(σ_λ(z))."""

  def build_estimators(self, generator):
    return [relax_estimator(self.network, generator, cv='rebar')]


class SBNReinforceLOO(SBNModel):
  """REINFORCE with a per-example leave-one-out baseline over n_samples."""

  def build_estimators(self, generator):
    return [ReinforceLOOEstimator(self.network, generator, 'reinforce_loo')]


class SBNARM(SBNModel):
  """ARM per stochastic layer (Yin and Zhou 2019)."""

  def build_estimators(self, generator):
    return [AntitheticEstimator(self.network, generator, 'arm')]


class SBNDisARM(SBNModel):
  """DisARM per stochastic layer (Dong, Mnih and Tucker 2020)."""

  def build_estimators(self, generator):
    return [AntitheticEstimator(self.network, generator, 'disarm')]


class SBNTrackGradVariances(SBNModel):
  """Five estimators on one batch and one noise draw (6.8).

  SimpleMuProp's gradient is applied to the model; every estimator's
  auxiliary variables get their usual update. Per estimator k, EMAs of g_k
  and g_k² (decay 0.999, from zero); with μ = mean_k ema(g_k), its variance
  is mean(ema(g_k²) - μ²). Figures are read before this step's EMA update,
  as the original's printed -inf after the first epoch shows. Hparam
  track_extra adds ARM, DisARM and RELAX; μ is over every tracked
  estimator, so adding one moves the others' figures a little.
  """

  ESTIMATOR_NAMES = ('NVIL', 'SimpleMuProp', 'MuProp', 'DynamicREBAR',
                     'REBAR')
  APPLIED = 'SimpleMuProp'
  # Names of the estimators hparam track_extra adds.
  EXTRA_NAMES = {'arm': 'ARM', 'disarm': 'DisARM', 'relax': 'RELAX'}

  def build_estimators(self, generator):
    estimators_ = [NVILEstimator(self.network, generator),
                   SimpleMuPropEstimator(self.network, generator),
                   MuPropEstimator(self.network, generator),
                   RebarEstimator(self.network, generator, dynamic=True,
                                  name='dynamic_rebar'),
                   RebarEstimator(self.network, generator)]
    for extra in self.hparams.tracked_extras():
      if extra == 'relax':
        estimators_.append(relax_estimator(self.network, generator))
      else:
        estimators_.append(AntitheticEstimator(self.network, generator, extra))
    return estimators_

  variances_by_name = True

  def __init__(self, hparams, mean_xs, seed):
    self.ESTIMATOR_NAMES = self.ESTIMATOR_NAMES + tuple(
        self.EXTRA_NAMES[e] for e in hparams.tracked_extras())
    # Sorted by name, as the original printed them.
    self.variance_names = tuple(sorted(self.ESTIMATOR_NAMES))
    super().__init__(hparams, mean_xs, seed)

  @property
  def printed_names(self):
    return (('elbo', 'temperature', 'temperature_gradient',
             'temperature_gradient_squared')
            + tuple('deviation_' + n for n in self.ESTIMATOR_NAMES)
            + ('log_mean_squared_mean_gradient',))

  @property
  def dynamic_rebar(self):
    return self.estimators[self.ESTIMATOR_NAMES.index('DynamicREBAR')]

  def temperature(self):
    return self.dynamic_rebar.temperature()

  def estimate(self, x, noise):
    """SimpleMuProp's Estimate: the applied one."""
    return self.estimate_all(x, noise)[self.APPLIED]

  def estimate_all(self, x, noise):
    """Every tracked estimator's Estimate on one Step: name -> Estimate."""
    step = Step(self.network, x, noise)
    return {name: e.estimate(step)
            for name, e in zip(self.ESTIMATOR_NAMES, self.estimators)}

  def build_tracker(self):
    # Every tracked estimator gives the generative variables the exact
    # gradient of m (REBAR's control variate has none there, see
    # RebarEstimator.recognition_gradient), computed by the same ops, so
    # their gradients agree bit for bit (test_track_estimators_share_
    # generative_gradients): one EMA serves them all.
    return MultiEstimatorVarianceTracker(
        self.model_variables, self.ESTIMATOR_NAMES,
        shared=self.network.p_variables)

  def train_step(self, x):
    results = self.estimate_all(*self.sample_step_inputs(x))
    # Figures from the EMAs before this step's update (inside update).
    log_mean_square = self.tracker.update(
        [results[name].model_grads for name in self.ESTIMATOR_NAMES])
    self.model_optimizer.apply(results[self.APPLIED].model_grads)
    self.aux_optimizer.apply([g for name in self.ESTIMATOR_NAMES
                              for g in results[name].aux_grads])
    temperature_gradient = results['DynamicREBAR'].metrics[
        'temperature_gradient']
    # The deviations are accumulated by the tracker (take_accumulated).
    return {'elbo': results['NVIL'].metrics['elbo'],
            'temperature': self.dynamic_rebar.temperature(),
            'temperature_gradient': temperature_gradient,
            'temperature_gradient_squared': tf.square(temperature_gradient),
            'log_mean_squared_mean_gradient': log_mean_square}

  def take_accumulated(self):
    variances, deviations = self.tracker.take()
    return ({'deviation_' + name: deviations[i]
             for i, name in enumerate(self.ESTIMATOR_NAMES)},
            {name: variances[i] for i, name in enumerate(self.ESTIMATOR_NAMES)})


# The classes of the registry's names (rebar.hparams.MODELS); the
# categorical ones are rebar.categorical_vae's.
MODEL_CLASSES = {name: globals()[name] for name in MODELS}


def build_model(hparams, mean_xs, seed):
  """Instantiates the model class named by `hparams.model`."""
  return MODEL_CLASSES[hparams.model](hparams, mean_xs, seed)
