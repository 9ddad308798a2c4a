"""The toy problem's figure, toy.png (matplotlib, optional): the panels of
the RELAX paper's Figure 1 from the results of rebar.toy.run.
"""

from rebar.report_figures import pyplot


def write_figure(results, relax_curves, path):
  """toy.png: loss, log-variance and learned relaxations; False without
  matplotlib."""
  plt = pyplot()
  if plt is None:
    return False
  fig, (ax_loss, ax_var, ax_c) = plt.subplots(1, 3, figsize=(15, 4.2))
  for name, r in results['estimators'].items():
    ax_loss.plot(r['steps'], r['loss'], label=name)
    ax_var.plot(r['log_steps'], r['log_variance'], label=name)
  ax_loss.set(title='loss L(θ) (exact)', xlabel='step', ylabel='L(θ)')
  ax_var.set(title='gradient log-variance (per %d steps)'
             % results['config']['log_every'], xlabel='step',
             ylabel='log Var(ĝ)')
  u = relax_curves['u']
  if 'rebar' in relax_curves:
    c = relax_curves['rebar']
    ax_c.plot(u, c['relaxation'],
              label='REBAR f(σ(z/λ)) (η = %.3f), θ = %.2f'
              % (c['eta'], c['theta']))
  if 'relax' in relax_curves:
    c = relax_curves['relax']
    ax_c.plot(u, c['c'], label='RELAX c_φ(z), θ = %.2f' % c['theta'])
  ax_c.axhline(relax_curves['f0'], color='gray', ls='--', lw=0.8,
               label='f(0), f(1)')
  ax_c.axhline(relax_curves['f1'], color='gray', ls=':', lw=0.8)
  ax_c.set(title='learned relaxation at the final θ', xlabel='u',
           ylabel='c(z), z = θ + log u - log(1-u)')
  for ax in (ax_loss, ax_var, ax_c):
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True
