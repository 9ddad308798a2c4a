"""Models: a network, estimators and two Adams (reference sections 5-6).

A model's `train_step(x)` (called inside a compiled function, never eagerly
per example) draws the step's noise, runs the hard pass once, lets each
estimator add the passes it needs and compute its gradients, applies the
model gradient and the auxiliary gradient, and updates the variance tracker.

Estimator modules own their auxiliary variables (baselines, etas, the log
temperature) and turn the surrogates of `rebar.estimators` into gradients;
SBNTrackGradVariances runs five of them on one shared `Step`.
"""

import math
from typing import NamedTuple

import tensorflow as tf

from rebar.estimators import sbn as estimators
from rebar.hparams import MODELS
from rebar.networks import Dense
from rebar.optim import (Adam, GradVarianceTracker,
                         MultiEstimatorVarianceTracker, total_sum)
from rebar.sbn import (SBNNetwork, conditional_noise, logistic_sample,
                       relaxed_sampler)

# How much faster the auxiliary parameters (baselines, etas, temperature)
# learn than the model parameters (reference section 5).
AUX_LEARNING_RATE_SCALE = 10.0
BASELINE_HIDDEN = 100
RELAX_HIDDEN = 200


def eta_scale(w):
  """η = 2 σ(w): a positive scale that starts at 1 for w = 0."""
  return 2.0 * tf.sigmoid(w)


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

  def rebar_terms(self, temperature, key=None, temperature_tangents=False):
    """(log_q, f~, f~_v) per control-variate term (reference 6.6).

    quadratic=false: one term, relaxed passes over all layers, log_q = Q.
    quadratic=true: term k uses the switch sampler at layer k (hard below);
      its relaxed-conditional pass uses v at every layer >= k (the original,
      biased for L >= 2), or v at layer k and u above it (quadratic_fix).

    With `temperature_tangents` (Dynamic REBAR), returns (terms, tangents):
    per term (∂f~/∂t, ∂f~_v/∂t), [B] each, t = log λ
    (SBNNetwork.temperature_tangent).
    """
    hparams = self.network.hparams
    v = self.conditional_noise()
    relax = hparams.muprop_relaxation
    if hparams.quadratic:
      starts = range(self.network.n_layer)
    else:
      starts = [0]
    terms, tangents = [], []
    for k in starts:
      if not hparams.quadratic:
        with self.tape:
          log_q = tf.add_n(self.hard.log_q)
        noise_v = v
      elif hparams.quadratic_fix:
        log_q, noise_v = self.hard.log_q[k], (
            self.noise[:k] + [v[k]] + self.noise[k + 1:])
      else:
        log_q, noise_v = self.hard.log_q[k], v
      if k == 0:
        relaxed = self.relaxed(temperature, key)
      with self.tape:
        if k > 0:
          relaxed = self.network.run_pass(
              self.x, relaxed_sampler(self.noise, temperature, relax),
              start=self.hard, start_layer=k)
        relaxed_v = self.network.run_pass(
            self.x, relaxed_sampler(noise_v, temperature, relax),
            start=self.hard, start_layer=k)
        if temperature_tangents:
          tangents.append(tuple(
              self.network.temperature_tangent(
                  self.x, pass_, noise, temperature, relax, start_layer=k)
              for pass_, noise in ((relaxed, self.noise),
                                   (relaxed_v, noise_v))))
      terms.append((log_q, relaxed.elbo, relaxed_v.elbo))
    if temperature_tangents:
      return terms, tangents
    return terms


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


