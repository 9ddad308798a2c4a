"""Dense layers and the deterministic map `T` of reference section 3.

Variables are plain `tf.Variable`s kept in explicit creation-order lists
(`tf.Module.trainable_variables` sorts by attribute name, which would scramble
the order the printed etas follow).
"""

import math

import tensorflow as tf

# Standard deviation of a unit normal truncated at +-2, used to keep the
# He-initialised weights' variance at 2 / fan_in after truncation.
_TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


class Dense(tf.Module):
  """y = x W + b; W He-initialised (variance scaling 2, fan-in, truncated)."""

  def __init__(self, n_in, n_out, generator, name):
    super().__init__(name=name.replace('/', '_'))
    stddev = math.sqrt(2.0 / n_in) / _TRUNCATED_NORMAL_STDDEV
    self.w = tf.Variable(generator.truncated_normal([n_in, n_out],
                                                    stddev=stddev),
                         name=name + '/w')
    self.b = tf.Variable(tf.zeros([n_out]), name=name + '/b')
    self.variables_in_order = [self.w, self.b]

  def __call__(self, x):
    return tf.matmul(x, self.w) + self.b


class DeterministicMap(tf.Module):
  """`T(input, n_out)`: one linear layer, or (nonlinear) two tanh layers of
  `n_hidden` units and then a linear layer. Shapes: [B, n_in] -> [B, n_out].
  """

  def __init__(self, n_in, n_out, n_hidden, nonlinear, generator, name):
    super().__init__(name=name.replace('/', '_'))
    if nonlinear:
      self.hidden = [Dense(n_in, n_hidden, generator, name + '/tanh0'),
                     Dense(n_hidden, n_hidden, generator, name + '/tanh1')]
      n_in = n_hidden
    else:
      self.hidden = []
    self.output_layer = Dense(n_in, n_out, generator, name + '/out')
    self.variables_in_order = [
        v for layer in self.hidden + [self.output_layer]
        for v in layer.variables_in_order]

  def __call__(self, x):
    for layer in self.hidden:
      x = tf.tanh(layer(x))
    return self.output_layer(x)

  def jvp(self, x, dx):
    """(T(x), J_T(x) dx): the map and its forward-mode derivative along dx
    [B, n_in]. The values repeat __call__'s ops, which XLA merges with
    theirs."""
    for layer in self.hidden:
      x = tf.tanh(layer(x))
      dx = (1.0 - tf.square(x)) * tf.matmul(dx, layer.w)
    return self.output_layer(x), tf.matmul(dx, self.output_layer.w)
