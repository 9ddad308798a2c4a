"""TensorFlow's start-up notices, silenced unless the user asks for them.

While TensorFlow loads, its C++ logging writes before it reads
TF_CPP_MIN_LOG_LEVEL: the oneDNN notice, "Could not find cuda drivers", the
CPU-feature notice and, on a machine without a GPU, a `cuInit` error, each
block twice (two of its libraries print it). `import_tensorflow` imports it
with the process's standard error (file descriptor 2) passed through a
filter that applies the level itself, and restores the descriptor once
TensorFlow has loaded and listed its devices. After that TensorFlow honours
the variable.

The level is the user's TF_CPP_MIN_LOG_LEVEL, or DEFAULT_LEVEL (set in the
environment, so TensorFlow uses it too): 0 keeps everything, 1 drops INFO
lines, 2 also warnings, 3 also errors; fatal lines are always kept. At
level 1 or more the `cuInit` error is dropped where TensorFlow has just said
there are no CUDA drivers (a machine without a GPU, where it is expected),
and so is absl's "All log messages before absl::InitializeLog()" banner.
Only lines in the C++ log format from a .cc or .h source are filtered;
anything else written meanwhile passes unchanged.

Nothing here imports TensorFlow at module level.
"""

import contextlib
import os
import re
import sys
import threading

DEFAULT_LEVEL = '1'
BANNER = 'WARNING: All log messages before absl::InitializeLog() is called'
# I0000 00:00:1796183091.538609   27787 port.cc:153] message
_CPP_LINE = re.compile(r'^([IWEF])\d{4} [\d:.]+\s+\d+ \S+\.(?:cc|h):\d+\] (.*)')
_SEVERITY = 'IWEF'
_NO_DRIVERS = 'Could not find cuda drivers'
_CUINIT = 'failed call to cuInit'
# The second line of the CPU-feature notice, which has no log prefix.
_CONTINUATION = 'To enable the following instructions:'


def log_level():
  """The effective TF_CPP_MIN_LOG_LEVEL (DEFAULT_LEVEL when unset)."""
  text = os.environ.get('TF_CPP_MIN_LOG_LEVEL', DEFAULT_LEVEL)
  try:
    return max(0, min(3, int(text)))
  except ValueError:
    return 0


class LineFilter:
  """Decides, line by line, what of TensorFlow's start-up output to keep."""

  def __init__(self, level):
    self.level = level
    self.no_drivers = False
    self.dropped_last = False

  def keep(self, line):
    """True if `line` (text without its newline) is to be written."""
    drop = self._drop(line)
    self.dropped_last = drop
    return not drop

  def _drop(self, line):
    if self.level < 1:
      return False
    if line.startswith(BANNER):
      return True
    if line.startswith(_CONTINUATION):
      return self.dropped_last
    match = _CPP_LINE.match(line)
    if not match:
      return False
    severity, message = match.groups()
    if _NO_DRIVERS in message:
      self.no_drivers = True
    if severity == 'E' and _CUINIT in message and self.no_drivers:
      return True
    return _SEVERITY.index(severity) < self.level


def _pump(read_fd, write_fd, line_filter):
  """Copies lines from read_fd to write_fd through `line_filter`, to EOF."""
  pending = b''
  while True:
    chunk = os.read(read_fd, 65536)
    if not chunk:
      break
    pending += chunk
    *lines, pending = pending.split(b'\n')
    for line in lines:
      if line_filter.keep(line.decode('utf-8', 'replace')):
        os.write(write_fd, line + b'\n')
  if pending and line_filter.keep(pending.decode('utf-8', 'replace')):
    os.write(write_fd, pending)
  os.close(read_fd)


@contextlib.contextmanager
def filtered_stderr(level):
  """File descriptor 2 through a LineFilter(level) while the block runs."""
  sys.stderr.flush()
  saved = os.dup(2)
  read_fd, write_fd = os.pipe()
  os.dup2(write_fd, 2)
  os.close(write_fd)
  pump = threading.Thread(target=_pump, args=(read_fd, saved,
                                              LineFilter(level)),
                          daemon=True)
  pump.start()
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # closes the pipe's last write end: the pump ends
    pump.join()
    os.close(saved)


def import_tensorflow():
  """Imports TensorFlow with its start-up notices filtered; returns it.

  Also sets TF_CPP_MIN_LOG_LEVEL to DEFAULT_LEVEL where the user has not
  set it. A second call (or one after TensorFlow was imported) only
  returns the module.
  """
  if 'tensorflow' in sys.modules:
    return sys.modules['tensorflow']
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', DEFAULT_LEVEL)
  level = log_level()
  with filtered_stderr(level) if level else contextlib.nullcontext():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()  # the device notices come here
  return tf
