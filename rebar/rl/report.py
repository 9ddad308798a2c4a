"""Episodes to solve, and the curves, of a policy-gradient sweep's runs.

  python -m rebar.rl.report configs/rl_cartpole.json --working_dir=W --out=DIR

Reads the run directories of a config of program "rl" (those `python -m
rebar.sweep CONFIG --working_dir=W` made, or hand-started `python -m
rebar.rl` runs of the same settings) and writes `<name>.md`, `<name>.csv`
and, when matplotlib is installed (`pip install .[plots]`), one
`<name>_<setting>.png` per setting to --out.

Per run (one trial): the episode count at which the mean return of its last
solved_window episodes first reached the threshold (its records'
`solved_at`), or unsolved; the episodes it ran, its wall time and its
milliseconds per environment step, acting and updating.
Per setting, method, learning rate (and grid point), over its trials: runs
with data, solved runs, the mean ± standard error and the median of the
episodes to solve over the solved runs only; the unsolved runs are counted
beside them with the episodes they ran, never averaged in as if solved. Wall
seconds per run are the mean over runs, per episode the runs' total over
their total episodes; ms per step are means over records weighted by their
steps.
Only with more than one learning rate or grid point, one is selected per
setting and method: the lowest mean over trials of episodes to solve, a run
not solved counted as the config's max_steps (its budget).

Runs missing or unfinished are listed in the markdown, not an error. This
module reads only JSON: it does not import TensorFlow.
"""

import csv
import datetime
import math
import os
import pathlib
import re
import statistics
import sys

from absl import flags

from rebar import cli
from rebar import sweep_runner
from rebar.config import ConfigError
from rebar.config import expand_runs
from rebar.config import grid_points
from rebar.config import grid_text
from rebar.config import load_config
from rebar.config import model_label
from rebar.config import require_program
from rebar.report import print_figures
from rebar.report_figures import pyplot
from rebar.report_numbers import Choice
from rebar.report_numbers import empty_groups
from rebar.report_numbers import group_key
from rebar.report_numbers import load_published
from rebar.report_numbers import mean_se
from rebar.report_numbers import read_metrics
from rebar.report_numbers import ReportError

NAME = 'rebar.rl.report'
REPO = pathlib.Path(__file__).resolve().parents[2]

# The CSV's columns, in order (every group, numbers at full precision).
CSV_COLUMNS = (
    'setting', 'method', 'learning_rate', 'grid_point', 'selected',
    'selection_score', 'trials', 'runs_with_data', 'finished', 'solved',
    'unsolved', 'unfinished', 'missing', 'episodes_to_solve_mean',
    'episodes_to_solve_se', 'episodes_to_solve_median', 'per_trial',
    'unsolved_episodes_max', 'published_mean', 'published_se',
    'published_source', 'wall_s_per_run', 'wall_s_per_episode',
    'ms_per_step_acting', 'ms_per_step_update', 'env_steps_mean')


# ------------------------------------------------------------ one run

def solved_at(records):
  """The `solved_at` of a run's records (the last that has one), or None."""
  for record in reversed(records):
    if record.get('solved_at') is not None:
      return int(record['solved_at'])
  return None


