"""Adam and the gradient-variance tracker of reference section 5.

Both are small tf.Modules so that every slot is a checkpointed tf.Variable and
the update is visible (TF1's AdamOptimizer update, which Keras' matches:
`θ -= lr · sqrt(1-β2^t)/(1-β1^t) · m / (sqrt(v) + ε)`).
"""

import tensorflow as tf


class Adam(tf.Module):
  """Adam over a fixed list of variables."""

  def __init__(self, variables, learning_rate, beta1=0.9, beta2=0.999,
               epsilon=1e-8, name='adam'):
    super().__init__(name=name)
    self.variables_list = list(variables)
    self.learning_rate = learning_rate
    self.beta1 = beta1
    self.beta2 = beta2
    self.epsilon = epsilon
    self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False,
                                  name=name + '/iterations')
    self.m = [tf.Variable(tf.zeros_like(v), trainable=False,
                          name=name + '/m%d' % i)
              for i, v in enumerate(self.variables_list)]
    self.v = [tf.Variable(tf.zeros_like(v), trainable=False,
                          name=name + '/v%d' % i)
              for i, v in enumerate(self.variables_list)]

  def apply(self, grads):
    """One Adam step; `grads` aligned with the variables (None = zero)."""
    if not self.variables_list:
      return
    t = tf.cast(self.iterations.assign_add(1), tf.float32)
    alpha = (self.learning_rate * tf.sqrt(1.0 - tf.pow(self.beta2, t))
             / (1.0 - tf.pow(self.beta1, t)))
    for var, m, v, g in zip(self.variables_list, self.m, self.v, grads):
      if g is None:
        g = tf.zeros_like(var)
      # New moments as values first, so that XLA updates var, m and v in
      # one pass over memory instead of re-reading the assigned slots.
      m_new = self.beta1 * m + (1.0 - self.beta1) * g
      v_new = self.beta2 * v + (1.0 - self.beta2) * tf.square(g)
      var.assign_sub(alpha * m_new / (tf.sqrt(v_new) + self.epsilon))
      m.assign(m_new)
      v.assign(v_new)


class GradVarianceTracker(tf.Module):
  """EMAs of g and g² (decay 0.999, started at zero, no bias correction).

  `update(grads)` returns the per-step figure `mean(ema(g²) - ema(g)²)`, the
  mean taken over every element of every gradient (reference section 5).
  """

  def __init__(self, variables, decay=0.999, name='grad_variance'):
    super().__init__(name=name)
    self.decay = decay
    self.ema_g = [tf.Variable(tf.zeros_like(v), trainable=False,
                              name=name + '/g%d' % i)
                  for i, v in enumerate(variables)]
    self.ema_g2 = [tf.Variable(tf.zeros_like(v), trainable=False,
                               name=name + '/g2_%d' % i)
                   for i, v in enumerate(variables)]
    self.size = sum(int(tf.size(v)) for v in variables)

  def update(self, grads):
    total = 0.0
    for g, ema_g, ema_g2 in zip(grads, self.ema_g, self.ema_g2):
      g = tf.zeros_like(ema_g) if g is None else g
      # From the new values, not the assigned variables: one pass (XLA).
      g_new = self.decay * ema_g + (1.0 - self.decay) * g
      g2_new = self.decay * ema_g2 + (1.0 - self.decay) * tf.square(g)
      total += tf.reduce_sum(g2_new - tf.square(g_new))
      ema_g.assign(g_new)
      ema_g2.assign(g2_new)
    return total / self.size
