"""The RELAX toy problem (rebar/toy.py): unbiasedness, the variance gradient
and the toy run itself.

Unbiasedness at θ = 0.3 with random η, λ (REBAR) and φ (RELAX), against the
exact dL/dθ = σ(θ)(1 - σ(θ))((1 - t)² - t²) = 4.889e-4, by quadrature:
E[ĝ] = ∫∫ ĝ(u, w) du dw by Gauss-Legendre (200 x 200 nodes, the u-axis split
at u' = σ(-θ), where b jumps); the integrand is smooth and bounded on each
piece, so the error is below 1e-8 and the tolerance 1e-7 (0.02% of the
gradient). The check has power: a zero estimator misses by 4.9e-4 (4,900
tolerances), and dropping the dependence of z~ on θ through u' (a plausible
bug) moves the result by 1.6e-3 (REBAR) and 6.9e-2 (RELAX);
`test_quadrature_detects_a_bias` shows both are caught.

(A Monte Carlo check of 10^6 one-sample estimates stood here; its 4 standard
errors, about 5e-4, exceeded the gradient itself, so it could not tell the
estimators from zero. The estimators' Monte Carlo checks, with standard-error
tolerances that do have power, are in tests/test_bernoulli.py, by exact
enumeration on problems whose gradients are large against the noise.)

The variance gradient: the ∂ĝ²/∂φ that a training step hands to its Adam
equals central finite differences (float64) of ĝ² written out by hand in
numpy here, independently of the TensorFlow code, on one sample with b = 0
and one with b = 1.
"""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from rebar import toy
from rebar import toy_problem
from rebar.estimators import bernoulli

THETA = 0.3
T = toy_problem.TARGET
QUADRATURE_NODES = 200
QUADRATURE_TOLERANCE = 1e-7


def random_params(estimator, seed=3):
  """Random non-trivial control-variate parameters (numpy float64)."""
  rng = np.random.default_rng(seed)
  if estimator == 'reinforce':
    return []
  if estimator == 'rebar':
    return [np.float64(rng.uniform(0.3, 1.5)),               # η
            np.float64(math.log(rng.uniform(0.2, 2.0)))]     # log λ
  return [rng.normal(0.0, 1.0, toy_problem.HIDDEN_UNITS),            # w1
          rng.normal(0.0, 1.0, toy_problem.HIDDEN_UNITS),            # b1
          rng.normal(0.0, 0.1, toy_problem.HIDDEN_UNITS),            # w2
          np.float64(rng.normal(0.25, 0.05))]                # b2


def estimates(estimator, u, w, params, theta=THETA):
  u = np.asarray(u, np.float64)
  return toy_problem.estimates(
      estimator, tf.fill(u.shape, tf.constant(theta, tf.float64)),
      tf.constant(u), tf.constant(np.asarray(w, np.float64)),
      [tf.constant(p) for p in params]).numpy()


def quadrature_mean(estimator, params, n=QUADRATURE_NODES, theta=THETA):
  """∫∫ ĝ(u, w) du dw by tensor Gauss-Legendre, u split at σ(-θ)."""
  x, weights = np.polynomial.legendre.leggauss(n)
  u_prime = 1.0 / (1.0 + math.exp(theta))
  u = np.concatenate([u_prime * (x + 1) / 2,
                      u_prime + (1 - u_prime) * (x + 1) / 2])
  u_weights = np.concatenate([weights * u_prime / 2,
                              weights * (1 - u_prime) / 2])
  w, w_weights = (x + 1) / 2, weights / 2
  grid_u, grid_w = np.meshgrid(u, w, indexing='ij')
  g = estimates(estimator, grid_u.ravel(), grid_w.ravel(), params, theta)
  return float(np.sum(g * np.outer(u_weights, w_weights).ravel()))


@pytest.mark.parametrize('estimator', toy_problem.ESTIMATORS)
def test_unbiased_quadrature(estimator):
  exact = float(toy_problem.exact_gradient(THETA))
  mean = quadrature_mean(estimator, random_params(estimator))
  assert abs(mean - exact) < QUADRATURE_TOLERANCE, (mean, exact)


def test_quadrature_detects_a_bias(monkeypatch):
  """A zero estimator misses by the whole gradient, and z~ whose
  θ-derivative is 1 (u' held fixed) gives a biased estimator; both are far
  outside the tolerance."""
  exact = float(toy_problem.exact_gradient(THETA))
  assert abs(0.0 - exact) > 1e3 * QUADRATURE_TOLERANCE
  conditional = bernoulli.conditional_logistic_sample

  def biased(logits, b, v):
    return tf.stop_gradient(conditional(logits, b, v) - logits) + logits

  monkeypatch.setattr(bernoulli, 'conditional_logistic_sample', biased)
  for estimator in ('rebar', 'relax'):
    mean = quadrature_mean(estimator, random_params(estimator))
    assert abs(mean - exact) > 1e4 * QUADRATURE_TOLERANCE, (estimator, mean)


def test_exact_loss_and_gradient():
  h = 1e-6
  numeric = (toy_problem.exact_loss(THETA + h) - toy_problem.exact_loss(THETA - h)) / (2 * h)
  assert toy_problem.exact_gradient(THETA) == pytest.approx(numeric, rel=1e-7)
  assert toy_problem.exact_gradient(0.0) == pytest.approx(0.25 * 0.002, rel=1e-9)


