"""The SBN base: samplers, log-probabilities, ELBO terms, and REINFORCE's
unbiasedness by exact enumeration."""

import numpy as np
import pytest
import tensorflow as tf

from rebar import sbn
from rebar.sbn import conditional_noise, hard_sample
from tests import enumeration


def sigmoid(t):
  return 1.0 / (1.0 + np.exp(-t))


def np_bernoulli_log_prob(a, logits):
  return np.sum(a * np.log(sigmoid(logits))
                + (1 - a) * np.log(1 - sigmoid(logits)), axis=-1)


def test_hard_sample_is_indicator_u_above_sigmoid_minus_logits():
  rng = np.random.RandomState(0)
  logits = rng.normal(0, 2, (500, 7)).astype(np.float32)
  u = rng.uniform(size=(500, 7)).astype(np.float32)
  b = hard_sample(tf.constant(logits), tf.constant(u)).numpy()
  expected = (u > sigmoid(-logits)).astype(np.float32)
  # Float rounding can flip a draw that sits on the boundary; none here.
  np.testing.assert_array_equal(b, expected)
  assert 0.2 < b.mean() < 0.8


def test_conditional_noise_value_and_gradient():
  rng = np.random.RandomState(1)
  logits_np = rng.normal(0, 1.5, (400, 5)).astype(np.float32)
  u_np = rng.uniform(0.01, 0.99, size=(400, 5)).astype(np.float32)
  logits = tf.constant(logits_np)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    v = conditional_noise(logits, tf.constant(u_np))
  grad = tape.gradient(v, logits).numpy()
  np.testing.assert_allclose(v.numpy(), u_np, rtol=0, atol=1e-6)
  # Conditional on b, v is u' + r (1 - u') (b = 1) or r u' (b = 0), with
  # u' = σ(-ℓ) and r held fixed; du'/dℓ = -u'(1 - u').
  u_prime = sigmoid(-logits_np.astype(np.float64))
  du_prime = -u_prime * (1 - u_prime)
  b = u_np > u_prime
  r = np.where(b, (u_np - u_prime) / (1 - u_prime), u_np / u_prime)
  expected = np.where(b, (1 - r) * du_prime, r * du_prime)
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_center_is_leave_one_out():
  f = np.array([1.0, 2.0, 4.0, 8.0], np.float32)
  expected = [f[i] - np.delete(f, i).mean() for i in range(4)]
  np.testing.assert_allclose(sbn.center(tf.constant(f)).numpy(), expected,
                             rtol=1e-6)


def _np_dense(x, layer_vars, nonlinear):
  """The deterministic map T in numpy from its variables (W, b pairs)."""
  pairs = [(layer_vars[i].numpy(), layer_vars[i + 1].numpy())
           for i in range(0, len(layer_vars), 2)]
  for w, b in pairs[:-1]:
    x = np.tanh(x @ w + b)
    assert nonlinear
  w, b = pairs[-1]
  return x @ w + b


@pytest.mark.parametrize('task,n_layer,nonlinear', [
    ('sbn', 1, False), ('sbn', 2, True), ('sp', 2, False), ('omni', 2, False)])
