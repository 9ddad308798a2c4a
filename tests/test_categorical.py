"""rebar/estimators/categorical.py: unbiasedness by exact enumeration, the
conditional sample z~ ~ p(z | b), ARS/ARSM's pseudo-actions and their
deduplication, the surrogate's gradients, the variance objective's gradient.

The enumeration check: K = 2 variables of C = 3 categories with fixed
(unnormalised) logits ℓ and a fixed non-linear f(b) = Σ_h w2_h tanh(vec(b)
W1 + c1)_h (random coefficients mixing the two variables), in float64. The
exact ∂E[f(b)]/∂ℓ_kc = Σ_b p(b) f(b) (b_kc - θ_kc) sums all 3^2 = 9
configurations in numpy, independently of the estimators. Each estimator is
drawn N_DRAWS times in one vectorised call, each draw one row with its own
uniforms (REINFORCE LOO: one example of k samples, their mean); per element
(k, c),
  z = (mean of the N_DRAWS estimates - exact) / (sample std / sqrt(N_DRAWS)).
Under unbiasedness z is close to N(0, 1) (CLT over 10^5 draws of estimates
with finite variance), and a case passes if every |z| < UNBIASED_BELOW = 4:
by chance a correct estimator fails with probability below 6 · 6e-5 per
case (6 elements, fewer independent ones since ĝ sums to 0 over c). All
seeds are fixed, so the outcome is reproducible. The biased estimators
(Gumbel-softmax, straight-through) and deliberately broken variants (RELAX
whose z~ comes from the appendix formula in the unnormalised
parameterisation, log α = ℓ in place of log θ; REBAR without its
reparameterised correction; ARSM with the merge weight 1/C - π_kc of the
category in place of the reference's 1/C - π_kj; ARS with the other
variable's π_k'j; REINFORCE LOO whose baseline includes the sample itself)
must show |z| > BIASED_ABOVE = 10 on some element: the check has power
against them. RELAX with z~ drawn independently of b looks broken but is
unbiased (relax_unconditional says why) and passes as such.

The conditional-sample check uses the same z-scores: for statistics h
(z, z², tanh of differences of z), the mean over draws of
(h(z~) - h(z)) 1[b_k = c], z the Gumbel sample of u with hard sample b and
z~ = conditional_gumbel_sample(ℓ, b, v) for fresh v, has expectation 0
when z~ given b has z's conditional distribution (a necessary condition,
checked for these h); every |z| < 4 (54 statistics: by chance a correct
sampler fails with probability below 54 · 6e-5 = 3e-3) and argmax z~ = b,
while the same
formula in the unnormalised parameterisation (log α = ℓ in place of log θ)
fails with |z| > 10.
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from rebar.estimators import categorical
from tests.gradients import finite_differences

K = 2                     # variables
C = 3                     # categories
N_DRAWS = 100000
UNBIASED_BELOW = 4.0
BIASED_ABOVE = 10.0
DTYPE = tf.float64

_RNG = np.random.default_rng(2019)
LOGITS = np.array([[0.6, -1.2, 0.25], [-0.4, 0.9, 0.1]])
W1 = _RNG.normal(0.0, 1.5, (K * C, 5))
C1 = _RNG.normal(0.0, 0.5, 5)
W2 = _RNG.normal(0.0, 1.0, 5)
# A fixed control variate c_φ(z) for RELAX, a small random network on z.
U1 = _RNG.normal(0.0, 0.5, (K * C, 6))
E1 = _RNG.normal(0.0, 0.5, 6)
Q = _RNG.normal(0.0, 0.5, 6)


def network(x, w1, c1, w2):
  """Σ_h w2_h tanh(vec(x) w1 + c1)_h, [..., K, C] -> [...], in x's dtype."""
  w1, c1, w2 = (tf.cast(w, x.dtype) for w in (w1, c1, w2))
  flat = tf.reshape(x, tf.concat([tf.shape(x)[:-2], [K * C]], 0))
  return tf.tensordot(tf.tanh(tf.tensordot(flat, w1, axes=1) + c1), w2,
                      axes=1)


def f(b):
  return network(b, W1, C1, W2)


def f_at(rows, b):
  del rows  # f does not depend on the example here
  return f(b)


def control_variate(z):
  return network(z, U1, E1, Q)


