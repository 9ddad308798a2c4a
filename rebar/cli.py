"""The command lines: flags shared by several commands, parsing and help.

Every command is an absl flags program, as the original's scripts were, so
that one syntax works for all of them: `--name=value` or `--name value`,
bare booleans and their negation (`--final_eval`, `--nodownload`,
`--download=false`), `--flagfile=FILE`. docs/development.md ("Command-line
style") says why.

Flags that several commands take are defined here only, each by a
`define_*` function that takes the FlagValues to define it on (the global
`flags.FLAGS` by default) and does nothing where it is already defined:
  define_data_flags      --data_dir and the three URL flags (data_dir alone:
                         define_data_dir_flag);
  define_download_flag   --download;
  define_threads_flag    --threads.

Two kinds of command parse them:
  rebar_train.py and download_data.py define their flags on `flags.FLAGS`
  and run under `absl.app.run` (absl logging reads its flags there); they
  pass `app_flags_parser(...)` as app.run's `flags_parser`.
  The tools (rebar.sweep, rebar.report, rebar.toy, bench/benchmark.py) are
  `Command`s: each call of their `main(argv)` builds a fresh FlagValues, so
  that tests can call them many times in one process with no flag defined
  twice and no value left from a previous call.
Both kinds print the same help for `--help` (or `-h`): the usage, then
each of the command's flags with its help and default (the global kind
leaves absl's own flags to `--helpfull`); and both end a bad command line
(unknown flag, bad value, missing argument) with one line on stderr naming
the fix, and exit status 2.
"""

import dataclasses
import difflib
import os
import sys
import textwrap
from typing import Callable, Sequence

from absl import flags

from rebar import data

FLAGS = flags.FLAGS

# Where they are not the flags of a command but of absl itself (logging,
# --flagfile, --helpfull, ...); help lists those only with --helpfull.
_ABSL_MODULE_PREFIX = 'absl.'
# Arguments that ask for help. absl's own `--help` (short name `-?`) is not
# defined on a command's FlagValues, and `-h` is not absl's at all.
HELP_ARGS = ('-h', '--help', '-help', '-?', '--helpshort', '-helpshort')
# --helpfull of the global kind stays absl's (all flags, absl's included); a
# Command has no flags of absl's, so there it is the same as --help.
_COMMAND_HELP_ARGS = HELP_ARGS + ('--helpfull', '-helpfull')
_WIDTH = 80

_LOCATIONS_TRIED = ' A comma-separated list is tried in order.'
_URL_FLAGS = (
    ('mnist_url', data.MNIST_URLS,
     'Base location (http(s)://, file:// or a directory) of '
     'train-images-idx3-ubyte.gz (dynamic and threshold binarization) and '
     't10k-images-idx3-ubyte.gz (threshold binarization).'),
    ('mnist_binarized_url', data.MNIST_BINARIZED_URLS,
     'Base location (http(s)://, file:// or a directory) of '
     'binarized_mnist_{train,valid,test}.amat.'),
    ('omniglot_url', data.OMNIGLOT_URLS,
     'Location (http(s)://, file:// or a path) of the file chardata.mat.'),
)
DATA_FLAG_NAMES = ('data_dir',) + tuple(name for name, _, _ in _URL_FLAGS)
THREADS_HELP = ('TensorFlow intra- and inter-op threads (0: one per core). '
                'Set it when runs share a machine.')


# ---------------------------------------------------------------- shared flags


def define_data_dir_flag(flag_values=FLAGS):
  """Defines --data_dir; safe to call twice."""
  if 'data_dir' not in flag_values:
    flags.DEFINE_string(
        'data_dir', data.DEFAULT_DATA_DIR,
        'Directory for downloaded files and their caches (default '
        '~/.rebar/data, expanded).', flag_values=flag_values)


def define_data_flags(flag_values=FLAGS):
  """Defines --data_dir and the three URL flags; safe to call twice."""
  define_data_dir_flag(flag_values)
  for name, locations, help_text in _URL_FLAGS:
    if name not in flag_values:
      flags.DEFINE_string(name, ','.join(locations),
                          help_text + _LOCATIONS_TRIED,
                          flag_values=flag_values)


def define_download_flag(flag_values=FLAGS):
  """Defines --download; safe to call twice."""
  if 'download' not in flag_values:
    flags.DEFINE_bool('download', True,
                      'Download missing data (from the URL flags).',
                      flag_values=flag_values)


def define_threads_flag(flag_values=FLAGS, help_text=THREADS_HELP,
                        zero_means='one per core'):
  """Defines --threads (0 or a count); safe to call twice.

  Args:
    flag_values: where to define it.
    help_text: its help, where a command gives 0 a meaning of its own.
    zero_means: that meaning, for the message on a negative value.
  """
  if 'threads' in flag_values:
    return
  flags.DEFINE_integer('threads', 0, help_text, flag_values=flag_values)

  def check(value):
    if value is not None and value < 0:
      raise flags.ValidationError(
          '--threads must be 0 (%s) or a positive count, got %d'
          % (zero_means, value))
    return True

  flags.register_validator('threads', check, flag_values=flag_values)


