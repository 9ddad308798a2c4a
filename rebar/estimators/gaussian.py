"""LAX for reparameterisable Gaussian variables (Grathwohl et al. 2018, eq. 5).

For a ~ N(μ, σ²) per element, a = μ + σ ε with ε ~ N(0, 1), and any f:

  ĝ_LAX = [f(a) - c(a)] ∂log p(a | μ, σ)/∂(μ, log σ) + ∂c(a(μ, σ, ε))/∂(μ, log σ),

unbiased for every differentiable c, since E[c(a) ∂log p(a)] = ∂E[c(a)] =
E[∂c(a(ε))] (the score-function and the reparameterisation gradients of the
same expectation). With the scores ∂log p/∂μ = ε/σ and ∂log p/∂log σ =
ε² - 1:

  ĝ_μ     = [f(a) - c(a)] ε/σ      + ∂c/∂a,
  ĝ_log σ = [f(a) - c(a)] (ε² - 1) + ∂c/∂a · σ ε.

f is a black box: only its values f(a) at the sample enter (stopped). Shapes:
rows `...` (examples, or time steps of an episode), each with A independent
Gaussian coordinates; c maps a row's action [..., A] to one value [...].
"""

import collections

import tensorflow as tf

sg = tf.stop_gradient

# estimate: (ĝ_μ, ĝ_log σ), each [..., A], differentiable in c's parameters.
# learning_signal: f(a) - c(a), [...]. surrogate: a scalar whose gradient
# with respect to μ and log σ is ĝ / rows (value: mean f(a)).
Result = collections.namedtuple(
    'Result', 'surrogate estimate variance_objective f_values learning_signal')


def sample(mean, log_std, eps):
  """a = μ + exp(log σ) ε, [..., A]."""
  return mean + tf.exp(log_std) * eps


def lax(mean, log_std, f_values, eps, control_variate):
  """LAX's ĝ for E_{a ~ N(μ, σ²)}[f(a)] at the sample a = μ + σ ε.

  Args:
    mean: μ, [..., A]; log_std: log σ, broadcastable to μ's shape (a row
      that shares one σ passes it broadcast, so that ∂/∂log σ of each row
      reaches it).
    f_values: f(a), [...]: the black box's values at the sample (stopped).
    eps: ε, [..., A], standard normal, the noise that drew a.
    control_variate: c, a callable [..., A] -> [...], row-wise,
      differentiable in a; it may close over its own parameters (whose
      gradient then flows through `estimate`). c = a constant baseline b(s)
      gives the score-function estimator with that baseline.
  Returns:
    A Result.
  """
  log_std = tf.broadcast_to(log_std, tf.shape(mean))
  eps = sg(eps)
  with tf.GradientTape() as tape:
    tape.watch([mean, log_std])
    c_a = control_variate(sample(mean, log_std, eps))
    total = tf.reduce_sum(c_a)  # on the tape: ∂c/∂(μ, log σ) flows from it
  d_mean, d_log_std = tape.gradient(total, [mean, log_std],
                                    unconnected_gradients='zero')
  learning_signal = sg(f_values) - c_a
  signal = learning_signal[..., None]
  estimate = (signal * eps * tf.exp(-log_std) + d_mean,
              signal * (tf.square(eps) - 1.0) + d_log_std)
  rows = tf.cast(tf.size(f_values), mean.dtype)
  surrogate = tf.reduce_mean(sg(f_values)) + (
      tf.reduce_sum(sg(estimate[0]) * (mean - sg(mean))) +
      tf.reduce_sum(sg(estimate[1]) * (log_std - sg(log_std)))) / rows
  variance_objective = (tf.reduce_mean(tf.square(estimate[0])) +
                        tf.reduce_mean(tf.square(estimate[1]))) / 2
  return Result(surrogate, estimate, variance_objective, f_values,
                learning_signal)