def softmax(logits):
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def exact_gradient(logits=LOGITS):
  """∂E[f(b)]/∂ℓ by summing the C^K configurations (numpy), [K, C]."""
  theta = softmax(logits)
  grad = np.zeros([K, C])
  for config in itertools.product(range(C), repeat=K):
    b = np.eye(C)[list(config)]
    prob = np.prod(theta[np.arange(K), list(config)])
    value = np.tanh(b.reshape(-1) @ W1 + C1) @ W2
    grad += prob * value * (b - theta)
  return grad


def uniforms(shape, seed):
  rng = np.random.default_rng(seed)
  return tf.constant(np.clip(rng.random(shape), 1e-12, 1.0 - 1e-12), DTYPE)


def z_scores(samples, exact):
  """(mean - exact) / standard error of the mean, per element; samples
  [N, ...]."""
  samples = np.asarray(samples, np.float64).reshape(len(samples), -1)
  standard_error = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
  return (samples.mean(axis=0) - np.reshape(exact, -1)) / standard_error


def one_row_draws(estimator, seed=0):
  """[N_DRAWS, K, C] estimates, one independent row each (ℓ shared), in one
  tf.function call."""
  u = uniforms([N_DRAWS, K, C], [seed, 0])
  v = uniforms([N_DRAWS, K, C], [seed, 1])
  run = tf.function(lambda u, v: estimator(f, tf.constant(LOGITS, DTYPE), u,
                                           v).estimate)
  return run(u, v).numpy()


def loo_draws(estimator, samples, seed=0):
  """[N_DRAWS, K, C]: per example, the mean over its samples' ĝ_i."""
  u = uniforms([samples, N_DRAWS, K, C], [seed, 2])
  run = tf.function(
      lambda u: estimator(tf.constant(LOGITS, DTYPE), u).estimate)
  return run(u).numpy().mean(0)


def tied(logits, u):
  return categorical.tied_conditional_noise(logits, u)


def as_f_at(fn):
  """f_at for ARS/ARSM from a row-independent f."""
  return lambda rows, b: fn(b)


# Estimators as functions (f, logits, u, v) -> Result.
UNBIASED = {
    'relax_eta': lambda fn, l, u, v: categorical.relax(
        l, fn, u, v, control_variate, eta=0.8),
    'relax_tied_noise': lambda fn, l, u, v: categorical.relax(
        l, fn, u, tied(l, u), control_variate, eta=1.2),
    'rebar': lambda fn, l, u, v: categorical.rebar(l, fn, u, v, 0.7, 0.6),
    'rebar_tied_noise':
        lambda fn, l, u, v: categorical.rebar(l, fn, u, tied(l, u), 0.7, 0.6),
    'rebar_high_temperature':
        lambda fn, l, u, v: categorical.rebar(l, fn, u, v, 1.3, 2.5),
    'ars': lambda fn, l, u, v: categorical.ars(l, as_f_at(fn), u),
    'ars_reference_2':
        lambda fn, l, u, v: categorical.ars(l, as_f_at(fn), u, reference=2),
    'arsm': lambda fn, l, u, v: categorical.arsm(l, as_f_at(fn), u),
    'stick_breaking_disarm':
        lambda fn, l, u, v: categorical.stick_breaking_disarm(l, fn, u),
}
# Not in ALL: a test-side variant (relax_unconditional's docstring).
UNBIASED_VARIANTS = {
    'relax_unconditional_z_tilde':
        lambda fn, l, u, v: relax_unconditional(fn, l, u, v),
}
# The estimators taking f_at.
PSEUDO_ACTIONS = ('ars', 'ars_reference_2', 'arsm')


@pytest.mark.parametrize('name', sorted(UNBIASED) + sorted(UNBIASED_VARIANTS))
def test_unbiased_by_enumeration(name):
  """Every |z| < 4 (fixed seed; module docstring)."""
  estimator = UNBIASED.get(name) or UNBIASED_VARIANTS[name]
  z = z_scores(one_row_draws(estimator), exact_gradient())
  assert np.abs(z).max() < UNBIASED_BELOW, z


@pytest.mark.parametrize('samples', [2, 3])
def test_reinforce_loo_unbiased_by_enumeration(samples):
  """Every |z| < 4 (fixed seed; module docstring), k = 2 and 3 samples."""
  z = z_scores(loo_draws(lambda l, u: categorical.reinforce_loo(l, f, u),
                         samples), exact_gradient())
  assert np.abs(z).max() < UNBIASED_BELOW, z


