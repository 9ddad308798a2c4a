"""Adam and the gradient-variance tracker of reference section 5.

Both are small tf.Modules so that every slot is a checkpointed tf.Variable and
the update is visible (TF1's AdamOptimizer update, which Keras' matches:
`θ -= lr · sqrt(1-β2^t)/(1-β1^t) · m / (sqrt(v) + ε)`).
"""

import tensorflow as tf


def dense_gradients(grads, like):
  """`grads` with None (unconnected) replaced by zeros shaped as `like`."""
  return [tf.zeros_like(x) if g is None else g for g, x in zip(grads, like)]


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
    grads = dense_gradients(grads, self.variables_list)
    for var, m, v, g in zip(self.variables_list, self.m, self.v, grads):
      # New moments as values first, so that XLA updates var, m and v in
      # one pass over memory instead of re-reading the assigned slots.
      m_new = self.beta1 * m + (1.0 - self.beta1) * g
      v_new = self.beta2 * v + (1.0 - self.beta2) * tf.square(g)
      var.assign_sub(alpha * m_new / (tf.sqrt(v_new) + self.epsilon))
      m.assign(m_new)
      v.assign(v_new)


def _ema(decay, old, new):
  return decay * old + (1.0 - decay) * new


def row_sum(t):
  """Σ over the last axis, [..., n] -> [...], as a product with ones.

  The same sum, but XLA's CPU backend emits the product as a vectorised
  kernel, about 5 times faster than its reduction loop over a 200x784
  matrix (README, Speed).
  """
  return tf.linalg.matvec(t, tf.ones([t.shape[-1]], t.dtype))


def total_sum(tensors):
  """Σ of every element of every tensor in the list; a scalar.

  Matrices are first summed over rows by row_sum, then over the short
  result. Per-step reductions over all parameters (variance objectives,
  tracked figures) go through here.
  """
  total = []
  for t in tensors:
    if t.shape.rank == 2:
      t = row_sum(t)
    total.append(tf.reduce_sum(t))
  return tf.add_n(total)


class GradVarianceTracker(tf.Module):
  """EMAs of g and g² (decay 0.999, started at zero, no bias correction).

  The per-step figure is `mean(ema(g²) - ema(g)²)` after the step's update,
  the mean taken over every element of every gradient (reference section
  5). Only Σ_n ema(g²)_n enters it, and the EMA is linear, so that sum is
  kept as the EMA of Σ_n g_n² (one scalar, `ema_g2_sum`) rather than as an
  array: the same quantity with one array fewer to read and write per step.
  The figures are summed in `sum_figure` until `take()`.
  """

  def __init__(self, variables, decay=0.999, name='grad_variance'):
    super().__init__(name=name)
    self.decay = decay
    self.ema_g = [tf.Variable(tf.zeros_like(v), trainable=False,
                              name=name + '/g%d' % i)
                  for i, v in enumerate(variables)]
    self.ema_g2_sum = tf.Variable(0.0, trainable=False, name=name + '/g2_sum')
    self.sum_figure = tf.Variable(0.0, trainable=False, name=name + '/acc')
    self.size = sum(int(tf.size(v)) for v in variables)

  def update(self, grads):
    """One step's EMA update; `grads` aligned with the variables (None = 0)."""
    grads = dense_gradients(grads, self.ema_g)
    g2_sum = _ema(self.decay, self.ema_g2_sum,
                  total_sum([tf.square(g) for g in grads]))
    # From the new values, not the assigned variables: one pass (XLA).
    new = [_ema(self.decay, e, g) for e, g in zip(self.ema_g, grads)]
    self.sum_figure.assign_add(
        (g2_sum - total_sum([tf.square(e) for e in new])) / self.size)
    self.ema_g2_sum.assign(g2_sum)
    for e, value in zip(self.ema_g, new):
      e.assign(value)

  def take(self):
    """Σ over the steps since the last call of the per-step figure; resets."""
    total = self.sum_figure.read_value()
    with tf.control_dependencies([total]):
      self.sum_figure.assign(0.0)
    return total


class MultiEstimatorVarianceTracker(tf.Module):
  """The figures of SBNTrackGradVariances (reference 6.8) for K estimators.

  Per estimator k, EMAs of g_k and g_k² (decay 0.999, from zero). With
  μ = mean_k ema(g_k), read before this step's update:
    variance_k  = mean(ema(g_k²) - μ²),
    deviation_k = mean((ema(g_k) - μ)²),
    log mean(μ²).
  Only Σ_n ema(g_k²)_n enters, and the EMA is linear, so that sum is kept
  as the EMA of Σ_n g_k,n² (one scalar per estimator, `ema_g2_sum`) rather
  than as an array per estimator: the same quantity, with K arrays fewer to
  read and write each step. `update` returns log mean(μ²) (its epoch mean is
  a mean of logs); the sums over steps of the variances (scalars) and of the
  deviations (accumulated per element, reduced once per block, as in
  GradVarianceTracker) are returned by `take()`.
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
    self.sum_deviation = slots('acc_dev_')
    k = len(self.names)
    self.ema_g2_sum = tf.Variable(tf.zeros([k]), trainable=False,
                                  name=name + '/g2_sum')
    self.sum_variance = tf.Variable(tf.zeros([k]), trainable=False,
                                    name=name + '/acc_variance')
    self.size = sum(int(tf.size(v)) for v in variables)

  def update(self, grads_per_estimator):
    """grads_per_estimator: K lists of gradients; returns log mean(μ²)."""
    k = float(len(self.names))
    old = [[e.read_value() for e in per] for per in self.ema_g]
    means = [tf.add_n(list(per_variable)) / k for per_variable in zip(*old)]
    mean_square = total_sum([tf.square(m) for m in means])
    self.sum_variance.assign_add((self.ema_g2_sum - mean_square) / self.size)
    sum_g2 = []
    for grads, ema_g, old_e, sum_dev in zip(
        grads_per_estimator, self.ema_g, old, self.sum_deviation):
      grads = dense_gradients(grads, old_e)
      sum_g2.append(total_sum([tf.square(g) for g in grads]))
      for g, e, e_old, dev, m in zip(grads, ema_g, old_e, sum_dev, means):
        dev.assign_add(tf.square(e_old - m))
        e.assign(_ema(self.decay, e_old, g))
    self.ema_g2_sum.assign(_ema(self.decay, self.ema_g2_sum,
                                tf.stack(sum_g2)))
    return tf.math.log(mean_square / self.size)

  def take(self):
    """(Σ_steps variance_k [K], Σ_steps deviation_k [K]) since the last
    call; resets the sums."""
    variances = self.sum_variance.read_value()
    deviations = tf.stack([total_sum(dev) / self.size
                           for dev in self.sum_deviation])
    with tf.control_dependencies([variances, deviations]):
      for acc in [a for per in self.sum_deviation for a in per]:
        acc.assign(tf.zeros_like(acc))
      self.sum_variance.assign(tf.zeros_like(self.sum_variance))
    return variances, deviations