def urls_from_flags(flag_values=FLAGS):
  """The `urls` dict of data.download/ensure_data, read from parsed flags.

  Each value is the tuple of locations its flag lists.
  """
  return {name: data.split_locations(flag_values[name].value)
          for name in data.DEFAULT_URLS}


# ---------------------------------------------------------------- help


def command_flags(flag_values):
  """The flags of `flag_values` a command's help lists, in definition
  order: all but absl's own."""
  seen, listed = set(), []
  for name in flag_values:  # long and short names, in definition order
    flag = flag_values[name]
    module = flag_values.find_module_defining_flag(flag.name, default='')
    if id(flag) in seen or module.startswith(_ABSL_MODULE_PREFIX):
      continue
    seen.add(id(flag))
    listed.append(flag)
  return listed


def _wrap(text, indent):
  """`text` in lines of at most _WIDTH where it can be, the first indented
  by `indent`, the others by four spaces; a path or URL is never split (at
  a hyphen, or for its length), so that it can be copied whole."""
  return textwrap.wrap(text, _WIDTH, initial_indent=indent,
                       subsequent_indent='    ', break_on_hyphens=False,
                       break_long_words=False)


def default_text(flag):
  """A flag's default as it would be typed, or None where it has none."""
  value = flag.default
  if value is None:
    return None
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, (list, tuple)):
    return ','.join(str(v) for v in value)
  return str(value) if value != '' else "''"


def flag_help(flag, required=False):
  """The help lines of one flag: name and help, then its default (or
  "required"), and the values it takes where its type does not say."""
  name = '--[no]%s' % flag.name if flag.boolean else '--%s' % flag.name
  if flag.short_name:
    name = '-%s, %s' % (flag.short_name, name)
  lines = _wrap('%s: %s' % (name, flag.help or ''), '  ')
  notes = []
  if required:
    notes.append('required')
  elif default_text(flag) is not None:
    # A default of None is left to the help text, which says in words what
    # happens then (e.g. "default: drawn once per run").
    notes.append('default: %s' % default_text(flag))
  syntax = flag.parser.syntactic_help
  # Bounds ("a positive integer") and lists say more than the default does;
  # a bare type does not.
  if syntax and syntax not in ('an integer', 'a string'):
    notes.append(syntax)
  if notes:
    lines += _wrap('(%s)' % '; '.join(notes), '    ')
  return lines


def help_text(flag_values, usage, required=(), arguments=(), epilog=''):
  """The whole help of a command.

  Args:
    flag_values: the command's flags (those of absl itself left out).
    usage: the text first printed (a usage line, a docstring).
    required: names of the flags that must be given.
    arguments: (NAME, help) of each positional argument.
    epilog: text printed after the flags.
  Returns:
    The text, ending in a newline.
  """
  parts = [usage.strip('\n')]
  if arguments:
    parts.append('\n'.join(['arguments:'] + [
        line for name, text in arguments
        for line in _wrap('%s: %s' % (name, text), '  ')]))
  parts.append('\n'.join(['flags:'] + [
      line for flag in command_flags(flag_values)
      for line in flag_help(flag, flag.name in required)]))
  if epilog:
    parts.append(epilog.strip('\n'))
  return '\n\n'.join(parts) + '\n'


def first_paragraph(doc):
  """A docstring's first paragraph (its summary), unwrapped."""
  return ' '.join((doc or '').strip().split('\n\n')[0].split())


def wants_help(argv, help_args=HELP_ARGS):
  """Whether `argv` (without the program name) asks for help."""
  for arg in argv:
    if arg == '--':  # what follows is arguments, not flags
      return False
    if arg in help_args:
      return True
  return False


# ---------------------------------------------------------------- errors


def fail(name, message, code=2):
  """Ends the program with `name: error: message` on stderr, one line."""
  sys.stderr.write('%s: error: %s\n' % (name, ' '.join(
      str(message).splitlines())))
  sys.exit(code)


def error_message(error, flag_values):
  """One line saying what is wrong with a command line, from absl's error.

  Args:
    error: the flags.Error or ValueError that parsing raised.
    flag_values: the FlagValues it was parsing into.
  """
  if isinstance(error, flags.UnrecognizedFlagError):
    name = error.flagname
    known = sorted({flag.name for flag in command_flags(flag_values)})
    close = difflib.get_close_matches(name, known, n=1)
    return 'unknown flag --%s%s' % (
        name, ' (did you mean --%s?)' % close[0] if close else '')
  text = ' '.join(str(error).split())
  if isinstance(error, flags.IllegalFlagValueError) and text.startswith(
      'flag --'):
    # absl's "flag --name=value: detail"; a validator of ours writes a
    # detail that names the flag and the value already.
    where, _, detail = text[len('flag '):].partition(': ')
    flag_name, _, value = where[len('--'):].partition('=')
    if detail.startswith('--%s ' % flag_name):
      return detail
    if flag_name in flag_values and flag_values[flag_name].boolean:
      # absl's detail is a tuple's repr here.
      return ('--%s takes true or false (or bare --%s, --no%s), got %r'
              % (flag_name, flag_name, flag_name, value))
    return '%s: %s' % (where, detail)
  return text


