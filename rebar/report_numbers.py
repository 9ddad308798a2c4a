"""The numbers of a config's runs, from their `metrics.jsonl` files.

Per run (one trial) its best training ELBO and best validation bound
(`summarize_run`); per setting, model, learning rate and point of the
model's own grid (`model_grids`; most models have none) their mean and
standard error over trials (`aggregate`); per setting and model the learning
rate and grid point that the config's rule selects (`select`); the published
numbers to compare with (`load_published`), our numbers at the original
code's reference checkpoints (`checkpoint_comparison`) and mean training
curves (`curves`). rebar.report's docstring defines each measure.
"""

import json
import math
import os

from rebar.config import expand_runs
from rebar.config import grid_points


class ReportError(RuntimeError):
  """A problem the user can fix (one line naming the fix)."""


# ------------------------------------------------------------ one run

def read_metrics(path):
  """The records of a metrics.jsonl, one per (kind, step), in step order.

  A line that does not parse (a run being written as we read) is skipped.
  If a step was recorded twice (a finished run started again re-evaluates
  at its last step), the later record is kept.
  """
  records = {}
  try:
    with open(path) as f:
      for line in f:
        try:
          record = json.loads(line)
          key = (record['kind'], int(record['step']))
        except (ValueError, KeyError, TypeError):
          continue
        records[key] = record
  except FileNotFoundError:
    return []
  return sorted(records.values(), key=lambda r: (r['step'], r['kind']))


def _finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x)


def summarize_run(records):
  """One trial's numbers from its records (see the module docstring).

  Returns None if there is no training record yet, else a dict with
  last_step, best_train_elbo (and its step), best_valid_iw_bound (and its
  step) and test_iw_bound at that step; values missing are None. Non-finite
  values (a diverged step) are ignored.
  """
  train = [r for r in records if r['kind'] == 'train'
           and _finite(r['values'].get('elbo'))]
  if not train:
    return None
  best_train = max(train, key=lambda r: r['values']['elbo'])
  summary = {'last_step': max(r['step'] for r in records),
             'best_train_elbo': best_train['values']['elbo'],
             'best_train_step': best_train['step'],
             'best_valid_iw_bound': None, 'best_valid_step': None,
             'test_iw_bound': None}
  valid = [r for r in records if r['kind'] == 'valid'
           and _finite(r['values'].get('iw_bound'))]
  if valid:
    # Highest bound; on a tie the earlier evaluation (max keeps the first).
    best = max(valid, key=lambda r: r['values']['iw_bound'])
    summary['best_valid_iw_bound'] = best['values']['iw_bound']
    summary['best_valid_step'] = best['step']
    test = [r for r in records if r['kind'] == 'test'
            and r['step'] == best['step']]
    if test and _finite(test[-1]['values'].get('iw_bound')):
      summary['test_iw_bound'] = test[-1]['values']['iw_bound']
  return summary


def mean_se(values):
  """(mean, standard error, n) of the non-None values; SE is None for n < 2."""
  values = [v for v in values if v is not None]
  n = len(values)
  if not n:
    return None, None, 0
  mean = sum(values) / n
  if n < 2:
    return mean, None, n
  variance = sum((v - mean) ** 2 for v in values) / (n - 1)
  return mean, math.sqrt(variance / n), n


# ------------------------------------------------------------ a config

def collect(config, working_dir):
  """{run: (summary or None, records)} for every run of the config."""
  result = {}
  for run in expand_runs(config):
    records = read_metrics(os.path.join(run.run_dir(working_dir),
                                        'metrics.jsonl'))
    result[run] = (summarize_run(records), records)
  return result


def group_key(setting, model, rate, grid=()):
  """The key of a group in `aggregate`'s dict.

  (setting, model, learning rate), and for a model with its own grid the
  grid point (a tuple of (hparam, value) pairs, `rebar.config.grid_points`)
  after them.
  """
  return (setting, model, rate, grid) if grid else (setting, model, rate)


