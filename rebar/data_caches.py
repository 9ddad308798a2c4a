"""The `.npz` caches: whether one is still good, and writing one.

Each cache has a record `<cache>.sha256` (size, mtime, sha256) written when
it is built; a cache that no longer matches it, or whose data fails the
zip's CRCs, is reported as not valid, for the caller to rebuild. Which caches
there are, and what builds them, is `rebar.data`'s table.
"""

import json
import os
import re
import time
import zipfile
import zlib

from absl import logging
import numpy as np

from rebar.data_files import file_digest
from rebar.data_files import remove
from rebar.data_files import write_atomic
from rebar.data_readers import N_PIXELS

# A temporary file of ours unchanged for this long has lost its writer; a
# younger one may be another process's write in progress.
_STALE_TMP_S = 60


def _npz_layout(path):
  """{key: (shape, dtype)} of an `.npz` file, read from the headers only."""
  layout = {}
  with zipfile.ZipFile(path) as zf:
    for member in zf.namelist():
      with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
          shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
          shape, _, dtype = np.lib.format.read_array_header_2_0(f)
      layout[member.removesuffix('.npy')] = (shape, dtype)
  return layout


def is_valid(path, dtype, rows):
  """Whether cache `path` holds the arrays it should, as when built.

  Args:
    path: the cache file.
    dtype: the dtype of every array.
    rows: {key: expected row count, or None if unknown}, one per array.
  """
  if not os.path.exists(path):
    return False
  try:
    layout = _npz_layout(path)
  except (OSError, ValueError, zipfile.BadZipFile):
    logging.warning('cache %s is unreadable; rebuilding it', path)
    return False
  for key, n_rows in rows.items():
    if key not in layout:
      return False
    shape, layout_dtype = layout[key]
    if (layout_dtype != np.dtype(dtype) or len(shape) != 2 or
        shape[1] != N_PIXELS or (n_rows is not None and shape[0] != n_rows)):
      logging.warning('cache %s does not hold the expected arrays; '
                      'rebuilding it', path)
      return False
  return _intact(path)


def record_path(path):
  """The record of cache `path`."""
  return path + '.sha256'


def _read_record(path):
  """The fields recorded for cache `path`, or None if none can be read."""
  try:
    with open(record_path(path)) as f:
      fields = json.load(f)
    return {'size': int(fields['size']), 'mtime_ns': int(fields['mtime_ns']),
            'sha256': str(fields['sha256'])}
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _record(path, stat, digest):
  """Writes the size, mtime and sha256 of cache `path` beside it."""
  fields = {'file': os.path.basename(path), 'size': stat.st_size,
            'mtime_ns': stat.st_mtime_ns, 'sha256': digest}
  write_atomic(record_path(path), lambda f: f.write(
      json.dumps(fields, indent=1).encode() + b'\n'))


def _zip_damage(path):
  """Why the members of zip `path` fail their CRCs, or None if none does."""
  try:
    with zipfile.ZipFile(path) as zf:
      bad = zf.testzip()
  except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
    return str(e)
  return None if bad is None else f'{bad} fails its CRC'


def _intact(path):
  """Whether cache `path` holds the bytes recorded when it was built.

  A size and mtime equal to the record's are taken as proof, so that a load
  costs a stat; a changed mtime costs a full sha256. A cache without a record
  (built by older code, or by a build cut short before writing it) is read
  in full against the zip's CRCs, then recorded; where the record cannot be
  written (a read-only --data_dir) that check is repeated on each load.
  """
  try:
    stat = os.stat(path)
    record = _read_record(path)
    if record is not None:
      if (record['size'], record['mtime_ns']) == (stat.st_size,
                                                  stat.st_mtime_ns):
        return True
      if record['size'] != stat.st_size:
        logging.warning('cache %s is %d bytes, not the %d recorded in %s; '
                        'rebuilding it', path, stat.st_size, record['size'],
                        record_path(path))
        return False
      digest = file_digest(path)
      if digest != record['sha256']:
        logging.warning('cache %s does not match the sha256 recorded in %s '
                        'when it was built; rebuilding it', path,
                        record_path(path))
        return False
    else:
      damage = _zip_damage(path)
      if damage is not None:
        logging.warning('cache %s is damaged (%s); rebuilding it', path,
                        damage)
        return False
      digest = file_digest(path)
  except OSError as e:
    logging.warning('cache %s is unreadable (%s); rebuilding it', path, e)
    return False
  try:
    _record(path, stat, digest)
  except OSError as e:
    logging.info('cannot record the checksum of cache %s (%s)', path, e)
  return True


def write(path, arrays):
  """Writes `arrays` to cache `path`, then its record."""
  # Without the old record first, a kill between the two writes would leave
  # a new cache beside a record it fails, and a needless rebuild.
  remove(record_path(path))
  write_atomic(path, lambda f: np.savez(f, **arrays))
  _record(path, os.stat(path), file_digest(path))


def remove_leftovers(data_dir, targets):
  """Deletes temporary files that interrupted writes of ours left behind.

  Args:
    data_dir: the directory to clean.
    targets: names of the files (in `data_dir`) we write; only their
      temporary files are deleted, and only once stale.
  """
  # The names `write_atomic` gives them, and no other.
  pattern = re.compile(r'(?:%s)\.[0-9a-f]{8}\.tmp' %
                       '|'.join(re.escape(t) for t in sorted(targets)))
  try:
    names = os.listdir(data_dir)
  except OSError:
    return
  now = time.time()
  for name in names:
    if not pattern.fullmatch(name):
      continue
    path = os.path.join(data_dir, name)
    try:
      if now - os.stat(path).st_mtime > _STALE_TMP_S:
        os.remove(path)
        logging.info('removed %s, left by an interrupted write', path)
    except OSError:
      pass  # Gone already, or not ours to remove: harmless either way.


