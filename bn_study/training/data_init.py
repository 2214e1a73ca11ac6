"""Params a model family fits to the training data before its first step
(models.data_init: airbench's whitening kernel), computed once per run and
kept in the run folder, so a relaunch reuses them rather than refitting."""

import io

from absl import logging
from flax import traverse_util
import jax
import numpy as np

from bn_study import models
from bn_study import workdir as workdir_lib
from bn_study.runtime import mesh as mesh_lib
from bn_study.training import optim


def fit(state, config, feed, workdir, mesh):
  """`state` with the family's data-fit params in it (and its optimizer
  state started again from them: lookahead's averages begin at the
  weights); as it was for families that fit nothing."""
  spec = models.data_init(config.model)
  if spec is None:
    return state
  path = workdir_lib.path(workdir) / workdir_lib.DATA_INIT
  if path.exists():
    with path.open('rb') as f:
      saved = np.load(io.BytesIO(f.read()))
      values = {tuple(k.split('/')): saved[k] for k in saved.files}
    logging.info('Data-fit params from %s.', path)
  else:
    n, fit_fn = spec
    values = {k: np.asarray(v)
              for k, v in fit_fn(feed.first_train_images(n)).items()}
    if jax.process_index() == 0:
      buffer = io.BytesIO()
      np.savez(buffer, **{'/'.join(k): v for k, v in values.items()})
      path.write_bytes(buffer.getvalue())
    logging.info('Fit %s to the first %d training images; kept in %s.',
                 ', '.join('/'.join(k) for k in values), n, path)
  params = traverse_util.flatten_dict(jax.device_get(state.params))
  for key, value in values.items():
    if params[key].shape != value.shape:
      raise ValueError(f'{path}: {"/".join(key)} has shape {value.shape}, '
                       f'the model {params[key].shape}.')
    params[key] = value.astype(params[key].dtype)
  params = traverse_util.unflatten_dict(params)

  def start(params, batch_stats):
    return optim.with_batch_stats(state.tx.init(params), batch_stats)

  repl = mesh_lib.replicated(mesh)
  params = jax.device_put(params, repl)
  opt_state = jax.jit(start, out_shardings=repl)(params, state.batch_stats)
  return state.replace(params=params, opt_state=opt_state)