# The estimator written out by hand (numpy, float64), for one sample.
def _sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


def _cv_and_slope(estimator, z, params):
  """c(z) and dc/dz."""
  if estimator == 'rebar':
    eta, log_lam = params
    lam = math.exp(log_lam)
    s = _sigmoid(z / lam)
    return eta * (s - T) ** 2, eta * 2.0 * (s - T) * s * (1.0 - s) / lam
  w1, b1, w2, b2 = params
  h = np.tanh(w1 * z + b1)
  return float(np.sum(w2 * h) + b2), float(np.sum(w2 * w1 * (1.0 - h * h)))


def numpy_ghat(estimator, theta, u, w, params):
  p = _sigmoid(theta)
  z = theta + math.log(u) - math.log(1.0 - u)
  b = 1.0 if z > 0 else 0.0
  u_prime = 1.0 - p
  d_u_prime = -u_prime * (1.0 - u_prime)          # du'/dθ
  if b:
    v, dv = u_prime + w * (1.0 - u_prime), (1.0 - w) * d_u_prime
  else:
    v, dv = w * u_prime, w * d_u_prime
  z_tilde = theta + math.log(v) - math.log(1.0 - v)
  dz_tilde = 1.0 + dv / (v * (1.0 - v))           # dz~/dθ
  _, slope_z = _cv_and_slope(estimator, z, params)
  c_tilde, slope_tilde = _cv_and_slope(estimator, z_tilde, params)
  return ((b - T) ** 2 - c_tilde) * (b - p) + slope_z - slope_tilde * dz_tilde


def finite_difference_grads(estimator, theta, u, w, params, h=1e-6):
  """Central differences of ĝ² in every element of every parameter."""
  grads = []
  for i, param in enumerate(params):
    param = np.asarray(param, np.float64)
    grad = np.zeros_like(param)
    for index in np.ndindex(param.shape):
      values = []
      for sign in (1.0, -1.0):
        moved = param.copy()
        moved[index] += sign * h
        shifted = list(params)
        shifted[i] = moved
        values.append(numpy_ghat(estimator, theta, u, w, shifted) ** 2)
      grad[index] = (values[0] - values[1]) / (2 * h)
    grads.append(grad)
  return grads


@pytest.mark.parametrize('estimator', ['relax', 'rebar'])
@pytest.mark.parametrize('u', [0.2, 0.9])   # b = 0 and b = 1 at θ = 0.3
def test_variance_gradient_matches_finite_differences(estimator, u):
  params = random_params(estimator, seed=5)
  w = 0.37
  trainer = toy_problem.Trainer(estimator, params, learning_rate=0.01,
                        cv_learning_rate=0.003)
  trainer.theta.assign(THETA)
  applied = {}
  cv_apply = trainer.cv_adam.apply

  def capture(grads):
    applied['grads'] = [g.numpy() for g in grads]
    return cv_apply(grads)

  trainer.cv_adam.apply = capture
  g = trainer.step(tf.constant(u, tf.float64), tf.constant(w, tf.float64))
  assert float(g) == pytest.approx(
      numpy_ghat(estimator, THETA, u, w, params), rel=1e-10, abs=1e-14)
  expected = finite_difference_grads(estimator, THETA, u, w, params)
  assert len(applied['grads']) == len(expected)
  for got, want in zip(applied['grads'], expected):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
  # Adam's first step moves θ by the learning rate against ĝ.
  assert float(trainer.theta.numpy()) == pytest.approx(
      THETA - 0.01 * np.sign(float(g)), abs=1e-5)


def test_toy_run_default_steps():
  """With the default steps and seed 0, RELAX solves the problem (σ(θ) <
  0.1) and REINFORCE and REBAR stay near the start (σ(θ) > 0.3)."""
  results = toy_problem.run(seed=0)
  final = {name: r['final_sigma'] for name, r in results['estimators'].items()}
  assert results['config']['steps'] == toy.DEFAULTS['steps']
  assert final['relax'] < 0.1, final
  assert final['reinforce'] > 0.3, final
  assert final['rebar'] > 0.3, final
  log_var = {name: r['mean_log_variance']
             for name, r in results['estimators'].items()}
  # RELAX's estimates are orders of magnitude less variable.
  assert log_var['relax'] < log_var['reinforce'] - 3.0, log_var
  for r in results['estimators'].values():
    assert len(r['theta']) == len(r['loss']) == toy.DEFAULTS['steps'] + 1
    assert len(r['ghat']) == toy.DEFAULTS['steps']
    assert len(r['log_variance']) == (toy.DEFAULTS['steps']
                                      // toy.DEFAULTS['log_every'])


def test_cli_writes_json(tmp_path, capsys):
  assert toy.main(['--steps', '40', '--log_every', '20', '--out',
                   str(tmp_path), '--no_plots']) == 0
  printed = capsys.readouterr().out
  assert 'final sigma' in printed
  with open(tmp_path / 'toy.json') as fh:
    saved = json.load(fh)
  assert set(saved['estimators']) == set(toy_problem.ESTIMATORS)
  assert len(saved['estimators']['relax']['sigma']) == 41
  assert len(saved['relaxations']['u']) == len(
      saved['relaxations']['relax']['c'])
