"""Architectures the importer does not convert, told apart by the key fragments that give each away,
so a file of one is refused as what it is ("looks like Swin2SR, which enhance_jax does not import")
instead of as a misfit of whichever known architecture shares a name such as `conv_after_body`.

Fingerprints are fragments of key names (any prefix, e.g. `params_ema.` or `module.`), each family's
chosen to be absent from every architecture in `archs.ARCHS`; `identify` returns the family and the
keys that matched. The families are those spandrel 0.4.2 detects that enhance_jax does not import.
"""

from collections.abc import Mapping, Sequence

# family -> fragments, all of which some key must contain (each fragment in at least one key).
FINGERPRINTS: dict[str, tuple[str, ...]] = {
    'Swin2SR': ('attn.logit_scale', 'attn.cpb_mlp.'),
    'DRCT': ('.swin1.attn.',),
    'ATD': ('residual_group.td',),
    'GRL': ('window_attn.attn_transform',),
    'RGT': ('attn.attns.0.rpe_biases', '.mlp.sg.'),  # DAT has the same buffers; its FFN is `ffn.sg`
    'SAFMN': ('safm.mfr.',),
    'DITN': ('UFONE.',),
    'CRAFT': ('hf_blocks.',),
    'SeemoRe': ('local_block.block.conv_1',),
    'MoSR': ('gblocks.',),
    'FDAT': ('inter.cg.',),
    'DCTLSA': ('transformer_body.',),
    'MoESR': ('in_to_dim.',),
    'Real-CUGAN': ('unet1.conv1.conv.',),
    'GFPGAN': ('stylegan_decoder.',),
    'RestoreFormer / CodeFormer': ('quantize.embedding.weight',),
    'SCUNet': ('m_head.0.', 'm_tail.0.'),
    'DRUNet': ('m_head.weight', 'm_down1.'),
    'NAFNet': ('intro.weight', 'ending.weight'),
    'KBNet': ('attgamma',),
    'FFTformer': ('ffn.fft',),
    'Uformer': ('encoderlayer_0.',),
    'AuraSR': ('mid_attn.',),
    'HVI-CIDNet': ('HVE_block',),
    'RetinexFormer': ('estimator.depth_conv',),
    'SwiftSRGAN': ('initial.cnn.depthwise',),
    'IPT': ('body.encoder.layers.',),
    'LaMa': ('bn_l.running_mean',),
}


def identify(sd: Mapping) -> tuple[str, list[str]] | None:
  """(family, the keys that gave it away) for a state_dict of an architecture the importer does
  not convert, or None when no fingerprint matches."""
  for family, fragments in FINGERPRINTS.items():
    hits = [next((k for k in sd if fragment in k), None) for fragment in fragments]
    if all(hits):
      return family, list(dict.fromkeys(hits))
  return None


def top_modules(keys: Sequence[str], n: int = 8) -> list[str]:
  """The first N distinct top-level module names of KEYS (after one 'module.'/'params*.' wrapper)."""
  names = []
  for key in keys:
    parts = key.split('.')
    head = parts[1] if parts[0] in ('module', 'params', 'params_ema', 'model') and len(parts) > 2 else parts[0]
    if head not in names:
      names.append(head)
  return names[:n]
