"""The command lines (rebar/cli.py): one absl style for every entry point.

Each entry point's --help lists its flags with their defaults (and
rebar_train's every hparam and model, read from the code); bad command lines
end with one line and status 2; the tools' `main` can be called again and
again in one process without a flag defined twice or a value left over; the
shared flags are defined once, in rebar/cli.py, and are the same wherever
they appear. No test here trains or downloads anything.
"""

import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

from absl import flags
import pytest

from rebar import cli
from rebar import data
from rebar import hparams
from rebar import report
from rebar import sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = REPO / 'configs' / 'smoke' / 'smoke.json'
SHARED = ('data_dir', 'mnist_url', 'mnist_binarized_url', 'omniglot_url',
          'download', 'threads')
# A line of help that starts a flag's entry: `  --name:` or `  --[no]name:`.
FLAG_LINE = re.compile(r'^  (?:-\S, )?--(?:\[no\])?(\w+): ', re.M)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')

# Prints, as JSON, every flag rebar_train.py and download_data.py define
# (absl's own left out): name -> default, help, type, defining module. In a
# separate process, so that the global flags are not defined here.
_LIST_FLAGS = '''
import json
from absl import flags
import rebar_train, download_data  # noqa: F401
out = {}
for name in flags.FLAGS:
  flag = flags.FLAGS[name]
  module = flags.FLAGS.find_module_defining_flag(name)
  if not module.startswith('absl.'):
    out[flag.name] = dict(default=flag.default, help=flag.help,
                          type=flag.flag_type(), module=module)
print(json.dumps(out))
'''
# What the console script `rebar_train` runs (setup.py's entry point): a
# main module without a docstring that defines no flags.
_CONSOLE_SCRIPT = ('import sys; from rebar_train import run; '
                   'sys.argv[0] = "rebar_train"; sys.exit(run())')


@functools.lru_cache(maxsize=None)
def load_benchmark():
  spec = importlib.util.spec_from_file_location(
      'benchmark', REPO / 'bench' / 'benchmark.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def toy():
  # Imports TensorFlow: only the tests that need it pay for that.
  from rebar import toy as toy_module  # pylint: disable=g-import-not-at-top
  return toy_module


def tools(toy_module):
  """name -> module of each tool."""
  return {'rebar.sweep': sweep, 'rebar.report': report,
          'rebar.toy': toy_module, 'benchmark.py': load_benchmark()}


def run(args, **kwargs):
  return subprocess.run([sys.executable] + list(args), cwd=str(REPO),
                        capture_output=True, text=True, env=ENV, timeout=120,
                        check=False, **kwargs)


def blocks(help_out):
  """Flag name -> its help entry, whitespace collapsed."""
  starts = list(FLAG_LINE.finditer(help_out))
  entries = {}
  for start, end in zip(starts, starts[1:] + [None]):
    text = help_out[start.start():end.start() if end else None]
    # The flags list ends at the first blank line (then come the hparams).
    text = text.split('\n\n')[0]
    entries[start.group(1)] = ' '.join(text.split())
  return entries


def typed(value):
  """A default as one types it on the command line."""
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, list):
    return ','.join(value)
  return "''" if value == '' else str(value)


def check_help_lists(help_out, expected):
  """Every flag of `expected` (name -> default, help) has an entry in
  `help_out` with its help and `(default: ...)`, or, where the default is
  None, a help that says the default in words or `(required)`."""
  entries = blocks(help_out)
  assert set(entries) == set(expected), (sorted(entries), sorted(expected))
  for name, (default, help_text) in expected.items():
    entry = entries[name]
    assert ' '.join(help_text.split()) in entry, (name, entry)
    if default is None:
      assert '(required)' in entry or 'default:' in help_text.lower(), entry
    else:
      assert '(default: %s' % typed(default) in entry, (name, entry)


# ------------------------------------------------------------ the tools


