"""Evaluation: the importance-weighted bound on validation and test images
(reference section 7), compiled, in chunks that bound memory.
"""

import math

import numpy as np
import tensorflow as tf

from rebar.rundir import fault_point
from rebar.runtime import release_free_memory

# Rows (images x samples) per evaluation call: bounds memory whatever the
# sample count.
EVAL_ROWS_PER_CALL = 5000
# Importance samples per evaluation call; larger counts are taken in groups.
EVAL_SAMPLE_GROUP = 100


def make_iw_bound_fn(model, n_input, jit_compile=True):
  """Compiled model.iw_bound for EVAL_SAMPLE_GROUP samples per image.

  The bound is compiled with XLA; its noise is drawn outside the XLA cluster
  because XLA's CPU Philox is about 3x slower than TensorFlow's kernel (2.6 vs
  0.8 s for the 400M uniforms of 100 samples on 20,000 images, docs/performance.md).
  Pass jit_compile=False where XLA's fusion emitters are off
  (runtime.configure says): the bound then runs in TensorFlow's graph
  executor, since XLA's older emitters made it 2.7x slower (17 s per 10,000
  images against 6.3 with the fusion emitters and 7.5 without XLA; two
  layers, 100 samples).
  """
  bound = tf.function(model.iw_bound, jit_compile=jit_compile)

  @tf.function(input_signature=[tf.TensorSpec([None, n_input], tf.float32)])
  def iw_bound(x):
    noise = model.sample_eval_noise(x, EVAL_SAMPLE_GROUP)
    return bound(x, EVAL_SAMPLE_GROUP, noise)
  return iw_bound


def evaluate(iw_bound_fn, data, n_samples, stop=None, progress=None):
  """Importance-weighted bound with `n_samples` per image, mean over images.

  `n_samples` must be a multiple of EVAL_SAMPLE_GROUP; groups are combined
  exactly: log(1/K Σ_k e^{f_k}) = logsumexp_g(bound_g) - log G.

  Args:
    stop: a rundir.StopRequest; the evaluation is abandoned between chunks
      once it is requested.
    progress: a progress.Progress over the images, offered each chunk.
  Returns:
    [mean bound, mean single-sample ELBO], or None if abandoned.
  """
  if n_samples % EVAL_SAMPLE_GROUP:
    raise ValueError('eval samples must be a multiple of %d, got %d'
                     % (EVAL_SAMPLE_GROUP, n_samples))
  groups = n_samples // EVAL_SAMPLE_GROUP
  chunk = max(1, EVAL_ROWS_PER_CALL // EVAL_SAMPLE_GROUP)
  bounds, elbos = [], []
  for start in range(0, data.shape[0], chunk):
    if stop is not None and stop.requested:
      return None
    x = tf.constant(data[start:start + chunk], tf.float32)
    group_bounds, group_elbos = zip(*[
        (b.numpy(), f.numpy()) for b, f in (iw_bound_fn(x)
                                           for _ in range(groups))])
    group_bounds = np.stack(group_bounds).astype(np.float64)
    top = group_bounds.max(axis=0)
    bounds.append(top + np.log(np.exp(group_bounds - top).sum(axis=0))
                  - math.log(groups))
    elbos.append(np.mean(group_elbos, axis=0))
    fault_point('evaluation')
    if progress is not None:
      progress.update(min(start + chunk, data.shape[0]))
  # What the evaluation freed (the first time, its compilation's memory).
  release_free_memory()
  return [float(np.mean(np.concatenate(bounds))),
          float(np.mean(np.concatenate(elbos)))]
