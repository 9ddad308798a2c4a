"""The README's reference tables match the code.

The hparams table (header `| name | default | meaning |`) names every field
of rebar.hparams.HParams once and nothing else, and its `model` row names
every model of rebar.hparams.MODELS and nothing else; the flags table
(header `| flag | default | meaning |`) names every flag rebar_train.py
defines (its own and the shared ones of rebar.cli) once and nothing else. A
row's first cell may list several names separated by commas; backticks and
a flag's leading `--` are ignored. Where several tables share a header,
their rows are taken together. The epoch-line table (header `| model |
epoch line ... |`) is rebar.hparams.EPOCH_LINES, row for row.
"""

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from rebar.hparams import EPOCH_LINES, HParams, MODELS
REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
HPARAMS_HEADER = ['name', 'default', 'meaning']
FLAGS_HEADER = ['flag', 'default', 'meaning']
EPOCH_LINE_HEADER = ['model',
                     'epoch line `Step N: [...]`, in order (means over the epoch)']
MODEL_NAME = re.compile(r'\b(?:SBN|Categorical)[A-Za-z0-9_]*\b')

# Prints, as JSON, the flags defined by rebar_train.py and by rebar.cli's
# define_* functions (which rebar_train.py calls), grouped by the
# module absl records as defining them. In a separate process, so that
# importing rebar_train defines no flags in the tests' own process.
_LIST_FLAGS = '''
import json
from absl import flags
import rebar_train  # noqa: F401
by_module = flags.FLAGS.flags_by_module_dict()
print(json.dumps({m: sorted(f.name for f in by_module.get(m, ()))
                  for m in ('rebar_train', 'rebar.cli')}))
'''


def cells(line):
  """The stripped cells of a markdown table row, or None for other lines.

  Cells are separated by `|`; an escaped `\\|` stays inside its cell.
  """
  line = line.strip()
  if len(line) < 2 or not (line.startswith('|') and line.endswith('|')):
    return None
  return [c.strip() for c in re.split(r'(?<!\\)\|', line[1:-1])]


def tables(text, header):
  """The body rows (lists of cells) of every table whose header row is
  `header`, in the order they appear, rows of all such tables together."""
  lines = text.splitlines()
  rows = []
  for i, line in enumerate(lines):
    if cells(line) != header:
      continue
    separator = cells(lines[i + 1]) if i + 1 < len(lines) else None
    assert separator and all(re.fullmatch(r':?-+:?', c) for c in separator), (
        'README.md line %d: the table headed %r has no separator row'
        % (i + 1, line))
    for row in lines[i + 2:]:
      row_cells = cells(row)
      if row_cells is None:
        break
      rows.append(row_cells)
  return rows


def names_in(cell, prefix=''):
  """The names a first cell lists: comma-separated, without backticks and
  without `prefix` (a flag's `--`)."""
  names = []
  for item in cell.split(','):
    name = item.strip().strip('`').strip()
    if prefix and name.startswith(prefix):
      name = name[len(prefix):]
    if name:
      names.append(name)
  return names


def readme_rows(header):
  rows = tables(README.read_text(encoding='utf-8'), header)
  assert rows, 'README.md has no table headed | %s |' % ' | '.join(header)
  return rows


def check_names(listed, expected, what):
  """Every expected name listed exactly once, and nothing else."""
  missing = sorted(set(expected) - set(listed))
  unknown = sorted(set(listed) - set(expected))
  repeated = sorted({n for n in listed if listed.count(n) > 1})
  assert not (missing or unknown or repeated), (
      'README.md %s: missing %s; not in the code %s; listed twice %s'
      % (what, missing, unknown, repeated))


def defined_flags():
  """Module -> names of the flags it defines, as absl records them."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-c', _LIST_FLAGS],
                          capture_output=True, text=True, cwd=str(REPO),
                          env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_table_parsing():
  """The parser on a small document: two tables with one header taken
  together, a table with another header and prose ignored, several names
  to a row."""
  text = '\n'.join([
      'Some prose | with a bar.',
      '',
      '| name | default | meaning |',
      '|---|---|---|',
      '| a, `b` | 1, 2 | x \\| y |',
      '| c | 3 | z |',
      'after the table',
      '| other | default | meaning |',
      '|---|---|---|',
      '| d | 4 | w |',
      '',
      '| name | default | meaning |',
      '|:---|---:|---|',
      '| e | 5 | v |',
  ])
  rows = tables(text, HPARAMS_HEADER)
  assert rows == [['a, `b`', '1, 2', 'x \\| y'], ['c', '3', 'z'],
                  ['e', '5', 'v']]
  assert [n for row in rows for n in names_in(row[0])] == ['a', 'b', 'c', 'e']
  assert names_in('`--data_dir`, `--download`', '--') == ['data_dir',
                                                          'download']
  assert tables(text, FLAGS_HEADER) == []
  with pytest.raises(AssertionError):
    check_names(['a', 'b', 'b'], ['a', 'b'], 'test')
  with pytest.raises(AssertionError):
    check_names(['a'], ['a', 'b'], 'test')
  with pytest.raises(AssertionError):
    check_names(['a', 'c'], ['a'], 'test')
  check_names(['b', 'a'], ['a', 'b'], 'test')


def test_hparams_table_names_every_hparam():
  listed = [n for row in readme_rows(HPARAMS_HEADER) for n in names_in(row[0])]
  check_names(listed, [f.name for f in dataclasses.fields(HParams)],
              'hparams table (name column)')


def test_hparams_table_model_row_names_every_model():
  model_rows = [row for row in readme_rows(HPARAMS_HEADER)
                if 'model' in names_in(row[0])]
  assert len(model_rows) == 1, model_rows
  # Names in the default and meaning cells; each model once, in either.
  listed = sorted(set(MODEL_NAME.findall(' '.join(model_rows[0][1:]))))
  check_names(listed, list(MODELS), 'hparams table, model row')


def test_flags_table_names_every_rebar_train_flag():
  by_module = defined_flags()
  # rebar_train's own flags and the shared ones it defines through rebar.cli
  # (data_dir, the URL flags, download, threads).
  assert 'hparams' in by_module['rebar_train'], by_module
  assert 'data_dir' in by_module['rebar.cli'], by_module
  expected = by_module['rebar_train'] + by_module['rebar.cli']
  listed = [n for row in readme_rows(FLAGS_HEADER)
            for n in names_in(row[0], prefix='--')]
  check_names(listed, expected, 'rebar_train flags table (flag column)')


def test_epoch_line_table_is_the_code_s_for_every_model():
  """What `rebar_train --help` prints (EPOCH_LINES) is what the README
  says, and it covers every model."""
  assert list(EPOCH_LINES) == list(MODELS)
  rows = readme_rows(EPOCH_LINE_HEADER)
  assert [tuple(row) for row in rows] == list(EPOCH_LINES.items())