# Every flag each tool had before rebar.cli (argparse), with its default
# (benchmark's --out and --models changed on purpose).
OLD_DEFAULTS = {
    'rebar.sweep': {
        'working_dir': None, 'workers': 1, 'threads': 0, 'max_steps': None,
        'print_commands': False, 'data_dir': data.DEFAULT_DATA_DIR,
        'download': True, 'mnist_binarized_url': ','.join(
            data.MNIST_BINARIZED_URLS),
        'mnist_url': ','.join(data.MNIST_URLS),
        'omniglot_url': ','.join(data.OMNIGLOT_URLS)},
    'rebar.report': {'working_dir': None, 'out': None, 'no_figures': False,
                     'cost_table': ''},
    'rebar.toy': {'steps': 2000, 'seed': 0, 'log_every': 100,
                  'out': 'toy_out', 'no_plots': False},
    'benchmark.py': {
        'data_dir': os.path.expanduser('~/.rebar/data'), 'quick': False,
        # None: bench/results.json, or results_quick.json with --quick (so
        # that a quick run never overwrites the committed figures).
        'out': None, 'repeats': None,
        # The models the original lacks are timed too (costs of the new
        # estimators).
        'steps': 100, 'models': ','.join(tuple(load_benchmark().REFERENCE_MS)
                                         + load_benchmark().NEW_MODELS),
        'processes': 3, 'cell': None, 'eval_images': None,
        'eval_samples': None},
}


def test_tools_keep_their_flags_and_defaults(toy):
  for name, module in tools(toy).items():
    flag_values = module.COMMAND.flag_values()
    got = {f.name: f.default for f in cli.command_flags(flag_values)}
    assert got == OLD_DEFAULTS[name], name


@pytest.mark.parametrize('help_arg', ['--help', '-h'])
def test_tool_help_lists_every_flag_with_its_default(toy, capsys, help_arg):
  for name, module in tools(toy).items():
    with pytest.raises(SystemExit) as e:
      module.main([help_arg])
    assert e.value.code == 0, name
    out = capsys.readouterr().out
    assert out.startswith('usage: %s ' % module.COMMAND.prog), out[:200]
    # The summary of the module's docstring.
    assert ' '.join(cli.first_paragraph(module.__doc__).split()[:5]) in (
        ' '.join(out.split())), name
    flag_values = module.COMMAND.flag_values()
    check_help_lists(out, {f.name: (f.default, f.help)
                           for f in cli.command_flags(flag_values)})


def test_tool_help_names_positional_arguments(capsys):
  with pytest.raises(SystemExit):
    sweep.main(['--help'])
  out = capsys.readouterr().out
  assert 'usage: python -m rebar.sweep CONFIG --working_dir=DIR' in out
  assert re.search(r'^  CONFIG: the config JSON', out, re.M)
  assert blocks(out)['working_dir'].endswith('(required)')


@pytest.mark.parametrize('argv,fragment', [
    (['--bogus=1'], 'unknown flag --bogus'),
    (['--workerz=2'], 'unknown flag --workerz (did you mean --workers?)'),
    (['c.json', '--working_dir=w', '--workers=0'], '--workers=0'),
    (['c.json', '--working_dir=w', '--threads=-1'], '--threads must be 0'),
    (['c.json', '--working_dir=w', '--max_steps=ten'], '--max_steps=ten'),
    (['c.json', '--working_dir=w', '--download=maybe'],
     "--download takes true or false (or bare --download, --nodownload), got "
     "'maybe'"),
    (['c.json'], '--working_dir is required'),
    (['--working_dir=w'], 'missing CONFIG'),
    (['a.json', 'b.json', '--working_dir=w'], 'unexpected argument(s) b.json'),
])
def test_sweep_command_line_errors(argv, fragment, capsys):
  with pytest.raises(SystemExit) as e:
    sweep.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith('rebar.sweep: error: ') and fragment in err, err
  assert err.count('\n') == 1, err


def test_unknown_flag_one_line_status_2(toy, capsys):
  for name, module in tools(toy).items():
    with pytest.raises(SystemExit) as e:
      module.main(['--no_such_flag'])
    assert e.value.code == 2, name
    err = capsys.readouterr().err
    assert err == ('%s: error: unknown flag --no_such_flag; see `%s --help`\n'
                   % (name, module.COMMAND.prog)), err
  with pytest.raises(SystemExit) as e:
    toy.main(['--steps=0'])
  assert e.value.code == 2
  assert capsys.readouterr().err.startswith('rebar.toy: error: --steps=0: ')


def test_unknown_flag_in_a_process_has_no_traceback():
  result = run(['-m', 'rebar.sweep', str(SMOKE), '--working_dir=/tmp/x',
                '--bogus'])
  assert result.returncode == 2
  assert result.stderr == ('rebar.sweep: error: unknown flag --bogus; see '
                           '`python -m rebar.sweep --help`\n')


