"""The training loop: epochs, printing, evaluation, checkpoints (reference 7).

The loop runs blocks of training steps inside one compiled function; the
per-step printed values and variance figures are accumulated in the graph, so
the host only reads them once per epoch. Evaluation is in rebar.evaluation,
the records in rebar.runlog, the checkpoints in rebar.checkpoints.
"""

import contextlib
import math
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from rebar.checkpoints import Checkpoints
from rebar.evaluation import evaluate, make_iw_bound_fn
from rebar.progress import Progress
from rebar.rundir import (Diverged, StopRequest, Stopped, fault_point,
                          write_json)
from rebar.runlog import RunLog
from rebar.runtime import release_free_memory

FINISHED_FILE = 'finished.json'
DIVERGED_ELBO_FACTOR = 100


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
      step; see docs/performance.md).
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
    n_variances = len(model.variance_names)
    self.acc_variance = tf.Variable(tf.zeros([n_variances]), trainable=False,
                                    name='acc_variance')
    self.acc_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name='acc_steps')
    # Records of metrics.jsonl that belong to this state: a resumed run
    # drops the records written after the checkpoint and writes them again
    # (-1: a checkpoint from before this count was kept).
    self.records = tf.Variable(-1, dtype=tf.int64, trainable=False,
                               name='records')
    # The run's seed, so that a damaged run.json can be rebuilt.
    self.seed = tf.Variable(-1, dtype=tf.int64, trainable=False, name='seed')
    # A training ELBO below this is a diverged run, never a result: a
    # hundred times the bound of a model that gives each pixel probability
    # 1/2 (the initial model's is about that of such a model).
    self.elbo_floor = -DIVERGED_ELBO_FACTOR * model.hparams.n_input * math.log(2)
    # The first step whose training ELBO was nan or below elbo_floor; 0
    # while none was.
    self.nonfinite_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                      name='nonfinite_step')
    # Traced once per batch shape: with static shapes autodiff emits no
    # shape arithmetic, which makes the graph a third smaller and its
    # compilation lighter.
    # A model whose step XLA cannot compile (CategoricalVAE with ARS or
    # ARSM: tf.unique) says so.
    jit_compile = jit_compile and getattr(model, 'xla_compatible', True)
    self._compiled_steps = tf.function(self._steps, jit_compile=jit_compile)
    # An epoch's short last batch (one step an epoch) runs in TensorFlow's
    # graph executor: compiling it with XLA as well took as long as the full
    # batch's compilation and raised the peak memory of a run by about 200
    # MB (docs/performance.md). TensorFlow's random kernels draw other numbers
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
      metrics = self.model.train_step(x)
      self.acc_printed.assign_add(self._printed_vector(metrics))
      self.acc_steps.assign_add(1)
      self.step.assign_add(1)
      self._note_nonfinite(metrics['elbo'] > self.elbo_floor)  # False for nan
      i += 1
    # What the model's tracker accumulates is read once per block.
    printed, variances = self.model.take_accumulated()
    self.acc_printed.assign_add(self._printed_vector(printed))
    self.acc_variance.assign_add(
        tf.stack([variances[name] for name in self.model.variance_names]))

  def _printed_vector(self, metrics):
    """The printed values in `printed_names` order, 0 where `metrics` has
    none (each printed value comes from train_step or from the tracker)."""
    return tf.stack([metrics.get(name, 0.0)
                     for name in self.model.printed_names])

  @tf.function
  def parameters_finite(self):
    """Whether every parameter is finite. Checked between blocks, outside
    the XLA cluster: a check per variable inside it added a kernel per
    variable shape to the compilation (20-50 MB more peak memory)."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in
                          self.model.model_variables
                          + self.model.aux_variables])

  def _note_nonfinite(self, finite):
    first = (self.nonfinite_step == 0) & tf.logical_not(finite)
    self.nonfinite_step.assign(tf.where(first, self.step, self.nonfinite_step))

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

  def epoch_summary(self):
    """(mean printed values, log mean variances) since the last reset."""
    n = max(int(self.acc_steps.numpy()), 1)
    values = self.acc_printed.numpy() / n
    with np.errstate(divide='ignore'):
      log_variances = np.log(self.acc_variance.numpy() / n)
    return values, log_variances

  def reset_epoch_summary(self):
    self.acc_printed.assign(tf.zeros_like(self.acc_printed))
    self.acc_variance.assign(tf.zeros_like(self.acc_variance))
    self.acc_steps.assign(0)


def train(model, trainer, valid, test, run_dir, seed, max_steps, eval_freq,
          eval_samples=100, checkpoint_secs=300, block_size=100,
          final_eval=False, out=print, stop=None, eval_jit_compile=True,
          tensorboard_dir=None, cost_table=None):
  """Trains until the step counter reaches `max_steps`.

  Records, at each step where they are due: the epoch line (`Step N: [...]`
  and the log variance, at the end of each epoch and at `max_steps`), and
  the Valid and Test evaluations (after every `eval_freq`-th epoch, and at
  `max_steps` with `final_eval`). Each record is written once: a run started
  again after it finished trains and records nothing. On reaching
  `max_steps`, writes `finished.json` ({"step": ...}) in `run_dir`.

  Resumes from the newest readable checkpoint in `run_dir`; the resumed
  run's printed lines, metrics.jsonl and TensorBoard summaries are those of
  an uninterrupted run (records written after that checkpoint are written
  again). Prints the lines of reference section 7 with `out`.

  SIGINT, SIGTERM and SIGHUP stop the run at the next safe point (between
  blocks of steps or evaluation chunks) with a checkpoint: `stop`, a
  rundir.StopRequest that the caller installed (rebar_train does so before
  it builds the model), or one installed here.

  `eval_jit_compile` is make_iw_bound_fn's `jit_compile`; `tensorboard_dir`
  is where RunLog writes the event files (default run_dir). With
  `cost_table`, a rebar.costs.CostTable, each train record also carries the
  estimators' costs and log(variance × ms) (CostTable.record_fields).

  Returns:
    The step reached.
  Raises:
    rundir.Stopped: a stop signal arrived; the checkpoint is saved.
    rundir.Diverged: the training ELBO or a parameter became non-finite; no
      checkpoint is saved after it.
    rundir.RunDirError: the run directory's state cannot be used.
  """
  own_stop = stop is None
  stop = stop or StopRequest()
  with stop.installed() if own_stop else contextlib.nullcontext():
    loop = _Loop(model, trainer, valid, test, run_dir, seed, max_steps,
                 eval_freq, eval_samples, checkpoint_secs, block_size,
                 final_eval, out, stop, eval_jit_compile, tensorboard_dir,
                 cost_table)
    step = loop.run()
  if step >= max_steps:
    write_json(os.path.join(run_dir, FINISHED_FILE), {'step': step})
  return step


class _Loop:
  """One call of `train`: its state and its named steps (arguments as
  train's)."""

  def __init__(self, model, trainer, valid, test, run_dir, seed, max_steps,
               eval_freq, eval_samples, checkpoint_secs, block_size,
               final_eval, out, stop, eval_jit_compile, tensorboard_dir,
               cost_table):
    self.model, self.trainer = model, trainer
    self.cost_table = cost_table
    self.data = {'valid': valid, 'test': test}
    self.seed, self.max_steps, self.eval_freq = seed, max_steps, eval_freq
    self.eval_samples, self.checkpoint_secs = eval_samples, checkpoint_secs
    self.block_size, self.final_eval = block_size, final_eval
    self.out, self.stop = out, stop
    self.hparams = model.hparams
    self.checkpoints = Checkpoints(
        tf.train.Checkpoint(model=model, trainer=trainer), run_dir)
    resumed = self.checkpoints.restore()
    self.step = int(trainer.step.numpy())
    if resumed:
      logging.info('Resumed from %s at step %d', resumed, self.step)
    trainer.seed.assign(seed)
    self.log = RunLog(run_dir,
                      int(trainer.records.numpy()) if resumed else 0,
                      self.step, tensorboard_dir, self.hparams.values())
    self.iw_bound_fn = make_iw_bound_fn(model, self.hparams.n_input,
                                        eval_jit_compile)
    self.steps_per_epoch = steps_per_epoch(trainer.n_train,
                                           self.hparams.batch_size)
    # wall_s counts the time the run ran, over all its attempts.
    self.start_time = time.time() - self.log.wall_s
    self.last_save = time.time()
    self.epochs = -(-max_steps // self.steps_per_epoch)
    self.progress = Progress('training', max_steps, done=self.step)

  def run(self):
    """Records what is due, trains an epoch (or what is left of it), and
    so on until max_steps; saves a checkpoint at the end."""
    while True:
      self.write_due_records()
      if self.step >= self.max_steps:
        break
      if self.stop.requested:  # e.g. a signal while the model was being built
        self.stop_now()
      self.train_epoch()
      fault_point('epoch_end')
    self.save()
    return self.step

  def due(self):
    """The kinds of record due at the current step."""
    step, spe = self.step, self.steps_per_epoch
    kinds = []
    epoch_end = step > 0 and step % spe == 0
    if epoch_end or step == self.max_steps:
      kinds.append('train')
    epoch = int(step / (self.trainer.n_train / self.hparams.batch_size))
    if ((epoch_end and self.eval_freq > 0 and epoch % self.eval_freq == 0) or
        (self.final_eval and step == self.max_steps)):
      kinds += ['valid', 'test']
    return kinds

  def write_due_records(self):
    """The records due at this step that the log does not hold yet."""
    for kind in self.due():
      if self.log.has(kind, self.step):
        continue
      if kind == 'train':
        self.report_epoch()
      elif not self.run_eval(kind):
        self.stop_now()
      if self.stop.requested:
        self.stop_now()

  def train_epoch(self):
    """Blocks of steps up to the epoch's end (or max_steps), in the
    epoch's row order; checks, stops and checkpoints between blocks."""
    trainer, bs = self.trainer, self.hparams.batch_size
    epoch, position = divmod(self.step, self.steps_per_epoch)
    order = epoch_permutation(self.seed, epoch, trainer.n_train)
    end = min(self.steps_per_epoch, position + self.max_steps - self.step)
    while position < end:
      n = min(self.block_size, end - position)
      if (position + n) * bs > trainer.n_train:
        n = max(1, trainer.n_train // bs - position)  # the short last batch
      indices = order[position * bs:(position + n) * bs]
      trainer.run_block(indices.reshape(n, -1))
      position += n
      self.step = int(trainer.step.numpy())
      self.check_finite()
      self.progress.update(self.step, 'epoch %d of %d' % (
          min(self.step // self.steps_per_epoch + 1, self.epochs),
          self.epochs))
      if self.stop.requested:
        self.stop_now()
      if time.time() - self.last_save > self.checkpoint_secs:
        self.save()
        self.last_save = time.time()

  def save(self):
    self.trainer.records.assign(self.log.count)
    self.checkpoints.save(self.step)

  def stop_now(self):
    self.save()
    raise Stopped(self.stop.signum, self.step)

  def wall_s(self):
    return round(time.time() - self.start_time, 3)

  def report_epoch(self):
    """Prints and records the epoch line: the mean printed values and the
    log variance (per estimator, sorted by name, as the original)."""
    model = self.model
    values, log_variances = self.trainer.epoch_summary()
    self.out('Step %d: %s' % (self.step, values))
    if not model.variances_by_name:
      log_variance = float(log_variances[0])
      self.out('%s' % log_variance)
    else:
      log_variance = {name: float(v)
                      for name, v in zip(model.variance_names, log_variances)}
      for name in sorted(log_variance):
        self.out('%s' % ((name, log_variance[name]),))
    record = {'kind': 'train', 'step': self.step, 'wall_s': self.wall_s(),
              'values': dict(zip(model.printed_names, map(float, values))),
              'log_variance': log_variance,
              'temperature_at_end': float(model.temperature().numpy())}
    if self.cost_table is not None:
      record.update(self.cost_table.record_fields(self.hparams.values(),
                                                  log_variance))
    self.log.write(record)
    self.trainer.reset_epoch_summary()

  def run_eval(self, kind):
    """Evaluates on one set; False if a stop request abandoned it."""
    # Evaluation noise comes from its own stream; an abandoned evaluation
    # gives back what it drew, so the one run on resuming draws the same.
    generator = self.model.eval_generator
    state = generator.state.numpy()
    data = self.data[kind]
    result = evaluate(self.iw_bound_fn, data, self.eval_samples, self.stop,
                      Progress('%s evaluation at step %d' % (kind, self.step),
                               data.shape[0], unit='images'))
    if result is None:
      generator.state.assign(state)
      return False
    self.out('%s %d: %s' % (kind.capitalize(), self.step, np.array(result)))
    self.log.write({'kind': kind, 'step': self.step, 'wall_s': self.wall_s(),
                    'values': {'iw_bound': result[0], 'elbo': result[1]},
                    'eval_samples': self.eval_samples})
    return True

  def check_finite(self):
    trainer = self.trainer
    bad = int(trainer.nonfinite_step.numpy())
    if not bad and not bool(trainer.parameters_finite()):
      bad = self.step
    if bad:
      raise Diverged(
          'training diverged at step %d: the training ELBO fell below %.0f '
          'or became nan, or a parameter became nan or inf; lower '
          'learning_rate (now %g) and start again'
          % (bad, trainer.elbo_floor, self.hparams.learning_rate))
