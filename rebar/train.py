"""The training loop: epochs, printing, evaluation, checkpoints (reference 7).

The loop runs blocks of training steps inside one compiled function; the
per-step printed values and variance figures are accumulated in the graph, so
the host only reads them once per epoch.
"""

import json
import math
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from rebar.runtime import release_free_memory, xla_fusion_emitters_enabled

# Rows (images x samples) per evaluation call: bounds memory whatever the
# sample count.
EVAL_ROWS_PER_CALL = 5000
# Importance samples per evaluation call; larger counts are taken in groups.
EVAL_SAMPLE_GROUP = 100


def steps_per_epoch(n_train, batch_size):
  return -(-n_train // batch_size)


def epoch_permutation(seed, epoch, n_train):
  """The order of the training rows in `epoch`: a function of (seed, epoch)
  alone, so that a resumed run walks the data exactly as the uninterrupted
  run would."""
  return np.random.RandomState([seed % (2 ** 32), epoch]).permutation(n_train)


class Trainer(tf.Module):
  """Holds the training data on the device and runs blocks of steps.

  Args:
    model: an SBNModel.
    train: [n_train, D] numpy array, float32 or uint8 (0/1, or grey levels
      when `dynamic_b`, which binarizes each batch afresh:
      x = 1[uniform < grey]).
    block_size: training steps per compiled call.
    jit_compile: compile the block with XLA (fuses the many small ops of a
      step; see README, Speed).
  """

  def __init__(self, model, train, block_size=100, jit_compile=True):
    super().__init__(name='trainer')
    self.model = model
    self.dynamic_b = model.hparams.dynamic_b
    self.n_train = train.shape[0]
    self.block_size = block_size
    # Binary data is kept as uint8 (4x less memory); it is cast per batch.
    if train.dtype == np.uint8:
      if train.max() > 1:
        raise ValueError('uint8 training data must be 0/1')
      self.train_data = tf.constant(train)
    elif not self.dynamic_b and np.array_equal(train, train > 0.5):
      self.train_data = tf.constant(train.astype(np.uint8))
    else:
      self.train_data = tf.constant(train, tf.float32)
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
    n_printed = len(model.printed_names)
    self.acc_printed = tf.Variable(tf.zeros([n_printed]), trainable=False,
                                   name='acc_printed')
    n_variances = len(model.variance_names or (None,))
    self.acc_variance = tf.Variable(tf.zeros([n_variances]), trainable=False,
                                    name='acc_variance')
    self.acc_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name='acc_steps')
    # Traced once per batch shape: with static shapes autodiff emits no
    # shape arithmetic, which makes the graph a third smaller and its
    # compilation lighter.
    self._compiled_steps = tf.function(self._steps, jit_compile=jit_compile)
    # An epoch's short last batch (one step an epoch) runs in TensorFlow's
    # graph executor: compiling it with XLA as well took as long as the full
    # batch's compilation and raised the peak memory of a run by about 200
    # MB (README, Speed). TensorFlow's random kernels draw other numbers
    # than XLA's, so that step's noise is not what an all-XLA run drew.
    self._other_batch_steps = tf.function(self._steps)
    self.batch_size = model.hparams.batch_size
    self._seen_batch_sizes = set()

  def _steps(self, batch_indices, n_steps):
    """Runs training steps on rows batch_indices[i], i < n_steps.

    A while loop on `i < n_steps` rather than `for i in tf.range(n_steps)`:
    the latter gives the loop a maximum trip count of n_steps, which XLA
    needs as a compile-time constant, so every new n_steps (an epoch's
    last block, a block cut by max_steps) compiled the whole block again.
    """
    i = tf.constant(0)
    while i < n_steps:
      x = tf.cast(tf.gather(self.train_data, batch_indices[i]), tf.float32)
      if self.dynamic_b:
        x = tf.cast(self.model.noise_generator.uniform(tf.shape(x)) < x,
                    tf.float32)
      self.acc_printed.assign_add(self.model.train_step(x))
      self.acc_steps.assign_add(1)
      self.step.assign_add(1)
      i += 1
    # What the model's tracker accumulates is read once per block.
    printed, variance = self.model.take_accumulated()
    self.acc_printed.assign_add(printed)
    self.acc_variance.assign_add(variance)

  def run_block(self, batch_indices):
    """One training step per row of `batch_indices` [n_steps, batch].

    Rows are sent in blocks padded to `block_size`, so that the block's
    shape, and so its compilation, does not depend on the number of steps.
    The batch of hparams.batch_size rows runs under XLA (if jit_compile),
    any other (an epoch's short last batch) in the graph executor.
    """
    batch_indices = np.asarray(batch_indices, np.int32)
    for start in range(0, batch_indices.shape[0], self.block_size):
      chunk = batch_indices[start:start + self.block_size]
      n_steps = chunk.shape[0]
      padded = np.zeros((self.block_size, chunk.shape[1]), np.int32)
      padded[:n_steps] = chunk
      batch = chunk.shape[1]
      steps = (self._compiled_steps if batch == self.batch_size
               else self._other_batch_steps)
      steps(tf.constant(padded), tf.constant(n_steps))
      if batch not in self._seen_batch_sizes:
        self._seen_batch_sizes.add(batch)
        release_free_memory()  # what tracing and compiling it freed

  def take_epoch_summary(self):
    """Returns (mean printed values, log mean variances) and resets them."""
    n = max(int(self.acc_steps.numpy()), 1)
    values = self.acc_printed.numpy() / n
    with np.errstate(divide='ignore'):
      log_variances = np.log(self.acc_variance.numpy() / n)
    self.acc_printed.assign(tf.zeros_like(self.acc_printed))
    self.acc_variance.assign(tf.zeros_like(self.acc_variance))
    self.acc_steps.assign(0)
    return values, log_variances


