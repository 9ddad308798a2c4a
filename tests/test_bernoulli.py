"""rebar/estimators/bernoulli.py: unbiasedness by exact enumeration, the
surrogate's gradients, the variance objective's gradient.

The enumeration check: d = 3 units with fixed logits ℓ and a fixed
non-linear f(b) = Σ_k w2_k tanh(b W1 + c1)_k (random coefficients, so that
every unit's gradient involves the others), in float64. The exact
∂E[f(b)]/∂ℓ_i = Σ_b p(b) f(b) (b_i - σ(ℓ_i)) sums all 2^3 configurations in
numpy, independently of the estimators. Each estimator is drawn N_DRAWS
times, each draw one row with its own uniforms (REINFORCE LOO: one example
of K samples); per unit,
  z = (mean of the N_DRAWS estimates - exact) / (sample std / sqrt(N_DRAWS)).
Under unbiasedness z is close to N(0, 1) (CLT over 2·10^5 draws), and a case
passes if every |z| < UNBIASED_BELOW = 4: by chance a correct estimator
fails with probability about 3 · 6e-5 per case. All seeds are fixed, so the
outcome is reproducible. The biased estimators (Concrete, straight-through)
and deliberately broken variants (REBAR without its reparameterised
correction, REINFORCE whose baseline includes the sample itself, ARM with
b - σ(ℓ) in place of u - 1/2, DisARM without its σ(|ℓ|)) must show
|z| > BIASED_ABOVE = 10 on some unit: the check has power against them.
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from rebar.estimators import bernoulli
from tests.gradients import finite_differences

D = 3
N_DRAWS = 200000
K = 3                     # samples per example for REINFORCE LOO
UNBIASED_BELOW = 4.0
BIASED_ABOVE = 10.0
DTYPE = tf.float64

_RNG = np.random.default_rng(2017)
LOGITS = np.array([0.6, -1.2, 0.25])
W1 = _RNG.normal(0.0, 1.5, (D, 5))
C1 = _RNG.normal(0.0, 0.5, 5)
W2 = _RNG.normal(0.0, 1.0, 5)
# A fixed control variate c_φ(z) for RELAX, a small random network on z.
U1 = _RNG.normal(0.0, 0.5, (D, 6))
E1 = _RNG.normal(0.0, 0.5, 6)
Q = _RNG.normal(0.0, 0.5, 6)


def network(x, w1, c1, w2):
  """Σ_k w2_k tanh(x w1 + c1)_k, [..., D] -> [...], in x's dtype."""
  w1, c1, w2 = (tf.cast(w, x.dtype) for w in (w1, c1, w2))
  return tf.tensordot(tf.tanh(tf.tensordot(x, w1, axes=1) + c1), w2, axes=1)


def f(b):
  return network(b, W1, C1, W2)


def control_variate(z):
  return network(z, U1, E1, Q)


def exact_gradient(logits=LOGITS):
  """∂E[f(b)]/∂ℓ by summing the 2^D configurations (numpy)."""
  p = 1.0 / (1.0 + np.exp(-logits))
  grad = np.zeros(D)
  for config in itertools.product([0.0, 1.0], repeat=D):
    b = np.array(config)
    prob = np.prod(np.where(b > 0, p, 1.0 - p))
    value = np.tanh(b @ W1 + C1) @ W2
    grad += prob * value * (b - p)
  return grad


def uniforms(shape, seed):
  rng = np.random.default_rng(seed)
  return tf.constant(np.clip(rng.random(shape), 1e-12, 1.0 - 1e-12), DTYPE)


def z_scores(samples, exact):
  """(mean - exact) / standard error of the mean, per unit; samples [N, D]."""
  samples = np.asarray(samples, np.float64)
  standard_error = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
  return (samples.mean(axis=0) - exact) / standard_error


def one_row_draws(estimator, seed=0):
  """[N_DRAWS, D] estimates, one independent row each (ℓ shared)."""
  u = uniforms([N_DRAWS, D], [seed, 0])
  v = uniforms([N_DRAWS, D], [seed, 1])
  return estimator(f, tf.constant(LOGITS, DTYPE), u, v).estimate.numpy()


def loo_draws(estimator, seed=0):
  """[N_DRAWS, D]: per example, the mean over its K samples' ĝ_i."""
  u = uniforms([K, N_DRAWS, D], [seed, 2])
  return estimator(tf.constant(LOGITS, DTYPE), u).estimate.numpy().mean(0)


def tied(logits, u):
  return bernoulli.tied_conditional_noise(
      tf.broadcast_to(logits, tf.shape(u)), u)