def theta_of(logits):
  return tf.nn.softmax(logits, axis=-1)


def relax_unconditional(fn, logits, u, v, eta=0.8):
  """RELAX with z~ = log θ - log(-log v), drawn independently of b. It
  looks broken but is unbiased: E[c(z~) (b - θ)] = E[c(z~)] E[b - θ] = 0
  and E[∂c(z)/∂ℓ] = E[∂c(z~)/∂ℓ] (z and z~ have one distribution), so the
  control variate only adds variance."""
  logits = tf.broadcast_to(logits, tf.shape(u))
  return relax_with_z_tilde(
      fn, logits, u, lambda l, b: categorical.gumbel_sample(l, v), eta)


def unnormalised_conditional(logits, b, v):
  """The appendix formula with the unnormalised log α = ℓ in place of
  log θ: z~_b = -log(-log v_b), z~_i = -log(-log v_i / α_i - log v_b),
  which is p(z | b) for z = ℓ + Gumbel only when Σ_c α_c = 1."""
  log_e = tf.math.log(-tf.math.log(v))
  log_e_b = tf.broadcast_to(tf.reduce_sum(b * log_e, axis=-1, keepdims=True),
                            tf.shape(log_e))
  others = -tf.math.log(tf.exp(log_e - logits) + tf.exp(log_e_b))
  return tf.where(b > 0.5, -log_e_b, others)


def relax_with_z_tilde(fn, logits, u, z_tilde_of, eta):
  """RELAX's ĝ with z~ = z_tilde_of(ℓ, b), as a Result."""
  with tf.GradientTape() as tape:
    tape.watch(logits)
    z = categorical.gumbel_sample(logits, u)
    b = categorical.hard_sample(z)
    c_z_tilde = control_variate(z_tilde_of(logits, b))
    difference = (tf.reduce_sum(control_variate(z))
                  - tf.reduce_sum(c_z_tilde))
  reparameterised = tape.gradient(difference, logits)
  estimate, _ = categorical.relax_estimate(logits, b, fn(b), c_z_tilde,
                                           reparameterised, eta)
  return categorical.Result(None, estimate, None, None, None, None)


def relax_wrong_conditional(logits, u, v, eta=0.8):
  """RELAX with z~ from unnormalised_conditional: E[c(z~) | b] is not
  E[c(z) | b], so the c terms no longer cancel in expectation. Biased (a
  broken variant)."""
  logits = tf.broadcast_to(logits, tf.shape(u))
  return relax_with_z_tilde(
      f, logits, u, lambda l, b: unnormalised_conditional(l, b, v), eta)


def rebar_without_correction(logits, u, v, eta=0.7, temperature=0.6):
  """REBAR's score term alone: [f(b) - η f(σ_λ(z~))] (b - θ), without
  η (∂f(σ_λ(z))/∂ℓ - ∂f(σ_λ(z~))/∂ℓ). Biased (a broken variant)."""
  logits = tf.broadcast_to(logits, tf.shape(u))
  b = categorical.hard_sample(categorical.gumbel_sample(logits, u))
  z_tilde = categorical.conditional_gumbel_sample(logits, b, v)
  signal = f(b) - eta * f(categorical.relaxed_sample(z_tilde, temperature))
  return categorical.Result(None, signal[..., None, None]
                            * (b - theta_of(logits)), None, None, None, None)


def full_swaps(logits, u):
  """f(z^{m⇌j}) [..., C, C] and π [..., K, C], every pair evaluated."""
  actions = categorical.pseudo_actions(logits, u)
  return (f(tf.one_hot(actions, C, dtype=DTYPE)),
          categorical.dirichlet_weights(u))


def arsm_merge_weight_of_the_category(logits, u):
  """ARSM with (1/C - π_kc) in place of (1/C - π_kj): Σ_j f_Δ^{c⇌j} (1/C -
  π_kc). Biased (a broken variant)."""
  f_swapped, pi = full_swaps(logits, u)
  centred = f_swapped - tf.reduce_mean(f_swapped, axis=-2, keepdims=True)
  estimate = (tf.reduce_sum(centred, axis=-1)[..., None, :]
              * (1.0 / C - pi))
  return categorical.Result(None, estimate, None, None, None, None)


