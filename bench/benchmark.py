"""Training-step, evaluation and data-loading speed, against the original.

  python bench/benchmark.py --data_dir=~/.rebar/data [--quick] [--out=FILE]

For each model and the three configurations of the reference table (batch 24,
learning rate 0.0003, task sbn: one linear layer, two linear layers, one
nonlinear layer) it runs a fresh process that loads MNIST, builds the model,
compiles and warms up (50 + STEPS steps), then times REPEATS blocks of STEPS
training steps, and reports the median and spread of milliseconds per step,
the warm-up time (compilation included) and the process's peak resident
memory.
The models the original lacks (NEW_MODELS) get cells too, with no reference
to compare; each cell's --hparams (rebar.costs.cell_hparams: SBNRelax in its
tuned setting, SBNReinforceLOO with 2 samples, CategoricalVAE once per
estimator at the ARSM setup, in half the blocks (at least 3) of STEPS / 5
steps, its steps being slower) is recorded with it, and rebar.costs reads the cells as the
estimators' costs. CategoricalVAE's cells need the threshold-binarized MNIST
in --data_dir (`download_data --datasets=mnist_threshold`).
Each cell runs in `--processes` fresh processes (default 3; the cell's
median is the median of theirs). Times are normalised by the median
`machine_ref_ms` of ../shared/bench/machine_ref.py, run in the same
benchmark before the cells, after each model's cells and at the end, so
that they compare with the reference table (taken where machine_ref printed
1.2 ms).

`--quick` (under 3 minutes) times the two-layer linear column only, with fewer
repeats, all in this process, and skips the scaling figures.
"""

import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Imports no TensorFlow (time_evaluation_in_subprocess says why that matters).
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from rebar import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from rebar import costs  # pylint: disable=g-import-not-at-top,wrong-import-position

MACHINE_REF = REPO.parent / 'shared' / 'bench' / 'machine_ref.py'
# machine_ref_ms where the reference table was taken.
REFERENCE_MACHINE_MS = 1.2
CONFIGS = costs.COLUMNS
# The original TF1 code's median ms per step on a 2-core machine (one
# sess.run per step, 300 steps after 50 warm-up), from the speed issue.
REFERENCE_MS = {
    'SBN': (1.75, 2.12, 2.52),
    'SBNNVIL': (1.86, 2.66, 2.66),
    'SBNMuProp': (2.41, 3.57, 3.29),
    'SBNSimpleMuProp': (2.02, 2.67, 2.87),
    'SBNRebar': (4.34, 7.29, 6.27),
    'SBNDynamicRebar': (7.04, 13.05, 10.48),
    'SBNGumbel': (2.06, 2.71, 2.88),
    'SBNTrackGradVariances': (15.08, 25.00, 21.66),
}
# Models the original does not have: timed, with no reference to compare.
NEW_MODELS = ('SBNReinforceLOO', 'SBNARM', 'SBNDisARM', 'SBNRelax',
              'CategoricalVAE')
REFERENCE_EVAL_S = 26.0  # 100-sample bound on 10,000 valid + 10,000 test
SCALING = {
    'batch_size': ('batch_size=96', 'batch_size=384'),
    'n_hidden': ('n_hidden=500',),
    'n_layer': ('n_layer=2', 'n_layer=4'),
}
SCALING_MODELS = ('SBN', 'SBNDynamicRebar')
EVAL_SAMPLES = (100, 1000, 5000)


