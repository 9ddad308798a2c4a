"""Tables (and figures) of a config's runs, beside the published numbers.

  python -m rebar.report configs/generative_mnist.json --working_dir=/data/runs \
      --out=/data/report

Reads the run directories the config names (`working_dir/<hparams name>`,
their `metrics.jsonl`) and writes `report.md`, `report.csv` and, when
matplotlib is installed (`pip install .[plots]`), one PNG per setting.

Per run (one trial):
  best training ELBO   the highest epoch-mean training ELBO over its train
                       records (the paper's measure);
  best validation      the validation record with the highest 100-sample
                       bound, and the test record at the same step.
Per setting, model and learning rate: mean and standard error (sample
standard deviation / sqrt(n)) of those over the trials that have them.
Per setting and model, one learning rate is selected by the config's rule
(`selection.metric`: the highest mean over trials of each trial's best
`valid_iw_bound`, or of its best `train_elbo`).

Runs still going are read as they stand: the table says how many trials
have data and how far they got. This module reads only JSON: it does not
import TensorFlow, so it runs anywhere the files are.
"""

import argparse
import csv
import datetime
import json
import math
import os
import sys

from rebar import sweep

PLOTS_HINT = 'figures skipped: `pip install .[plots]` (matplotlib) gives them'


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
  for run in sweep.expand_runs(config):
    records = read_metrics(os.path.join(run.run_dir(working_dir),
                                        'metrics.jsonl'))
    result[run] = (summarize_run(records), records)
  return result


def aggregate(config, collected):
  """{(setting, model, learning_rate): group dict} over trials.

  A group holds: trials (configured), runs (with data), steps_min/max,
  train_elbo, valid_iw_bound, test_iw_bound as (mean, se, n), and the
  per-trial summaries.
  """
  groups = {}
  for setting in config.settings:
    for model in config.models:
      for rate in config.learning_rates:
        groups[(setting, model, rate)] = {'summaries': [], 'records': []}
  for run, (summary, records) in collected.items():
    group = groups[(run.setting, run.model, run.learning_rate)]
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