def ars_reference_of_the_other_variable(logits, u, reference=0):
  """ARS with variable k's estimate weighted by the other variable's
  (1 - C π_{k',j}). Biased (a broken variant)."""
  f_swapped, pi = full_swaps(logits, u)
  f_reference = f_swapped[..., reference]
  centred = f_reference - tf.reduce_mean(f_reference, axis=-1, keepdims=True)
  weight = tf.reverse(1.0 - C * pi[..., reference], axis=[-1])
  return categorical.Result(None, centred[..., None, :] * weight[..., None],
                            None, None, None, None)


def reinforce_baseline_with_itself(logits, u):
  """REINFORCE with the mean of all k samples, itself included, as the
  baseline: E[ĝ] = (1 - 1/k) ∂E[f]/∂ℓ. Biased (a broken variant)."""
  b = categorical.hard_sample(categorical.gumbel_sample(logits, u))
  values = f(b)
  signal = values - tf.reduce_mean(values, axis=0, keepdims=True)
  return categorical.Result(None, signal[..., None, None]
                            * (b - theta_of(logits)), None, None, None, None)


BIASED = {
    'gumbel_softmax':
        lambda fn, l, u, v: categorical.gumbel_softmax(l, fn, u, 0.5),
    'straight_through':
        lambda fn, l, u, v: categorical.straight_through(l, fn, u, 0.5),
    'relax_wrong_conditional':
        lambda fn, l, u, v: relax_wrong_conditional(l, u, v),
    'rebar_without_correction':
        lambda fn, l, u, v: rebar_without_correction(l, u, v),
    'arsm_merge_weight_of_the_category':
        lambda fn, l, u, v: arsm_merge_weight_of_the_category(l, u),
    'ars_reference_of_the_other_variable':
        lambda fn, l, u, v: ars_reference_of_the_other_variable(l, u),
}


@pytest.mark.parametrize('name', sorted(BIASED))
def test_biased_and_broken_estimators_fail_the_check(name):
  """Some |z| > 10 (fixed seed; module docstring)."""
  z = z_scores(one_row_draws(BIASED[name]), exact_gradient())
  assert np.abs(z).max() > BIASED_ABOVE, z


def test_reinforce_with_its_own_sample_in_the_baseline_fails_the_check():
  """Some |z| > 10 (fixed seed; module docstring), k = 3."""
  z = z_scores(loo_draws(reinforce_baseline_with_itself, 3), exact_gradient())
  assert np.abs(z).max() > BIASED_ABOVE, z


def statistics(z, b):
  """h(z) 1[b_k = c] for h in (z_i, z_i², tanh(z_i - z_{i+1})), per
  variable k and category c: [..., K, C, 3C]."""
  h = tf.concat([z, tf.square(z), tf.tanh(z - tf.roll(z, 1, axis=-1))], -1)
  return b[..., :, None] * h[..., None, :]


@pytest.mark.parametrize('sampler,parameterisation', [
    (categorical.conditional_gumbel_sample, 'normalised'),
    (unnormalised_conditional, 'unnormalised')])
def test_conditional_sample_has_the_conditional_distribution(
    sampler, parameterisation):
  """z-scores of mean (h(z~) - h(z)) 1[b_k = c] (module docstring): every
  |z| < 4 for conditional_gumbel_sample; the unnormalised parameterisation,
  compared with z = ℓ + Gumbel (its own), has some |z| > 10."""
  logits = tf.broadcast_to(tf.constant(LOGITS, DTYPE), [N_DRAWS, K, C])
  u, v = uniforms([N_DRAWS, K, C], 30), uniforms([N_DRAWS, K, C], 31)
  if parameterisation == 'normalised':
    z = categorical.gumbel_sample(logits, u)
  else:
    z = logits - tf.math.log(-tf.math.log(u))
  b = categorical.hard_sample(z)
  z_tilde = sampler(logits, b, v)
  np.testing.assert_array_equal(np.argmax(z_tilde.numpy(), -1),
                                np.argmax(b.numpy(), -1))
  difference = (statistics(z_tilde, b) - statistics(z, b)).numpy()
  z_values = z_scores(difference, 0.0)
  if parameterisation == 'normalised':
    assert np.abs(z_values).max() < UNBIASED_BELOW, z_values
  else:
    assert np.abs(z_values).max() > BIASED_ABOVE, z_values