class RebarEstimator(Estimator):
  """REBAR (6.6), and Dynamic REBAR (6.7) with `dynamic=True`.

  Auxiliary variables: the baseline c(x), one eta per model variable, and for
  the dynamic form the log temperature t (λ = exp(t)). They minimise the
  variance objective V = mean over all parameters of g².
  """

  def __init__(self, network, generator, dynamic=False, name='rebar'):
    super().__init__(network, generator, name)
    self.dynamic = dynamic
    self.baseline = Baseline(network, generator, name + '_baseline')
    self.eta_w = [tf.Variable(tf.zeros([]), name='%s_eta_%d' % (name, i))
                  for i in range(len(network.variables_in_order))]
    self.aux_variables = self.baseline.variables_in_order + self.eta_w
    self.n_params = sum(int(tf.size(v)) for v in network.variables_in_order)
    if dynamic:
      self.log_temperature = tf.Variable(
          math.log(self.hparams.temperature), name=name + '_log_temperature')
      self.aux_variables = self.aux_variables + [self.log_temperature]
    self.printed_names = (('elbo',) + (('temperature',) if dynamic else ())
                          + tuple('eta_%d' % i for i in range(len(self.eta_w))))

  def temperature(self):
    if self.dynamic:
      return tf.exp(self.log_temperature)
    return super().temperature()

  def recognition_gradient(self, step, target):
    """∂target/∂θ for the recognition variables; exact zeros for p's.

    The control-variate surrogates have no generative gradient: f~ and f~_v
    agree in value, so their gradients for p's variables cancel in exact
    arithmetic. Taking them as zero, rather than as the difference of two
    rounded computations (which XLA's fusions need not make bit-identical,
    and which Adam would amplify), keeps the generative etas at exactly 1 and
    skips p's weight gradients.
    """
    grads = step.tape.gradient(
        target, self.network.q_variables,
        unconnected_gradients=tf.UnconnectedGradients.ZERO)
    by_variable = {v.ref(): g for v, g in zip(self.network.q_variables, grads)}
    return [by_variable.get(v.ref(), tf.zeros_like(v))
            for v in self.network.variables_in_order]

  def _mean_over_params(self, a, b):
    """mean over all parameters of a ⊙ b (aligned lists)."""
    return total_sum([x * y for x, y in zip(a, b)]) / self.n_params

  def estimate(self, step):
    aux_tape = tf.GradientTape(persistent=True, watch_accessed_variables=False)
    with aux_tape:
      aux_tape.watch(self.aux_variables)
      etas = [eta_scale(w) for w in self.eta_w]
      with step.tape:
        reinforce_part = estimators.rebar_reinforce_part(
            step.hard, self.baseline(step.x))
      if self.dynamic:
        terms, tangents = step.rebar_terms(self.temperature(),
                                           temperature_tangents=True)
      else:
        terms = step.rebar_terms(self.hparams.temperature,
                                 key=self.hparams.temperature)
      with step.tape:
        control_variate = estimators.rebar_control_variate(terms)
      grad_f = self.model_gradient(step, reinforce_part)
      grad_h = self.recognition_gradient(step, control_variate)
      # g = ∂F/∂θ + η ⊙ ∂h/∂θ, h the control variate.
      grads = [g_f + eta * g_h for g_f, g_h, eta in zip(grad_f, grad_h, etas)]
      variance = self._mean_over_params(grads, grads)
      if self.dynamic:
        # ∂V/∂t = 2/N Σ g ⊙ ∂g/∂t, ∂g/∂t = η ⊙ ∂(∂h/∂t)/∂θ.
        with step.tape:
          dh_dt = estimators.temperature_derivative_surrogate(terms, tangents)
        temperature_gradient = 2.0 * self._mean_over_params(
            [tf.stop_gradient(g) for g in grads],
            [eta * g for eta, g in zip(etas,
                                       self.recognition_gradient(step, dh_dt))])
    # ∂V/∂η_j = 2/N Σ g_j ⊙ ∂h/∂θ_j, formed directly (autodiff would emit it
    # as a slow reduction per variable); the baseline's by autodiff.
    variance_eta_grads = [
        2.0 * self._mean_over_params([g], [g_h])
        for g, g_h in zip(grads, grad_h)]
    aux_grads = (aux_tape.gradient(variance, self.baseline.variables_in_order)
                 + aux_tape.gradient(etas, self.eta_w,
                                     output_gradients=variance_eta_grads))
    printed = [tf.reduce_mean(step.hard.elbo)]
    extra = {}
    if self.dynamic:
      aux_grads.append(temperature_gradient)
      printed.append(tf.exp(self.log_temperature))
      extra['temperature_gradient'] = temperature_gradient
    del aux_tape
    return Estimate(grads, aux_grads,
                    dict(self.printed(*printed, *etas), **extra))