def peak_rss_mb():
  """This process's peak resident memory, MB.

  VmHWM, the high-water mark of this process's own address space. Not
  getrusage's ru_maxrss: Linux carries that across exec from the forking
  parent, so a cell started by a benchmark process that had imported
  TensorFlow reported the parent's peak (about 800 MB for every scaling
  cell before this was changed).
  """
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_cell(hparams_text, data_dir, repeats, steps, warmup=50,
              own_process=True):
  """Times training steps of one model in this process; returns a dict.

  In its own process (a cell of the full benchmark) the process is set up as
  rebar_train sets it up for this model, XLA's kernel emitters included;
  --quick's cells share one process, where XLA's flags are those of the
  first compilation, so they keep the default emitters.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rebar import quiet  # pylint: disable=g-import-not-at-top
  tf = quiet.import_tensorflow()
  from rebar import data, models, runtime, train  # pylint: disable=g-import-not-at-top
  from rebar.hparams import parse_hparams  # pylint: disable=g-import-not-at-top
  hparams = parse_hparams(hparams_text)
  runtime.configure(xla_fusion_emitters=(  # as rebar_train does
      not own_process or runtime.xla_fusion_emitters(hparams)))
  # As rebar_train loads it: binary sets as uint8.
  train_x, _, _ = data.load_data(hparams, data_dir, compact=True)
  model = models.build_model(
      hparams, train_x.mean(axis=0, dtype=np.float32), 0)
  trainer = train.Trainer(model, train_x)
  del train_x
  order = train.epoch_permutation(0, 0, trainer.n_train)
  bs = hparams.batch_size

  order = np.tile(order, -(-(warmup + (repeats + 1) * steps) * bs
                          // len(order)))  # large batches wrap around

  def block(start, n):
    rows = order[start * bs:(start + n) * bs]
    return tf.constant(rows.reshape(n, bs).astype(np.int32))

  # The first call compiles; both run the warm-up steps.
  start = time.perf_counter()
  trainer.run_block(block(0, warmup))
  trainer.run_block(block(warmup, steps))
  trainer.step.numpy()
  first_call_s = time.perf_counter() - start
  per_step = []
  for i in range(repeats):
    batches = block(warmup + (i + 1) * steps, steps)
    start = time.perf_counter()
    trainer.run_block(batches)
    trainer.step.numpy()
    per_step.append(1e3 * (time.perf_counter() - start) / steps)
  values, _ = trainer.epoch_summary()
  assert np.isfinite(values[0]), values
  return {'median_ms': statistics.median(per_step), 'min_ms': min(per_step),
          'max_ms': max(per_step), 'first_call_s': first_call_s,
          'peak_rss_mb': peak_rss_mb()}


def run_this_script(args, what):
  """Runs this script with `args` in a fresh process; returns the JSON of
  its last line of output."""
  result = subprocess.run(
      [sys.executable, __file__] + args, capture_output=True, text=True,
      check=False, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  if result.returncode:
    raise RuntimeError('%s failed: %s' % (what, result.stderr[-2000:]))
  return json.loads(result.stdout.strip().splitlines()[-1])


def time_cell_in_subprocess(hparams_text, data_dir, repeats, steps,
                            processes=1):
  """Fresh processes per cell, so that peak memory is the cell's own.

  With several processes, the cell's median is the median of the
  processes' medians: now and then a whole process runs every step about
  3 times slower (docs/performance.md), which one process cannot tell from the
  cell's own speed. Spread is the lowest minimum and highest maximum,
  memory the highest peak.
  """
  runs = [run_this_script(
      ['--cell', hparams_text, '--data_dir', str(data_dir),
       '--repeats', str(repeats), '--steps', str(steps)],
      'cell %s' % hparams_text) for _ in range(processes)]
  return {'median_ms': statistics.median(r['median_ms'] for r in runs),
          'min_ms': min(r['min_ms'] for r in runs),
          'max_ms': max(r['max_ms'] for r in runs),
          'first_call_s': statistics.median(r['first_call_s'] for r in runs),
          'peak_rss_mb': max(r['peak_rss_mb'] for r in runs),
          'process_medians_ms': [r['median_ms'] for r in runs]}


def machine_ref_ms():
  if not MACHINE_REF.exists():
    return None
  result = subprocess.run([sys.executable, str(MACHINE_REF)],
                          capture_output=True, text=True, check=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  return json.loads(result.stdout.strip().splitlines()[-1])['machine_ref_ms']


def time_evaluation(data_dir, n_images, samples_list, repeats=1):
  """Seconds for the importance-weighted bound on n_images per sample count."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rebar import data, evaluation, models, runtime  # pylint: disable=g-import-not-at-top
  from rebar.hparams import parse_hparams  # pylint: disable=g-import-not-at-top
  runtime.configure()  # as rebar_train does
  hparams = parse_hparams('model=SBN')
  train_x, valid, test = data.load_data(hparams, data_dir, compact=True)
  images = np.concatenate([valid, test], axis=0)[:n_images]
  model = models.build_model(
      hparams, train_x.mean(axis=0, dtype=np.float32), 0)
  fn = evaluation.make_iw_bound_fn(model, hparams.n_input)
  evaluation.evaluate(fn, images[:200], 100)  # compile
  out = {}
  for samples in samples_list:
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      evaluation.evaluate(fn, images, samples)
      times.append(time.perf_counter() - start)
    out[samples] = statistics.median(times)
  return out


def time_evaluation_in_subprocess(data_dir, n_images, samples_list,
                                  repeats=1):
  """time_evaluation in a fresh process. This process must not import
  TensorFlow: a cell started afterwards could not page out the library pages
  this process would share with it (runtime.release_library_pages), and its
  peak memory would read about 250 MB high."""
  times = run_this_script(
      ['--eval_images', str(n_images),
       '--eval_samples', ','.join(map(str, samples_list)),
       '--data_dir', str(data_dir), '--repeats', str(repeats)],
      'evaluation timing')
  return {int(k): v for k, v in times.items()}