def _parse_into(flag_values, argv, name, hint):
  """flag_values(argv), ending the program with one line on a bad one."""
  try:
    return flag_values(argv)
  except (flags.Error, ValueError) as e:
    fail(name, '%s; %s' % (error_message(e, flag_values), hint))


# ---------------------------------------------------------------- commands


class Parsed:
  """A parsed command line: each flag's value and each positional argument
  as an attribute of its name (a positional's in lower case)."""

  def __init__(self, flag_values, positional):
    self.flag_values = flag_values
    for flag in command_flags(flag_values):
      setattr(self, flag.name, flag.value)
    for key, value in positional.items():
      setattr(self, key, value)

  def given(self, name):
    """Whether flag `name` was on the command line (not its default)."""
    return bool(self.flag_values[name].present)


@dataclasses.dataclass(frozen=True)
class Command:
  """A tool's command line, parsed into a fresh FlagValues on each call.

  Attributes:
    name: the prefix of its error lines, e.g. `rebar.sweep`.
    prog: how it is run, e.g. `python -m rebar.sweep`.
    synopsis: what follows `prog` in the usage line.
    description: what it does (a docstring's first paragraph).
    define_flags: defines the command's flags on the FlagValues it is given.
    arguments: (NAME, help) of each positional argument, all required.
    required: names of the flags that must be given.
  """
  name: str
  prog: str
  synopsis: str
  description: str
  define_flags: Callable[[flags.FlagValues], None]
  arguments: Sequence = ()
  required: Sequence[str] = ()

  @property
  def usage(self):
    return '%s %s' % (self.prog, self.synopsis)

  def flag_values(self):
    """A FlagValues holding the command's flags, none parsed yet."""
    flag_values = flags.FlagValues()
    self.define_flags(flag_values)
    return flag_values

  def help(self):
    return help_text(self.flag_values(), 'usage: %s\n\n%s' % (
        self.usage, '\n'.join(textwrap.wrap(self.description, _WIDTH))),
                     self.required, self.arguments)

  def parse(self, argv):
    """Parses `argv` (without the program name) into a Parsed.

    Prints the help and exits 0 where argv asks for it; exits 2 with one
    line on stderr where argv is wrong.
    """
    argv = list(argv)
    if wants_help(argv, _COMMAND_HELP_ARGS):
      sys.stdout.write(self.help())
      sys.stdout.flush()
      sys.exit(0)
    flag_values = self.flag_values()
    rest = _parse_into(flag_values, [self.name] + argv, self.name,
                       'see `%s --help`' % self.prog)[1:]
    names = [key for key, _ in self.arguments]
    if len(rest) < len(names):
      fail(self.name, 'missing %s (%s); usage: %s' % (
          names[len(rest)], dict(self.arguments)[names[len(rest)]],
          self.usage))
    if len(rest) > len(names):
      fail(self.name, 'unexpected argument(s) %s (flags take the form '
           '--name=value); usage: %s' % (' '.join(rest[len(names):]),
                                          self.usage))
    for flag_name in self.required:
      if flag_values[flag_name].value is None:
        fail(self.name, '--%s is required (%s); usage: %s' % (
            flag_name, flag_values[flag_name].help.rstrip('.'), self.usage))
    return Parsed(flag_values,
                  {key.lower(): value for key, value in zip(names, rest)})


def program(argv0):
  """How the user ran a global-flags program: `python rebar_train.py` for a
  script, `rebar_train` for an installed command."""
  base = os.path.basename(argv0)
  return 'python %s' % argv0 if base.endswith('.py') else base


def app_flags_parser(name, usage, epilog=''):
  """A `flags_parser` for absl.app.run that parses the global flags.

  Where argv asks for help it prints `help_text` of the command's flags
  (absl's own are left to --helpfull) and exits 0; a bad command line ends
  with one line on stderr and status 2.

  Args:
    name: the prefix of its error lines, e.g. `rebar_train.py`.
    usage: the text printed first, usually the main module's docstring
      (absl's default help omits it for an installed command, whose main
      module is the console-script wrapper).
    epilog: text printed after the flags, or a function that returns it
      (called only when help is asked for).
  Returns:
    The parser: argv (with the program name) -> the positional arguments,
    with the program name.
  """

  def parse(argv):
    if wants_help(argv[1:]):
      text = epilog() if callable(epilog) else epilog
      sys.stdout.write(help_text(FLAGS, usage, epilog=text))
      sys.stdout.flush()
      sys.exit(0)
    return _parse_into(FLAGS, argv, name,
                       'see `%s --help`' % program(argv[0]))

  return parse