def summarize_run(run_dir):
  """One trial's numbers from its run directory.

  Returns a dict: state ('missing': no records; 'unfinished': records but
  no finished.json, i.e. running or stopped; 'finished'), episodes (the
  last recorded episode count), solved_at (or None), wall_s, env_steps, the
  threshold and window of its solved criterion, the acting and update
  milliseconds summed over its steps, steps, and its curve: [(episodes,
  mean_return, log_variance or None)] per record.
  """
  records = [r for r in read_metrics(os.path.join(run_dir, 'metrics.jsonl'))
             if r['kind'] == 'train']
  if not records:
    return {'state': 'missing', 'episodes': 0, 'solved_at': None}
  last = records[-1]
  steps = acting = update = 0
  for r in records:
    n = sum(r.get('lengths') or [])
    steps += n
    acting += (r.get('ms_per_step_acting') or 0.0) * n
    update += (r.get('ms_per_step_update') or 0.0) * n
  finished = sweep_runner.finished_step(run_dir) is not None
  return {
      'state': 'finished' if finished else 'unfinished',
      'episodes': int(last['step']), 'solved_at': solved_at(records),
      'wall_s': float(last.get('wall_s') or 0.0),
      'env_steps': last.get('env_steps'),
      'solved_return': last.get('solved_return'),
      'solved_window': last.get('solved_window'),
      'acting_ms': acting, 'update_ms': update, 'steps': steps,
      'curve': [(int(r['step']), r['values'].get('mean_return'),
                 r.get('log_variance')) for r in records]}


# ------------------------------------------------------------ a config

def collect(config, working_dir):
  """{run: summarize_run of its directory} for every run of the config."""
  return {run: summarize_run(run.run_dir(working_dir))
          for run in expand_runs(config)}


def aggregate(config, collected):
  """{group_key(setting, method, rate, grid): group} over the trials.

  A group holds setting, model (the method), learning_rate, grid, trials
  (configured), runs (trial, summary) in trial order, and: with_data,
  finished, solved (the solved runs' solved_at), unsolved (the episodes of
  finished unsolved runs), unfinished ((trial, episodes) of unfinished
  unsolved runs), missing (trials), episodes_to_solve (mean, se, n over
  the solved runs), median, score (selection: mean over runs with data,
  an unsolved run counted as config.max_steps), wall_s_per_run,
  wall_s_per_episode, ms_per_step_acting, ms_per_step_update,
  env_steps_mean; None where no run has the number.
  """
  groups = empty_groups(config, lambda: {'trials': len(config.trials),
                                         'runs': []})
  for run, summary in collected.items():
    groups[group_key(run.setting, run.model, run.learning_rate,
                     run.grid)]['runs'].append((run.trial, summary))
  for group in groups.values():
    group['runs'].sort(key=lambda pair: config.trials.index(pair[0]))
    _numbers(group, config.max_steps)
  return groups


def _numbers(group, budget):
  """Fills in a group's numbers from its runs (aggregate's docstring)."""
  present = [s for _, s in group['runs'] if s['state'] != 'missing']
  solved = [s['solved_at'] for s in present if s['solved_at'] is not None]
  group['with_data'] = len(present)
  group['finished'] = sum(s['state'] == 'finished' for s in present)
  group['solved'] = solved
  group['unsolved'] = [s['episodes'] for s in present
                       if s['solved_at'] is None and s['state'] == 'finished']
  group['unfinished'] = [(t, s['episodes']) for t, s in group['runs']
                         if s['state'] == 'unfinished'
                         and s['solved_at'] is None]
  group['missing'] = [t for t, s in group['runs'] if s['state'] == 'missing']
  group['episodes_to_solve'] = mean_se(solved)
  group['median'] = statistics.median(solved) if solved else None
  group['score'] = (sum(s['solved_at'] if s['solved_at'] is not None
                        else budget for s in present) / len(present)
                    if present else None)
  group['wall_s_per_run'] = mean_se([s['wall_s'] for s in present])[0]
  episodes = sum(s['episodes'] for s in present)
  group['wall_s_per_episode'] = (sum(s['wall_s'] for s in present) / episodes
                                 if episodes else None)
  steps = sum(s['steps'] for s in present)
  for name in ('acting', 'update'):
    group['ms_per_step_' + name] = (
        sum(s[name + '_ms'] for s in present) / steps if steps else None)
  group['env_steps_mean'] = mean_se([s['env_steps'] for s in present])[0]


def candidates(config, method):
  """The (learning rate, grid point) pairs a method is selected over."""
  return [(r, g) for r in config.learning_rates
          for g in grid_points(config, method)]


