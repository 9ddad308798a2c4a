"""The RELAX toy problem (RELAX draft, section 6.1 and Figure 1); its
command line is rebar.toy (`python -m rebar.toy`).

Minimise L(θ) = E_{b ~ Bernoulli(σ(θ))}[(b - t)²] with t = 0.499. The optimum
is σ(θ) -> 0, but the exact gradient dL/dθ = σ(θ)(1 - σ(θ))·((1-t)² - t²) is
at most 0.0005, far below the noise of a one-sample estimator. θ starts at 0
(σ = 0.5) and is trained by Adam on one sample per step with each of

  REINFORCE  ĝ = f(b) ∂log p(b|θ)/∂θ                         (no baseline)
  REBAR      ĝ = [f(b) - c(z~)] ∂log p(b|θ)/∂θ + ∂c(z)/∂θ - ∂c(z~)/∂θ,
             c(z) = η f(σ(z/λ)): the fixed Concrete relaxation, only η and
             log λ adapt
  RELAX      the same ĝ with a free-form c_φ(z) = r_ρ(z), an MLP
             1 -> 10 tanh -> 1 on the scalar z

where f(b) = (b - t)². The three are rebar.estimators.bernoulli's reinforce
(baseline 0), rebar and relax on one unit (d = 1, ℓ = θ), and every Adam is
rebar.optim.Adam. Noise, shared by the three estimators step for step:
u, w ~ U(0, 1); z = θ + log u - log(1 - u), b = 1[z > 0] (so b = 1 iff
u > u' = σ(-θ)); z~ ~ p(z | b, θ) through v = u' + w(1 - u') if b = 1 and
v = w u' if b = 0 (a fresh w; v is a function of θ at fixed w, which carries
∂z~/∂θ), z~ = θ + log v - log(1 - v). ∂log p(b|θ)/∂θ = b - σ(θ).

The control-variate parameters (η, log λ for REBAR; φ = ρ for RELAX) are
trained by their own Adam to minimise the single-sample variance surrogate
ĝ² (the Result's variance_objective), its gradient taken through ĝ by
nested autodiff (the estimator's inner tape gives ∂c/∂θ, Trainer.step's
outer tape differentiates ĝ² with respect to the parameters). Since
ĝ is unbiased for every value of those parameters, ∂E[ĝ²]/∂φ = ∂Var(ĝ)/∂φ.

Why RELAX's c_φ is the network alone: a constant c = 0.25 (between f(0) =
0.249001 and f(1) = 0.251001) already makes every RELAX estimate positive
(at θ = 0 every estimate is then exactly 0.0005), and a network started at
c ≡ 0 (zero output weights) learns it and stays nearly flat. Adding the
Concrete term, c = f(σ(z/λ)) + r_ρ(z), makes the network cancel that term's
shape before the variance can fall: at θ = 0 with r a constant, the
log-variance is about -2.7, -5.0, -6.9 at λ = 0.1, 0.5, 2 (REINFORCE: -4.2).
In trials of that form (λ learned from 0.5, same optimisers, seeds 0-2),
RELAX reached σ(θ) 0.13-0.29 by step 2000, not below 0.1. REBAR's
η f(σ(z/λ)) has no constant to learn: at θ = 0 its variance is lowest near
η = 0, i.e. at REINFORCE, and online tuning drives η there.

Optimisers: Adam on θ with learning rate 0.01 and β2 = 0.99 for all three
estimators (with the usual 0.999 Adam's second moment remembers the
high-variance first few hundred steps for thousands of steps: with seed 0
RELAX's σ(θ) is then 0.32 at step 2000 and 0.07 at step 4000); Adam with
learning rate 0.003 (β2 = 0.999) on the control-variate parameters of REBAR
and RELAX.

Everything runs in float64. Each estimator's training steps run in blocks of
--log_every steps inside one tf.function; after each block a line per
estimator gives the step, σ(θ), the exact loss L(θ) and the gradient
log-variance: the natural log of the sample variance (ddof 1) of the block's
--log_every estimates ĝ (θ moves a little within a block, which adds to that
figure). `toy.json` holds all curves; `toy.png` (with matplotlib) the three
panels of the paper's Figure 1.
"""

import math
import time

import numpy as np
import tensorflow as tf

from rebar.estimators import bernoulli
from rebar.optim import Adam
from rebar.sbn import logistic_sample
from rebar.toy import DEFAULTS