# Estimators as functions (f, logits, u, v) -> Result.
UNBIASED = {
    'reinforce': lambda fn, l, u, v: bernoulli.reinforce(l, fn, u),
    'reinforce_constant_baseline':
        lambda fn, l, u, v: bernoulli.reinforce(l, fn, u, baseline=0.8),
    'rebar': lambda fn, l, u, v: bernoulli.rebar(l, fn, u, v, 0.7, 0.6),
    'rebar_tied_noise':
        lambda fn, l, u, v: bernoulli.rebar(l, fn, u, tied(l, u), 0.7, 0.6),
    'rebar_high_temperature':
        lambda fn, l, u, v: bernoulli.rebar(l, fn, u, v, 1.3, 2.5),
    'relax':
        lambda fn, l, u, v: bernoulli.relax(l, fn, u, v, control_variate),
    'relax_eta': lambda fn, l, u, v: bernoulli.relax(
        l, fn, u, v, control_variate, eta=0.8),
    'relax_tied_noise': lambda fn, l, u, v: bernoulli.relax(
        l, fn, u, tied(l, u), control_variate),
    'arm': lambda fn, l, u, v: bernoulli.arm(l, fn, u),
    'disarm': lambda fn, l, u, v: bernoulli.disarm(l, fn, u),
}
# The estimators evaluating f at the antithetic pair (b, b').
ANTITHETIC = ('arm', 'disarm')


@pytest.mark.parametrize('name', sorted(UNBIASED))
def test_unbiased_by_enumeration(name):
  """Every |z| < 4 (fixed seed; module docstring)."""
  z = z_scores(one_row_draws(UNBIASED[name]), exact_gradient())
  assert np.abs(z).max() < UNBIASED_BELOW, z


def test_reinforce_loo_unbiased_by_enumeration():
  """Every |z| < 4 (fixed seed; module docstring), K = 3 samples."""
  z = z_scores(loo_draws(lambda l, u: bernoulli.reinforce_loo(l, f, u)),
               exact_gradient())
  assert np.abs(z).max() < UNBIASED_BELOW, z


def rebar_without_correction(logits, u, v, eta=0.7, temperature=0.6):
  """REBAR's score term alone: [f(b) - η f(σ_λ(z~))] (b - σ(ℓ)), without
  η (∂f(σ_λ(z))/∂ℓ - ∂f(σ_λ(z~))/∂ℓ). Biased (a broken variant)."""
  logits = tf.broadcast_to(logits, tf.shape(u))
  b = tf.cast(u > tf.sigmoid(-logits), DTYPE)
  z_tilde = bernoulli.conditional_logistic_sample(logits, b, v)
  signal = f(b) - eta * f(tf.sigmoid(z_tilde / temperature))
  return bernoulli.Result(None, signal[..., None] * (b - tf.sigmoid(logits)),
                          None, None, None)


def reinforce_baseline_with_itself(logits, u):
  """REINFORCE with the mean of all K samples, itself included, as the
  baseline: E[ĝ] = (1 - 1/K) ∂E[f]/∂ℓ. Biased (a broken variant)."""
  b = tf.cast(u > tf.sigmoid(-logits), DTYPE)
  baseline = tf.reduce_mean(f(b), axis=0, keepdims=True)
  return bernoulli.reinforce(logits, f, u, baseline=baseline)


def antithetic_pair(logits, u):
  """b = 1[u > σ(-ℓ)] and b' = 1[u < σ(ℓ)] in numpy, [..., D] each."""
  logits, u = np.asarray(logits), np.asarray(u)
  return ((u > 1.0 / (1.0 + np.exp(logits))).astype(np.float64),
          (u < 1.0 / (1.0 + np.exp(-logits))).astype(np.float64))


def antithetic_variant(weight):
  """(f(b) - f(b')) · weight(ℓ, u, b, b') as a Result, for broken variants."""
  def estimator(logits, u):
    b, b_anti = (tf.constant(x) for x in antithetic_pair(logits, u))
    signal = f(b) - f(b_anti)
    return bernoulli.Result(None, signal[..., None] * weight(
        tf.constant(logits, DTYPE), u, b, b_anti), None, None, None)
  return estimator


# ARM with the score b - σ(ℓ) in place of u - 1/2: f(b') is correlated with
# b, so it is no baseline. DisARM without σ(|ℓ|): E[ĝ_i] is the gradient
# divided by σ(|ℓ_i|). Both broken variants.
arm_with_score = antithetic_variant(
    lambda l, u, b, b_anti: b - tf.sigmoid(l))
