"""The report's tables: report.csv (every row) and the text of report.md.

report.csv has a row per setting, model, learning rate and point of the
model's own grid (`model_grids`; column grid_point, empty for a model
without one), at full precision, the selected one of each setting and model
marked. report.md shows the selected rates beside the published numbers,
then every rate, the original code's reference checkpoints and the figures;
a model with a grid is labelled with its grid point there, e.g.
`SBNGumbel (temperature=0.1)`.
"""

import csv
import datetime

from rebar.config import grid_text
from rebar.config import hparam_text
from rebar.config import model_label


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


def _is_chosen(group, choice):
  return (group['learning_rate'], group['grid']) == (choice.rate, choice.grid)


def table_rows(config, groups, chosen, published):
  """Rows of report.csv: every setting x model x rate x grid point (the
  groups, in their order), the selected ones marked."""
  del config  # The groups hold the config's grid, in its order.
  rows = []
  for g in groups.values():
    choice = chosen[(g['setting'], g['model'])]
    selected = _is_chosen(g, choice)
    entry = published.get(g['setting'], {}).get(g['model'])
    pub = entry['value'] if entry else None
    ours = g['train_elbo'][0]
    rows.append({
        'setting': g['setting'], 'model': g['model'],
        'learning_rate': g['learning_rate'],
        'grid_point': grid_text(g['grid']),
        'selected': int(selected),
        'selected_by': choice.reason if selected else '',
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


CSV_COLUMNS = ('setting', 'model', 'learning_rate', 'grid_point', 'selected',
               'selected_by', 'trials_with_data', 'trials_configured', 'steps_min',
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
             checkpoint_rows, figures, work_lines=()):
  """The text of report.md; `work_lines` are the variance-per-work
  section's (rebar.report_work.work_markdown)."""
  notes = []  # Published sources, numbered in order of first use.
  lines = _preamble(config, working_dir)
  lines += _selected_table(config, groups, chosen, published, notes)
  for i, source in enumerate(notes):
    lines.append('[%d] %s' % (i + 1, sources.get(source, source)))
  if notes:
    lines.append('')
  if not published:
    lines += ['No published numbers are recorded for this config.', '']
  lines += _every_rate_table(groups, chosen)
  if checkpoint_rows:
    lines += _checkpoint_table(checkpoint_rows, sources)
  lines += list(work_lines)
  if figures:
    lines += ['## Figures', '',
              'Training ELBO, gradient log-variance and, where the estimator '
              'has a cost, log(variance × ms) against steps, at the selected '
              'learning rate (mean over trials).', '']
    for setting, name in figures:
      lines += ['![%s](%s)' % (setting, name), '']
  return '\n'.join(lines)


def _preamble(config, working_dir):
  """The title, provenance and how to read the tables."""
  lines = ['# %s' % config.name, '']
  if config.raw.get('description'):
    lines += [config.raw['description'], '']
  lines += ['Config `%s`, runs in `%s`, written %s. max_steps %s.'
            % (config.path, working_dir,
               datetime.datetime.now().astimezone().isoformat(
                   timespec='seconds'), '{:,}'.format(config.max_steps)), '',
            'Learning rate selected per setting and model: %s'
            % config.selection.get('description',
                                   config.selection['metric']), '']
  if config.model_grids:
    lines += ['The models with a grid of their own (%s) are selected over '
              'every pair of learning rate and grid point, by the same rule; '
              'their rows name the grid point after the model, e.g. '
              '`SBNGumbel (temperature=0.1)`.' % _grids_summary(config), '']
  lines += ['Values are the mean ± standard error over trials (no ± with one '
            'trial). Best train ELBO: the highest epoch-mean training ELBO. '
            'Valid and test: the 100-sample bound at each trial\'s best '
            'validation evaluation. Trials: with data / configured. Steps: '
            'the last recorded step (range over trials).', '']
  return lines


def _grids_summary(config):
  """'SBNGumbel: temperature 0.1, 0.5', each model's grid, for the preamble."""
  return '; '.join(
      '%s: %s' % (model, ' x '.join(
          '%s %s' % (name, ', '.join(hparam_text(v) for v in values))
          for name, values in grid.items()))
      for model, grid in config.model_grids.items())


def _footnote(notes, entry):
  """The mark of a published entry's source, numbered on first use."""
  if entry['source'] not in notes:
    notes.append(entry['source'])
  return '[%d]' % (notes.index(entry['source']) + 1)


def _selected_table(config, groups, chosen, published, notes):
  """The selected rate of each setting and model, beside the published."""
  lines = ['## Selected learning rate', '',
           '| setting | model | lr | trials | steps | best train ELBO | '
           'published | ours − published | valid bound | test bound |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for setting in config.settings:
    for model in config.models:
      choice = chosen[(setting, model)]
      rate = choice.rate
      entry = published.get(setting, {}).get(model)
      g = groups[choice.key(setting, model)] if rate is not None else None
      pub = diff = '—'
      if entry:
        pub = '%g%s %s' % (entry['value'],
                           ' (%s)' % entry['label'] if entry.get('label')
                           else '', _footnote(notes, entry))
        if g and g['train_elbo'][0] is not None:
          diff = '%+.2f' % (g['train_elbo'][0] - entry['value'])
      if g is None:
        lines.append('| %s | %s | — | 0/%d | — | — | %s | — | — | — |'
                     % (setting, model, len(config.trials), pub))
        continue
      lines.append('| %s | %s | %s | %d/%d | %s | %s | %s | %s | %s | %s |' % (
          setting, model_label(model, choice.grid), _rate(rate), g['runs'],
          g['trials'], _steps(g),
          _fmt(g['train_elbo']), pub, diff, _fmt(g['valid_iw_bound']),
          _fmt(g['test_iw_bound'])))
  lines.append('')
  return lines


def _every_rate_table(groups, chosen):
  lines = ['## Every learning rate', '',
           '| setting | model | lr | selected by | trials | steps | '
           'best train ELBO | valid bound | test bound |',
           '|---|---|---|---|---|---|---|---|---|']
  for g in groups.values():
    choice = chosen[(g['setting'], g['model'])]
    lines.append('| %s | %s | %s | %s | %d/%d | %s | %s | %s | %s |' % (
        g['setting'], model_label(g['model'], g['grid']),
        _rate(g['learning_rate']),
        choice.reason if _is_chosen(g, choice) else '', g['runs'], g['trials'], _steps(g), _fmt(g['train_elbo']),
        _fmt(g['valid_iw_bound']), _fmt(g['test_iw_bound'])))
  lines.append('')
  return lines


def _checkpoint_table(checkpoint_rows, sources):
  """Our numbers at the original code's reference checkpoints."""
  lines = ['## Reference checkpoints of the original code', '',
           'Our records at the largest step not past the checkpoint, over '
           'the trials that got there.', '',
           '| setting | model | lr | step | original train ELBO | ours | '
           'original test bound | ours | trials there |',
           '|---|---|---|---|---|---|---|---|---|']
  for row in checkpoint_rows:
    c = row['checkpoint']
    lines.append('| %s | %s | %g | %s%s | %g | %s | %s | %s | %d/%d |' % (
        c['setting'], model_label(c['model'], row.get('grid', ())),
        c['learning_rate'],
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
  return lines
