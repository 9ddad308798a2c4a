"""A run's checkpoints: the newest training states, restored with a
fallback past damaged ones.
"""

import os
import re
import shutil

from absl import logging
import tensorflow as tf

from rebar.rundir import RunDirError, fault_point, write_text

CHECKPOINT_DIR = 'checkpoints'
DAMAGED_DIR = 'damaged'  # in CHECKPOINT_DIR: checkpoints that did not read

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
