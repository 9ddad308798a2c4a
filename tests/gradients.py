"""Finite differences, shared by the estimator tests' checks of variance
objectives."""

import numpy as np


def finite_differences(build, variables, h=1e-6):
  """Central differences of build().variance_objective in every element of
  each of `variables` (tf.Variables, float64 for h = 1e-6 to be accurate);
  the variables are restored. Returns one numpy array per variable."""
  grads = []
  for var in variables:
    start = np.array(var.numpy())
    grad = np.zeros_like(start)
    for index in np.ndindex(start.shape):
      values = []
      for sign in (1.0, -1.0):
        moved = start.copy()
        moved[index] += sign * h
        var.assign(moved)
        values.append(float(build().variance_objective))
      grad[index] = (values[0] - values[1]) / (2 * h)
    var.assign(start)
    grads.append(grad)
  return grads