def select(config, groups):
  """{(setting, method): Choice(rate or None, reason, grid)}: the lowest
  score (mean episodes to solve, an unsolved run counted as its budget); on
  a tie the first in the order of the runs. One candidate is chosen as it
  is."""
  chosen = {}
  for setting in config.settings:
    for method in config.models:
      pairs = candidates(config, method)
      if len(pairs) == 1:
        rate, grid = pairs[0]
        chosen[(setting, method)] = Choice(
            rate, 'only learning rate and grid point' if grid else
            'only learning rate', grid)
        continue
      scored = [(groups[group_key(setting, method, r, g)]['score'], i)
                for i, (r, g) in enumerate(pairs)
                if groups[group_key(setting, method, r, g)]['score']
                is not None]
      if not scored:
        chosen[(setting, method)] = Choice(None, 'no data')
        continue
      rate, grid = pairs[min(scored)[1]]
      chosen[(setting, method)] = Choice(
          rate, 'lowest mean episodes to solve (unsolved counted as %s)'
          % '{:,}'.format(config.max_steps), grid)
  return chosen


def _is_chosen(group, choice):
  return (group['learning_rate'], group['grid']) == (choice.rate, choice.grid)


# ------------------------------------------------------------ tables

def _count(x):
  """An episode count or mean of counts as the table shows it."""
  if x is None:
    return '—'
  return '{:,.0f}'.format(x) if abs(x) >= 100 else '%.1f' % x


def _seconds(x, digits=3):
  return '—' if x is None else '%.*g' % (digits, x)


def _stat(stat):
  mean, se, _ = stat
  if mean is None:
    return '—'
  return _count(mean) if se is None else '%s ± %s' % (_count(mean),
                                                      _count(se))


def _per_trial(group):
  """'1=472;2=unsolved;3=running;4=missing': each trial's outcome."""
  parts = []
  for trial, s in group['runs']:
    if s['solved_at'] is not None:
      outcome = str(s['solved_at'])
    else:
      outcome = {'missing': 'missing', 'unfinished': 'running',
                 'finished': 'unsolved'}[s['state']]
    parts.append('%d=%s' % (trial, outcome))
  return ';'.join(parts)


def table_rows(groups, chosen, published):
  """The CSV's rows: every group, in run order, the selected ones marked."""
  rows = []
  for g in groups.values():
    entry = published.get(g['setting'], {}).get(g['model']) or {}
    mean, se, _ = g['episodes_to_solve']
    rows.append({
        'setting': g['setting'], 'method': g['model'],
        'learning_rate': g['learning_rate'], 'grid_point': grid_text(g['grid']),
        'selected': int(_is_chosen(g, chosen[(g['setting'], g['model'])])),
        'selection_score': g['score'], 'trials': g['trials'],
        'runs_with_data': g['with_data'], 'finished': g['finished'],
        'solved': len(g['solved']), 'unsolved': len(g['unsolved']),
        'unfinished': len(g['unfinished']), 'missing': len(g['missing']),
        'episodes_to_solve_mean': mean, 'episodes_to_solve_se': se,
        'episodes_to_solve_median': g['median'], 'per_trial': _per_trial(g),
        'unsolved_episodes_max': max(g['unsolved']) if g['unsolved'] else None,
        'published_mean': entry.get('value'), 'published_se': entry.get('se'),
        'published_source': entry.get('source', ''),
        'wall_s_per_run': g['wall_s_per_run'],
        'wall_s_per_episode': g['wall_s_per_episode'],
        'ms_per_step_acting': g['ms_per_step_acting'],
        'ms_per_step_update': g['ms_per_step_update'],
        'env_steps_mean': g['env_steps_mean']})
  return rows


def write_csv(path, rows):
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: '' if v is None else v for k, v in row.items()})


def display_path(path):
  """A config's path as its commands show it: relative to the repository
  where it lies inside it (no machine's absolute path in a kept report)."""
  path = pathlib.Path(path)
  try:
    return str(path.resolve().relative_to(REPO))
  except ValueError:
    return str(path)


