"""tfds:NAME reads a real prepared TensorFlow Datasets dataset (array_record) without TensorFlow."""

import io

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from conftest import tiny_config
from enhance_jax.data import datasets
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError


def _png(value, shape=(80, 96, 3)):
  buf = io.BytesIO()
  Image.fromarray(np.full(shape, value, np.uint8)).save(buf, format='PNG')
  return buf.getvalue()


class TinyPhotos(tfds.core.GeneratorBasedBuilder):
  """Six flat-colour 80x96 photos: four for training, two for validation."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {'image': tfds.features.Image(shape=(None, None, 3))}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(0, 4), 'validation': self._generate_examples(4, 6)}

  def _generate_examples(self, start, stop):
    for i in range(start, stop):
      yield i, {'image': _png(40 * i)}  # encoded bytes: no TensorFlow needed to write them


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('tfds')
  TinyPhotos(data_dir=str(d), file_format='array_record').download_and_prepare()
  return str(d)


def test_tfds_source_reads_images_as_uint8_rgb(data_dir):
  src = datasets.open_source('tfds:tiny_photos', data_dir, 'train')
  assert len(src) == 4
  values = sorted(int(src[i][0, 0, 0]) for i in range(4))
  assert values == [0, 40, 80, 120]
  assert src[0].shape == (80, 96, 3) and src[0].dtype == np.uint8


def test_tfds_train_and_validation_splits_feed_the_pipeline(data_dir):
  config = tiny_config('data.source=tfds:tiny_photos', f'data.data_dir={data_dir}',
                       'train.batch_size=4')
  train, val = datasets.train_val_sources(config.data)
  assert (len(train), len(val)) == (4, 2)
  assert sorted(int(val[i][0, 0, 0]) for i in range(2)) == [160, 200]
  batch = next(iter(input_pipeline.train_dataset(train, config).to_iter_dataset()))
  assert batch['hr'].shape == (4, 32, 32, 3) and batch['lr'].shape == (4, 8, 8, 3)
  # flat-colour images stay flat through crop, augment and degradation
  np.testing.assert_allclose(batch['hr'].std(axis=(1, 2, 3)), 0, atol=1e-6)


def test_missing_tfds_dataset_is_a_user_error(data_dir):
  with pytest.raises(UserError, match='prepare it first'):
    datasets.open_source('tfds:no_such_photos', data_dir, 'train')


class TinyFaces(tfds.core.GeneratorBasedBuilder):
  """CelebA-shaped records (218x178 RGB 'image' plus attributes): four to train on, two to validate."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(218, 178, 3)),
        'attributes': {'Smiling': np.bool_}}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(0, 4), 'validation': self._generate_examples(4, 6)}

  def _generate_examples(self, start, stop):
    yy, xx = np.mgrid[0:218, 0:178]
    for i in range(start, stop):
      face = np.stack([(xx * (i + 1)) % 256, (yy * 2 + 30 * i) % 256, (xx + yy) % 256], -1)
      buf = io.BytesIO()
      Image.fromarray(face.astype(np.uint8)).save(buf, format='PNG')
      yield i, {'image': buf.getvalue(),  # encoded bytes: no TensorFlow needed to write them
                'attributes': {'Smiling': bool(i % 2)}}


@pytest.mark.slow
def test_srgan_trains_on_a_celeba_shaped_tfds_dataset_resized_to_64(tmp_path):
  """Report 003's route: tfds faces, each centre-cropped to a square and resized to HR 64 (LR 16)."""
  from enhance_jax.training import config as config_lib# pylint: disable=g-import-not-at-top
  from enhance_jax import evaluate# pylint: disable=g-import-not-at-top
  from enhance_jax import train# pylint: disable=g-import-not-at-top
  data_dir = tmp_path / 'tfds'
  TinyFaces(data_dir=str(data_dir), file_format='array_record').download_and_prepare()
  config = config_lib.get_config('srgan', [
      'data.source=tfds:tiny_faces', f'data.data_dir={data_dir}', 'data.hr_resize=64',
      'model.num_blocks=1', 'model.num_features=8', 'discriminator.num_features=8',
      'discriminator.dense_features=16', 'loss.content_layer=conv2_2', 'train.batch_size=4',
      'train.eval_every_steps=2', 'train.checkpoint_every_steps=2', 'train.pretrain_steps=2', 'train.num_steps=4',
      'train.progress=False'])
  train.train_and_evaluate(config, tmp_path / 'run')
  result = evaluate.run(tmp_path / 'run', 'latest')
  assert [(r['height'], r['width']) for r in result['images']] == [(64, 64), (64, 64)]
  assert result['checkpoint']['step'] == 4