def test_successive_calls_do_not_leak_values(tmp_path, capsys):
  """The second call of each gets its defaults, not the first's values."""
  assert sweep.main([str(SMOKE), '--working_dir=%s' % tmp_path,
                     '--print_commands', '--max_steps=7', '--threads=3',
                     '--data_dir=/elsewhere', '--nodownload']) == 0
  first = capsys.readouterr().out.splitlines()
  assert sweep.main([str(SMOKE), '--working_dir', str(tmp_path),
                     '--print_commands']) == 0
  second = capsys.readouterr().out.splitlines()
  assert len(first) == len(second) == len(sweep.expand_runs(
      sweep.load_config(SMOKE)))
  for line in first:
    assert all(a in line for a in ('--max_steps=7', '--threads=3',
                                   '--data_dir=/elsewhere',
                                   '--download=false')), line
  max_steps = sweep.load_config(SMOKE).max_steps
  for line in second:
    assert '--max_steps=%d' % max_steps in line
    assert not any(a in line for a in ('--threads', '--data_dir',
                                       '--download', '_url=')), line

  first_out, working_dir = tmp_path / 'first', tmp_path / 'w'
  working_dir.mkdir()
  assert report.main([str(SMOKE), '--working_dir=%s' % working_dir,
                      '--out=%s' % first_out, '--no_figures']) == 0
  assert report.main([str(SMOKE), '--working_dir=%s' % working_dir,
                      '--no_figures']) == 0
  out = capsys.readouterr().out
  assert (working_dir / 'report' / 'report.md').is_file(), out
  parsed = report.COMMAND.parse([str(SMOKE), '--working_dir=a',
                                 '--no_figures'])
  again = report.COMMAND.parse([str(SMOKE), '--working_dir=b'])
  assert (parsed.no_figures, again.no_figures) == (True, False)
  assert not again.given('no_figures') and parsed.given('no_figures')


def test_absl_syntax_works_for_the_tools(toy):
  """`--name value`, bare booleans, `--noname`, `--name=false`."""
  parsed = toy.COMMAND.parse(['--steps', '40', '--no_plots', '--seed=3'])
  assert (parsed.steps, parsed.no_plots, parsed.seed) == (40, True, 3)
  assert toy.COMMAND.parse(['--nono_plots']).no_plots is False
  assert toy.COMMAND.parse(['--no_plots=false']).no_plots is False
  # The benchmark's child processes pass values as separate arguments.
  bench = load_benchmark()
  parsed = bench.parse_args(['--cell', 'model=SBN,n_layer=2', '--data_dir',
                             '/d', '--repeats', '5', '--steps', '10'])
  assert (parsed.cell, parsed.data_dir, parsed.repeats, parsed.steps) == (
      'model=SBN,n_layer=2', '/d', 5, 10)
  parsed = bench.parse_args(['--eval_images', '1000', '--eval_samples',
                             '100,1000'])
  assert (parsed.eval_images, parsed.eval_samples) == (1000, '100,1000')


# ------------------------------------------------------------ the shared flags


@pytest.fixture(scope='module')
def global_flags():
  """rebar_train's and download_data's flags, as absl records them."""
  result = run(['-c', _LIST_FLAGS])
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_shared_flags_are_defined_in_rebar_cli_only(global_flags):
  for name in SHARED:
    assert global_flags[name]['module'] == 'rebar.cli', name
  sweep_flags = sweep.COMMAND.flag_values()
  for name in SHARED:
    assert sweep_flags.find_module_defining_flag(name) == 'rebar.cli', name
    assert sweep_flags[name].default == global_flags[name]['default'], name
    assert sweep_flags[name].flag_type() == global_flags[name]['type'], name
    if name != 'threads':  # 0 means a fair share there, one per core here
      assert sweep_flags[name].help == global_flags[name]['help'], name
  bench_flags = load_benchmark().COMMAND.flag_values()
  assert bench_flags['data_dir'].help == global_flags['data_dir']['help']
  # No entry point defines them itself, nor uses another flags library.
  sources = [REPO / 'rebar_train.py', REPO / 'download_data.py',
             REPO / 'bench' / 'benchmark.py'] + sorted(
                 (REPO / 'rebar').glob('*.py'))
  defines = re.compile(r"DEFINE_\w+\(\s*'(%s)'" % '|'.join(SHARED))
  for path in sources:
    text = path.read_text(encoding='utf-8')
    assert 'argparse' not in text, path
    if path.name != 'cli.py':
      assert not defines.search(text), path


