"""Installs the `rebar` library and the `rebar_train` / `download_data` commands."""

from setuptools import find_packages, setup

setup(
    name='rebar',
    version='0.1.0',
    description=('TensorFlow 2 reimplementation of REBAR (Tucker et al. 2017) '
                 'and related gradient estimators for sigmoid belief networks'),
    python_requires='>=3.9',
    packages=find_packages(include=['rebar', 'rebar.*']),
    py_modules=['rebar_train', 'download_data'],
    install_requires=['tensorflow', 'numpy', 'scipy', 'absl-py', 'requests'],
    # rl: the RELAX paper's tasks (CartPole-v1; LunarLander-v3 needs Box2D,
    # InvertedPendulum-v5 MuJoCo), as `pip install '.[rl]'`.
    extras_require={'tests': ['pytest'], 'plots': ['matplotlib'],
                    'rl': ['gymnasium[box2d,mujoco]>=1.0']},
    entry_points={'console_scripts': [
        'rebar_train = rebar_train:run',
        'download_data = download_data:run',
    ]},
)