def test_log_q_and_elbo_terms_match_numpy(task, n_layer, nonlinear):
  model = enumeration.tiny_model(
      'model=SBN,task=%s,n_layer=%d,nonlinear=%s'
      % (task, n_layer, str(nonlinear).lower()), n_input=8)
  net = model.network
  x = enumeration.tiny_batch(model, n_rows=5)
  noise = net.sample_noise(model.noise_generator, 5)
  hard = net.hard_pass(tf.constant(x), noise)
  rng_mean = net.q_mean.numpy()
  half = 4
  q_in = (x[:, :half] if task == 'sp' else x) - rng_mean
  n_var_per_map = 6 if nonlinear else 2
  q_vars = net.q_variables
  a_prev, log_q_sum = None, 0.0
  activations = []
  for i in range(n_layer):
    inp = q_in if i == 0 else 2 * a_prev - 1
    logits = _np_dense(inp, q_vars[i * n_var_per_map:(i + 1) * n_var_per_map],
                       nonlinear)
    np.testing.assert_allclose(hard.logits[i].numpy(), logits, rtol=1e-4,
                               atol=1e-4)
    u = noise[i].numpy()
    a = (u > sigmoid(-logits)).astype(np.float32)
    np.testing.assert_array_equal(hard.activations[i].numpy(), a)
    lq = np_bernoulli_log_prob(a, logits)
    np.testing.assert_allclose(hard.log_q[i].numpy(), lq, rtol=1e-4, atol=1e-4)
    log_q_sum = log_q_sum + lq
    activations.append(a)
    a_prev = a
  # train_bias = logit(clip(mean_xs, 0.001, 0.999)), for p's pixels.
  mean_xs = np.clip(net.mean_xs.numpy(), 0.001, 0.999)
  bias = np.log(mean_xs / (1 - mean_xs))
  target = x[:, half:] if task == 'sp' else x
  if task == 'sp':
    np.testing.assert_allclose(net.train_bias.numpy(), bias[half:], rtol=1e-5)
    p_map = net.p_variables
    logits = _np_dense(2 * activations[-1] - 1, p_map, nonlinear)
    m = np_bernoulli_log_prob(target, logits + bias[half:])
    f = m
  else:
    np.testing.assert_allclose(net.train_bias.numpy(), bias, rtol=1e-5)
    prior = net.prior.numpy()
    m = np_bernoulli_log_prob(activations[-1], prior)
    p_vars = net.p_variables[1:]  # p_{L-1}, ..., p_0
    for j, i in enumerate(reversed(range(n_layer))):
      logits = _np_dense(2 * activations[i] - 1,
                         p_vars[j * n_var_per_map:(j + 1) * n_var_per_map],
                         nonlinear)
      if i == 0:
        m = m + np_bernoulli_log_prob(target, logits + bias)
      else:
        m = m + np_bernoulli_log_prob(activations[i - 1], logits)
    f = m - log_q_sum
  np.testing.assert_allclose(hard.model_term.numpy(), m, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(hard.elbo.numpy(), f, rtol=1e-4, atol=1e-3)


def test_variable_creation_order():
  model = enumeration.tiny_model('model=SBN,n_layer=2,nonlinear=true')
  names = [v.name.split(':')[0] for v in model.model_variables]
  assert names[0] == 'prior'
  assert [n.split('/')[0] for n in names[1:]] == (
      ['q_0'] * 6 + ['q_1'] * 6 + ['p_1'] * 6 + ['p_0'] * 6)
  assert names[1:7] == ['q_0/tanh0/w', 'q_0/tanh0/b', 'q_0/tanh1/w',
                        'q_0/tanh1/b', 'q_0/out/w', 'q_0/out/b']


# REINFORCE's variance is larger than the other estimators': more draws, one
# copy of the rows per batch.
N_DRAWS = 4000


@pytest.mark.parametrize('config', [
    'task=sbn,n_layer=1,nonlinear=false',
    'task=sbn,n_layer=2,nonlinear=false',
    'task=sbn,n_layer=1,nonlinear=true',
    'task=sp,n_layer=2,nonlinear=false',
    'task=sp,n_layer=1,nonlinear=true',
    'task=sp,n_layer=2,nonlinear=false,sp_multilayer=true',
    'task=sbn,n_layer=2,nonlinear=false,n_samples=2',
])
def test_reinforce_is_unbiased(config):
  """tests/enumeration.py's check: N_DRAWS = 4000 independent batches of 3
  rows each (x tiled n_samples times); |mean - exact| < UNBIASED_BELOW (4)
  standard errors of the mean for every element of every model variable's
  gradient. With at most 96 elements (6.3e-5 each by chance), a correct
  estimator fails by chance with probability below 0.7%; the seeds are
  fixed, so the outcome is reproducible."""
  model = enumeration.tiny_model('model=SBN,' + config, seed=3)
  x = enumeration.tiny_batch(model)
  z, exact = enumeration.bias_in_standard_errors(model, x, N_DRAWS)
  assert np.abs(exact).max() > 1e-3, 'the exact gradient is trivially zero'
  assert np.abs(z).max() < enumeration.UNBIASED_BELOW, (
      'REINFORCE mean differs from the exact gradient by %.1f standard errors'
      % np.abs(z).max())


def test_enumeration_check_has_power():
  """An estimator without the score term (gradient of m only) is biased for
  the recognition variables; the same check (fixed seeds) must say so, by
  more than BIASED_ABOVE standard errors."""
  model = enumeration.tiny_model('model=SBN,n_layer=1', seed=3)
  x = enumeration.tiny_batch(model)

  def no_score(x, noise):
    with tf.GradientTape() as tape:
      hard = model.network.hard_pass(x, noise)
      loss = -tf.reduce_mean(hard.model_term + 0.0 * tf.add_n(hard.log_q))
    return tape.gradient(loss, model.model_variables), [], None

  z, _ = enumeration.bias_in_standard_errors(model, x, N_DRAWS, no_score)
  assert np.abs(z).max() > enumeration.BIASED_ABOVE


def test_no_grad_log_prob_matches_bernoulli_log_prob():
  rng = np.random.RandomState(3)
  logits = np.concatenate([rng.normal(0, 3, (200, 50)),
                           np.full((1, 50), 0.0), np.full((1, 50), 40.0),
                           np.full((1, 50), -40.0), np.full((1, 50), 1e-9)])
  a = (rng.uniform(size=logits.shape) < 0.5).astype(np.float32)
  logits = tf.constant(logits, tf.float32)
  l64 = logits.numpy().astype(np.float64)
  exact = np.sum(a * l64 - np.logaddexp(0.0, l64), axis=-1)
  fast = sbn.bernoulli_log_prob_no_grad(tf.constant(a), logits).numpy()
  reference = sbn.bernoulli_log_prob(tf.constant(a), logits).numpy()
  # Both are float32 sums of 50 terms of size up to ~10: a few 1e-5 apart.
  np.testing.assert_allclose(fast, exact, rtol=0, atol=1e-4)
  np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-4)