def _scalar_metadata():
  # TensorBoard's scalar-plugin tag, written with core TF so that summaries
  # need no tensorboard package (TensorFlow 2.21 does not install it).
  metadata = summary_pb2.SummaryMetadata()
  metadata.plugin_data.plugin_name = 'scalars'
  return metadata.SerializeToString()


def write_scalar(name, value, step):
  """A scalar summary TensorBoard shows, at `step`, in the default writer."""
  tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                   metadata=_scalar_metadata())


def make_iw_bound_fn(model, n_input):
  """Compiled model.iw_bound for EVAL_SAMPLE_GROUP samples per image.

  The bound is compiled with XLA; its noise is drawn outside the XLA cluster
  because XLA's CPU Philox is about 3x slower than TensorFlow's kernel (2.6 vs
  0.8 s for the 400M uniforms of 100 samples on 20,000 images, README Speed).
  Where XLA's fusion emitters are off (runtime.use_xla_fusion_emitters), the
  bound runs in TensorFlow's graph executor instead: XLA's older emitters
  made it 2.7x slower (17 s per 10,000 images against 6.3 with the fusion
  emitters and 7.5 without XLA; two layers, 100 samples).
  """
  bound = tf.function(model.iw_bound,
                      jit_compile=xla_fusion_emitters_enabled())

  @tf.function(input_signature=[tf.TensorSpec([None, n_input], tf.float32)])
  def iw_bound(x):
    noise = model.sample_eval_noise(x, EVAL_SAMPLE_GROUP)
    return bound(x, EVAL_SAMPLE_GROUP, noise)
  return iw_bound