class TrainOnlyPhotos(TinyPhotos):
  """Like cats_vs_dogs: one 'train' split of ten photos (values 0, 25, ..., 225), nothing held out."""

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(0, 10)}

  def _generate_examples(self, start, stop):
    for i in range(start, stop):
      yield i, {'image': _png(25 * i)}


def test_a_tfds_dataset_without_a_validation_split_holds_out_its_own_share(tmp_path):
  TrainOnlyPhotos(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  config = tiny_config('data.source=tfds:train_only_photos', f'data.data_dir={tmp_path}',
                       'data.val_fraction=0.2', 'train.batch_size=4')
  train, val = datasets.train_val_sources(config.data)
  assert (len(train), len(val)) == (8, 2)
  values = sorted(int(s[i][0, 0, 0]) for s in (train, val) for i in range(len(s)))
  assert values == [25 * i for i in range(10)]  # every photo once, on one side
  half = tiny_config('data.source=tfds:train_only_photos', f'data.data_dir={tmp_path}',
                     'data.val_fraction=0.2', 'data.fraction=0.5', 'train.batch_size=4')
  train, val = datasets.train_val_sources(half.data)
  assert len(train) + len(val) == 5 and len(val) == 1


class Div2kTiny(tfds.core.GeneratorBasedBuilder):
  """DIV2K-shaped (tfds's div2k): per config an 'hr' photo (48x64) and its 'lr' (24x32), four to
  train on, two to validate (800 and 100 in DIV2K)."""
  VERSION = tfds.core.Version('2.0.0')
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name='bicubic_x2'),
                     tfds.core.BuilderConfig(name='unknown_x2')]

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {'hr': tfds.features.Image(), 'lr': tfds.features.Image()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(0, 4), 'validation': self._generate_examples(4, 6)}

  def _generate_examples(self, start, stop):
    for i in range(start, stop):  # LR of another value than its HR, so reading it would show
      yield i, {'hr': _png(40 * i, (48, 64, 3)), 'lr': _png(255 - 40 * i, (24, 32, 3))}


@pytest.fixture(scope='module')
def div2k_dir(tmp_path_factory):
  """Div2kTiny's bicubic_x2 prepared (its default, the first config); unknown_x2 left unprepared."""
  d = tmp_path_factory.mktemp('div2k')
  Div2kTiny(data_dir=str(d), config='bicubic_x2', file_format='array_record').download_and_prepare()
  return str(d)


@pytest.mark.parametrize('name', ['div2k_tiny', 'div2k_tiny/bicubic_x2'])
def test_a_div2k_shaped_tfds_dataset_is_read_from_its_hr_feature(div2k_dir, name):
  src = datasets.open_source(f'tfds:{name}', div2k_dir, 'train')
  assert len(src) == 4 and src.key == 'hr'
  assert src[0].shape == (48, 64, 3) and src[0].dtype == np.uint8
  assert sorted(int(src[i][0, 0, 0]) for i in range(4)) == [0, 40, 80, 120]
  assert isinstance(src.source[0]['lr'], bytes)  # the unused LR is left encoded, never decoded


def test_a_div2k_shaped_tfds_dataset_splits_and_feeds_the_pipeline(div2k_dir):
  config = tiny_config('data.source=tfds:div2k_tiny/bicubic_x2', f'data.data_dir={div2k_dir}',
                       'train.batch_size=4')
  train, val = datasets.train_val_sources(config.data)
  assert (len(train), len(val)) == (4, 2)  # its own 'validation' split, as DIV2K's 800/100
  assert sorted(int(val[i][0, 0, 0]) for i in range(2)) == [160, 200]
  batch = next(iter(input_pipeline.train_dataset(train, config).to_iter_dataset()))
  # LR made from HR by the experiment's degradation (x4), not DIV2K's own x2 LR
  assert batch['hr'].shape == (4, 32, 32, 3) and batch['lr'].shape == (4, 8, 8, 3)
  np.testing.assert_allclose(batch['hr'].std(axis=(1, 2, 3)), 0, atol=1e-6)


def test_an_unprepared_tfds_config_is_a_user_error_not_a_download(div2k_dir):
  with pytest.raises(UserError, match='prepare it first'):
    datasets.open_source('tfds:div2k_tiny/unknown_x2', div2k_dir, 'train')


class TinyCaptions(tfds.core.GeneratorBasedBuilder):
  """No image at all: a 'label' and a 'caption' per record."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {'label': tfds.features.ClassLabel(num_classes=2), 'caption': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(2):
      yield i, {'label': i, 'caption': f'caption {i}'}


def test_a_tfds_dataset_without_an_image_feature_is_a_user_error_naming_its_features(tmp_path):
  TinyCaptions(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  with pytest.raises(UserError, match=r"features are label \(ClassLabel\), caption \(Text\).*"
                                      r"Image feature named 'image' \(or 'hr'"):
    datasets.open_source('tfds:tiny_captions', str(tmp_path), 'train')