@pytest.mark.parametrize('task,n_layer,nonlinear', [
    ('sbn', 1, False), ('sbn', 2, True), ('sp', 2, False)])
@pytest.mark.parametrize('jit', [False, True])
def test_iw_bound_is_logsumexp_of_hard_pass_elbos(task, n_layer, nonlinear,
                                                  jit):
  """iw_bound (per-image layer 0, faster log-probability, XLA) equals the
  training code's hard pass on the tiled rows with the same noise."""
  model = enumeration.tiny_model(
      'model=SBN,task=%s,n_layer=%d,nonlinear=%s'
      % (task, n_layer, str(nonlinear).lower()), n_input=8)
  x = tf.constant(enumeration.tiny_batch(model, n_rows=5))
  n_samples = 7
  noise = model.sample_eval_noise(x, n_samples)
  bound_fn = tf.function(model.iw_bound, jit_compile=True) if jit else (
      model.iw_bound)
  bound, mean_elbo = [t.numpy() for t in bound_fn(x, n_samples, noise)]
  f = model.network.hard_pass(tf.tile(x, [n_samples, 1]), noise).elbo
  f = f.numpy().astype(np.float64).reshape(n_samples, 5)
  top = f.max(axis=0)
  expected = top + np.log(np.exp(f - top).mean(axis=0))
  np.testing.assert_allclose(bound, expected, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(mean_elbo, f.mean(axis=0), rtol=1e-5, atol=1e-4)