def evaluate(iw_bound_fn, data, n_samples):
  """Importance-weighted bound with `n_samples` per image, mean over images.

  `n_samples` must be a multiple of EVAL_SAMPLE_GROUP; groups are combined
  exactly: log(1/K Σ_k e^{f_k}) = logsumexp_g(bound_g) - log G.

  Returns:
    [mean bound, mean single-sample ELBO].
  """
  if n_samples % EVAL_SAMPLE_GROUP:
    raise ValueError('eval samples must be a multiple of %d, got %d'
                     % (EVAL_SAMPLE_GROUP, n_samples))
  groups = n_samples // EVAL_SAMPLE_GROUP
  chunk = max(1, EVAL_ROWS_PER_CALL // EVAL_SAMPLE_GROUP)
  bounds, elbos = [], []
  for start in range(0, data.shape[0], chunk):
    x = tf.constant(data[start:start + chunk], tf.float32)
    group_bounds, group_elbos = zip(*[
        (b.numpy(), f.numpy()) for b, f in (iw_bound_fn(x)
                                           for _ in range(groups))])
    group_bounds = np.stack(group_bounds).astype(np.float64)
    top = group_bounds.max(axis=0)
    bounds.append(top + np.log(np.exp(group_bounds - top).sum(axis=0))
                  - math.log(groups))
    elbos.append(np.mean(group_elbos, axis=0))
  # What the evaluation freed (the first time, its compilation's memory).
  release_free_memory()
  return [float(np.mean(np.concatenate(bounds))),
          float(np.mean(np.concatenate(elbos)))]


class MetricsLog:
  """`metrics.jsonl`: one JSON object per printed epoch line and evaluation."""

  def __init__(self, path, resume_step):
    self.path = path
    # Lines written after the checkpoint we resume from are replayed, so drop
    # them rather than record the same steps twice.
    if os.path.exists(path):
      with open(path) as f:
        kept = [l for l in f if l.strip() and
                json.loads(l)['step'] <= resume_step]
      with open(path, 'w') as f:
        f.writelines(kept)

  def write(self, record):
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')


def train(model, trainer, valid, test, run_dir, seed, max_steps, eval_freq,
          eval_samples=100, checkpoint_secs=300, block_size=100,
          final_eval=False, out=print):
  """Trains until the step counter reaches `max_steps`.

  With `final_eval`, also evaluates once training ends, unless the last
  epoch's scheduled evaluation already ran at that step. On reaching
  `max_steps`, writes `finished.json` ({"step": ...}) in `run_dir`.

  Resumes from the last checkpoint in `run_dir` if there is one. Prints the
  lines of reference section 7 with `out`; writes TensorBoard summaries and
  metrics.jsonl in `run_dir`.
  """
  hparams = model.hparams
  checkpoint = tf.train.Checkpoint(model=model, trainer=trainer)
  manager = tf.train.CheckpointManager(
      checkpoint, os.path.join(run_dir, 'checkpoints'), max_to_keep=2)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    logging.info('Resumed from %s at step %d', manager.latest_checkpoint,
                 int(trainer.step.numpy()))
  metrics = MetricsLog(os.path.join(run_dir, 'metrics.jsonl'),
                       int(trainer.step.numpy()))
  writer = tf.summary.create_file_writer(run_dir)
  iw_bound_fn = make_iw_bound_fn(model, hparams.n_input)
  spe = steps_per_epoch(trainer.n_train, hparams.batch_size)
  bs = hparams.batch_size
  start_time = time.time()
  last_save = time.time()

  def save():
    manager.save(checkpoint_number=int(trainer.step.numpy()))

  def report_epoch(step):
    values, log_variances = trainer.take_epoch_summary()
    out('Step %d: %s' % (step, values))
    if model.variance_names is None:
      log_variance = float(log_variances[0])
      out('%s' % log_variance)
    else:
      # The per-estimator mapping, sorted by name, as the original printed it.
      log_variance = {name: float(v)
                      for name, v in zip(model.variance_names, log_variances)}
      for name in sorted(log_variance):
        out('%s' % ((name, log_variance[name]),))
    temperature = float(model.temperature().numpy())
    with writer.as_default():
      write_scalar('Train ELBO', values[0], step)
      write_scalar('Temperature', temperature, step)
      if isinstance(log_variance, dict):
        for name, v in log_variance.items():
          write_scalar('log grad variance/' + name, v, step)
      else:
        write_scalar('log grad variance', log_variance, step)
    writer.flush()
    metrics.write({'kind': 'train', 'step': step,
                   'wall_s': round(time.time() - start_time, 3),
                   'values': dict(zip(model.printed_names,
                                      map(float, values))),
                   'log_variance': log_variance,
                   'temperature': temperature})

  def run_eval(step):
    for name, data in (('Valid', valid), ('Test', test)):
      result = evaluate(iw_bound_fn, data, eval_samples)
      out('%s %d: %s' % (name, step, np.array(result)))
      metrics.write({'kind': name.lower(), 'step': step,
                     'wall_s': round(time.time() - start_time, 3),
                     'values': {'iw_bound': result[0], 'elbo': result[1]},
                     'eval_samples': eval_samples})

  last_eval = None
  try:
    step = start_step = int(trainer.step.numpy())
    while step < max_steps:
      epoch, position = divmod(step, spe)
      order = epoch_permutation(seed, epoch, trainer.n_train)
      end = min(spe, position + max_steps - step)
      while position < end:
        n = min(block_size, end - position)
        if (position + n) * bs > trainer.n_train:
          n = max(1, trainer.n_train // bs - position)  # the short last batch
        indices = order[position * bs:(position + n) * bs]
        trainer.run_block(indices.reshape(n, -1))
        position += n
        if time.time() - last_save > checkpoint_secs:
          save()
          last_save = time.time()
      step = int(trainer.step.numpy())
      report_epoch(step)
      if position == spe:
        epoch = int(step / (trainer.n_train / bs))
        if eval_freq > 0 and epoch % eval_freq == 0:
          run_eval(step)
          last_eval = step
    # A run restarted after it finished trains nothing and evaluates nothing.
    if final_eval and step > start_step and last_eval != step:
      run_eval(step)
  except KeyboardInterrupt:
    logging.warning('Interrupted: saving a checkpoint at step %d',
                    int(trainer.step.numpy()))
    save()
    raise
  save()
  step = int(trainer.step.numpy())
  if step >= max_steps:
    with open(os.path.join(run_dir, 'finished.json'), 'w') as f:
      json.dump({'step': step}, f)
  return step