class RelaxNetwork(tf.Module):
  """r_ρ for one layer: [x - mean_xs, z_l, 2 b_{<l} - 1] -> depth ReLU layers
  of RELAX_HIDDEN units -> scalar; returns [B]."""

  def __init__(self, network, layer, depth, generator, name):
    super().__init__(name=name)
    self.mean_xs = network.mean_xs
    hparams = network.hparams
    n_in = hparams.n_input + (layer + 1) * hparams.n_hidden
    self.hidden = []
    for i in range(depth):
      self.hidden.append(Dense(n_in, RELAX_HIDDEN, generator,
                               '%s/relu%d' % (name, i)))
      n_in = RELAX_HIDDEN
    self.output = Dense(n_in, 1, generator, name + '/out')
    self.variables_in_order = [v for layer_ in self.hidden + [self.output]
                               for v in layer_.variables_in_order]

  def __call__(self, x, z, hard_below):
    h = tf.concat([x - self.mean_xs, z]
                  + [2.0 * b - 1.0 for b in hard_below], axis=-1)
    for layer in self.hidden:
      h = tf.nn.relu(layer(h))
    return self.output(h)[:, 0]


class RelaxEstimator(Estimator):
  """RELAX (Grathwohl et al. 2018) as its authors apply it to SBNs, and the
  per-layer REBAR it generalises (`cv='rebar'`).

  Per stochastic layer l, an estimate of ∂E[f]/∂ℓ_l ([B, H], each row its
  own) with layers below l at their hard samples:
    ĝ_l = (f(b) - η_l c(z~_l)) ∂log q(b_l)/∂ℓ_l
          + η_l (∂c(z_l)/∂ℓ_l - ∂c(z~_l)/∂ℓ_l),
  where z_l = ℓ_l + log u - log(1 - u), z~_l the same with the conditional
  noise v (z given b), and c(z) = f(σ_λ(z)) (`rebar`), f(σ_λ(z)) + r_ρ(z)
  (`relax`) or r_ρ(z) (`free`); f(σ_λ(z)) relaxes layer l and the layers
  above it (with u above l, so that c(z~_l) depends on b_l only). ĝ_l is
  backpropagated to layer l's variables through ℓ_l; the generative
  variables get the exact gradient of m. One log temperature (λ = exp(t))
  and one η per layer, and ρ, minimise Σ_l mean(ĝ_l²) + wd ||ρ||².
  """

  def __init__(self, network, generator, cv='relax', depth=2,
               weight_decay=0.0, name='relax'):
    super().__init__(network, generator, name)
    self.cv = cv
    self.weight_decay = weight_decay
    n_layer = network.n_layer
    self.log_temperatures = [
        tf.Variable(math.log(self.hparams.temperature),
                    name='%s_log_temperature_%d' % (name, l))
        for l in range(n_layer)]
    self.etas = [tf.Variable(1.0, name='%s_eta_%d' % (name, l))
                 for l in range(n_layer)]
    self.r_nets = []
    if cv != 'rebar':
      self.r_nets = [RelaxNetwork(network, l, depth, generator,
                                  '%s_r_%d' % (name, l))
                     for l in range(n_layer)]
    self.rho = [v for r in self.r_nets for v in r.variables_in_order]
    self.aux_variables = self.log_temperatures + self.etas + self.rho
    self.printed_names = (
        ('elbo',) + tuple('temperature_%d' % l for l in range(n_layer))
        + tuple('eta_%d' % l for l in range(n_layer)))

  def temperature(self):
    return tf.exp(self.log_temperatures[0])

  def control_variate(self, step, layer, noise, temperature):
    """c at layer `layer` for the per-layer noise list `noise`: [B]."""
    hard = step.hard
    c = 0.0
    if self.cv != 'free':
      c += self.network.run_pass(
          step.x, relaxed_sampler(noise, temperature,
                                  self.hparams.muprop_relaxation),
          start=hard, start_layer=layer).elbo
    if self.cv != 'rebar':
      z = logistic_sample(hard.logits[layer], noise[layer])
      c += self.r_nets[layer](step.x, z, hard.activations[:layer])
    return c

  def estimate(self, step):
    hard = step.hard
    v = step.conditional_noise()
    aux_tape = tf.GradientTape(watch_accessed_variables=False)
    with aux_tape:
      aux_tape.watch(self.aux_variables)
      estimates, variance = [], 0.0
      for l in range(self.network.n_layer):
        noise_v = step.noise[:l] + [v[l]] + step.noise[l + 1:]
        with step.tape:
          temperature = tf.exp(self.log_temperatures[l])
          c_z = self.control_variate(step, l, step.noise, temperature)
          c_z_tilde = self.control_variate(step, l, noise_v, temperature)
          difference = tf.reduce_sum(c_z - c_z_tilde)
        # Rows are independent, so the gradient of the sum is per row.
        reparam = step.tape.gradient(difference, hard.logits[l])
        g = estimators.relax_layer_estimate(
            hard.elbo, hard.activations[l], hard.logits[l], c_z_tilde,
            reparam, self.etas[l])
        estimates.append(g)
        variance += tf.reduce_mean(tf.square(g))
      variance += self.weight_decay * tf.add_n(
          [tf.reduce_sum(tf.square(w)) for w in self.rho] + [0.0])
    with step.tape:
      loss = estimators.per_layer_surrogate(hard, estimates)
    aux_grads = aux_tape.gradient(
        variance, self.aux_variables,
        unconnected_gradients=tf.UnconnectedGradients.ZERO)
    printed = self.printed(
        tf.reduce_mean(hard.elbo),
        *[tf.exp(t) for t in self.log_temperatures],
        *[tf.identity(e) for e in self.etas])
    return Estimate(self.model_gradient(step, loss), aux_grads, printed)


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
        caller, outside any XLA cluster, see train.make_iw_bound_fn).
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


