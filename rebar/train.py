"""The training loop: epochs, printing, evaluation, checkpoints (reference 7).

The loop runs blocks of training steps inside one compiled function; the
per-step printed values and variance figures are accumulated in the graph, so
the host only reads them once per epoch.
"""

import contextlib
import json
import math
import os
import re
import shutil
import signal
import time

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from rebar.rundir import (Diverged, RunDirError, StopRequest, Stopped,
                          strict_json, write_json, write_text)
from rebar.runtime import release_free_memory

# Rows (images x samples) per evaluation call: bounds memory whatever the
# sample count.
EVAL_ROWS_PER_CALL = 5000
# Importance samples per evaluation call; larger counts are taken in groups.
EVAL_SAMPLE_GROUP = 100
METRICS_FILE = 'metrics.jsonl'
FINISHED_FILE = 'finished.json'
CHECKPOINT_DIR = 'checkpoints'
DAMAGED_DIR = 'damaged'  # in CHECKPOINT_DIR: checkpoints that did not read
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


def evaluate(iw_bound_fn, data, n_samples, stop=None):
  """Importance-weighted bound with `n_samples` per image, mean over images.

  `n_samples` must be a multiple of EVAL_SAMPLE_GROUP; groups are combined
  exactly: log(1/K Σ_k e^{f_k}) = logsumexp_g(bound_g) - log G.

  Args:
    stop: a rundir.StopRequest; the evaluation is abandoned between chunks
      once it is requested.
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
  # What the evaluation freed (the first time, its compilation's memory).
  release_free_memory()
  return [float(np.mean(np.concatenate(bounds))),
          float(np.mean(np.concatenate(elbos)))]


# ------------------------------------------------------------ crash safety

_fault_counts = {}


def fault_point(name):
  """Test hook: with REBAR_KILL_AT=name[:n] in the environment, the process
  kills itself (SIGKILL, as a crash or the OOM killer would) the n-th time
  (default the first) it passes the point `name`.

  Points: `epoch_end` (an epoch's last block has run, none of its records
  are written), `evaluation` (after each chunk of an evaluation),
  `checkpoint_write` (a checkpoint's files are written, the state file not
  yet updated nor old checkpoints deleted).
  """
  target = os.environ.get('REBAR_KILL_AT')
  if not target:
    return
  target_name, _, count = target.partition(':')
  if target_name != name:
    return
  _fault_counts[name] = _fault_counts.get(name, 0) + 1
  if _fault_counts[name] == int(count or 1):
    os.kill(os.getpid(), signal.SIGKILL)


def tensorboard_scalars(record):
  """(tag, value) pairs TensorBoard shows for one metrics.jsonl record.

  Summaries are derived from the records alone, so that a resumed run can
  rewrite them exactly as an uninterrupted run wrote them.
  """
  values = record.get('values', {})
  if record['kind'] == 'train':
    pairs = [('Train ELBO', values.get('elbo')),
             ('Temperature', record.get('temperature'))]
    log_variance = record.get('log_variance')
    if isinstance(log_variance, dict):
      pairs += [('log grad variance/' + k, v)
                for k, v in log_variance.items()]
    else:
      pairs.append(('log grad variance', log_variance))
  else:
    name = record['kind'].capitalize()
    pairs = [(name + ' IW bound', values.get('iw_bound')),
             (name + ' ELBO', values.get('elbo'))]
  return [(tag, value) for tag, value in pairs if value is not None]


class RunLog:
  """`metrics.jsonl` (one strict-JSON object per printed epoch line and per
  evaluation) and the TensorBoard summaries derived from it.

  A checkpoint records how many records belonged to its state
  (Trainer.records). On resume the records after that count (written after
  the checkpoint, so to be written again by the resumed run) are dropped, and
  the TensorBoard event files are rewritten from the records kept, so that
  both end up as an uninterrupted run leaves them.

  Args:
    run_dir: the run directory.
    committed: records that belong to the restored state; -1 for a
      checkpoint that predates the count (records up to `resume_step` are
      kept), 0 for a fresh run.
    resume_step: the restored step.
  Raises:
    RunDirError: a record the restored state depends on is damaged.
  """

  def __init__(self, run_dir, committed, resume_step):
    self.path = os.path.join(run_dir, METRICS_FILE)
    self.records = self._kept_records(committed, resume_step)
    write_text(self.path, ''.join(json.dumps(r, allow_nan=False) + '\n'
                                  for r in self.records))
    self._keys = {(r['kind'], r['step']) for r in self.records}
    for name in os.listdir(run_dir):
      if name.startswith('events.out.tfevents.'):
        os.remove(os.path.join(run_dir, name))
    self.writer = tf.summary.create_file_writer(run_dir)
    for record in self.records:
      self._summarize(record)
    self.writer.flush()

  def _kept_records(self, committed, resume_step):
    try:
      with open(self.path, 'rb') as f:
        lines = f.read().split(b'\n')
    except FileNotFoundError:
      lines = []
    if lines and not lines[-1]:
      lines.pop()
    limit = len(lines) if committed < 0 else min(committed, len(lines))
    kept = []
    for number, line in enumerate(lines[:limit], 1):
      try:
        record = json.loads(line)
        record['kind'], int(record['step'])  # pylint: disable=pointless-statement
      except (ValueError, KeyError, TypeError) as e:
        if committed < 0 and number == len(lines):
          break  # a cut-off last line of a checkpoint without the count
        raise RunDirError(
            '%s line %d is damaged (%s); delete that line (its record is '
            'then lost) or the run directory (to start over)'
            % (self.path, number, e)) from None
      if committed >= 0 or record['step'] <= resume_step:
        kept.append(record)
    if committed > len(kept):
      logging.warning('%s holds %d of the %d records of the checkpoint; the '
                      'missing ones are lost', self.path, len(kept), committed)
    dropped = len(lines) - len(kept)
    if dropped:
      logging.info('Dropped %d record(s) of %s written after the checkpoint; '
                   'the resumed run writes them again', dropped, self.path)
    return kept

  @property
  def count(self):
    return len(self.records)

  @property
  def wall_s(self):
    """Training wall time recorded so far (the last record's)."""
    return self.records[-1].get('wall_s', 0.0) if self.records else 0.0

  def has(self, kind, step):
    return (kind, step) in self._keys

  def write(self, record):
    """Appends a record, durably (before any checkpoint can count it)."""
    record = strict_json(record)
    with open(self.path, 'a') as f:
      f.write(json.dumps(record, allow_nan=False) + '\n')
      f.flush()
      os.fsync(f.fileno())
    self.records.append(record)
    self._keys.add((record['kind'], record['step']))
    self._summarize(record)
    self.writer.flush()

  def _summarize(self, record):
    with self.writer.as_default():
      for tag, value in tensorboard_scalars(record):
        write_scalar(tag, value, record['step'])


# What reading a damaged checkpoint raises: truncated files give IndexError
# ("Read less bytes than requested"), zeroed or missing ones OpErrors.
_READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, OSError)


