"""REBAR, Dynamic REBAR (reference 6.6-6.7) and RELAX per layer (Grathwohl
et al. 2018) as estimator modules.

The equations are functions of rebar.estimators.sbn (REBAR's surrogates,
its gradient g = ∂F/∂θ + η ⊙ ∂h/∂θ, the variance objective and its η and
temperature gradients) and rebar.estimators.bernoulli (RELAX's per-layer
estimate); `rebar_terms` builds the passes REBAR's control variate needs,
and the modules here wire them to the auxiliary variables.
"""

import math

import tensorflow as tf

from rebar.estimator_modules import Baseline, Estimate, Estimator, eta_scale
from rebar.estimators import sbn as estimators
from rebar.networks import Dense
from rebar.sbn import logistic_sample, relaxed_sampler

RELAX_HIDDEN = 200


def rebar_terms(step, temperature, key=None, temperature_tangents=False):
  """(log_q, f~, f~_v) per control-variate term of REBAR on `step` (reference
  6.6), its relaxed passes recorded on the step's tape.

  quadratic=false: one term, relaxed passes over all layers, log_q = Q.
  quadratic=true: term k uses the switch sampler at layer k (hard below);
    its relaxed-conditional pass uses v at every layer >= k (the original,
    biased for L >= 2), or v at layer k and u above it (quadratic_fix).

  With `temperature_tangents` (Dynamic REBAR), returns (terms, tangents):
  per term (∂f~/∂t, ∂f~_v/∂t), [B] each, t = log λ
  (SBNNetwork.temperature_tangent).
  """
  hparams = step.network.hparams
  v = step.conditional_noise()
  relax = hparams.muprop_relaxation
  if hparams.quadratic:
    starts = range(step.network.n_layer)
  else:
    starts = [0]
  terms, tangents = [], []
  for k in starts:
    if not hparams.quadratic:
      with step.tape:
        log_q = tf.add_n(step.hard.log_q)
      noise_v = v
    elif hparams.quadratic_fix:
      log_q, noise_v = step.hard.log_q[k], (
          step.noise[:k] + [v[k]] + step.noise[k + 1:])
    else:
      log_q, noise_v = step.hard.log_q[k], v
    if k == 0:
      relaxed = step.relaxed(temperature, key)
    with step.tape:
      if k > 0:
        relaxed = step.network.run_pass(
            step.x, relaxed_sampler(step.noise, temperature, relax),
            start=step.hard, start_layer=k)
      relaxed_v = step.network.run_pass(
          step.x, relaxed_sampler(noise_v, temperature, relax),
          start=step.hard, start_layer=k)
      if temperature_tangents:
        tangents.append(tuple(
            step.network.temperature_tangent(
                step.x, pass_, noise, temperature, relax, start_layer=k)
            for pass_, noise in ((relaxed, step.noise),
                                 (relaxed_v, noise_v))))
    terms.append((log_q, relaxed.elbo, relaxed_v.elbo))
  if temperature_tangents:
    return terms, tangents
  return terms


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

  def estimate(self, step):
    n_params = self.n_params
    aux_tape = tf.GradientTape(persistent=True, watch_accessed_variables=False)
    with aux_tape:
      aux_tape.watch(self.aux_variables)
      etas = [eta_scale(w) for w in self.eta_w]
      with step.tape:
        reinforce_part = estimators.rebar_reinforce_part(
            step.hard, self.baseline(step.x))
      if self.dynamic:
        terms, tangents = rebar_terms(step, self.temperature(),
                                      temperature_tangents=True)
      else:
        terms = rebar_terms(step, self.hparams.temperature,
                            key=self.hparams.temperature)
      with step.tape:
        control_variate = estimators.rebar_control_variate(terms)
      grad_f = self.model_gradient(step, reinforce_part)
      grad_h = self.recognition_gradient(step, control_variate)
      grads = estimators.rebar_gradient(grad_f, grad_h, etas)
      variance = estimators.rebar_variance(grads, n_params)
      if self.dynamic:
        with step.tape:
          dh_dt = estimators.temperature_derivative_surrogate(terms, tangents)
        temperature_gradient = estimators.rebar_temperature_gradient(
            grads, etas, self.recognition_gradient(step, dh_dt), n_params)
    # The baseline's gradient by autodiff of V; η's from rebar_eta_gradients.
    aux_grads = (aux_tape.gradient(variance, self.baseline.variables_in_order)
                 + aux_tape.gradient(
                     etas, self.eta_w,
                     output_gradients=estimators.rebar_eta_gradients(
                         grads, grad_h, n_params)))
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


def relax_estimator(network, generator, cv=None):
  hparams = network.hparams
  return RelaxEstimator(network, generator, cv or hparams.relax_cv,
                        hparams.relax_depth, hparams.relax_weight_decay)