def test_conditional_sample_argmax_is_b_at_extreme_logits():
  """argmax z~ = b for every draw, z~ finite, also at large |ℓ| (float64)."""
  logits = tf.constant(np.tile([[-12.0, 0.0, 15.0], [3.0, 3.0, -3.0]],
                               (5000, 1, 1)), DTYPE)
  u, v = uniforms([5000, K, C], 32), uniforms([5000, K, C], 33)
  b = categorical.hard_sample(categorical.gumbel_sample(logits, u))
  z_tilde = categorical.conditional_gumbel_sample(logits, b, v).numpy()
  assert np.all(np.isfinite(z_tilde))
  np.testing.assert_array_equal(np.argmax(z_tilde, -1),
                                np.argmax(b.numpy(), -1))
  assert np.all(np.sort(z_tilde, -1)[..., -1] > np.sort(z_tilde, -1)[..., -2])


def test_tied_noise_gives_z_tilde_equal_to_z():
  logits = tf.constant(np.tile(LOGITS, (1000, 1, 1)), DTYPE)
  u = uniforms([1000, K, C], 34)
  z = categorical.gumbel_sample(logits, u)
  z_tilde = categorical.conditional_gumbel_sample(
      logits, categorical.hard_sample(z),
      categorical.tied_conditional_noise(logits, u))
  np.testing.assert_allclose(z_tilde.numpy(), z.numpy(), rtol=1e-9,
                             atol=1e-9)


def numpy_pseudo_actions(logits, u):
  """z^{m⇌j}_k = argmin_i π^{m⇌j}_ki e^{-ℓ_ki} in numpy: [R, C, C, K]."""
  pi = -np.log(u)
  pi /= pi.sum(-1, keepdims=True)
  actions = np.zeros(u.shape[:1] + (C, C, u.shape[1]), np.int64)
  for m, j in itertools.product(range(C), repeat=2):
    swapped = pi.copy()
    swapped[..., m], swapped[..., j] = pi[..., j], pi[..., m]
    actions[:, m, j] = np.argmin(swapped * np.exp(-logits), axis=-1)
  return actions, pi


def test_pseudo_actions_by_hand():
  """One variable, C = 3, π = (0.1, 0.3, 0.6) at ℓ = 0 (b = 0): the swaps
  give z^{0⇌1} = 1, z^{0⇌2} = 2, z^{1⇌2} = 0, so 3 distinct actions; at
  ℓ = (5, 0, 0), π = (0.2, 0.3, 0.5), every swap gives 0: 1 distinct
  action. ARSM's n_evaluations is (3 + 1)/2, and f_at sees rows 0, 0, 0, 1
  with those actions; ARS with reference 0 evaluates the same."""
  logits = tf.constant([[[0.0, 0.0, 0.0]], [[5.0, 0.0, 0.0]]], DTYPE)
  u = tf.exp(-tf.constant([[[0.1, 0.3, 0.6]], [[0.2, 0.3, 0.5]]], DTYPE))
  np.testing.assert_array_equal(
      categorical.pseudo_actions(logits, u).numpy()[..., 0],
      [[[0, 1, 2], [1, 0, 0], [2, 0, 0]], np.zeros([3, 3])])
  for estimator in (categorical.arsm, categorical.ars):
    calls = []

    def recording_f_at(rows, b):
      calls.append((rows.numpy(), np.argmax(b.numpy(), -1)[:, 0]))
      return tf.reduce_sum(b[:, 0] * tf.constant([1.0, 2.0, 4.0], DTYPE), -1)

    result = estimator(logits, recording_f_at, u)
    assert len(calls) == 1
    rows, actions = calls[0]
    assert sorted(zip(rows.tolist(), actions.tolist())) == [
        (0, 0), (0, 1), (0, 2), (1, 0)]
    assert float(result.n_evaluations) == 2.0
    np.testing.assert_array_equal(result.f_values.numpy(), [1.0, 1.0])