def checkpoint_steps(directory):
  """Steps of the checkpoints `ckpt-<step>` in `directory`, oldest first."""
  steps = []
  for name in os.listdir(directory):
    match = re.fullmatch(r'ckpt-(\d+)\.index', name)
    if match:
      steps.append(int(match.group(1)))
  return sorted(steps)


class Checkpoints:
  """`run_dir/checkpoints/ckpt-<step>`: the newest `keep` training states.

  Restoring tries the newest first and falls back to an older one, with a
  warning, when a checkpoint's files are truncated, zeroed or missing (a
  crash or a full disk during a save). Leftovers of interrupted saves
  (`ckpt-N_temp` folders) are removed.
  """

  def __init__(self, checkpoint, run_dir, keep=2):
    self.checkpoint = checkpoint
    self.directory = os.path.join(run_dir, CHECKPOINT_DIR)
    self.keep = keep
    os.makedirs(self.directory, exist_ok=True)
    for name in os.listdir(self.directory):
      path = os.path.join(self.directory, name)
      if name.endswith('_temp') or '_temp' in name.split('.')[0]:
        logging.warning('Removing %s, left by an interrupted save', name)
        shutil.rmtree(path, ignore_errors=True)
      elif name.endswith('.tmp'):  # a write_text cut short
        os.remove(path)

  def _prefix(self, step):
    return os.path.join(self.directory, 'ckpt-%d' % step)

  def steps(self):
    return checkpoint_steps(self.directory)

  def _delete(self, step, into=None):
    """Removes a checkpoint's files, or moves them into folder `into`."""
    for name in os.listdir(self.directory):
      if name.startswith('ckpt-%d.' % step):
        path = os.path.join(self.directory, name)
        if into is None:
          os.remove(path)
        else:
          os.makedirs(into, exist_ok=True)
          os.replace(path, os.path.join(into, name))

  def restore(self):
    """Restores the newest readable checkpoint; returns its path or None.

    A checkpoint whose files cannot be read is moved to `damaged/` (kept
    for inspection, never read again).

    Raises:
      RunDirError: there are checkpoints and none of them can be read, or
        one does not match the model (the program changed).
    """
    steps = self.steps()
    for step in reversed(steps):
      path = self._prefix(step)
      try:
        self.checkpoint.read(path).assert_existing_objects_matched()
      except _READ_ERRORS as e:
        reason = ' '.join(str(e).split())[:200]
        logging.warning('Checkpoint %s is damaged (%s); moved it to %s and '
                        'trying an older one', path, reason, DAMAGED_DIR)
        self._delete(step, into=os.path.join(self.directory, DAMAGED_DIR))
        continue
      except AssertionError as e:
        raise RunDirError('checkpoint %s does not match this model (%s); '
                          'resume it with the code that wrote it' %
                          (path, ' '.join(str(e).split())[:200])) from None
      self._write_state()
      return path
    if steps:
      raise RunDirError('no checkpoint in %s can be read; delete that folder '
                        'and metrics.jsonl to start the run over'
                        % self.directory)
    return None

  def save(self, step):
    self.checkpoint.write(self._prefix(step))
    fault_point('checkpoint_write')
    for old in self.steps()[:-self.keep]:
      self._delete(old)
    self._write_state()

  def _write_state(self):
    # The `checkpoint` file, for TensorFlow's tools (tf.train.latest_checkpoint,
    # tf.train.load_checkpoint); restore() itself reads the folder.
    names = ['ckpt-%d' % s for s in self.steps()]
    if not names:
      return
    text = 'model_checkpoint_path: "%s"\n' % names[-1] + ''.join(
        'all_model_checkpoint_paths: "%s"\n' % n for n in names)
    write_text(os.path.join(self.directory, 'checkpoint'), text)


