"""TensorFlow's start-up notices: filtered by level, on file descriptor 2,
only while TensorFlow loads."""

import os
import subprocess
import sys
import textwrap

import pytest

from rebar import quiet

# What TensorFlow 2.21 prints while it loads on a machine without a GPU.
STARTUP = [
    quiet.BANNER + ' are written to STDERR',
    'I0000 00:00:1796183091.538609   27787 port.cc:153] oneDNN custom '
    'operations are on.',
    'I0000 00:00:1796183091.539023   27787 cudart_stub.cc:31] Could not find '
    'cuda drivers on your machine, GPU will not be used.',
    'I0000 00:00:1796183091.688156   27787 cpu_feature_guard.cc:227] This '
    'TensorFlow binary is optimized to use available CPU instructions.',
    'To enable the following instructions: AVX2 FMA, in other operations, '
    'rebuild TensorFlow with the appropriate compiler flags.',
    'E0000 00:00:1796183096.213704   27787 cuda_platform.cc:52] failed call to '
    'cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)',
]
WARNING = ('W0000 00:00:1796183096.3   27787 some_op.cc:10] a real warning')
ERROR = 'E0000 00:00:1796183096.4   27787 other.h:7] a real error'
FATAL = 'F0000 00:00:1796183096.5   27787 check.cc:1] Check failed: x'
PYTHON = 'I1202 03:44:59.952454 140601452604288 rebar_train.py:210] Run dir'


def kept(level, lines):
  line_filter = quiet.LineFilter(level)
  return [line for line in lines if line_filter.keep(line)]


def test_level_one_drops_the_startup_block_and_keeps_real_messages():
  lines = STARTUP + [WARNING, ERROR, FATAL, PYTHON, 'plain text']
  assert kept(1, lines) == [WARNING, ERROR, FATAL, PYTHON, 'plain text']


def test_levels_zero_two_and_three():
  lines = STARTUP + [WARNING, ERROR, FATAL]
  assert kept(0, lines) == lines
  assert kept(2, lines) == [ERROR, FATAL]
  assert kept(3, lines) == [FATAL]


def test_cuinit_error_is_kept_where_drivers_were_not_reported_missing():
  """Without the 'no CUDA drivers' notice before it, a cuInit failure is a
  real problem (a GPU machine whose driver fails)."""
  assert kept(1, [STARTUP[-1]]) == [STARTUP[-1]]


def test_continuation_is_dropped_only_after_a_dropped_line():
  assert kept(1, [WARNING, STARTUP[4]]) == [WARNING, STARTUP[4]]


@pytest.mark.parametrize('value, level', [(None, 1), ('0', 0), ('2', 2),
                                          ('9', 3), ('x', 0)])
def test_log_level_reads_the_users_setting(monkeypatch, value, level):
  if value is None:
    monkeypatch.delenv('TF_CPP_MIN_LOG_LEVEL', raising=False)
  else:
    monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', value)
  assert quiet.log_level() == level


def run_child(code, env_level=None):
  env = dict(os.environ)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  if env_level is not None:
    env['TF_CPP_MIN_LOG_LEVEL'] = env_level
  return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                        capture_output=True, text=True, env=env, check=True,
                        timeout=300)


def test_descriptor_two_is_filtered_inside_the_block_and_restored_after():
  """Writes to fd 2 itself (as C++ code does), inside and after."""
  result = run_child('''
      import os
      from rebar import quiet
      with quiet.filtered_stderr(1):
        os.write(2, b"I0000 00:00:1.0   1 port.cc:1] noise\\nkept\\npartial")
      os.write(2, b"I0000 00:00:1.0   1 port.cc:1] after\\n")
      ''')
  assert result.stderr == 'kept\npartialI0000 00:00:1.0   1 port.cc:1] after\n'


def test_importing_tensorflow_prints_no_startup_block_by_default():
  result = run_child('''
      import sys
      from rebar import quiet
      tf = quiet.import_tensorflow()
      assert tf.reduce_sum(tf.ones([2])).numpy() == 2.0
      print('mine', file=sys.stderr)
      ''')
  assert quiet.BANNER not in result.stderr
  assert 'port.cc' not in result.stderr and 'cuInit' not in result.stderr
  assert result.stderr.endswith('mine\n')
