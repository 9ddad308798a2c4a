"""Progress lines for long work: where it is, how fast, when it ends.

Written to stderr through absl logging, never to stdout (which keeps the
original's lines only). A `Progress` reports at most once per `interval_s`
seconds, so callers may offer it every step.
"""

import time

from absl import logging

INTERVAL_S = 30.0


def duration(seconds):
  """'1 h 51 min', '3 min 05 s', '42 s': a duration a reader takes in."""
  seconds = int(round(max(seconds, 0.0)))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  if hours:
    return '%d h %02d min' % (hours, minutes)
  if minutes:
    return '%d min %02d s' % (minutes, seconds)
  return '%d s' % seconds


def eta(done, total, elapsed_s):
  """Seconds left at the mean rate so far; None before any progress."""
  if done <= 0 or elapsed_s <= 0:
    return None
  return (total - done) * elapsed_s / done


class Progress:
  """Rate-limited progress of `total` units, `done` of them at the start.

  Args:
    what: a short label ('training', 'valid evaluation').
    total: units (steps, images) when the work is done.
    done: units done before this process started (a resumed run).
    unit: the units' name, for the rate.
    interval_s: the least time between two lines (default INTERVAL_S).
    clock: time source (seconds), for tests.
    write: where lines go (default absl logging.info).
  """

  def __init__(self, what, total, done=0, unit='steps', interval_s=None,
               clock=time.monotonic, write=None):
    self.what, self.total, self.unit = what, total, unit
    self.start_done = done
    self.interval_s = INTERVAL_S if interval_s is None else interval_s
    self.clock = clock
    self.write = write or logging.info
    self.start = clock()
    self.last = None

  def line(self, done, detail=''):
    """The progress line at `done` units (rate and ETA over this process)."""
    elapsed = self.clock() - self.start
    new = done - self.start_done
    parts = ['%s: %s/%s %s' % (self.what, format(done, ','),
                               format(self.total, ','), self.unit)]
    if detail:
      parts.append(detail)
    if new > 0 and elapsed > 0:
      parts.append('%.0f %s/s' % (new / elapsed, self.unit))
    parts.append('elapsed %s' % duration(elapsed))
    left = eta(new, self.total - self.start_done, elapsed)
    if left is not None:
      parts.append('ETA %s' % duration(left))
    return ', '.join(parts)

  def due(self):
    """Whether `interval_s` passed since the last line (or the start)."""
    since = self.start if self.last is None else self.last
    return self.clock() - since >= self.interval_s

  def update(self, done, detail='', force=False):
    """Writes the line if it is due (or `force`); returns whether it
    wrote."""
    if not force and not self.due():
      return False
    self.last = self.clock()
    self.write(self.line(done, detail))
    return True
