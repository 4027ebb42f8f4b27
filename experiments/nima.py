"""NIMA (report 002; Talebi & Milanfar 2018): an aesthetic-quality network trained on AVA's rating
histograms with the EMD, for report 002's NIMA-guided loss (`loss.nima_from=runs/nima`) and as a metric
(`python -m enhance_jax.score --nima runs/nima`, `evaluate --nima runs/nima`).

Model: an ImageNet backbone (`model.backbone`: 'mnasnet', the report's; 'mobilenet_v2'; 'mobilenet',
the NIMA paper's) with its classifier replaced by global average pooling, dropout 0.75 and a 10-way
softmax over the scores 1..10. The backbone starts from torchvision ImageNet weights given as
`--set model.backbone_weights=mnasnet1.0_top1_73.512-f206786ef8.pth` (mobilenet_v2: mobilenet_v2-
b0353104.pth; MobileNet v1 has no torchvision layout), else random, said once.

Training as the report: AVA (`--set data.source=ava:DIR`, DIR/AVA.txt and DIR/images/ID.jpg), 80/20
split, every image scaled to 256 x 256 (aspect not kept) and randomly cropped to 192 x 192 (plus a
random horizontal flip, NIMA's), batch 128, 25 epochs, Adam 1e-4 with an exponential decay (chosen
where the report is silent: x0.95 per epoch, smooth), loss the EMD with r = 2 (`loss.emd`). Validation
reports the EMD and the linear (LCC) and rank (SRCC) correlations of predicted and true mean scores;
the best checkpoint is the lowest validation EMD (the report reached 0.07 with MnasNet).

With no dataset named, it trains on the embedded photos, each crop rated by `ava.synthetic_histogram`
(a Gaussian of AVA's spread 1.4 around a mean from the crop's exposure and contrast), so the whole
path runs offline; such a NIMA predicts that function, not human taste.
"""

import ml_collections

from enhance_jax.training.config import base_config

REPORT = '002'
AVA_IMAGES = 255_530          # AVA.txt lines (images actually downloadable vary by a few hundred)
BATCH = 128
EPOCHS = 25


def get_config():
  c = base_config()
  c.unlock()
  c.name = 'nima'
  c.model = ml_collections.ConfigDict({
      'name': 'nima',
      'backbone': 'mnasnet',             # 'mnasnet' (report 002) | 'mobilenet_v2' | 'mobilenet'
      'dropout': 0.75,
      'scale': 1,                        # a rating model keeps no scale
      'backbone_weights': '',            # torchvision ImageNet state_dict; '' = random (warned)
      'init_from': ''})                  # a `nima` workdir / converted NIMA to continue from
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})

  c.data.source = 'embedded'             # 'ava:DIR' for AVA; unrated photos get synthetic ratings
  c.data.val_fraction = 0.2              # the report's 80/20 split
  c.data.val_max_images = 500            # validated in training (evaluate scores every held-out one)
  c.data.hr_resize = 256                 # every image scaled to 256 x 256 ...
  c.data.hr_resize_mode = 'stretch'      # ... whole, aspect not kept
  c.data.patch_size = 192                # ... then randomly cropped to 192 x 192
  c.data.val_patch_size = 0              # validation: the centre 192 x 192
  c.data.degradation = 'identity'        # nothing is degraded: the model rates the crop
  c.data.augment = True                  # random horizontal flips

  c.loss.pretrain = ml_collections.ConfigDict({'emd': 1.0})
  c.loss.gan = ml_collections.ConfigDict({})
  c.loss.emd_r = 2.0                     # NIMA's r: the EMD's exponent

  steps_per_epoch = int(AVA_IMAGES * 0.8) // BATCH
  t = c.train
  t.batch_size = BATCH
  t.num_steps = t.pretrain_steps = EPOCHS * steps_per_epoch
  t.pretrain_lr = 1e-4
  t.b1, t.b2 = 0.9, 0.999
  t.lr_schedule = 'exponential'          # lr * lr_decay^(step / lr_decay_steps)
  t.lr_decay = 0.95
  t.lr_decay_steps = steps_per_epoch     # x0.95 per epoch
  t.ema_decay = 0.0
  t.steps_per_epoch = steps_per_epoch
  t.eval_every_steps = steps_per_epoch
  t.checkpoint_every_steps = steps_per_epoch
  t.best_metric = 'emd'                  # the lowest validation EMD is kept as best
  t.early_stopping_patience = 0
  return c.lock()