def _unsolved_text(group):
  """'1 after 3,000': the finished unsolved runs and the episodes they ran;
  ', 1 running' for those still short of both."""
  episodes = group['unsolved']
  text = '0'
  if episodes:
    low, high = min(episodes), max(episodes)
    text = '%d after %s' % (len(episodes), '{:,}'.format(low) if low == high
                            else '{:,}–{:,}'.format(low, high))
  if group['unfinished']:
    text += ', %d running' % len(group['unfinished'])
  return text


def _published_text(entry, notes):
  if not entry:
    return '—'
  if entry['source'] not in notes:
    notes.append(entry['source'])
  value = '{:,}'.format(entry['value'])
  if entry.get('se') is not None:
    value += ' ± {:,}'.format(entry['se'])
  return '%s [%d]' % (value, notes.index(entry['source']) + 1)


def _criteria(config, groups):
  """The solved criterion of each setting, as its runs recorded it."""
  lines = []
  for setting in config.settings:
    seen = sorted({(s['solved_window'], s['solved_return'])
                   for g in groups.values() if g['setting'] == setting
                   for _, s in g['runs'] if s['state'] != 'missing'
                   and None not in (s['solved_window'], s['solved_return'])})
    if seen:
      text = 'solved when the mean return of the last %s' % '; or '.join(
          '%d episodes reaches %g' % pair for pair in seen)
    else:
      text = 'no run has records yet'
    lines.append('- %s: %s.' % (setting, text))
  return lines