TARGET = 0.499
DTYPE = tf.float64
ESTIMATORS = ('reinforce', 'rebar', 'relax')
HIDDEN_UNITS = 10
# Clipping of the uniform noise away from 0 and 1 (float64).
NOISE_EPS = 1e-12


def f(b):
  return tf.square(b - TARGET)


def exact_loss(theta):
  """L(θ) = σ(θ)(1 - t)² + (1 - σ(θ)) t² (numpy or python floats)."""
  p = 1.0 / (1.0 + np.exp(-np.asarray(theta, dtype=np.float64)))
  return p * (1.0 - TARGET) ** 2 + (1.0 - p) * TARGET ** 2


def exact_gradient(theta):
  """dL/dθ = σ(θ)(1 - σ(θ))·((1 - t)² - t²)."""
  p = 1.0 / (1.0 + np.exp(-np.asarray(theta, dtype=np.float64)))
  return p * (1.0 - p) * ((1.0 - TARGET) ** 2 - TARGET ** 2)


def f_rows(b):
  """f on rows of one unit, [..., 1] -> [...] (rebar.estimators.bernoulli's
  f)."""
  return tf.reduce_sum(f(b), axis=-1)


def concrete(z, log_temperature):
  """f(σ(z / λ)), the Concrete relaxation of f, λ = exp(log_temperature)."""
  return f(tf.sigmoid(z / tf.exp(log_temperature)))


def mlp(z, w1, b1, w2, b2):
  """r_ρ(z): 1 -> HIDDEN_UNITS tanh -> 1, applied elementwise to z."""
  hidden = tf.tanh(z[..., None] * w1 + b1)
  return tf.reduce_sum(hidden * w2, axis=-1) + b2


def rebar_cv(z, params):
  """REBAR's c(z) = η f(σ(z/λ)), elementwise (for the figure)."""
  eta, log_temperature = params
  return eta * concrete(z, log_temperature)


def relax_cv(z, params):
  """RELAX's c_φ(z) = r_ρ(z), elementwise."""
  return mlp(z, *params)


CONTROL_VARIATES = {'reinforce': None, 'rebar': rebar_cv, 'relax': relax_cv}
PARAM_NAMES = {'reinforce': (), 'rebar': ('eta', 'log_temperature'),
               'relax': ('w1', 'b1', 'w2', 'b2')}


def initial_params(estimator, seed, init_eta=DEFAULTS['init_eta'],
                   init_temperature=DEFAULTS['init_temperature']):
  """Initial control-variate parameters as float64 numpy arrays.

  REBAR: [η, log λ]. RELAX: the MLP [w1, b1, w2 (each [10]), b2 ([])] with
  w1 ~ N(0, 1) (fan-in 1) drawn from `seed` and b1, w2, b2 zero, so that
  c_φ ≡ 0 at the start (RELAX starts as REINFORCE).
  """
  if estimator == 'reinforce':
    return []
  if estimator == 'rebar':
    return [np.float64(init_eta), np.float64(math.log(init_temperature))]
  rng = np.random.default_rng([seed, 1])
  return [rng.normal(0.0, 1.0, HIDDEN_UNITS), np.zeros(HIDDEN_UNITS),
          np.zeros(HIDDEN_UNITS), np.float64(0.0)]


def noise(steps, seed):
  """[steps, 2] float64 uniforms (u, w), clipped into (0, 1)."""
  rng = np.random.default_rng([seed, 0])
  return np.clip(rng.random((steps, 2)), NOISE_EPS, 1.0 - NOISE_EPS)


def estimate(estimator, theta, u, w, params=()):
  """The bernoulli.Result of `estimator` for each element of θ, u, w.

  θ, u, w have one shape S (θ a tensor); each element is one problem with
  one unit (d = 1): ℓ = θ, noise u, and w the conditional sample's v.
  The Result's fields have shape S + [1] (estimate) or S (f_values).
  """
  logits, u, w = theta[..., None], u[..., None], w[..., None]
  if estimator == 'reinforce':
    return bernoulli.reinforce(logits, f_rows, u)
  if estimator == 'rebar':
    eta, log_temperature = params
    return bernoulli.rebar(logits, f_rows, u, w, eta,
                           tf.exp(log_temperature))
  return bernoulli.relax(
      logits, f_rows, u, w,
      lambda z: tf.reduce_sum(relax_cv(z, params), axis=-1))


