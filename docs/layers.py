"""Draws docs/layers.png, the package's layers as .importlinter's first contract states them, each box
listing its modules (python docs/layers.py). Imports flow downwards only."""

import configparser
import pathlib

from PIL import Image, ImageDraw, ImageFont

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'enhance_jax'
WIDTH, ROW, GAP, PAD = 1240, 58, 14, 16


def layers():
  """[[name, ...] per layer, top first] of the contract named 'enhance_jax layers: ...'."""
  config = configparser.ConfigParser()
  config.read(ROOT / '.importlinter')
  section = config['importlinter:contract:layers']
  rows = [line.strip() for line in section['layers'].splitlines() if line.strip()]
  return [[name.strip() for name in row.split('|')] for row in rows]


def contents(name):
  """What layer NAME holds: a subpackage's modules and subpackages, or the module itself."""
  path = PACKAGE / name
  if path.is_dir():
    parts = sorted(p.stem if p.is_file() else p.name + '/' for p in path.iterdir()
                   if (p.suffix == '.py' and p.stem != '__init__') or (p / '__init__.py').is_file())
    return f'{name}/: ' + ', '.join(parts)
  return f'{name}.py'


def font(size):
  for path in ('/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf',):
    if pathlib.Path(path).is_file():
      return ImageFont.truetype(path, size)
  return ImageFont.load_default()


def draw(out=ROOT / 'docs' / 'layers.png'):
  rows = layers()
  image = Image.new('RGB', (WIDTH, PAD * 2 + len(rows) * (ROW + GAP)), 'white')
  pen, title, small = ImageDraw.Draw(image), font(17), font(13)
  for i, row in enumerate(rows):
    top = PAD + i * (ROW + GAP)
    width = (WIDTH - 2 * PAD - (len(row) - 1) * GAP) // len(row)
    for j, name in enumerate(row):
      left = PAD + j * (width + GAP)
      shade = 235 - 12 * (i % 2)
      pen.rounded_rectangle((left, top, left + width, top + ROW), 8, fill=(shade, 242, 250),
                            outline=(90, 110, 140), width=2)
      pen.text((left + 10, top + 6), name, fill=(20, 30, 60), font=title)
      text = contents(name)
      while pen.textlength(text, font=small) > width - 20 and len(text) > 4:
        text = text[:-5] + '...'
      pen.text((left + 10, top + 32), text, fill=(60, 60, 60), font=small)
    if i + 1 < len(rows):
      x = WIDTH // 2
      pen.polygon([(x - 7, top + ROW + 3), (x + 7, top + ROW + 3), (x, top + ROW + GAP - 2)],
                  fill=(90, 110, 140))
  image.save(out)
  return out


if __name__ == '__main__':
  print(draw())