disarm_without_sigma_abs = antithetic_variant(
    lambda l, u, b, b_anti: (b - 0.5) * tf.cast(b != b_anti, DTYPE))

BIASED = {
    'concrete': lambda fn, l, u, v: bernoulli.concrete(l, fn, u, 0.5),
    'straight_through':
        lambda fn, l, u, v: bernoulli.straight_through(l, fn, u),
    'rebar_without_correction':
        lambda fn, l, u, v: rebar_without_correction(l, u, v),
    'arm_with_score': lambda fn, l, u, v: arm_with_score(l, u),
    'disarm_without_sigma_abs':
        lambda fn, l, u, v: disarm_without_sigma_abs(l, u),
}


@pytest.mark.parametrize('name', sorted(BIASED))
def test_biased_and_broken_estimators_fail_the_check(name):
  """Some |z| > 10 (fixed seed; module docstring)."""
  z = z_scores(one_row_draws(BIASED[name]), exact_gradient())
  assert np.abs(z).max() > BIASED_ABOVE, z


def test_reinforce_with_its_own_sample_in_the_baseline_fails_the_check():
  """Some |z| > 10 (fixed seed; module docstring)."""
  z = z_scores(loo_draws(reinforce_baseline_with_itself), exact_gradient())
  assert np.abs(z).max() > BIASED_ABOVE, z


def test_loo_learning_signal():
  """With K = 2 the leave-one-out learning signals are f_1 - f_2 and
  f_2 - f_1, and ĝ_i is learning_signal_i (b_i - σ(ℓ))."""
  logits = tf.constant(LOGITS, DTYPE)
  u = uniforms([2, 4, D], 5)
  result = bernoulli.reinforce_loo(logits, f, u)
  values = result.f_values.numpy()
  np.testing.assert_allclose(result.learning_signal.numpy(),
                             [values[0] - values[1], values[1] - values[0]])
  b = (u.numpy() > 1.0 / (1.0 + np.exp(LOGITS))).astype(np.float64)
  p = 1.0 / (1.0 + np.exp(-LOGITS))
  np.testing.assert_allclose(
      result.estimate.numpy(),
      result.learning_signal.numpy()[..., None] * (b - p))


def test_antithetic_pair_learning_signal_and_paper_formulas():
  """ARM and DisARM: f_values = f(b) at the hard sample b = 1[u > σ(-ℓ)];
  learning_signal = f(b) - f(b'), b' = 1[u < σ(ℓ)]; ĝ is ARM's
  (f(b) - f(b'))(u - 1/2) and DisARM's paper form
  1/2 (f(b') - f(b)) (-1)^{b_i} 1[b_i ≠ b'_i] σ(|ℓ_i|) (pair (b', b)),
  here in numpy, for per-row logits."""
  logits = np.random.default_rng(20).normal(0.0, 1.5, (50, D))
  u = uniforms([50, D], 21)
  b, b_anti = antithetic_pair(logits, u)
  values, anti = f(tf.constant(b)).numpy(), f(tf.constant(b_anti)).numpy()
  assert np.any(b != b_anti) and np.any(values != anti)
  arm = bernoulli.arm(tf.constant(logits), f, u)
  disarm = bernoulli.disarm(tf.constant(logits), f, u)
  paper = (0.5 * (anti - values)[:, None] * (-1.0) ** b * (b != b_anti)
           / (1.0 + np.exp(-np.abs(logits))))
  for result in (arm, disarm):
    np.testing.assert_array_equal(result.f_values.numpy(), values)
    np.testing.assert_array_equal(result.learning_signal.numpy(),
                                  values - anti)
  np.testing.assert_allclose(arm.estimate.numpy(),
                             (values - anti)[:, None] * (u.numpy() - 0.5),
                             rtol=1e-12)
  np.testing.assert_allclose(disarm.estimate.numpy(), paper, rtol=1e-12,
                             atol=1e-15)


@pytest.mark.parametrize('name', ANTITHETIC)
def test_antithetic_surrogate_trains_f_at_the_pair_mean(name):
  """f(b) = b · w with a variable w: ∂surrogate/∂w is the mean over rows of
  the pair mean (b + b')/2, which differs from the mean of b alone here."""
  rows = 40
  u = uniforms([rows, D], 22)
  w = tf.Variable(tf.constant([0.5, -1.0, 2.0], DTYPE))
  with tf.GradientTape() as tape:
    result = UNBIASED[name](lambda b: tf.linalg.matvec(b, w),
                            tf.constant(LOGITS, DTYPE), u, None)
  b, b_anti = antithetic_pair(LOGITS, u)
  pair_mean = (0.5 * (b + b_anti)).mean(0)
  assert np.abs(pair_mean - b.mean(0)).max() > 0.05
  np.testing.assert_allclose(tape.gradient(result.surrogate, w).numpy(),
                             pair_mean, rtol=1e-12)