def markdown(config, groups, chosen, published, sources, figures):
  """The text of <name>.md."""
  path = display_path(config.path)
  lines = ['# %s' % config.name, '']
  if config.raw.get('description'):
    lines += [config.raw['description'], '']
  lines += ['Config `%s`, written %s. Budget: %s episodes per run '
            '(max_steps).' % (
                path, datetime.datetime.now().astimezone().isoformat(
                    timespec='seconds'), '{:,}'.format(config.max_steps)), '']
  lines += _criteria(config, groups) + ['']
  lines += ['Made by (W: the sweep\'s working dir, OUT: this report\'s):', '',
            '```',
            'python -m rebar.sweep %s --working_dir=W --workers=2' % path,
            'python -m rebar.rl.report %s --working_dir=W --out=OUT' % path,
            '```', '']
  lines += ['## Episodes to solve', '',
            'Per group, over its trials. Runs: with data / configured. '
            'Episodes to solve: mean ± standard error (no ± with one solved '
            'run) and median over the solved runs only; unsolved: finished '
            'runs that never reached the threshold, with the episodes they '
            'ran (not averaged in). Wall s/run: mean over runs; s/episode: '
            'their total wall time over their total episodes; ms/step: per '
            'environment step, acting and updating, weighted by steps.', '']
  several = any(len(candidates(config, m)) > 1 for m in config.models)
  if several:
    lines += ['Rows: each method at its selected learning rate (and grid '
              'point); the selection section has every one, the CSV every '
              'number.', '']
  lines += ['| setting | method | lr | runs | solved | episodes to solve | '
            'median | unsolved | paper | wall s/run | s/episode | '
            'ms/step acting | ms/step update |',
            '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  notes = []
  for g in groups.values():
    choice = chosen[(g['setting'], g['model'])]
    if several and not _is_chosen(g, choice):
      continue
    entry = published.get(g['setting'], {}).get(g['model'])
    lines.append('| %s | %s | %g | %d/%d | %d | %s | %s | %s | %s | %s | %s '
                 '| %s | %s |' % (
                     g['setting'], model_label(g['model'], g['grid']),
                     g['learning_rate'], g['with_data'], g['trials'],
                     len(g['solved']), _stat(g['episodes_to_solve']),
                     _count(g['median']), _unsolved_text(g),
                     _published_text(entry, notes),
                     _seconds(g['wall_s_per_run']),
                     _seconds(g['wall_s_per_episode']),
                     _seconds(g['ms_per_step_acting']),
                     _seconds(g['ms_per_step_update'])))
  lines.append('')
  for i, source in enumerate(notes):
    lines += ['[%d] %s' % (i + 1, sources.get(source, source)), '']
  if not published:
    lines += ['No published numbers are recorded for this config.', '']
  if several:
    lines += _selection_lines(config, groups, chosen)
  lines += _not_finished_lines(groups)
  if figures:
    lines += ['## Figures', '',
              'Per setting, each method at its selected learning rate, one '
              'thin line per trial: the mean return of the last '
              'solved_window episodes (the threshold dashed) and the log '
              'variance of the policy gradient over each record\'s updates, '
              'against episodes.', '']
    for setting, name in figures:
      lines += ['![%s](%s)' % (setting, name), '']
  return '\n'.join(lines)


def _selection_lines(config, groups, chosen):
  lines = ['## Selection', '',
           'Score: mean over runs with data of episodes to solve, a run not '
           'solved counted as %s (the budget); lowest wins, a tie to the '
           'first listed.' % '{:,}'.format(config.max_steps), '',
           '| setting | method | lr | score | solved | selected |',
           '|---|---|---|---|---|---|']
  for g in groups.values():
    choice = chosen[(g['setting'], g['model'])]
    lines.append('| %s | %s | %g | %s | %d/%d | %s |' % (
        g['setting'], model_label(g['model'], g['grid']), g['learning_rate'],
        _count(g['score']), len(g['solved']), g['with_data'],
        'yes' if _is_chosen(g, choice) else ''))
  return lines + ['']


def _not_finished_lines(groups):
  """The runs missing or unfinished, one line each."""
  lines = []
  for g in groups.values():
    for trial, s in g['runs']:
      if s['state'] == 'finished':
        continue
      state = ('missing' if s['state'] == 'missing' else
               'running at episode {:,} (or stopped; no finished.json)'
               .format(s['episodes']))
      lines.append('- %s %s lr %g trial %d: %s' % (
          g['setting'], model_label(g['model'], g['grid']),
          g['learning_rate'], trial, state))
  if not lines:
    return []
  return ['## Runs not finished', ''] + lines + ['']


# ------------------------------------------------------------ figures

def safe_name(text):
  """`text` with what a file name should not hold replaced by '_'."""
  return re.sub(r'[^A-Za-z0-9_.-]', '_', text)


def write_figures(config, groups, chosen, out_dir):
  """`<name>_<setting>.png` per setting; [(setting, file name)], or None
  without matplotlib."""
  plt = pyplot()
  if plt is None:
    return None
  written = []
  for setting in config.settings:
    fig, (ax_return, ax_var) = plt.subplots(1, 2, figsize=(12, 4.5))
    thresholds, windows = set(), set()
    for i, method in enumerate(config.models):
      choice = chosen[(setting, method)]
      if choice.rate is None:
        continue
      group = groups[choice.key(setting, method)]
      colour = 'C%d' % i
      label = '%s, lr %g' % (model_label(method, choice.grid), choice.rate)
      for trial, s in group['runs']:
        if s['state'] == 'missing':
          continue
        thresholds.add(s['solved_return'])
        windows.add(s['solved_window'])
        curve = s['curve']
        style = {'marker': 'o', 'markersize': 3} if len(curve) <= 20 else {}
        ax_return.plot([c[0] for c in curve], [c[1] for c in curve],
                       color=colour, lw=0.8, alpha=0.7, label=label, **style)
        points = [(c[0], c[2]) for c in curve if c[2] is not None
                  and math.isfinite(c[2])]
        if points:
          ax_var.plot(*zip(*points), color=colour, lw=0.8, alpha=0.7,
                      label=label, **style)
        label = None  # one legend entry per method
    for value in sorted(t for t in thresholds if t is not None):
      ax_return.axhline(value, color='k', ls='--', lw=0.8)
    window = ('%d' % windows.pop() if len(windows) == 1 and None not in
              windows else 'solved_window')
    ax_return.set(title='%s: mean return of the last %s episodes'
                  % (setting, window), xlabel='episodes', ylabel='return')
    ax_var.set(title='%s: policy-gradient log variance' % setting,
               xlabel='episodes', ylabel='log variance')
    for ax in (ax_return, ax_var):
      ax.grid(alpha=0.3)
      if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize='small')
    fig.tight_layout()
    name = '%s_%s.png' % (safe_name(config.name), safe_name(setting))
    fig.savefig(os.path.join(out_dir, name), dpi=100)
    plt.close(fig)
    written.append((setting, name))
  return written