def select(config, groups):
  """{(setting, model): (learning rate or None, how it was chosen)}.

  The config's metric, mean over trials, highest wins (the first listed rate
  on a tie). If no rate has that metric yet (no validation records), the
  best training ELBO decides and the reason says so.
  """
  chosen = {}
  metric = config.selection['metric']
  for setting in config.settings:
    for model in config.models:
      rates = config.learning_rates
      if len(rates) == 1:
        chosen[(setting, model)] = (rates[0], 'only learning rate')
        continue
      choice = None
      for name in (metric, 'train_elbo'):
        scored = [(groups[(setting, model, r)][name][0], -i, r)
                  for i, r in enumerate(rates)
                  if groups[(setting, model, r)][name][0] is not None]
        if scored:
          reason = name if name == metric else (
              'train_elbo (no %s records yet)' % metric)
          choice = (max(scored)[2], reason)
          break
      chosen[(setting, model)] = choice or (None, 'no data')
  return chosen


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
  past the checkpoint. Returns a list of dicts.
  """
  rows = []
  for c in checkpoints:
    key = (c['setting'], c['model'], float(c['learning_rate']))
    runs = [(run, records) for run, (_, records) in collected.items()
            if (run.setting, run.model, run.learning_rate) == key]
    if not runs:
      continue
    reach = c['step'] * (0.99 if c.get('approximate_step') else 1)
    train, test, reached = [], [], 0
    for _, records in runs:
      if not records or max(r['step'] for r in records) < reach:
        continue
      reached += 1
      for kind, values, name in (('train', train, 'elbo'),
                                 ('test', test, 'iw_bound')):
        before = [r for r in records
                  if r['kind'] == kind and r['step'] <= c['step']]
        if before:
          values.append(before[-1]['values'][name])
    rows.append({'checkpoint': c, 'trials': len(runs), 'reached': reached,
                 'train_elbo': mean_se(train), 'test_iw_bound': mean_se(test)})
  return rows


# ------------------------------------------------------------ output

def _fmt(stat, digits=2):
  mean, se, _ = stat
  if mean is None:
    return '—'
  if se is None:
    return '%.*f' % (digits, mean)
  return '%.*f ± %.*f' % (digits, mean, digits, se)


def _steps(group):
  if group['steps_min'] is None:
    return '—'
  if group['steps_min'] == group['steps_max']:
    return '{:,}'.format(group['steps_min'])
  return '{:,}–{:,}'.format(group['steps_min'], group['steps_max'])


def _rate(rate):
  return '—' if rate is None else '%g' % rate


def table_rows(config, groups, chosen, published):
  """Rows of report.csv: every setting x model x rate, selected ones marked."""
  rows = []
  for setting in config.settings:
    for model in config.models:
      rate_chosen, reason = chosen[(setting, model)]
      entry = published.get(setting, {}).get(model)
      for rate in config.learning_rates:
        g = groups[(setting, model, rate)]
        pub = entry['value'] if entry else None
        ours = g['train_elbo'][0]
        rows.append({
            'setting': setting, 'model': model, 'learning_rate': rate,
            'selected': int(rate == rate_chosen),
            'selected_by': reason if rate == rate_chosen else '',
            'trials_with_data': g['runs'], 'trials_configured': g['trials'],
            'steps_min': g['steps_min'], 'steps_max': g['steps_max'],
            'train_elbo_mean': ours, 'train_elbo_se': g['train_elbo'][1],
            'valid_iw_bound_mean': g['valid_iw_bound'][0],
            'valid_iw_bound_se': g['valid_iw_bound'][1],
            'valid_trials': g['valid_iw_bound'][2],
            'test_iw_bound_mean': g['test_iw_bound'][0],
            'test_iw_bound_se': g['test_iw_bound'][1],
            'test_trials': g['test_iw_bound'][2],
            'published_train_elbo': pub,
            'published_label': (entry or {}).get('label', ''),
            'published_source': (entry or {}).get('source', ''),
            'train_elbo_minus_published': (
                ours - pub if ours is not None and pub is not None else None),
        })
  return rows


CSV_COLUMNS = ('setting', 'model', 'learning_rate', 'selected', 'selected_by',
               'trials_with_data', 'trials_configured', 'steps_min',
               'steps_max', 'train_elbo_mean', 'train_elbo_se',
               'valid_iw_bound_mean', 'valid_iw_bound_se', 'valid_trials',
               'test_iw_bound_mean', 'test_iw_bound_se', 'test_trials',
               'published_train_elbo', 'published_label', 'published_source',
               'train_elbo_minus_published')


def write_csv(path, rows):
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, CSV_COLUMNS)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: '' if v is None else v for k, v in row.items()})


def markdown(config, working_dir, groups, chosen, published, sources,
             checkpoint_rows, figures):
  """The text of report.md."""
  lines = ['# %s' % config.name, '']
  if config.raw.get('description'):
    lines += [config.raw['description'], '']
  lines += ['Config `%s`, runs in `%s`, written %s. max_steps %s.'
            % (config.path, working_dir,
               datetime.datetime.now().astimezone().isoformat(
                   timespec='seconds'), '{:,}'.format(config.max_steps)), '',
            'Learning rate selected per setting and model: %s'
            % config.selection.get('description',
                                   config.selection['metric']), '',
            'Values are the mean ± standard error over trials (no ± with one '
            'trial). Best train ELBO: the highest epoch-mean training ELBO. '
            'Valid and test: the 100-sample bound at each trial\'s best '
            'validation evaluation. Trials: with data / configured. Steps: '
            'the last recorded step (range over trials).', '']

  # Footnotes: one number per published source, in order of first use.
  notes = []

  def footnote(entry):
    if entry['source'] not in notes:
      notes.append(entry['source'])
    return '[%d]' % (notes.index(entry['source']) + 1)

  lines += ['## Selected learning rate', '',
            '| setting | model | lr | trials | steps | best train ELBO | '
            'published | ours − published | valid bound | test bound |',
            '|---|---|---|---|---|---|---|---|---|---|']
  for setting in config.settings:
    for model in config.models:
      rate, _ = chosen[(setting, model)]
      entry = published.get(setting, {}).get(model)
      g = groups[(setting, model, rate)] if rate is not None else None
      pub = diff = '—'
      if entry:
        pub = '%g%s %s' % (entry['value'],
                           ' (%s)' % entry['label'] if entry.get('label')
                           else '', footnote(entry))
        if g and g['train_elbo'][0] is not None:
          diff = '%+.2f' % (g['train_elbo'][0] - entry['value'])
      if g is None:
        lines.append('| %s | %s | — | 0/%d | — | — | %s | — | — | — |'
                     % (setting, model, len(config.trials), pub))
        continue
      lines.append('| %s | %s | %s | %d/%d | %s | %s | %s | %s | %s | %s |' % (
          setting, model, _rate(rate), g['runs'], g['trials'], _steps(g),
          _fmt(g['train_elbo']), pub, diff, _fmt(g['valid_iw_bound']),
          _fmt(g['test_iw_bound'])))
  lines.append('')
  for i, source in enumerate(notes):
    lines.append('[%d] %s' % (i + 1, sources.get(source, source)))
  if notes:
    lines.append('')
  if not published:
    lines += ['No published numbers are recorded for this config.', '']

  lines += ['## Every learning rate', '',
            '| setting | model | lr | selected by | trials | steps | '
            'best train ELBO | valid bound | test bound |',
            '|---|---|---|---|---|---|---|---|---|']
  for (setting, model, rate), g in groups.items():
    chosen_rate, reason = chosen[(setting, model)]
    lines.append('| %s | %s | %s | %s | %d/%d | %s | %s | %s | %s |' % (
        setting, model, _rate(rate), reason if rate == chosen_rate else '',
        g['runs'], g['trials'], _steps(g), _fmt(g['train_elbo']),
        _fmt(g['valid_iw_bound']), _fmt(g['test_iw_bound'])))
  lines.append('')

  if checkpoint_rows:
    lines += ['## Reference checkpoints of the original code', '',
              'Our records at the largest step not past the checkpoint, over '
              'the trials that got there.', '',
              '| setting | model | lr | step | original train ELBO | ours | '
              'original test bound | ours | trials there |',
              '|---|---|---|---|---|---|---|---|---|']
    for row in checkpoint_rows:
      c = row['checkpoint']
      lines.append('| %s | %s | %g | %s%s | %g | %s | %s | %s | %d/%d |' % (
          c['setting'], c['model'], c['learning_rate'],
          'about ' if c.get('approximate_step') else '',
          '{:,}'.format(c['step']), c['train_elbo'], _fmt(row['train_elbo']),
          '%g' % c['test_iw_bound'] if 'test_iw_bound' in c else '—',
          _fmt(row['test_iw_bound']) if 'test_iw_bound' in c else '—',
          row['reached'], row['trials']))
    sources_used = sorted({r['checkpoint']['source'] for r in checkpoint_rows})
    lines.append('')
    for source in sources_used:
      lines.append('Source: %s' % sources.get(source, source))
    lines.append('')

  if figures:
    lines += ['## Figures', '',
              'Training ELBO and gradient log-variance against steps, at the '
              'selected learning rate (mean over trials).', '']
    for setting, name in figures:
      lines += ['![%s](%s)' % (setting, name), '']
  return '\n'.join(lines)


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


def write_figures(config, groups, chosen, out_dir):
  """One PNG per setting; returns [(setting, file name)], or None without
  matplotlib."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  written = []
  for setting in config.settings:
    fig, (ax_elbo, ax_var) = plt.subplots(1, 2, figsize=(12, 4.5))
    lowest_late = []
    for model in config.models:
      rate, _ = chosen[(setting, model)]
      if rate is None:
        continue
      lines = curves(groups[(setting, model, rate)]['records'])
      for name, (steps, values) in sorted(lines.items()):
        label = '%s, lr %g' % (model, rate) if '/' not in name else (
            '%s: %s' % (model, name.split('/', 1)[1]))
        ax = ax_elbo if name == 'elbo' else ax_var
        ax.plot(steps, values, label=label)
        if name == 'elbo' and len(values) > 4:
          # The first epochs are far below the rest; keep them out of view.
          lowest_late.append(min(values[len(values) // 10:]))
    if lowest_late:
      bottom = min(lowest_late)
      top = ax_elbo.get_ylim()[1]
      ax_elbo.set_ylim(bottom - 0.05 * (top - bottom), top)
    ax_elbo.set(title='%s: training ELBO' % setting, xlabel='step',
                ylabel='epoch-mean ELBO (nats)')
    ax_var.set(title='%s: gradient log-variance' % setting, xlabel='step',
               ylabel='log variance')
    for ax in (ax_elbo, ax_var):
      ax.grid(alpha=0.3)
      if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize='small')
    fig.tight_layout()
    name = 'fig_%s.png' % setting
    fig.savefig(os.path.join(out_dir, name), dpi=100)
    plt.close(fig)
    written.append((setting, name))
  return written


def make_report(config, working_dir, out_dir, figures=True):
  """Writes report.md, report.csv (and figures) to `out_dir`.

  Returns (rows of report.csv, list of figure files or None without
  matplotlib).
  """
  working_dir = os.path.abspath(working_dir)
  if not os.path.isdir(working_dir):
    raise ReportError('working dir %s does not exist; pass the --working_dir '
                      'the sweep used' % working_dir)
  published, sources, checkpoints = load_published(config)
  collected = collect(config, working_dir)
  groups = aggregate(config, collected)
  chosen = select(config, groups)
  rows = table_rows(config, groups, chosen, published)
  try:
    os.makedirs(out_dir, exist_ok=True)
    written = write_figures(config, groups, chosen, out_dir) if figures else []
    write_csv(os.path.join(out_dir, 'report.csv'), rows)
    with open(os.path.join(out_dir, 'report.md'), 'w') as f:
      f.write(markdown(config, working_dir, groups, chosen, published,
                       sources, checkpoint_comparison(config, collected,
                                                      checkpoints),
                       written or []))
  except OSError as e:
    raise ReportError('cannot write the report to %s (%s); pass a writable '
                      '--out' % (out_dir, e.strerror or e)) from None
  return rows, written


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m rebar.report',
      description='Writes report.md, report.csv and figures for the runs of '
                  'a config.')
  parser.add_argument('config', help='the config JSON the sweep ran')
  parser.add_argument('--working_dir', required=True,
                      help='the sweep\'s working dir')
  parser.add_argument('--out', default=None,
                      help='output directory (default: WORKING_DIR/report)')
  parser.add_argument('--no_figures', action='store_true',
                      help='skip the PNG figures')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  out_dir = args.out or os.path.join(args.working_dir, 'report')
  try:
    config = sweep.load_config(args.config)
    rows, written = make_report(config, args.working_dir, out_dir,
                                figures=not args.no_figures)
  except (sweep.ConfigError, ReportError) as e:
    sys.stderr.write('rebar.report: error: %s\n' % e)
    return 2
  with_data = sum(1 for r in rows if r['trials_with_data'])
  print('%d of %d setting/model/rate groups have data; wrote %s and %s'
        % (with_data, len(rows), os.path.join(out_dir, 'report.md'),
           os.path.join(out_dir, 'report.csv')))
  if written is None:
    print(PLOTS_HINT)
  elif written:
    print('figures: %s' % ', '.join(os.path.join(out_dir, n)
                                    for _, n in written))
  return 0


if __name__ == '__main__':
  sys.exit(main())