def estimates(estimator, theta, u, w, params=()):
  """ĝ for each element of θ, u, w (all of one shape); θ a tensor.

  Differentiable with respect to `params` (the estimator's inner tape is
  recorded by any enclosing tape).
  """
  return estimate(estimator, theta, u, w, params).estimate[..., 0]


class Trainer(tf.Module):
  """θ and the control-variate parameters of one estimator, and its step."""

  def __init__(self, estimator, params, learning_rate, cv_learning_rate,
               theta_beta2=DEFAULTS['theta_beta2'],
               cv_beta2=DEFAULTS['cv_beta2']):
    super().__init__(name=estimator)
    self.estimator = estimator
    self.theta = tf.Variable(0.0, dtype=DTYPE, name='theta')
    self.params = [tf.Variable(np.asarray(p, np.float64), dtype=DTYPE)
                   for p in params]
    self.theta_adam = Adam([self.theta], learning_rate, beta2=theta_beta2,
                           name='theta_adam')
    self.cv_adam = Adam(self.params, cv_learning_rate, beta2=cv_beta2,
                        name='cv_adam')

  def step(self, u, w):
    """One step on noise (u, w); returns ĝ (evaluated before the update).

    θ's gradient is that of the estimator's surrogate (= ĝ, one sample);
    the control-variate parameters' that of its variance objective ĝ².
    """
    with tf.GradientTape(persistent=True) as tape:
      result = estimate(self.estimator, tf.reshape(self.theta, [1]),
                        tf.reshape(u, [1]), tf.reshape(w, [1]), self.params)
    theta_grad = tape.gradient(result.surrogate, self.theta)
    cv_grads = (tape.gradient(result.variance_objective, self.params)
                if self.params else [])
    del tape
    self.theta_adam.apply([theta_grad])
    self.cv_adam.apply(cv_grads)
    return tf.reshape(result.estimate, [])

  @tf.function(input_signature=[tf.TensorSpec([None, 2], DTYPE)])
  def run_block(self, block):
    """Steps over the rows of `block`; returns (θ after each step, ĝ)."""
    n = tf.shape(block)[0]
    thetas = tf.TensorArray(DTYPE, size=n)
    ghats = tf.TensorArray(DTYPE, size=n)
    for k in tf.range(n):
      g = self.step(block[k, 0], block[k, 1])
      thetas = thetas.write(k, self.theta.read_value())
      ghats = ghats.write(k, g)
    return thetas.stack(), ghats.stack()

  def param_values(self):
    return [v.numpy() for v in self.params]


def relaxation_curve(estimator, params, theta, u):
  """The control variate c(z) at z = θ + log u - log(1 - u) (numpy)."""
  if estimator == 'reinforce':
    return None
  params = [tf.constant(p, DTYPE) for p in params]
  z = logistic_sample(tf.constant(theta, DTYPE), tf.constant(u, DTYPE))
  return CONTROL_VARIATES[estimator](z, params).numpy()


def _log_variance(values):
  values = np.asarray(values)
  if values.size < 2:
    return float('nan')
  var = float(np.var(values, ddof=1))
  return math.log(var) if var > 0 else float('-inf')