# ------------------------------------------------------------ the command

def make_report(config, working_dir, out_dir, figures=True):
  """Writes <name>.md, <name>.csv (and figures) to `out_dir`; returns (the
  CSV's rows, [(setting, figure file)] or None without matplotlib)."""
  require_program(config, 'rl')
  working_dir = os.path.abspath(working_dir)
  if not os.path.isdir(working_dir):
    raise ReportError('working dir %s does not exist; pass the --working_dir '
                      'the sweep used' % working_dir)
  published, sources, _ = load_published(config)
  groups = aggregate(config, collect(config, working_dir))
  chosen = select(config, groups)
  rows = table_rows(groups, chosen, published)
  base = safe_name(config.name)
  try:
    os.makedirs(out_dir, exist_ok=True)
    written = write_figures(config, groups, chosen, out_dir) if figures else []
    write_csv(os.path.join(out_dir, base + '.csv'), rows)
    with open(os.path.join(out_dir, base + '.md'), 'w') as f:
      f.write(markdown(config, groups, chosen, published, sources,
                       written or []))
  except OSError as e:
    raise ReportError('cannot write the report to %s (%s); pass a writable '
                      '--out' % (out_dir, e.strerror or e)) from None
  return rows, written


def define_flags(flag_values):
  """Defines the report's flags on `flag_values`."""
  flags.DEFINE_string('working_dir', None, 'The sweep\'s working dir.',
                      flag_values=flag_values)
  flags.DEFINE_string('out', None,
                      'Output directory (default: WORKING_DIR/report).',
                      flag_values=flag_values)
  flags.DEFINE_bool('no_figures', False, 'Skip the PNG figures.',
                    flag_values=flag_values)


COMMAND = cli.Command(
    name=NAME, prog='python -m rebar.rl.report',
    synopsis='CONFIG --working_dir=DIR [flags]',
    description=cli.first_paragraph(__doc__) + ' Writes <name>.md, '
    '<name>.csv and figures for the runs of a config of program "rl".',
    define_flags=define_flags,
    arguments=(('CONFIG', 'the config JSON the sweep ran, e.g. '
                'configs/rl_cartpole.json'),),
    required=('working_dir',))


def main(argv=None):
  """Runs the command line `argv` (without the program name; default
  sys.argv's); returns the exit status."""
  args = COMMAND.parse(sys.argv[1:] if argv is None else argv)
  out_dir = args.out or os.path.join(args.working_dir, 'report')
  try:
    config = load_config(args.config)
    rows, written = make_report(config, args.working_dir, out_dir,
                                figures=not args.no_figures)
  except (ConfigError, ReportError) as e:
    sys.stderr.write('%s: error: %s\n' % (NAME, e))
    return 2
  base = os.path.join(out_dir, safe_name(config.name))
  print('%d of %d setting/method/rate groups have data; wrote %s.md and '
        '%s.csv' % (sum(1 for r in rows if r['runs_with_data']), len(rows),
                    base, base))
  print_figures(written, out_dir)
  return 0


if __name__ == '__main__':
  sys.exit(main())