def empty_groups(config, fields):
  """{group_key: group} for every setting x model x rate x grid point of
  `config`, in that order; a group holds setting, model, learning_rate and
  grid (its key's parts) and the fresh entries `fields()` returns."""
  groups = {}
  for setting in config.settings:
    for model in config.models:
      for rate in config.learning_rates:
        for grid in grid_points(config, model):
          groups[group_key(setting, model, rate, grid)] = dict(
              setting=setting, model=model, learning_rate=rate, grid=grid,
              **fields())
  return groups


def aggregate(config, collected):
  """{group_key(setting, model, learning_rate, grid): group dict} over trials.

  A group holds: setting, model, learning_rate and grid (its key's parts),
  hparams (the --hparams of its first trial), trials (configured), runs (with data), steps_min/max, train_elbo,
  valid_iw_bound, test_iw_bound as (mean, se, n), and the per-trial
  summaries. The groups are in the order of the runs.
  """
  groups = empty_groups(config, lambda: {'summaries': [], 'records': [],
                                         'hparams': None})
  for run, (summary, records) in collected.items():
    group = groups[group_key(run.setting, run.model, run.learning_rate,
                             run.grid)]
    group['hparams'] = group['hparams'] or run.hparams
    if summary is not None:
      group['summaries'].append(summary)
      group['records'].append(records)
  for group in groups.values():
    s = group['summaries']
    group['trials'] = len(config.trials)
    group['runs'] = len(s)
    steps = [x['last_step'] for x in s]
    group['steps_min'] = min(steps) if steps else None
    group['steps_max'] = max(steps) if steps else None
    group['train_elbo'] = mean_se([x['best_train_elbo'] for x in s])
    group['valid_iw_bound'] = mean_se([x['best_valid_iw_bound'] for x in s])
    group['test_iw_bound'] = mean_se([x['test_iw_bound'] for x in s])
  return groups


class Choice(tuple):
  """What `select` chose for a setting and model: (learning rate, reason).

  It is that pair, as before models had grids of their own; `grid` is the
  chosen point of the model's grid (() for a model without one, or when
  nothing was chosen), `rate` and `reason` name the pair's parts.
  """

  def __new__(cls, rate, reason, grid=()):
    choice = super().__new__(cls, (rate, reason))
    choice.grid = grid
    return choice

  @property
  def rate(self):
    return self[0]

  @property
  def reason(self):
    return self[1]

  def key(self, setting, model):
    """The group_key of the chosen group; None if nothing was chosen."""
    if self.rate is None:
      return None
    return group_key(setting, model, self.rate, self.grid)


def select(config, groups):
  """{(setting, model): Choice(learning rate or None, how it was chosen)}.

  The candidates are the model's learning rates, and for a model with its
  own grid every (learning rate, grid point) pair. The config's metric,
  mean over trials, highest wins (on a tie the first in the order of the
  runs: rates as listed, then grid points). If no candidate has that metric
  yet (no validation records), the best training ELBO decides and the reason
  says so.
  """
  chosen = {}
  metric = config.selection['metric']
  for setting in config.settings:
    for model in config.models:
      candidates = [(r, g) for r in config.learning_rates
                    for g in grid_points(config, model)]
      if len(candidates) == 1:
        rate, grid = candidates[0]
        chosen[(setting, model)] = Choice(
            rate, 'only learning rate and grid point' if grid else
            'only learning rate', grid)
        continue
      choice = None
      for name in (metric, 'train_elbo'):
        scored = [(groups[group_key(setting, model, r, g)][name][0], -i)
                  for i, (r, g) in enumerate(candidates)
                  if groups[group_key(setting, model, r, g)][name][0]
                  is not None]
        if scored:
          reason = name if name == metric else (
              'train_elbo (no %s records yet)' % metric)
          rate, grid = candidates[-max(scored)[1]]
          choice = Choice(rate, reason, grid)
          break
      chosen[(setting, model)] = choice or Choice(None, 'no data')
  return chosen


