"""Policy gradients with learned control variates on Gymnasium tasks (RELAX
paper, section 6.3): A2C against RELAX (discrete actions) and LAX
(continuous), which differ only in the control variate.

  settings  the hyperparameters, their per-task defaults, run names;
  envs      environments (optional extra `.[rl]`) and seeded episodes;
  returns   the learning signal R_t of each step;
  agent     the networks and the one update per episode;
  train     the loop: records, checkpoints, resumption, "solved";
  report    episodes to solve and the curves of a sweep's runs.

`python -m rebar.rl --env=CartPole-v1 --method=relax --seed=1
--max_episodes=1000 --working_dir=DIR` runs one; docs/rl.md has the rest.
"""
