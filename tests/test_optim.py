"""Adam and the gradient-variance trackers against numpy (reference 5, 6.8).

The trackers sum per-step figures until `take()`; these tests check those
sums against the figures of the reference, computed here step by step in
float64.
"""

import numpy as np
import pytest
import tensorflow as tf

from rebar import optim

DECAY = 0.999
SHAPES = [(3, 4), (5,)]


def gradient_sequence(n_steps, seed):
  rng = np.random.RandomState(seed)
  return [[rng.normal(size=s).astype(np.float32) for s in SHAPES]
          for _ in range(n_steps)]


def ema(old, new):
  return DECAY * old + (1.0 - DECAY) * new


def test_adam_matches_tf1_update():
  var = tf.Variable([1.0, -2.0, 3.0])
  adam = optim.Adam([var], learning_rate=0.1, beta2=0.99)
  m = v = np.zeros(3)
  theta = var.numpy().astype(np.float64)
  for t, g in enumerate([[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]], start=1):
    adam.apply([tf.constant(g)])
    m = 0.9 * m + 0.1 * np.array(g)
    v = 0.99 * v + 0.01 * np.square(g)
    alpha = 0.1 * np.sqrt(1 - 0.99 ** t) / (1 - 0.9 ** t)
    theta -= alpha * m / (np.sqrt(v) + 1e-8)
  np.testing.assert_allclose(var.numpy(), theta, rtol=1e-6)


def test_grad_variance_tracker_block_sum_equals_per_step_figures():
  variables = [tf.Variable(tf.zeros(s)) for s in SHAPES]
  tracker = optim.GradVarianceTracker(variables)
  size = sum(np.prod(s) for s in SHAPES)
  e = [np.zeros(s) for s in SHAPES]
  e2 = [np.zeros(s) for s in SHAPES]
  for block in range(2):
    expected = 0.0
    for grads in gradient_sequence(5, seed=block):
      tracker.update([tf.constant(g) for g in grads])
      e = [ema(a, g) for a, g in zip(e, grads)]
      e2 = [ema(a, np.square(g)) for a, g in zip(e2, grads)]
      expected += sum(np.sum(b - np.square(a)) for a, b in zip(e, e2)) / size
    np.testing.assert_allclose(float(tracker.take()), expected, rtol=1e-5)
  for a, var in zip(e, tracker.ema_g):
    np.testing.assert_allclose(var.numpy(), a, rtol=1e-5)


@pytest.mark.parametrize('shared', [False, True])
def test_multi_estimator_tracker_matches_reference_figures(shared):
  """With `shared`, the first variable's gradient is the same for every
  estimator (as the generative ones are in SBNTrackGradVariances) and the
  tracker keeps one EMA for it; the figures are those of K EMAs."""
  variables = [tf.Variable(tf.zeros(s)) for s in SHAPES]
  names = ('A', 'B', 'C')
  tracker = optim.MultiEstimatorVarianceTracker(
      variables, names, shared=variables[:1] if shared else ())
  size = sum(np.prod(s) for s in SHAPES)
  e = [[np.zeros(s) for s in SHAPES] for _ in names]
  e2 = [[np.zeros(s) for s in SHAPES] for _ in names]
  sequences = [gradient_sequence(4, seed=10 + k) for k in range(len(names))]
  if shared:
    for seq in sequences[1:]:
      for step, grads in enumerate(seq):
        grads[0] = sequences[0][step][0]
  variances = np.zeros(len(names))
  deviations = np.zeros(len(names))
  log_mean_squares = []
  for step in range(4):
    grads = [[tf.constant(g) for g in seq[step]] for seq in sequences]
    log_mean_squares.append(float(tracker.update(grads)))
    # Figures from the EMAs before this step's update.
    mu = [sum(e[k][i] for k in range(len(names))) / len(names)
          for i in range(len(SHAPES))]
    for k in range(len(names)):
      variances[k] += sum(np.sum(b - np.square(m))
                          for b, m in zip(e2[k], mu)) / size
      deviations[k] += sum(np.sum(np.square(a - m))
                           for a, m in zip(e[k], mu)) / size
    with np.errstate(divide='ignore'):
      expected_log = np.log(sum(np.sum(np.square(m)) for m in mu) / size)
    if step == 0:
      assert log_mean_squares[0] == -np.inf == expected_log
    else:
      np.testing.assert_allclose(log_mean_squares[-1], expected_log,
                                 rtol=1e-5)
    for k in range(len(names)):
      e[k] = [ema(a, g) for a, g in zip(e[k], sequences[k][step])]
      e2[k] = [ema(a, np.square(g)) for a, g in zip(e2[k], sequences[k][step])]
  got_variances, got_deviations = tracker.take()
  np.testing.assert_allclose(got_variances.numpy(), variances, rtol=1e-5)
  np.testing.assert_allclose(got_deviations.numpy(), deviations, rtol=1e-5)
  # Taking resets the sums.
  again = tracker.take()
  assert np.all(again[0].numpy() == 0) and np.all(again[1].numpy() == 0)