def test_disarm_variance_is_at_most_arms():
  """Per unit, Var(DisARM) <= Var(ARM) (Dong et al. 2020: DisARM is ARM
  conditioned on the pair, so the difference is E[Var(ĝ_ARM | b, b')],
  > 0 here). Both on the same N_DRAWS rows (fixed seed, shared ℓ), with
  a_n, c_n the squared deviations of ARM's and DisARM's n-th estimate from
  their means, the difference of the sample variances is mean(a - c) and
  its standard error std(a - c)/sqrt(N_DRAWS); every unit must show a
  difference above 4 standard errors, so a DisARM no better than ARM (or
  ARM itself) fails."""
  arm, disarm = (one_row_draws(UNBIASED[name], seed=3) for name in ANTITHETIC)
  deviations = (arm - arm.mean(0)) ** 2 - (disarm - disarm.mean(0)) ** 2
  standard_error = deviations.std(0, ddof=1) / np.sqrt(N_DRAWS)
  z = deviations.mean(0) / standard_error
  assert np.all(z > UNBIASED_BELOW), z


def test_tied_noise_gives_z_tilde_equal_to_z():
  logits = tf.constant(np.tile(LOGITS, (1000, 1)), DTYPE)
  u = uniforms([1000, D], 6)
  b = tf.cast(u > tf.sigmoid(-logits), DTYPE)
  z = logits + tf.math.log(u) - tf.math.log1p(-u)
  z_tilde = bernoulli.conditional_logistic_sample(
      logits, b, bernoulli.tied_conditional_noise(logits, u))
  np.testing.assert_allclose(z_tilde.numpy(), z.numpy(), rtol=1e-9,
                             atol=1e-9)


def test_conditional_sample_is_consistent_with_b():
  """z~ > 0 exactly where b = 1, for fresh v, also at large |ℓ|."""
  logits = tf.constant(np.tile([-12.0, -0.3, 0.0, 2.0, 15.0], (2000, 1)),
                       DTYPE)
  u = uniforms([2000, 5], 7)
  b = tf.cast(u > tf.sigmoid(-logits), DTYPE)
  z_tilde = bernoulli.conditional_logistic_sample(logits, b,
                                                  uniforms([2000, 5], 8))
  assert np.all(np.isfinite(z_tilde.numpy()))
  np.testing.assert_array_equal(z_tilde.numpy() > 0, b.numpy() > 0.5)


ALL = dict(UNBIASED)
ALL.update(concrete=BIASED['concrete'],
           straight_through=BIASED['straight_through'],
           reinforce_loo=lambda fn, l, u, v: bernoulli.reinforce_loo(l, fn, u))


@pytest.mark.parametrize('name', sorted(ALL))
def test_surrogate_gradients(name):
  """∂surrogate/∂ℓ is the mean over rows of ĝ for a shared ℓ and ĝ / rows
  for per-row logits; the value is mean f(b) (Concrete: mean f at the
  relaxed sample; ARM, DisARM: of the pair mean (f(b) + f(b'))/2); f's own
  variables get mean ∂f(b)/∂(them) (Concrete: at the relaxed sample; ARM,
  DisARM: of the pair mean)."""
  rows = 6
  u, v = uniforms([rows, D], 9), uniforms([rows, D], 10)
  shared = tf.Variable(LOGITS)
  per_row = tf.Variable(np.tile(LOGITS, (rows, 1)))
  for logits in (shared, per_row):
    with tf.GradientTape() as tape:
      result = ALL[name](f, logits, u, v)
    grad = tape.gradient(result.surrogate, logits).numpy()
    estimate = result.estimate.numpy()
    expected = estimate.mean(0) if logits is shared else estimate / rows
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-15)
  values = result.f_values.numpy()
  if name in ANTITHETIC:
    values = 0.5 * (values
                    + f(tf.constant(antithetic_pair(LOGITS, u)[1])).numpy())
  if name != 'concrete':
    np.testing.assert_allclose(float(result.surrogate), values.mean(),
                               rtol=1e-12)
  # f with a variable of its own, a scale s: ∂(s f(b))/∂s = f(b) (ARM,
  # DisARM: the pair mean).
  scale = tf.Variable(tf.constant(1.0, DTYPE))
  with tf.GradientTape() as tape:
    result = ALL[name](lambda b: scale * f(b), shared, u, v)
  grad = float(tape.gradient(result.surrogate, scale))
  if name == 'concrete':
    relaxed = tf.sigmoid((LOGITS + tf.math.log(u) - tf.math.log1p(-u)) / 0.5)
    assert grad == pytest.approx(float(tf.reduce_mean(f(relaxed))),
                                 rel=1e-12)
  else:
    assert grad == pytest.approx(values.mean(), rel=1e-12)


