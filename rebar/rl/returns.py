"""The learning signal R_t of each time step of an episode: the black box
whose expectation the policy gradient differentiates.

n_step = 0 (the discrete tasks; the RELAX paper omits bootstrapping there):
  R_t = Σ_{k ≥ t} γ^{k-t} r_k, the discounted return to the episode's end.
n_step = N > 0 (the continuous task, bootstrapped as the paper does):
  R_t = Σ_{k=t}^{t+N-1} γ^{k-t} r_k + γ^N V(s_{t+N})   where t + N < T,
  R_t = Σ_{k=t}^{T-1} γ^{k-t} r_k + γ^{T-t} V(s_T)      otherwise, the last
        term only where the episode was cut by the time limit (truncated),
        not where it ended (terminated: the value after the end is 0).

The agent needs V at the bootstrap states, so this returns R_t in parts:
the reward part, and for each t the index of its bootstrap state in
`[s_0, ..., s_T]` and its weight (γ^k, or 0 for none).
"""

import numpy as np


def learning_signals(rewards, gamma, n_step, truncated):
  """(reward_part [T], bootstrap_index [T] int32, bootstrap_weight [T]).

  Args:
    rewards: r_0..r_{T-1}.
    gamma: the discount γ.
    n_step: 0 for Monte-Carlo returns, N for N-step returns.
    truncated: the episode was cut by its time limit (s_T is not terminal).
  """
  rewards = np.asarray(rewards, np.float64)
  steps = len(rewards)
  index = np.zeros(steps, np.int32)
  weight = np.zeros(steps, np.float64)
  if n_step == 0:
    part = np.zeros(steps)
    running = 0.0
    for t in reversed(range(steps)):
      running = rewards[t] + gamma * running
      part[t] = running
    return part.astype(np.float32), index, weight.astype(np.float32)
  # Discounted prefix sums: Σ_{k=t}^{e-1} γ^{k-t} r_k = (P_e - P_t) / γ^t.
  powers = gamma ** np.arange(steps + 1)
  prefix = np.concatenate([[0.0], np.cumsum(rewards * powers[:-1])])
  t = np.arange(steps)
  end = np.minimum(t + n_step, steps)
  part = (prefix[end] - prefix[t]) / powers[t]
  index[:] = end
  weight = gamma ** (end - t).astype(np.float64)
  if not truncated:
    weight[end == steps] = 0.0
  return part.astype(np.float32), index, weight.astype(np.float32)