def test_define_functions_are_safe_twice():
  flag_values = flags.FlagValues()
  for _ in range(2):
    cli.define_data_flags(flag_values)
    cli.define_download_flag(flag_values)
    cli.define_threads_flag(flag_values)
  assert sorted(f.name for f in cli.command_flags(flag_values)) == sorted(
      SHARED)


# ------------------------------------------------------------ rebar_train


@pytest.fixture(scope='module')
def train_help():
  """`--help` of rebar_train as a script and as the console script."""
  outputs = []
  for args in (['rebar_train.py', '--help'],
               ['-c', _CONSOLE_SCRIPT, '--help']):
    result = run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs.append(result.stdout)
  assert outputs[0] == outputs[1]
  return outputs[0]


def test_rebar_train_help_lists_every_flag(train_help, global_flags):
  assert train_help.startswith(rebar_train_doc().split('\n')[0])
  own = {name: (f['default'], f['help']) for name, f in global_flags.items()
         if name != 'datasets'}  # download_data's
  check_help_lists(train_help.split('\nhparams')[0], own)
  # absl's own flags only with --helpfull.
  assert '--verbosity' not in train_help and '--logtostderr' not in train_help


def rebar_train_doc():
  source = (REPO / 'rebar_train.py').read_text(encoding='utf-8')
  return source.split('"""')[1]


def test_rebar_train_help_lists_every_hparam_and_model(train_help):
  fields = dataclasses.fields(hparams.HParams)
  assert set(hparams.HPARAM_HELP) == {f.name for f in fields}
  flat = ' '.join(train_help.split())
  for field in fields:
    default = field.default
    text = ('true' if default else 'false') if isinstance(
        default, bool) else str(default)
    entry = '%s=%s: %s' % (field.name, text, hparams.HPARAM_HELP[field.name])
    assert ' '.join(entry.split()) in flat, entry
  for name, description in hparams.MODELS.items():
    assert ' '.join(('%s: %s' % (name, description)).split()) in flat, name


def test_installed_console_script_help(train_help):
  script = pathlib.Path(sys.executable).parent / 'rebar_train'
  if not script.exists():
    pytest.skip('rebar_train is not installed (pip install -e .)')
  result = subprocess.run([str(script), '--help'], capture_output=True,
                          text=True, env=ENV, timeout=120, check=False,
                          cwd='/')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout == train_help


def test_download_data_help(global_flags):
  result = run(['download_data.py', '--help'])
  assert result.returncode == 0, result.stderr
  names = cli.DATA_FLAG_NAMES + ('datasets',)
  check_help_lists(result.stdout, {n: (global_flags[n]['default'],
                                       global_flags[n]['help'])
                                   for n in names})


def test_rebar_train_command_line_errors_and_syntax():
  result = run(['rebar_train.py', '--no_such_flag=1'])
  assert result.returncode == 2
  assert result.stderr == ('rebar_train.py: error: unknown flag '
                           '--no_such_flag; see `python rebar_train.py '
                           '--help`\n')
  # The original's syntax: bare booleans and --noname parse, so the run
  # gets as far as the hparams, which stop it before any data is read.
  result = run(['rebar_train.py', '--nodownload', '--final_eval', '--xla=false',
                '--hparams=model=SBNNope', '--threads', '1'])
  assert result.returncode == 2
  assert 'unknown model' in result.stderr
  assert result.stderr.count('\n') == 1, result.stderr


def test_toy_help_answers_without_importing_tensorflow():
  """`python -m rebar.toy --help` parses before the problem (and TensorFlow)
  is imported, so help and errors answer at once."""
  code = ('import sys\nfrom rebar import toy\ntry:\n  toy.main(["--help"])\n'
          'except SystemExit as e:\n  assert e.code == 0\n'
          'print("tensorflow" in sys.modules)')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, cwd=str(REPO), timeout=120)
  assert result.returncode == 0, result.stderr
  assert 'python -m rebar.toy' in result.stdout
  assert result.stdout.strip().endswith('False'), result.stdout[-300:]