def test_control_variate_parameters_get_nothing_from_the_surrogate():
  eta = tf.Variable(tf.constant(0.7, DTYPE))
  log_temperature = tf.Variable(tf.constant(np.log(0.6), DTYPE))
  u, v = uniforms([6, D], 11), uniforms([6, D], 12)
  with tf.GradientTape() as tape:
    result = bernoulli.rebar(tf.constant(LOGITS, DTYPE), f, u, v, eta,
                             tf.exp(log_temperature))
  grads = tape.gradient(result.surrogate, [eta, log_temperature])
  assert grads == [None, None]


def variance_objective_and_gradient(build, variables):
  with tf.GradientTape() as tape:
    objective = build().variance_objective
  return float(objective), [g.numpy() for g in
                            tape.gradient(objective, variables)]


def test_rebar_variance_gradient_matches_finite_differences():
  """∂mean(ĝ²)/∂(η, log λ) through the inner tape equals central
  differences of mean(ĝ²) at the same noise (float64)."""
  eta = tf.Variable(tf.constant(0.7, DTYPE))
  log_temperature = tf.Variable(tf.constant(np.log(0.6), DTYPE))
  u, v = uniforms([5, D], 13), uniforms([5, D], 14)

  def build():
    return bernoulli.rebar(tf.constant(LOGITS, DTYPE), f, u, v, eta,
                           tf.exp(log_temperature))

  variables = [eta, log_temperature]
  _, grads = variance_objective_and_gradient(build, variables)
  for got, want in zip(grads, finite_differences(build, variables)):
    assert abs(float(want)) > 1e-4
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-10)


def test_relax_and_baseline_variance_gradients_match_finite_differences():
  """The same for RELAX's network weights and a REINFORCE baseline."""
  weights = [tf.Variable(U1), tf.Variable(E1), tf.Variable(Q)]
  u, v = uniforms([5, D], 15), uniforms([5, D], 16)

  def build_relax():
    return bernoulli.relax(tf.constant(LOGITS, DTYPE), f, u, v,
                           lambda z: network(z, *weights))

  _, grads = variance_objective_and_gradient(build_relax, weights)
  for got, want in zip(grads, finite_differences(build_relax, weights)):
    assert np.abs(want).max() > 1e-4
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-10)
  baseline = tf.Variable(tf.constant(0.3, DTYPE))

  def build_reinforce():
    return bernoulli.reinforce(tf.constant(LOGITS, DTYPE), f, u,
                               baseline=baseline)

  _, grads = variance_objective_and_gradient(build_reinforce, [baseline])
  want = finite_differences(build_reinforce, [baseline])[0]
  np.testing.assert_allclose(grads[0], want, rtol=1e-6)


def test_rebar_at_eta_zero_is_reinforce():
  u, v = uniforms([8, D], 17), uniforms([8, D], 18)
  logits = tf.constant(LOGITS, DTYPE)
  np.testing.assert_allclose(
      bernoulli.rebar(logits, f, u, v, 0.0, 0.6).estimate.numpy(),
      bernoulli.reinforce(logits, f, u).estimate.numpy(), rtol=1e-12,
      atol=1e-15)


@pytest.mark.parametrize('name', ['reinforce', 'reinforce_loo', 'concrete',
                                  'straight_through', 'rebar_tied_noise',
                                  'relax', 'arm', 'disarm'])
def test_float32_in_a_tf_function(name):
  """Every estimator runs in float32 inside a tf.function, with the shapes
  of the module docstring (REINFORCE LOO: the 4 rows are its k samples)."""
  estimator = ALL[name]

  @tf.function
  def run(u, v):
    return estimator(f, tf.constant(LOGITS, tf.float32), u, v)

  rng = np.random.default_rng(19)
  u, v = (tf.constant(rng.uniform(0.01, 0.99, (4, D)), tf.float32)
          for _ in range(2))
  result = run(u, v)
  assert result.estimate.dtype == tf.float32
  assert result.estimate.shape == (4, D)
  assert result.f_values.shape == (4,)
  assert result.surrogate.shape == result.variance_objective.shape == ()
  assert np.all(np.isfinite(result.estimate.numpy()))
