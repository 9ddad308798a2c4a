"""A run's records: `metrics.jsonl` and the TensorBoard summaries derived
from it, kept exactly as an uninterrupted run leaves them.
"""

import json
import os

from absl import logging
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from rebar.rundir import RunDirError, strict_json, write_text

METRICS_FILE = 'metrics.jsonl'


def _plugin_metadata(plugin):
  # A TensorBoard plugin's tag, written with core TF so that summaries need
  # no tensorboard package (TensorFlow 2.21 does not install it).
  metadata = summary_pb2.SummaryMetadata()
  metadata.plugin_data.plugin_name = plugin
  return metadata.SerializeToString()


def write_scalar(name, value, step):
  """A scalar summary TensorBoard shows, at `step`, in the default writer."""
  tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                   metadata=_plugin_metadata('scalars'))


def write_markdown(name, markdown, step):
  """A text summary (TensorBoard's Text tab renders markdown)."""
  tf.summary.write(name, tf.constant(markdown), step=step,
                   metadata=_plugin_metadata('text'))


def hparams_markdown(values):
  """The hparams as a two-column markdown table."""
  return '| hparam | value |\n|---|---|\n' + ''.join(
      '| %s | %s |\n' % (k, v) for k, v in sorted(values.items()))


def tensorboard_scalars(record):
  """(tag, value) pairs TensorBoard shows for one metrics.jsonl record.

  Summaries are derived from the records alone, so that a resumed run can
  rewrite them exactly as an uninterrupted run wrote them.
  """
  values = record.get('values', {})
  if record['kind'] == 'train':
    pairs = [('Train ELBO', values.get('elbo')),
             # Records written before the key's rename call it `temperature`.
             ('Temperature', record.get('temperature_at_end',
                                        record.get('temperature')))]
    for tag, key in (('log grad variance', 'log_variance'),
                     ('log variance x ms', 'log_variance_x_ms')):
      figure = record.get(key)
      if isinstance(figure, dict):
        pairs += [(tag + '/' + k, v) for k, v in figure.items()]
      else:
        pairs.append((tag, figure))
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
    tensorboard_dir: where the event files go (default run_dir);
      rebar_train gives `<working_dir>/tensorboard/<short name>`, so that
      TensorBoard lists the run under a readable name.
    hparams: the run's hparams (name -> value), written as a text summary.
    scalars: record -> [(tag, value)], the summaries of a record (default
      the SBN records'; rebar.rl.train gives its own).
  Raises:
    RunDirError: a record the restored state depends on is damaged.
  """

  def __init__(self, run_dir, committed, resume_step, tensorboard_dir=None,
               hparams=None, scalars=tensorboard_scalars):
    self.path = os.path.join(run_dir, METRICS_FILE)
    self.scalars = scalars
    self.records = self._kept_records(committed, resume_step)
    write_text(self.path, ''.join(json.dumps(r, allow_nan=False) + '\n'
                                  for r in self.records))
    self._keys = {(r['kind'], r['step']) for r in self.records}
    tensorboard_dir = tensorboard_dir or run_dir
    os.makedirs(tensorboard_dir, exist_ok=True)
    # Event files of earlier attempts (also those in the run directory, where
    # older versions wrote them) are rewritten from the records kept.
    for directory in {run_dir, tensorboard_dir}:
      for name in os.listdir(directory):
        if name.startswith('events.out.tfevents.'):
          os.remove(os.path.join(directory, name))
    self.writer = tf.summary.create_file_writer(tensorboard_dir)
    if hparams is not None:
      with self.writer.as_default():
        write_markdown('hparams', hparams_markdown(hparams), 0)
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
      for tag, value in self.scalars(record):
        write_scalar(tag, value, record['step'])


# What reading a damaged checkpoint raises: truncated files give IndexError
# ("Read less bytes than requested"), zeroed or missing ones OpErrors.