def recorded_seed(run_dir):
  """The seed kept in the run's newest readable checkpoint, or None."""
  directory = os.path.join(run_dir, CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    return None
  for step in reversed(checkpoint_steps(directory)):
    try:
      reader = tf.train.load_checkpoint(
          os.path.join(directory, 'ckpt-%d' % step))
      seed = int(reader.get_tensor('trainer/seed/.ATTRIBUTES/VARIABLE_VALUE'))
    except _READ_ERRORS:
      continue
    if seed >= 0:
      return seed
  return None


# ------------------------------------------------------------ the loop


def train(model, trainer, valid, test, run_dir, seed, max_steps, eval_freq,
          eval_samples=100, checkpoint_secs=300, block_size=100,
          final_eval=False, out=print, stop=None, eval_jit_compile=True):
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

  `eval_jit_compile` is make_iw_bound_fn's `jit_compile`.

  Raises:
    rundir.Stopped: a stop signal arrived; the checkpoint is saved.
    rundir.Diverged: the training ELBO or a parameter became non-finite; no
      checkpoint is saved after it.
    rundir.RunDirError: the run directory's state cannot be used.
  """
  hparams = model.hparams
  checkpoints = Checkpoints(tf.train.Checkpoint(model=model, trainer=trainer),
                            run_dir)
  resumed = checkpoints.restore()
  step = int(trainer.step.numpy())
  if resumed:
    logging.info('Resumed from %s at step %d', resumed, step)
  trainer.seed.assign(seed)
  log = RunLog(run_dir, int(trainer.records.numpy()) if resumed else 0, step)
  iw_bound_fn = make_iw_bound_fn(model, hparams.n_input, eval_jit_compile)
  spe = steps_per_epoch(trainer.n_train, hparams.batch_size)
  bs = hparams.batch_size
  start_time = time.time() - log.wall_s
  own_stop = stop is None
  stop = stop or StopRequest()

  def due(step):
    """The kinds of record due at `step`."""
    kinds = []
    epoch_end = step > 0 and step % spe == 0
    if epoch_end or step == max_steps:
      kinds.append('train')
    epoch = int(step / (trainer.n_train / bs))
    if ((epoch_end and eval_freq > 0 and epoch % eval_freq == 0) or
        (final_eval and step == max_steps)):
      kinds += ['valid', 'test']
    return kinds

  def save(step):
    trainer.records.assign(log.count)
    checkpoints.save(step)

  def stop_now(step):
    save(step)
    raise Stopped(stop.signum, step)

  def report_epoch(step):
    values, log_variances = trainer.epoch_summary()
    out('Step %d: %s' % (step, values))
    if not model.variances_by_name:
      log_variance = float(log_variances[0])
      out('%s' % log_variance)
    else:
      # The per-estimator mapping, sorted by name, as the original printed it.
      log_variance = {name: float(v)
                      for name, v in zip(model.variance_names, log_variances)}
      for name in sorted(log_variance):
        out('%s' % ((name, log_variance[name]),))
    log.write({'kind': 'train', 'step': step,
               'wall_s': round(time.time() - start_time, 3),
               'values': dict(zip(model.printed_names, map(float, values))),
               'log_variance': log_variance,
               'temperature': float(model.temperature().numpy())})
    trainer.reset_epoch_summary()

  def run_eval(kind, step):
    """Evaluates on one set; False if a stop request abandoned it."""
    # Evaluation noise comes from its own stream; an abandoned evaluation
    # gives back what it drew, so the one run on resuming draws the same.
    state = model.eval_generator.state.numpy()
    result = evaluate(iw_bound_fn, valid if kind == 'valid' else test,
                      eval_samples, stop)
    if result is None:
      model.eval_generator.state.assign(state)
      return False
    out('%s %d: %s' % (kind.capitalize(), step, np.array(result)))
    log.write({'kind': kind, 'step': step,
               'wall_s': round(time.time() - start_time, 3),
               'values': {'iw_bound': result[0], 'elbo': result[1]},
               'eval_samples': eval_samples})
    return True

  def check_finite(step):
    bad = int(trainer.nonfinite_step.numpy())
    if not bad and not bool(trainer.parameters_finite()):
      bad = step
    if bad:
      raise Diverged(
          'training diverged at step %d: the training ELBO fell below %.0f '
          'or became nan, or a parameter became nan or inf; lower '
          'learning_rate (now %g) and start again'
          % (bad, trainer.elbo_floor, hparams.learning_rate))

  last_save = time.time()
  with stop.installed() if own_stop else contextlib.nullcontext():
    while True:
      for kind in due(step):
        if log.has(kind, step):
          continue
        if kind == 'train':
          report_epoch(step)
        elif not run_eval(kind, step):
          stop_now(step)
        if stop.requested:
          stop_now(step)
      if step >= max_steps:
        break
      if stop.requested:  # e.g. a signal while the model was being built
        stop_now(step)
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
        step = int(trainer.step.numpy())
        check_finite(step)
        if stop.requested:
          stop_now(step)
        if time.time() - last_save > checkpoint_secs:
          save(step)
          last_save = time.time()
      fault_point('epoch_end')
    save(step)
  if step >= max_steps:
    write_json(os.path.join(run_dir, FINISHED_FILE), {'step': step})
  return step