def test_pseudo_actions_and_arsm_match_numpy():
  """Per-row logits, K = 2: pseudo_actions equals a numpy argmin of the
  swapped π e^{-ℓ}; ARSM's ĝ and ARS's equal their formulas in numpy with
  f evaluated at every pseudo-action, for an f_at that depends on its row
  (so a wrong row index or scatter shows); n_evaluations is the mean count
  of distinct pseudo-actions per row, between 1 and 1 + C(C-1)/2 (ARS: C);
  b = z^{j⇌j} is the Gumbel-max sample."""
  rows = 400
  rng = np.random.default_rng(35)
  logits = rng.normal(0.0, 1.0, (rows, K, C))
  u = uniforms([rows, K, C], 36)
  actions, pi = numpy_pseudo_actions(logits, u.numpy())
  np.testing.assert_array_equal(
      categorical.pseudo_actions(tf.constant(logits), u).numpy(), actions)
  b = categorical.hard_sample(categorical.gumbel_sample(tf.constant(logits),
                                                        u)).numpy()
  for j in range(C):
    np.testing.assert_array_equal(actions[:, j, j], np.argmax(b, -1))
  offsets = rng.normal(0.0, 1.0, rows)

  def row_f_at(rows_index, b):
    return f(b) + tf.gather(tf.constant(offsets), rows_index)

  values = (f(tf.one_hot(actions, C, dtype=DTYPE)).numpy()
            + offsets[:, None, None])                     # [R, C, C]
  centred = values - values.mean(1, keepdims=True)
  want = np.einsum('rcj,rkj->rkc', centred, 1.0 / C - pi)
  result = categorical.arsm(tf.constant(logits), row_f_at, u)
  np.testing.assert_allclose(result.estimate.numpy(), want, rtol=1e-10,
                             atol=1e-12)
  np.testing.assert_allclose(result.f_values.numpy(), values[:, 0, 0],
                             rtol=1e-12)
  distinct = [len({tuple(a) for a in actions[r].reshape(-1, K)})
              for r in range(rows)]
  assert float(result.n_evaluations) == pytest.approx(np.mean(distinct),
                                                      rel=1e-12)
  assert 1.0 < float(result.n_evaluations) < 1 + C * (C - 1) // 2
  for reference in range(C):
    ars = categorical.ars(tf.constant(logits), row_f_at, u,
                          reference=reference)
    column = values[:, :, reference]
    want = ((column - column.mean(1, keepdims=True))[:, None, :]
            * (1.0 - C * pi[:, :, reference])[:, :, None])
    np.testing.assert_allclose(ars.estimate.numpy(), want, rtol=1e-10,
                               atol=1e-12)
    distinct = [len({tuple(a) for a in actions[r, :, reference]})
                for r in range(rows)]
    assert float(ars.n_evaluations) == pytest.approx(np.mean(distinct),
                                                     rel=1e-12)
    assert 1.0 < float(ars.n_evaluations) < C


ALL = dict(UNBIASED)
ALL.update(
    gumbel_softmax=BIASED['gumbel_softmax'],
    straight_through=BIASED['straight_through'],
    relax=lambda fn, l, u, v: categorical.relax(l, fn, u, v, control_variate),
    reinforce_loo=lambda fn, l, u, v: categorical.reinforce_loo(l, fn, u))
# Where the surrogate's value is not the mean of f(b), and f's variables are
# trained elsewhere.
RELAXED = ('gumbel_softmax',)
PAIR = ('stick_breaking_disarm',)


@pytest.mark.parametrize('name', sorted(ALL))
def test_surrogate_gradients(name):
  """∂surrogate/∂ℓ is the mean over rows of ĝ for a shared ℓ and ĝ / rows
  for per-row logits; its value is mean f(b) (Gumbel-softmax: mean f at the
  relaxed sample; stick-breaking DisARM: of the pair mean); f's own
  variables (a scale s) get mean ∂(s f(b))/∂s = mean f(b) (Gumbel-softmax:
  at the relaxed sample; stick-breaking DisARM: the pair mean)."""
  rows = 6
  u, v = uniforms([rows, K, C], 9), uniforms([rows, K, C], 10)
  shared = tf.Variable(LOGITS)
  per_row = tf.Variable(np.tile(LOGITS, (rows, 1, 1)))
  for logits in (shared, per_row):
    with tf.GradientTape() as tape:
      result = ALL[name](f, logits, u, v)
    grad = tape.gradient(result.surrogate, logits).numpy()
    estimate = result.estimate.numpy()
    assert estimate.shape == (rows, K, C)
    expected = estimate.mean(0) if logits is shared else estimate / rows
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-15)
  assert result.f_values.shape == (rows,)
  b = categorical.hard_sample(categorical.gumbel_sample(LOGITS, u))
  if name in PAIR:
    b, b_tilde = (tf.constant(x) for x in stick_breaking_pair(LOGITS, u))
    np.testing.assert_allclose(result.f_values.numpy(), f(b).numpy(),
                               rtol=1e-12)
    values = 0.5 * (f(b) + f(b_tilde)).numpy()
  elif name in RELAXED:
    values = f(categorical.relaxed_sample(
        categorical.gumbel_sample(LOGITS, u), 0.5)).numpy()
    np.testing.assert_allclose(result.f_values.numpy(), f(b).numpy(),
                               rtol=1e-12)
  else:
    values = f(b).numpy()
    np.testing.assert_allclose(result.f_values.numpy(), values, rtol=1e-12)
  np.testing.assert_allclose(float(result.surrogate), values.mean(),
                             rtol=1e-12)
  scale = tf.Variable(tf.constant(1.0, DTYPE))
  with tf.GradientTape() as tape:
    result = ALL[name](lambda b: scale * f(b), shared, u, v)
  assert float(tape.gradient(result.surrogate, scale)) == pytest.approx(
      values.mean(), rel=1e-12)