def selected_groups(config, groups, chosen, setting):
  """(model, Choice, group) for each model of the config, in its order,
  that `select` chose a learning rate (and grid point) for in `setting`."""
  for model in config.models:
    choice = chosen[(setting, model)]
    if choice.rate is not None:
      yield model, choice, groups[choice.key(setting, model)]


def load_published(config):
  """(rows {setting: {model: entry}}, sources, checkpoints) of the config.

  Empty when the config names no published table.
  """
  if not config.published:
    return {}, {}, []
  path = config.published['file']
  try:
    with open(path) as f:
      content = json.load(f)
  except FileNotFoundError:
    raise ReportError('published-numbers file %s (named by %s) does not '
                      'exist; fix "published.file" in the config'
                      % (path, config.path)) from None
  except ValueError as e:
    raise ReportError('%s is not valid JSON (%s); fix the file'
                      % (path, e)) from None
  table = config.published['table']
  tables = content.get('tables', {})
  if table not in tables:
    raise ReportError('%s has no table %r (it has: %s); fix '
                      '"published.table" in %s'
                      % (path, table, ', '.join(tables), config.path))
  checkpoints = [c for c in content.get('reference_checkpoints', {})
                 .get('entries', []) if c.get('table') == table]
  return tables[table].get('rows', {}), content.get('sources', {}), checkpoints


def checkpoint_comparison(config, collected, checkpoints):
  """Our numbers at each reference checkpoint whose run is in the config.

  A trial counts if it got to the checkpoint (to 99% of it where the step
  is approximate); its value is that of its record at the largest step not
  past the checkpoint. Returns a list of dicts, one per checkpoint, or for
  a model with its own grid one per grid point (its `grid`).
  """
  rows = []
  for c in checkpoints:
    key = (c['setting'], c['model'], float(c['learning_rate']))
    by_grid = {}  # A model with its own grid: a row per grid point.
    for run, (_, records) in collected.items():
      if (run.setting, run.model, run.learning_rate) == key:
        by_grid.setdefault(run.grid, []).append(records)
    for grid, runs in by_grid.items():
      rows.append(_at_checkpoint(c, grid, runs))
  return rows


def _at_checkpoint(c, grid, runs):
  """The checkpoint_comparison row of checkpoint `c` over `runs` (records)."""
  reach = c['step'] * (0.99 if c.get('approximate_step') else 1)
  train, test, reached = [], [], 0
  for records in runs:
    if not records or max(r['step'] for r in records) < reach:
      continue
    reached += 1
    for kind, values, name in (('train', train, 'elbo'),
                               ('test', test, 'iw_bound')):
      before = [r for r in records
                if r['kind'] == kind and r['step'] <= c['step']]
      if before:
        values.append(before[-1]['values'][name])
  return {'checkpoint': c, 'grid': grid, 'trials': len(runs),
          'reached': reached, 'train_elbo': mean_se(train),
          'test_iw_bound': mean_se(test)}


# ------------------------------------------------------------ curves

def curves(records_list):
  """Mean-over-trials curves {name: (steps, values)} of the train records.

  Names: 'elbo', and 'log_variance' (or 'log_variance/<estimator>' for
  SBNTrackGradVariances). Only steps that every trial recorded are used.
  """
  per_trial = []
  for records in records_list:
    series = {}
    for r in records:
      if r['kind'] != 'train':
        continue
      points = {'elbo': r['values'].get('elbo')}
      lv = r.get('log_variance')
      if isinstance(lv, dict):
        points.update({'log_variance/' + k: v for k, v in lv.items()})
      else:
        points['log_variance'] = lv
      for name, value in points.items():
        if _finite(value):
          series.setdefault(name, {})[r['step']] = value
    per_trial.append(series)
  result = {}
  if not per_trial:
    return result
  for name in per_trial[0]:
    if not all(name in s for s in per_trial):
      continue
    steps = sorted(set.intersection(*(set(s[name]) for s in per_trial)))
    result[name] = (steps, [sum(s[name][k] for s in per_trial) / len(per_trial)
                            for k in steps])
  return result