def time_data_loading(data_dir):
  from rebar import data  # pylint: disable=g-import-not-at-top
  from rebar.hparams import parse_hparams  # pylint: disable=g-import-not-at-top
  times = []
  for _ in range(5):
    start = time.perf_counter()
    data.load_data(parse_hparams(''), data_dir)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def define_flags(flag_values):
  """Defines the benchmark's flags on `flag_values`."""
  cli.define_data_dir_flag(flag_values)
  flags.DEFINE_bool('quick', False, 'The two-layer linear column only, fewer '
                    'repeats, in this process, no scaling figures.',
                    flag_values=flag_values)
  flags.DEFINE_string('out', None, 'Where the report JSON goes (default: '
                      'bench/results.json, the committed figures; with '
                      '--quick bench/results_quick.json, not committed).',
                      flag_values=flag_values)
  flags.DEFINE_integer('repeats', None, 'Timed blocks per cell (default: 3 '
                       'with --quick, else 7).', lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_integer('steps', 100, 'Training steps per timed block.',
                       lower_bound=1, flag_values=flag_values)
  flags.DEFINE_string('models', ','.join(tuple(REFERENCE_MS) + NEW_MODELS),
                      'Comma-separated models to time.',
                      flag_values=flag_values)
  flags.DEFINE_integer('processes', 3,
                       'Fresh processes per cell (not --quick).',
                       lower_bound=1, flag_values=flag_values)
  # Set by this script for the processes it starts (run_this_script).
  flags.DEFINE_string('cell', None, 'Internal: time one cell of these hparams '
                      'and print its JSON (default: none).',
                      flag_values=flag_values)
  flags.DEFINE_integer('eval_images', None, 'Internal: time the evaluation on '
                       'this many images and print its JSON (default: none).',
                       flag_values=flag_values)
  flags.DEFINE_string('eval_samples', None, 'Internal: comma-separated sample '
                      'counts for --eval_images (default: none).',
                      flag_values=flag_values)


COMMAND = cli.Command(
    name='benchmark.py', prog='python bench/benchmark.py', synopsis='[flags]',
    description=cli.first_paragraph(__doc__), define_flags=define_flags)


def parse_args(argv=None):
  """The parsed command line (argv without the program name; default
  sys.argv's): a cli.Parsed."""
  return COMMAND.parse(sys.argv[1:] if argv is None else argv)


def time_cells(args, repeats, report):
  """Times each model's reference cells into report['cells'].

  Returns the machine_ref readings taken after each model's cells.
  """
  refs = []
  columns = ['linear2'] if args.quick else list(CONFIGS)
  print('%-22s %-10s %9s %15s %9s %8s %8s %7s' % (
      'model', 'config', 'median_ms', 'spread_ms', 'first_s', 'rss_MB',
      'ref_ms', 'speedup'), flush=True)
  for name in args.models.split(','):
    categorical = name == 'CategoricalVAE'
    if categorical and args.quick:
      continue
    steps = max(10, args.steps // 5) if categorical else args.steps
    cell_repeats = max(3, repeats // 2) if categorical else repeats
    for column in costs.CATEGORICAL_CELLS if categorical else columns:
      text = costs.cell_hparams(name, column)
      if args.quick:
        cell = time_cell(text, args.data_dir, cell_repeats, steps,
                         own_process=False)
      else:
        cell = time_cell_in_subprocess(text, args.data_dir, cell_repeats,
                                       steps, args.processes)
      cell['hparams'] = text
      cell['steps'] = steps
      cell['reference_ms'] = (REFERENCE_MS[name][list(CONFIGS).index(column)]
                              if name in REFERENCE_MS else None)
      report['cells']['%s/%s' % (name, column)] = cell
      print('%-22s %-10s %9.2f %7.2f-%-7.2f %9.1f %8.0f %8s' % (
          name, column, cell['median_ms'], cell['min_ms'], cell['max_ms'],
          cell['first_call_s'], cell['peak_rss_mb'],
          '-' if cell['reference_ms'] is None
          else '%.2f' % cell['reference_ms']), flush=True)
    if not args.quick:
      refs.append(machine_ref_ms())
  return refs


def time_scaling(args, repeats, report):
  """Times the scaling cells and the evaluation against sample counts."""
  for name in SCALING_MODELS:
    for knob, settings in SCALING.items():
      for setting in ('',) + settings:
        if not setting and knob != 'batch_size':
          continue
        text = 'model=%s,learning_rate=0.0003,%s' % (name, setting)
        key = '%s/%s' % (name, setting or 'base')
        cell = time_cell_in_subprocess(text.rstrip(','), args.data_dir,
                                       max(3, repeats // 2), args.steps)
        report['scaling'][key] = cell
        print('scaling %-40s %8.2f ms/step' % (key, cell['median_ms']),
              flush=True)
  report['eval_scaling_s_per_1000_images'] = {
      str(k): v for k, v in time_evaluation_in_subprocess(
          args.data_dir, 1000, EVAL_SAMPLES).items()}


def normalise(report, refs):
  """Adds the times normalised by machine_ref, and the speedups, to report."""
  refs = [r for r in refs if r is not None]
  # The median: a single machine_ref reading varies by 30% here.
  machine = statistics.median(refs) if refs else None
  report['machine_ref_ms'] = refs
  report['machine_ref_median_ms'] = machine
  print('\nmachine_ref_ms: %s; median %s (reference machine: %.2f)'
        % (', '.join('%.3f' % r for r in refs),
           '%.3f' % machine if machine else '-', REFERENCE_MACHINE_MS))
  if not machine:
    return
  speedups = []
  print('%-22s %-10s %10s %10s %8s' % ('model', 'config', 'norm_ms',
                                       'ref_norm', 'speedup'))
  for key, cell in report['cells'].items():
    cell['normalised'] = cell['median_ms'] / machine
    if cell['reference_ms'] is None:
      print('%-22s %-10s %10.3f %10s %8s' % (*key.split('/'),
                                             cell['normalised'], '-', '-'))
      continue
    reference = cell['reference_ms'] / REFERENCE_MACHINE_MS
    cell['speedup'] = reference / cell['normalised']
    speedups.append(cell['speedup'])
    print('%-22s %-10s %10.3f %10.3f %8.2f' % (
        *key.split('/'), cell['normalised'], reference, cell['speedup']))
  if not speedups:
    return
  geo = 1.0
  for s in speedups:
    geo *= s ** (1.0 / len(speedups))
  report['geometric_mean_speedup'] = geo
  report['min_speedup'] = min(speedups)
  print('geometric mean speedup %.2f, lowest %.2f' % (geo, min(speedups)))
  eval_norm = report['eval_100_samples_s']['seconds_per_20000_images']
  report['eval_speedup'] = (REFERENCE_EVAL_S / REFERENCE_MACHINE_MS) / (
      eval_norm / machine)


def print_evaluation(report):
  print('evaluation, 100 samples: %.2f s per 20,000 images (original %.0f s)'
        '%s' % (report['eval_100_samples_s']['seconds_per_20000_images'],
                REFERENCE_EVAL_S,
                ', speedup %.2f' % report['eval_speedup']
                if 'eval_speedup' in report else ''))
  if 'eval_scaling_s_per_1000_images' in report:
    print('evaluation vs samples (s per 1,000 images): %s' % ', '.join(
        '%s: %.2f' % kv for kv in
        report['eval_scaling_s_per_1000_images'].items()))


def main(argv=None):
  """Runs the command line `argv` (without the program name; default
  sys.argv's)."""
  args = parse_args(argv)
  if args.cell:
    print(json.dumps(time_cell(args.cell, args.data_dir, args.repeats or 5,
                               args.steps)))
    return
  if args.eval_images:
    print(json.dumps(time_evaluation(
        args.data_dir, args.eval_images,
        [int(k) for k in args.eval_samples.split(',')], args.repeats or 1)))
    return

  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  repeats = args.repeats or (3 if args.quick else 7)
  out = args.out or str(REPO / 'bench' / (
      'results_quick.json' if args.quick else 'results.json'))
  report = {'command': ' '.join(['python bench/benchmark.py']
                                + list(sys.argv[1:] if argv is None else argv)),
            'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
            'quick': args.quick, 'repeats': repeats, 'steps': args.steps,
            'cells': {}, 'scaling': {}}
  refs = [machine_ref_ms()]
  report['data_load_s'] = time_data_loading(args.data_dir)
  print('data loading (cached MNIST, median of 5): %.3f s'
        % report['data_load_s'], flush=True)
  refs += time_cells(args, repeats, report)

  n_eval = 2000 if args.quick else 20000
  evaluation = time_evaluation if args.quick else time_evaluation_in_subprocess
  eval_times = evaluation(args.data_dir, n_eval, [100],
                          repeats=1 if args.quick else 3)
  report['eval_100_samples_s'] = {
      'images': n_eval, 'seconds': eval_times[100],
      'seconds_per_20000_images': eval_times[100] * 20000 / n_eval}
  if not args.quick:
    time_scaling(args, repeats, report)
  refs.append(machine_ref_ms())
  normalise(report, refs)
  print_evaluation(report)
  print('peak resident memory, largest cell: %.0f MB' % max(
      c['peak_rss_mb'] for c in report['cells'].values()))
  with open(out, 'w') as f:
    json.dump(report, f, indent=1)
  print('wrote %s' % out)


if __name__ == '__main__':
  main()
