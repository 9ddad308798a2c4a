"""A run directory and the process that owns it: its lock, its small JSON
records, and the signals that stop a run at a safe point.

This module does not import TensorFlow: rebar_train takes the lock and reads
the seed before TensorFlow is imported, so a second process on the same run
directory stops at once.
"""

import contextlib
import errno
import fcntl
import json
import math
import os
import signal
import socket
import threading

from absl import logging

LOCK_FILE = 'lock'
# Signals that stop a run at its next safe point with a checkpoint: Ctrl-C,
# and what schedulers send (Slurm at a time limit or on pre-emption, GNU
# parallel, `timeout`) and what a closed terminal sends.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class RunDirError(RuntimeError):
  """A run-directory problem the user can fix; one line naming the fix."""


class RunDirLock:
  """An exclusive lock on a run directory, held until `release` or exit.

  The lock is an flock(2) on `run_dir/lock`, which the kernel drops when the
  holder dies however it dies, so a lock never outlives its process. The
  file holds the holder's PID and host for messages; a file that still names
  a process when the lock is free is what a killed run left behind.
  """

  def __init__(self, run_dir):
    self.path = os.path.join(run_dir, LOCK_FILE)
    self._fd = None

  def acquire(self):
    """Takes the lock. Raises RunDirError if another process holds it."""
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _read_holder(fd)
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise RunDirError('cannot lock %s (%s); pass a --working_dir on a '
                          'file system with file locks' % (self.path, e))
      raise RunDirError(
          'run directory %s is in use by process %s; wait for it to end or '
          'stop it (a second process would interleave its records)'
          % (os.path.dirname(self.path), holder or '(unknown)')) from None
    previous = _read_holder(fd)
    if previous:
      logging.warning('Taking over the lock of %s left by process %s, which '
                      'is no longer running', self.path, previous)
    os.ftruncate(fd, 0)
    os.pwrite(fd, ('%d %s\n' % (os.getpid(), socket.gethostname())).encode(),
              0)
    self._fd = fd
    return self

  def release(self):
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # a clean exit leaves no holder behind
      os.close(self._fd)
      self._fd = None


def _read_holder(fd):
  """'PID on HOST' from a lock file's content, or '' if it is empty."""
  try:
    text = os.pread(fd, 200, 0).decode('utf-8', 'replace').split()
  except OSError:
    return ''
  if not text:
    return ''
  return '%s on %s' % (text[0], text[1]) if len(text) > 1 else text[0]


def strict_json(value):
  """`value` for strict JSON: non-finite floats, also inside dicts and
  lists, become None (null)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  return value


def write_text(path, text):
  """Writes `text` to `path` atomically and durably: a crash or power cut
  leaves the old file or the new one, never a truncated one. The temporary
  file (`<path>.<pid>.tmp`) of a write cut short is removed on the next
  start."""
  tmp = '%s.%d.tmp' % (path, os.getpid())
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path, value):
  """Writes `value` to `path` as JSON, atomically (write_text)."""
  write_text(path, json.dumps(value, indent=2, sort_keys=True) + '\n')


def read_json(path):
  """The content of a JSON record; None if it is missing.

  Raises:
    RunDirError: the file exists but is empty or not JSON (what a power cut
      can leave); the message names the file.
  """
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise RunDirError('%s is damaged (%s)' % (path, e)) from None


class StopRequest:
  """Turns the stop signals into a request that the training loop honours
  at its next safe point (between blocks of steps, between evaluation
  chunks), so that the checkpoint it then saves is consistent with the
  records already written.

  A second signal ends the process at once without saving (the previous
  checkpoint stays valid): a way out when a save hangs.
  """

  def __init__(self):
    self.signum = None

  @property
  def requested(self):
    return self.signum is not None

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      raise KeyboardInterrupt
    self.signum = signum
    logging.warning('Received %s: stopping at the next safe point with a '
                    'checkpoint (send it again to stop at once, unsaved)',
                    signal.Signals(signum).name)

  @contextlib.contextmanager
  def installed(self):
    """Handles STOP_SIGNALS within the block (main thread only; elsewhere
    the process keeps its handlers and nothing is requested)."""
    if threading.current_thread() is not threading.main_thread():
      yield self
      return
    previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
    try:
      yield self
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)


class Stopped(Exception):
  """Training stopped at a safe point on a signal; a checkpoint was saved.

  Attributes:
    signum: the signal; a process ends with status 128 + signum, as a shell
      reports a process killed by it.
    step: the step of the checkpoint.
  """

  def __init__(self, signum, step):
    super().__init__('stopped by %s at step %d'
                     % (signal.Signals(signum).name, step))
    self.signum, self.step = signum, step


class Diverged(Exception):
  """The training ELBO or a parameter became non-finite (one-line message)."""


# ------------------------------------------------------------ test hook

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