def stick_breaking_pair(logits, u):
  """The stick-breaking samples n, m of stick_breaking_disarm in numpy, as
  one-hots [..., K, C]: σ_i = θ_i / Σ_{j>=i} θ_j, n = the first i < C - 1
  with u_i < σ_i (C - 1 if none), m = the first with u_i > 1 - σ_i."""
  theta = softmax(np.asarray(logits))
  tails = np.cumsum(theta[..., ::-1], axis=-1)[..., ::-1]
  sigma = (theta / tails)[..., :-1]
  u = np.asarray(u)[..., :-1]

  def first(binaries):
    padded = np.concatenate(
        [binaries, np.ones(binaries.shape[:-1] + (1,), bool)], -1)
    return np.eye(C)[np.argmax(padded, axis=-1)]

  return first(u < sigma), first(u > 1.0 - sigma)


def test_stick_breaking_pair():
  """stick_breaking_disarm's f_values are f at n and its learning signal
  f(n) - f(m), the numpy samples above; both n and m are Cat(θ): per
  (variable, category) the frequency is within 4 standard errors of θ, and
  n ≠ m somewhere."""
  rows = 20000
  u = uniforms([rows, K, C], 39)
  result = categorical.stick_breaking_disarm(tf.constant(LOGITS, DTYPE), f,
                                             u)
  b, b_tilde = stick_breaking_pair(LOGITS, u)
  np.testing.assert_allclose(result.f_values.numpy(), f(b).numpy(),
                             rtol=1e-12)
  np.testing.assert_allclose(result.learning_signal.numpy(),
                             (f(b) - f(b_tilde)).numpy(), rtol=1e-12,
                             atol=1e-15)
  assert np.any(b != b_tilde)
  theta = softmax(LOGITS)
  for sample in (b, b_tilde):
    z = (sample.mean(0) - theta) / np.sqrt(theta * (1.0 - theta) / rows)
    assert np.abs(z).max() < UNBIASED_BELOW, z


def test_reinforce_loo_learning_signal():
  """With k = 2 the leave-one-out learning signals are f_1 - f_2 and
  f_2 - f_1, and ĝ_i is learning_signal_i (b_i - θ)."""
  logits = tf.constant(LOGITS, DTYPE)
  u = uniforms([2, 4, K, C], 40)
  result = categorical.reinforce_loo(logits, f, u)
  values = result.f_values.numpy()
  np.testing.assert_allclose(result.learning_signal.numpy(),
                             [values[0] - values[1], values[1] - values[0]])
  b = np.eye(C)[np.argmax(LOGITS - np.log(-np.log(u.numpy())), -1)]
  np.testing.assert_allclose(
      result.estimate.numpy(),
      result.learning_signal.numpy()[..., None, None] * (b - softmax(LOGITS)))


@pytest.mark.parametrize('name', sorted(ALL))
def test_estimates_sum_to_zero_over_categories(name):
  """Σ_c ĝ_kc = 0: every estimator sees ℓ_k only through log_softmax(ℓ_k),
  which is invariant to adding a constant to ℓ_k."""
  u, v = uniforms([50, K, C], 37), uniforms([50, K, C], 38)
  result = ALL[name](f, tf.constant(LOGITS, DTYPE), u, v)
  np.testing.assert_allclose(result.estimate.numpy().sum(-1), 0.0,
                             atol=1e-12)