def relax_estimator(network, generator, cv=None):
  hparams = network.hparams
  return RelaxEstimator(network, generator, cv or hparams.relax_cv,
                        hparams.relax_depth, hparams.relax_weight_decay)


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


class SBNTrackGradVariances(SBNModel):
  """Five estimators on one batch and one noise draw (6.8).

  SimpleMuProp's gradient is applied to the model; every estimator's
  auxiliary variables get their usual update. Per estimator k, EMAs of g_k
  and g_k² (decay 0.999, from zero); with μ = mean_k ema(g_k), its variance
  is mean(ema(g_k²) - μ²). Figures are read before this step's EMA update,
  as the original's printed -inf after the first epoch shows.
  """

  ESTIMATOR_NAMES = ('NVIL', 'SimpleMuProp', 'MuProp', 'DynamicREBAR',
                     'REBAR')
  APPLIED = 'SimpleMuProp'

  def build_estimators(self, generator):
    estimators_ = [NVILEstimator(self.network, generator),
                   SimpleMuPropEstimator(self.network, generator),
                   MuPropEstimator(self.network, generator),
                   RebarEstimator(self.network, generator, dynamic=True,
                                  name='dynamic_rebar'),
                   RebarEstimator(self.network, generator)]
    if self.hparams.track_relax:
      estimators_.append(relax_estimator(self.network, generator))
    return estimators_

  variances_by_name = True

  def __init__(self, hparams, mean_xs, seed):
    if hparams.track_relax:
      self.ESTIMATOR_NAMES = self.ESTIMATOR_NAMES + ('RELAX',)
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


# The classes of the registry's names (rebar.hparams.MODELS).
MODEL_CLASSES = {name: globals()[name] for name in MODELS}


def build_model(hparams, mean_xs, seed):
  """Instantiates the model class named by `hparams.model`."""
  return MODEL_CLASSES[hparams.model](hparams, mean_xs, seed)