def run(steps=DEFAULTS['steps'], seed=DEFAULTS['seed'],
        log_every=DEFAULTS['log_every'],
        learning_rate=DEFAULTS['learning_rate'],
        theta_beta2=DEFAULTS['theta_beta2'],
        cv_learning_rate=DEFAULTS['cv_learning_rate'],
        cv_beta2=DEFAULTS['cv_beta2'],
        init_eta=DEFAULTS['init_eta'],
        init_temperature=DEFAULTS['init_temperature'],
        estimators=ESTIMATORS, out=None):
  """Trains θ with each estimator on the same noise; returns the curves.

  Args:
    out: None, or a function called with each printable line.
  Returns:
    {'config': {...}, 'estimators': {name: {'steps', 'theta', 'sigma',
    'loss', 'ghat' (per step, step 0 = the start, ghat[i] the estimate that
    step i + 1 applied), 'log_steps', 'log_variance' (per block, at the
    block's last step), 'final_sigma', 'final_loss', 'mean_log_variance',
    'params' (final control-variate parameters by name), 'seconds'}}}.
  """
  if steps < 1 or log_every < 1:
    raise ValueError('steps and log_every must be positive')
  all_noise = noise(steps, seed)
  results = {'config': dict(steps=steps, seed=seed, log_every=log_every,
                            learning_rate=learning_rate,
                            theta_beta2=theta_beta2,
                            cv_learning_rate=cv_learning_rate,
                            cv_beta2=cv_beta2,
                            init_eta=init_eta,
                            init_temperature=init_temperature, target=TARGET,
                            hidden_units=HIDDEN_UNITS),
             'estimators': {}}
  trainers, curves = {}, {}
  for name in estimators:
    trainers[name] = Trainer(
        name, initial_params(name, seed, init_eta, init_temperature),
        learning_rate, cv_learning_rate, theta_beta2, cv_beta2)
    curves[name] = dict(theta=[0.0], ghat=[], log_steps=[], log_variance=[],
                        seconds=0.0)
  for start in range(0, steps, log_every):
    block = tf.constant(all_noise[start:start + log_every])
    for name in estimators:
      began = time.perf_counter()
      thetas, ghats = trainers[name].run_block(block)
      curves[name]['seconds'] += time.perf_counter() - began
      curve = curves[name]
      curve['theta'].extend(thetas.numpy().tolist())
      curve['ghat'].extend(ghats.numpy().tolist())
      curve['log_steps'].append(start + int(block.shape[0]))
      curve['log_variance'].append(_log_variance(ghats.numpy()))
      if out is not None:
        theta = curve['theta'][-1]
        out('step %6d  %-9s  sigma(theta) %.4f  loss %.6f  log-var %8.3f'
            % (curve['log_steps'][-1], name, 1.0 / (1.0 + math.exp(-theta)),
               float(exact_loss(theta)), curve['log_variance'][-1]))
  for name in estimators:
    curve = curves[name]
    theta = np.asarray(curve['theta'])
    sigma = 1.0 / (1.0 + np.exp(-theta))
    finite = [v for v in curve['log_variance'] if math.isfinite(v)]
    results['estimators'][name] = dict(
        steps=list(range(steps + 1)), theta=theta.tolist(),
        sigma=sigma.tolist(), loss=exact_loss(theta).tolist(),
        ghat=curve['ghat'], log_steps=curve['log_steps'],
        log_variance=curve['log_variance'],
        final_sigma=float(sigma[-1]), final_loss=float(exact_loss(theta[-1])),
        mean_log_variance=float(np.mean(finite)) if finite else float('nan'),
        params={k: np.asarray(v).tolist() for k, v in
                zip(PARAM_NAMES[name], trainers[name].param_values())},
        seconds=curve['seconds'])
  return results


def summary_lines(results):
  lines = ['%-10s %12s %12s %16s %9s' % ('estimator', 'final sigma',
                                        'final loss', 'mean log-var',
                                        'seconds')]
  for name, r in results['estimators'].items():
    lines.append('%-10s %12.4f %12.6f %16.3f %9.1f' % (
        name, r['final_sigma'], r['final_loss'], r['mean_log_variance'],
        r['seconds']))
  for name, r in results['estimators'].items():
    if name == 'rebar':
      lines.append('rebar: final eta %.4f, temperature %.4f' % (
          r['params']['eta'], math.exp(r['params']['log_temperature'])))
  return lines


def relaxations(results, n=199):
  """The learned relaxations against u in (0, 1), each at its estimator's
  final θ: RELAX's c_φ(z), and REBAR's Concrete relaxation f(σ(z/λ)) (its
  control variate is η times that), z = θ + log u - log(1 - u)."""
  u = np.linspace(0.0, 1.0, n + 2)[1:-1]
  curves = {'u': u.tolist(), 'f0': TARGET ** 2, 'f1': (1.0 - TARGET) ** 2}
  for name, r in results['estimators'].items():
    if name == 'reinforce':
      continue
    theta = r['theta'][-1]
    params = [np.asarray(r['params'][k]) for k in PARAM_NAMES[name]]
    entry = dict(theta=theta, c=relaxation_curve(name, params, theta,
                                                 u).tolist())
    if name == 'rebar':
      entry['eta'] = float(params[0])
      entry['relaxation'] = relaxation_curve(
          name, [np.float64(1.0), params[1]], theta, u).tolist()
    curves[name] = entry
  return curves