def test_control_variate_parameters_get_nothing_from_the_surrogate():
  eta = tf.Variable(tf.constant(0.7, DTYPE))
  log_temperature = tf.Variable(tf.constant(np.log(0.6), DTYPE))
  u, v = uniforms([6, K, C], 11), uniforms([6, K, C], 12)
  with tf.GradientTape() as tape:
    result = categorical.rebar(tf.constant(LOGITS, DTYPE), f, u, v, eta,
                               tf.exp(log_temperature))
  assert tape.gradient(result.surrogate, [eta, log_temperature]) == [None,
                                                                      None]


def test_rebar_variance_gradient_matches_finite_differences():
  """∂mean(ĝ²)/∂(η, log λ) through the inner tape equals central
  differences of mean(ĝ²) at the same noise (float64): a learned
  temperature gets the right gradient."""
  eta = tf.Variable(tf.constant(0.7, DTYPE))
  log_temperature = tf.Variable(tf.constant(np.log(0.6), DTYPE))
  u, v = uniforms([5, K, C], 13), uniforms([5, K, C], 14)

  def build():
    return categorical.rebar(tf.constant(LOGITS, DTYPE), f, u, v, eta,
                             tf.exp(log_temperature))

  variables = [eta, log_temperature]
  with tf.GradientTape() as tape:
    objective = build().variance_objective
  grads = tape.gradient(objective, variables)
  for got, want in zip(grads, finite_differences(build, variables)):
    assert abs(float(want)) > 1e-4
    np.testing.assert_allclose(float(got), want, rtol=1e-6, atol=1e-10)


def test_relax_variance_gradient_matches_finite_differences():
  """The same for RELAX's network weights."""
  weights = [tf.Variable(U1), tf.Variable(E1), tf.Variable(Q)]
  u, v = uniforms([5, K, C], 15), uniforms([5, K, C], 16)

  def build():
    return categorical.relax(tf.constant(LOGITS, DTYPE), f, u, v,
                             lambda z: network(z, *weights), eta=0.8)

  with tf.GradientTape() as tape:
    objective = build().variance_objective
  grads = tape.gradient(objective, weights)
  for got, want in zip(grads, finite_differences(build, weights)):
    assert np.abs(want).max() > 1e-4
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-10)


def test_relax_at_eta_zero_is_reinforce():
  u, v = uniforms([8, K, C], 17), uniforms([8, K, C], 18)
  logits = tf.constant(LOGITS, DTYPE)
  b = categorical.hard_sample(categorical.gumbel_sample(logits, u))
  np.testing.assert_allclose(
      categorical.rebar(logits, f, u, v, 0.0, 0.6).estimate.numpy(),
      (f(b)[:, None, None] * (b - theta_of(logits))).numpy(), rtol=1e-12,
      atol=1e-15)


def test_n_evaluations():
  u, v = uniforms([4, K, C], 19), uniforms([4, K, C], 20)
  logits = tf.constant(LOGITS, DTYPE)
  want = {'reinforce_loo': 1, 'straight_through': 1, 'gumbel_softmax': 2,
          'relax': 1, 'rebar': 3, 'stick_breaking_disarm': 2}
  for name, count in want.items():
    calls = []

    def counting_f(b):
      calls.append(b.shape[0])
      return f(b)

    result = ALL[name](counting_f, logits, u, v)
    assert result.n_evaluations == count == len(calls), name


@pytest.mark.parametrize('name', sorted(ALL))
def test_float32_in_a_tf_function(name):
  """Every estimator runs in float32 inside a tf.function, with the shapes
  of the module docstring; all but ARS and ARSM also under XLA."""
  estimator = ALL[name]
  rng = np.random.default_rng(21)
  u, v = (tf.constant(rng.uniform(0.01, 0.99, (4, K, C)), tf.float32)
          for _ in range(2))
  for jit in ((False,) if name in PSEUDO_ACTIONS else (False, True)):
    run = tf.function(
        lambda u, v: estimator(f, tf.constant(LOGITS, tf.float32), u, v),
        jit_compile=jit)
    result = run(u, v)
    assert result.estimate.dtype == tf.float32
    assert result.estimate.shape == (4, K, C)
    assert result.f_values.shape == (4,)
    assert result.surrogate.shape == result.variance_objective.shape == ()
    assert np.all(np.isfinite(result.estimate.numpy()))
