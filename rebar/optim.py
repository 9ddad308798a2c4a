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


def _ema(decay, old, new):
  return decay * old + (1.0 - decay) * new


def total_sum(tensors):
  """Σ of every element of every tensor in the list; a scalar.

  Matrices are summed as a matrix-vector product with ones, then over the
  short result: the same sum, but XLA's CPU backend emits the product as a
  vectorised kernel, about 5 times faster than its reduction loop over a
  200x784 matrix (README, Speed). Per-step reductions over all parameters
  (variance objectives, tracked figures) go through here.
  """
  total = []
  for t in tensors:
    if t.shape.rank == 2:
      t = tf.linalg.matvec(t, tf.ones([t.shape[1]], t.dtype))
    total.append(tf.reduce_sum(t))
  return tf.add_n(total)


class GradVarianceTracker(tf.Module):
  """EMAs of g and g² (decay 0.999, started at zero, no bias correction).

  The per-step figure is `mean(ema(g²) - ema(g)²)` after the step's update,
  the mean taken over every element of every gradient (reference section 5).
  The trainer needs only its sum over the steps of an epoch, so `update`
  adds `ema(g²) - ema(g)²` to a per-element accumulator and `take()` sums it
  once per block of steps: the same sum, but one reduction over the
  parameters per block instead of one per step (XLA's CPU reductions cost
  several element-wise passes each; see README, Speed).
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
    self.accumulated = [tf.Variable(tf.zeros_like(v), trainable=False,
                                    name=name + '/acc%d' % i)
                        for i, v in enumerate(variables)]
    self.size = sum(int(tf.size(v)) for v in variables)

  def update(self, grads):
    """One step's EMA update; `grads` aligned with the variables (None = 0)."""
    for g, ema_g, ema_g2, acc in zip(grads, self.ema_g, self.ema_g2,
                                     self.accumulated):
      g = tf.zeros_like(ema_g) if g is None else g
      # From the new values, not the assigned variables: one pass (XLA).
      g_new = _ema(self.decay, ema_g, g)
      g2_new = _ema(self.decay, ema_g2, tf.square(g))
      acc.assign_add(g2_new - tf.square(g_new))
      ema_g.assign(g_new)
      ema_g2.assign(g2_new)

  def take(self):
    """Σ over the steps since the last call of the per-step figure; resets."""
    total = total_sum(self.accumulated) / self.size
    with tf.control_dependencies([total]):
      for acc in self.accumulated:
        acc.assign(tf.zeros_like(acc))
    return total


class MultiEstimatorVarianceTracker(tf.Module):
  """The figures of SBNTrackGradVariances (reference 6.8) for K estimators.

  Per estimator k, EMAs of g_k and g_k² (as GradVarianceTracker). With
  μ = mean_k ema(g_k), read before this step's update:
    variance_k  = mean(ema(g_k²) - μ²),
    deviation_k = mean((ema(g_k) - μ)²),
    log mean(μ²).
  `update` returns the last per step (its epoch mean is a mean of logs, so
  it needs a per-step reduction); the sums over steps of the first two are
  accumulated per element and returned by `take()`, as in
  GradVarianceTracker.
  """

  def __init__(self, variables, names, decay=0.999,
               name='grad_variance_tracking'):
    super().__init__(name=name)
    self.decay = decay
    self.names = tuple(names)

    def slots(prefix):
      return [[tf.Variable(tf.zeros_like(v), trainable=False,
                           name='%s/%s_%s%d' % (name, n, prefix, i))
               for i, v in enumerate(variables)] for n in self.names]

    self.ema_g = slots('g')
    self.ema_g2 = slots('g2_')
    self.sum_ema_g2 = slots('acc_g2_')
    self.sum_deviation = slots('acc_dev_')
    self.sum_mean_square = tf.Variable(0.0, trainable=False,
                                       name=name + '/acc_mean_square')
    self.size = sum(int(tf.size(v)) for v in variables)

  def update(self, grads_per_estimator):
    """grads_per_estimator: K lists of gradients; returns log mean(μ²)."""
    k = float(len(self.names))
    means = [tf.add_n([e.read_value() for e in per_variable]) / k
             for per_variable in zip(*self.ema_g)]
    mean_square = total_sum([tf.square(m) for m in means])
    self.sum_mean_square.assign_add(mean_square)
    for grads, ema_g, ema_g2, sum_g2, sum_dev in zip(
        grads_per_estimator, self.ema_g, self.ema_g2, self.sum_ema_g2,
        self.sum_deviation):
      for g, e, e2, s2, dev, m in zip(grads, ema_g, ema_g2, sum_g2, sum_dev,
                                      means):
        g = tf.zeros_like(e) if g is None else g
        old_e, old_e2 = e.read_value(), e2.read_value()
        s2.assign_add(old_e2)
        dev.assign_add(tf.square(old_e - m))
        e.assign(_ema(self.decay, old_e, g))
        e2.assign(_ema(self.decay, old_e2, tf.square(g)))
    return tf.math.log(mean_square / self.size)

  def take(self):
    """(Σ_steps variance_k [K], Σ_steps deviation_k [K]) since the last
    call; resets the accumulators."""
    variances = tf.stack([(total_sum(s2) - self.sum_mean_square) / self.size
                          for s2 in self.sum_ema_g2])
    deviations = tf.stack([total_sum(dev) / self.size
                           for dev in self.sum_deviation])
    with tf.control_dependencies([variances, deviations]):
      for acc in [a for per in self.sum_ema_g2 + self.sum_deviation
                  for a in per]:
        acc.assign(tf.zeros_like(acc))
      self.sum_mean_square.assign(0.0)
    return variances, deviations
