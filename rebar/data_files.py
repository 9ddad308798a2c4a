"""Errors and file primitives shared by the data modules.

The errors every data module raises (`DataError` and its two kinds), the
writes that a kill cannot leave half done, and the sizes and checksums a
file is checked against. `rebar.data` re-exports the public names.
"""

import dataclasses
import hashlib
import os
import uuid


class DataError(Exception):
  """A data problem the user can fix. The message is one line naming the fix."""

  def __init__(self, message):
    super().__init__(' '.join(str(message).splitlines()))


class CorruptFileError(DataError):
  """A raw file whose content is wrong (size, checksum or format).

  Attributes:
    path: the file.
    reason: what is wrong with it.
    source: where its bytes were downloaded from, if they just were.
  """

  def __init__(self, path, reason, source=None):
    rejected = f'download from {source} rejected: ' if source else ''
    super().__init__(f'{path}: {rejected}{reason}')
    self.path, self.reason, self.source = path, reason, source


class DownloadError(DataError):
  """A location that could not be fetched from; `reason` says why."""

  def __init__(self, source, reason):
    self.source = source
    self.reason = ' '.join(str(reason).splitlines())
    super().__init__(f'cannot fetch {source}: {self.reason}')


def make_dir(data_dir):
  """Creates `data_dir` if needed; DataError if it cannot be written."""
  try:
    os.makedirs(data_dir, exist_ok=True)
  except OSError as e:
    raise DataError(f'cannot create data directory {data_dir} '
                    f'({e.strerror}); pass a writable --data_dir') from e
  if not os.access(data_dir, os.W_OK):
    raise DataError(f'data directory {data_dir} is not writable; pass a '
                    'writable --data_dir')


def remove(path):
  """Deletes `path` if it is there."""
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def write_atomic(path, write):
  """Calls write(file) on a temporary file, then renames it to `path`."""
  # data_caches.remove_leftovers matches exactly this name pattern.
  tmp = f'{path}.{uuid.uuid4().hex[:8]}.tmp'
  try:
    with open(tmp, 'xb') as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    remove(tmp)
    raise


def file_digest(path, algo='sha256'):
  """Hex digest of a file's bytes."""
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, algo).hexdigest()


@dataclasses.dataclass(frozen=True)
class Expected:
  """What a file must be: size and checksum (each None if unknown)."""
  size: int | None = None
  algo: str | None = None
  digest: str | None = None
  origin: str = 'pinned one'  # Where the checksum comes from, for messages.


def check(path, expected):
  """Why the file at `path` is not what `expected` says, or None if it is."""
  if expected is None:
    return None
  size = os.path.getsize(path)
  if expected.size is not None and size != expected.size:
    return f'{size} bytes, expected {expected.size}'
  if expected.digest is not None:
    digest = file_digest(path, expected.algo)
    if digest != expected.digest:
      return (f'{expected.algo} {digest} does not match {expected.digest},'
              f' the {expected.origin}')
  return None
