"""Adam and the gradient-variance tracker of reference section 5.

Both are small tf.Modules so that every slot is a checkpointed tf.Variable and
the update is visible (TF1's AdamOptimizer update, which Keras' matches:
`θ -= lr · sqrt(1-β2^t)/(1-β1^t) · m / (sqrt(v) + ε)`).
"""

import tensorflow as tf


def dense_gradients(grads, like):
  """`grads` with None (unconnected) replaced by zeros shaped as `like`."""
  return [tf.zeros_like(x) if g is None else g for g, x in zip(grads, like)]


def _in_dtype(x, dtype):
  """x (a Python number or a tensor) as a tensor of `dtype`; a Python float
  is converted directly (not through float32, which would round it)."""
  return tf.cast(tf.convert_to_tensor(x, dtype_hint=dtype), dtype)


class Adam(tf.Module):
  """Adam over a fixed list of variables, of any floating dtype (float32
  variables are updated in float32, float64 ones in float64)."""

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
    step = self.iterations.assign_add(1)
    alphas = {}  # the step size in each variable dtype, formed once per dtype
    grads = dense_gradients(grads, self.variables_list)
    for var, m, v, g in zip(self.variables_list, self.m, self.v, grads):
      dtype = var.dtype.base_dtype
      if dtype not in alphas:
        t = tf.cast(step, dtype)
        alphas[dtype] = (
            _in_dtype(self.learning_rate, dtype)
            * tf.sqrt(1.0 - tf.pow(_in_dtype(self.beta2, dtype), t))
            / (1.0 - tf.pow(_in_dtype(self.beta1, dtype), t)))
      alpha = alphas[dtype]
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
  matrix (docs/performance.md).
  """
  return tf.linalg.matvec(t, tf.ones([t.shape[-1]], t.dtype))


def total_sum(tensors):
  """Σ of every element of every tensor in the list; a scalar (0 if none).

  Matrices are first summed over rows by row_sum, then over the short
  result. Per-step reductions over all parameters (variance objectives,
  tracked figures) go through here.
  """
  total = []
  for t in tensors:
    if t.shape.rank == 2:
      t = row_sum(t)
    total.append(tf.reduce_sum(t))
  return tf.add_n(total) if total else tf.constant(0.0)


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
  than as an array per estimator.

  `shared` variables are those whose gradient is the same for every
  estimator (SBNTrackGradVariances: the generative ones, see there). Their
  K EMAs would be equal, so one EMA (`ema_shared`, from estimator 0's
  gradient) stands for all of them: μ is that EMA and their deviation terms
  are exactly zero. This halves the arrays read and written per step.

  `update` returns log mean(μ²) (its epoch mean is a mean of logs); the
  sums over steps of the variances and deviations are returned by `take()`.
  """

  def __init__(self, variables, names, shared=(), decay=0.999,
               name='grad_variance_tracking'):
    super().__init__(name=name)
    self.decay = decay
    self.names = tuple(names)
    shared_refs = {v.ref() for v in shared}
    self.is_shared = [v.ref() in shared_refs for v in variables]

    def slot(v, label, i):
      return tf.Variable(tf.zeros_like(v), trainable=False,
                         name='%s/%s%d' % (name, label, i))

    self.ema_shared = [slot(v, 'shared_g', i) for i, v in enumerate(variables)
                       if self.is_shared[i]]
    self.ema_g = [[slot(v, n + '_g', i) for i, v in enumerate(variables)
                   if not self.is_shared[i]] for n in self.names]
    k = len(self.names)
    self.ema_g2_sum = tf.Variable(tf.zeros([k]), trainable=False,
                                  name=name + '/g2_sum')
    self.sum_variance = tf.Variable(tf.zeros([k]), trainable=False,
                                    name=name + '/acc_variance')
    self.sum_deviation = tf.Variable(tf.zeros([k]), trainable=False,
                                     name=name + '/acc_deviation')
    self.size = sum(int(tf.size(v)) for v in variables)

  def update(self, grads_per_estimator):
    """grads_per_estimator: K lists of gradients aligned with the
    variables; for the shared variables only the first list's are read.
    Returns log mean(μ²)."""
    k = float(len(self.names))
    shared_grads = dense_gradients(
        [g for g, s in zip(grads_per_estimator[0], self.is_shared) if s],
        self.ema_shared)
    old_shared = [e.read_value() for e in self.ema_shared]
    old = [[e.read_value() for e in per] for per in self.ema_g]
    means = [tf.add_n(list(per_variable)) / k for per_variable in zip(*old)]
    mean_square = total_sum([tf.square(m) for m in means + old_shared])
    self.sum_variance.assign_add((self.ema_g2_sum - mean_square) / self.size)
    shared_g2 = total_sum([tf.square(g) for g in shared_grads])
    sum_g2, deviations = [], []
    for grads, ema_g, old_e in zip(grads_per_estimator, self.ema_g, old):
      grads = dense_gradients(
          [g for g, s in zip(grads, self.is_shared) if not s], old_e)
      sum_g2.append(shared_g2 + total_sum([tf.square(g) for g in grads]))
      deviations.append(total_sum([tf.square(e - m)
                                   for e, m in zip(old_e, means)]))
      for g, e, e_old in zip(grads, ema_g, old_e):
        e.assign(_ema(self.decay, e_old, g))
    for g, e, e_old in zip(shared_grads, self.ema_shared, old_shared):
      e.assign(_ema(self.decay, e_old, g))
    self.sum_deviation.assign_add(tf.stack(deviations) / self.size)
    self.ema_g2_sum.assign(_ema(self.decay, self.ema_g2_sum,
                                tf.stack(sum_g2)))
    return tf.math.log(mean_square / self.size)

  def take(self):
    """(Σ_steps variance_k [K], Σ_steps deviation_k [K]) since the last
    call; resets the sums."""
    variances = self.sum_variance.read_value()
    deviations = self.sum_deviation.read_value()
    with tf.control_dependencies([variances, deviations]):
      self.sum_variance.assign(tf.zeros_like(self.sum_variance))
      self.sum_deviation.assign(tf.zeros_like(self.sum_deviation))
    return variances, deviations
