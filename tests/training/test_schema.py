"""The config schema: one place for every field, what experiments, old workdirs and --set rely on."""

import contextlib
import io
import os
import pathlib
import re
import subprocess
import sys

import ml_collections
import pytest

from enhance_jax import train as train_cli
from enhance_jax.errors import UserError
from enhance_jax.training import config as config_lib
from enhance_jax.training import schema

PACKAGE = pathlib.Path(schema.__file__).resolve().parents[1]


def test_every_experiment_holds_every_schema_field_and_no_other():
  fields = schema.field_names()
  tables = [k for k in fields if schema.is_table(k)]
  modules = tuple(f'{s}.' for s in schema.MODULE_SECTIONS)
  plain = lambda keys: {k for k in keys if not k.startswith(modules)
                        and not any(k.startswith(t + '.') for t in tables) and k not in tables}
  for name in config_lib.list_experiments():
    keys = config_lib._leaf_keys(config_lib.load_experiment(name))
    assert plain(keys) == plain(fields), name
    assert {'model.name', 'model.scale', 'model.init_from', 'discriminator.name'} <= set(keys), name


def test_experiment_with_a_misspelt_key_is_refused_with_the_nearest_names(tmp_path):
  path = tmp_path / 'mine.py'
  path.write_text('from enhance_jax.training.config import base_config\n\n'
                  'def get_config():\n  c = base_config()\n  c.train.batch_sise = 4\n  return c\n')
  with pytest.raises(UserError, match=r'train\.batch_sise: no such config key; did you mean '
                                      r'train\.batch_size'):
    config_lib.load_experiment(str(path))


def test_experiment_with_a_value_of_the_wrong_type_is_refused(tmp_path):
  path = tmp_path / 'mine.py'
  path.write_text('from enhance_jax.training.config import base_config\n\n'
                  "def get_config():\n  c = base_config()\n  c.train.ema_decay = 'high'\n  return c\n")
  with pytest.raises(UserError, match=r"mine\.py: .*'ema_decay'.*cannot be casted to type <class 'float'>"):
    config_lib.load_experiment(str(path))
  bad = ml_collections.ConfigDict(config_lib.base_config().to_dict(), type_safe=False)
  bad.train.ema_decay = 'high'
  with pytest.raises(UserError, match=r"train\.ema_decay='high': expected a value of type float"):
    schema.check(bad)


def test_an_old_config_gets_the_defaults_of_fields_added_since():
  old = config_lib.load_experiment('esrgan').to_dict()
  for section, key in (('train', 'lr_schedule'), ('train', 'lr_multipliers'), ('data', 'target_sharpen'),
                       ('loss', 'content_layers'), ('data', 'realesrgan')):
    del old[section][key]
  del old['model']['init_from']
  done = schema.complete(old)
  assert done.train.lr_schedule == 'step' and dict(done.train.lr_multipliers) == {}
  assert done.data.target_sharpen == '' and dict(done.loss.content_layers) == {}
  assert done.data.realesrgan.sinc_prob == pytest.approx(0.1)
  assert done.model.init_from == '' and done.model.num_blocks == 23  # module fields kept as given
  schema.check(done)
  assert config_lib._leaf_keys(done) == config_lib._leaf_keys(schema.complete(done))  # idempotent


def test_set_may_add_a_term_to_an_open_section_with_its_value_type():
  c = config_lib.get_config('edsr', ['loss.gan.content=0.5', 'train.lr_multipliers.backbone=0'])
  assert c.loss.gan.content == pytest.approx(0.5) and c.train.lr_multipliers.backbone == 0.0
  with pytest.raises(UserError, match='expected a value of type float'):
    config_lib.get_config('edsr', ['loss.gan.content=much'])
  with pytest.raises(UserError, match='no such config key'):
    config_lib.get_config('edsr', ['train.no_such_table.x=1'])


def test_help_config_prints_every_field_with_its_default_and_meaning():
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert train_cli.main(['--help-config']) == 0
  text = out.getvalue()
  for key in schema.field_names():
    line = next((l for l in text.splitlines() if l.strip().startswith(f'{key} = ')), None)
    assert line is not None, key
    assert '#' in line and line.split('#', 1)[1].strip(), key  # a meaning, not only a default
  assert 'rrdbnet: num_blocks=23, num_features=64' in text  # module fields, from the module itself
  section = io.StringIO()
  with contextlib.redirect_stdout(section):
    assert train_cli.main(['--help-config', 'data.affine']) == 0
  assert section.getvalue().splitlines()[0].strip() == 'data:'
  assert 'data.affine.zoom = 0.0' in section.getvalue() and 'train.' not in section.getvalue()
  assert train_cli.main(['--help-config', 'trian']) == 2


def test_no_module_reads_a_schema_field_with_a_fallback_default():
  """A `.get('FIELD', default)` of a schema field would be a second default: the schema is the one."""
  fields = {k.rsplit('.', 1)[-1] for k in schema.field_names()} - {'name'}
  pattern = re.compile(r"\.get\(['\"](\w+)['\"]\s*,")
  found = []
  for path in PACKAGE.rglob('*.py'):
    if path.name == 'schema.py':
      continue
    for n, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
      found += [f'{path.relative_to(PACKAGE)}:{n}: {m}' for m in pattern.findall(line) if m in fields]
  assert not found, found


def test_a_training_command_validates_its_config_once(monkeypatch, tmp_path):
  calls = []
  real = config_lib.validate
  monkeypatch.setattr(config_lib, 'validate', lambda c: (calls.append(1), real(c))[1])
  rc = train_cli.main(['--exp', 'esrgan_cpu', '--workdir', str(tmp_path / 'w'),
                       '--set', 'train.num_steps=0'])
  assert rc == 2 and calls == [1]  # refused by the one validation, before any step


def test_defaults_are_a_config_every_part_accepts():
  c = config_lib.base_config()
  c.name = 'defaults'
  config_lib.validate(ml_collections.ConfigDict(c.to_dict()))


@pytest.mark.slow
def test_help_config_piped_into_a_reader_that_stops_early_ends_cleanly():
  """`train --help-config | head -1`: a pipe whose reader is gone is no traceback and no failure."""
  read, write = os.pipe()
  os.close(read)  # the reader has stopped before the first write: every write meets EPIPE
  try:
    proc = subprocess.run([sys.executable, '-m', 'enhance_jax.train', '--help-config'], stdout=write,
                          stderr=subprocess.PIPE, timeout=120, check=False)
  finally:
    os.close(write)
  err = proc.stderr.decode()
  assert proc.returncode == 0 and 'Traceback' not in err, err
