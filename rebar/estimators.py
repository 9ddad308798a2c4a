"""Gradient estimators as surrogate losses (reference section 6).

Each function takes the passes a step computed and returns a surrogate loss
whose gradient with respect to the model variables is the estimator, plus the
values the model prints. Autodiff of the surrogate gives the estimate.
"""

import tensorflow as tf

from rebar.sbn import center


def reinforce(hard):
  """REINFORCE with leave-one-out centering (reference 6.1).

  loss = -mean(sg(center(f)) · Q + m), Q = Σ_i log q_i of the hard pass.

  Args:
    hard: the hard Pass, rows [B].
  Returns:
    (loss, printed): printed = [mean f, rms(center(f))].
  """
  learning_signal = tf.stop_gradient(center(hard.elbo))
  log_q = tf.add_n(hard.log_q)
  loss = -tf.reduce_mean(learning_signal * log_q + hard.model_term)
  printed = tf.stack([tf.reduce_mean(hard.elbo),
                      tf.sqrt(tf.reduce_mean(tf.square(learning_signal)))])
  return loss, printed
