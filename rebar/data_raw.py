"""The raw files of the datasets: what each must be, and getting it intact.

`RAW_FILES` pins each file's size, checksum and image count (Omniglot's
checksum is not published: the one recorded in `chardata.mat.sha256` on its
first download stands in for it). `get_raw` makes sure a file is in
`data_dir` and passes its check, fetching it from the first of its
locations (`sources_for`) that works. `rebar.data` re-exports the public
names.
"""

import dataclasses
import json
import os

from absl import logging

from rebar import data_fetch
from rebar.data_files import check
from rebar.data_files import DataError
from rebar.data_files import Expected
from rebar.data_files import file_digest
from rebar.data_files import make_dir
from rebar.data_files import remove
from rebar.data_files import write_atomic


@dataclasses.dataclass(frozen=True)
class RawFile:
  """A file to download and what it must hold.

  Attributes:
    url_flag: key of the `urls` dict, and name of the flag, giving its source.
    url_is_base: the source is `<url>/<file name>`; else the URL itself.
    size: expected bytes; None if unknown.
    algo, digest: pinned checksum (hashlib name, hex); None if unknown, in
      which case one is recorded on the first download (`record_path`).
    rows: images the file must hold; None if unknown.
  """
  url_flag: str
  url_is_base: bool
  size: int | None = None
  algo: str | None = None
  digest: str | None = None
  rows: int | None = None


# Sizes and checksums from the mirror's README (the public files).
RAW_FILES = {
    'binarized_mnist_train.amat': RawFile(
        'mnist_binarized_url', True, 78_400_000, 'sha256',
        'ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d',
        50_000),
    'binarized_mnist_valid.amat': RawFile(
        'mnist_binarized_url', True, 15_680_000, 'sha256',
        '1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2',
        10_000),
    'binarized_mnist_test.amat': RawFile(
        'mnist_binarized_url', True, 15_680_000, 'sha256',
        'e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c',
        10_000),
    'train-images-idx3-ubyte.gz': RawFile(
        'mnist_url', True, 9_912_422, 'md5',
        'f68b3c2dcbeaaa9fbdd348bbdeb94873', 60_000),
    't10k-images-idx3-ubyte.gz': RawFile(
        'mnist_url', True, 1_648_877, 'md5',
        '9fb629c4189551a2d022fa330f9573f3', 10_000),
    'chardata.mat': RawFile('omniglot_url', False),
}


def fix_hint(datasets, data_dir):
  """The end of a message about missing or bad data: the command to run."""
  return (f'run `download_data --datasets={",".join(datasets)} '
          f'--data_dir={data_dir}` (point --mnist_binarized_url, --mnist_url '
          'or --omniglot_url at a mirror or a local copy if the default URLs '
          'are unreachable)')


def raw_path(data_dir, name):
  return os.path.join(data_dir, name)


# ---------------------------------------------------------------- locations


def split_locations(value):
  """The locations a `urls` value names, in order, as a tuple.

  A string is a comma-separated list (as the flags take); a list or tuple
  holds one location per item, so a location may contain a comma there.
  """
  if value is None:
    return ()
  items = value.split(',') if isinstance(value, str) else value
  return tuple(item.strip() for item in items if item and item.strip())


def sources_for(name, urls):
  """The locations to try, in order, for raw file `name` under `urls`."""
  raw = RAW_FILES[name]
  found = split_locations(urls.get(raw.url_flag))
  if not found:
    raise DataError(f'no location given for --{raw.url_flag}; pass one, or a '
                    'comma-separated list')
  if not raw.url_is_base:
    return found
  return tuple(location.rstrip('/') + '/' + name if '://' in location
               else os.path.join(os.path.expanduser(location), name)
               for location in found)


# ---------------------------------------------------------------- checksums


def record_path(data_dir, name):
  """The checksum record of a raw file without a pinned checksum."""
  return raw_path(data_dir, name) + '.sha256'


def expected(name, data_dir):
  """A raw file's pinned size/checksum, or the one recorded for it, or None."""
  raw = RAW_FILES[name]
  if raw.digest is not None:
    return Expected(raw.size, raw.algo, raw.digest)
  record = record_path(data_dir, name)
  if not os.path.exists(record):
    return None
  try:
    with open(record) as f:
      fields = json.load(f)
    return Expected(int(fields['size']), 'sha256', str(fields['sha256']),
                    f'one recorded in {record}; delete that record if the '
                    'file changed on purpose')
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DataError(f'checksum record {record} is unreadable ({e}); delete '
                    'it to record a new one') from e


def record_unpinned(names, data_dir):
  """Records size and sha256 of the files among `names` with no pinned one."""
  for name in names:
    record = record_path(data_dir, name)
    if RAW_FILES[name].digest is not None or os.path.exists(record):
      continue
    path = raw_path(data_dir, name)
    fields = {'file': name, 'size': os.path.getsize(path),
              'sha256': file_digest(path, 'sha256'),
              'note': 'recorded on first download, not verified against a '
                      'published checksum'}
    write_atomic(record, lambda f, fields=fields: f.write(
        json.dumps(fields, indent=1).encode() + b'\n'))
    logging.warning('%s has no published checksum: recorded (not verified) '
                    'its size %d and sha256 %s in %s; later loads check it',
                    name, fields['size'], fields['sha256'], record)


# ---------------------------------------------------------------- getting one


def _fetch_first(name, path, urls, wanted, progress):
  """Fetches raw file `name` into `path` from the first location that works.

  Raises:
    DataError: every location failed; one line lists each and why, and names
      the flag to set.
  """
  flag = RAW_FILES[name].url_flag
  sources = sources_for(name, urls)
  failures = []
  for i, source in enumerate(sources):
    if i and (wanted is None or wanted.digest is None):
      # No checksum would catch a file spliced from two sources' bytes.
      remove(path + '.part')
    try:
      data_fetch.fetch(source, path, wanted, progress=progress)
      return
    except DataError as e:
      failures.append(f'{source} ({getattr(e, "reason", e)})')
      if i + 1 < len(sources):
        logging.warning('%s; trying %s next', e, sources[i + 1])
  raise DataError(f'could not fetch {name} from --{flag}: '
                  f'{"; ".join(failures)}; set --{flag} to a reachable copy '
                  '(a comma-separated list is tried in order)')


def get_raw(name, data_dir, urls, dataset, progress):
  """Makes sure raw file `name` is in `data_dir` and intact.

  A file present but failing its check is deleted; it is then downloaded
  when `urls` is given, else DataError names the fix.

  Returns:
    True if the file was downloaded by this call.
  """
  path = raw_path(data_dir, name)
  wanted = expected(name, data_dir)
  if os.path.exists(path):
    reason = check(path, wanted)
    if reason is None:
      return False
    remove(path)
    logging.warning('%s is corrupt (%s); deleted it', path, reason)
    if urls is None:
      raise DataError(f'{path} was corrupt ({reason}) and has been deleted; '
                      + fix_hint([dataset], data_dir))
  elif urls is None:
    raise DataError(f'{dataset} data not found in {data_dir}; '
                    + fix_hint([dataset], data_dir))
  make_dir(data_dir)
  try:
    _fetch_first(name, path, urls, wanted, progress)
  except OSError as e:
    raise DataError(f'cannot write {path} ({e}); pass a writable '
                    '--data_dir') from e
  return True
