"""Pretrained weights (PyTorch `.pth`/`.pt`, `.safetensors`, `.npz`, ncnn) into Flax variables.

By concern, bottom up (a module imports only those listed before it; .importlinter holds it):
  files       weight files -> flat `{key: np.ndarray}`; flat <-> nested params; params .npz files
  converter   the one table-driven converter (`Layout`, `convert`, its mismatch sentence) and the
              helpers layouts build tables with
  generators  layouts of released SR generators: RRDBNet, SRVGGNetCompact, MSRResNet, EDSR
  vgg19       VGG19's layout (torchvision, BasicSR or Flax names) and `load_vgg19` for the losses
  nima        NIMA's torchvision backbones (mobilenet_v2, mnasnet) and a whole NIMA
  backbones   ResNet18/VGG16 layouts, `load_backbone` by name, `with_backbone_weights` for a state
  archs       `ARCHS` (detect, layout, module per architecture), `import_weights`, `load_weights`
  model_dir   model directories (model.json + variables.npz) that convert writes
"""

from .archs import ARCHS
from .archs import import_weights
from .archs import infer_arch
from .archs import load_weights
from .archs import rrdbnet_params_from_state_dict
from .backbones import load_backbone
from .backbones import resnet18_params_from_state_dict
from .backbones import vgg16_params_from_state_dict
from .backbones import warn_random_backbone
from .backbones import with_backbone_weights
from .converter import describe
from .files import flatten_params
from .files import load_params_npz
from .files import load_state_dict
from .files import save_params_npz
from .files import unflatten_params
from .generators import EDSR_LARGE_FEATURES
from .model_dir import check_out_dir
from .model_dir import is_model_dir
from .model_dir import read_model_dir
from .model_dir import write_model_dir
from .nima import infer_backbone
from .nima import nima_backbone_params_from_state_dict
from .nima import nima_params_from_state_dict
from .vgg19 import load_vgg19
from .vgg19 import vgg19_params_from_state_dict
from .vgg19 import warn_random_vgg19

__all__ = [
    'ARCHS',
    'EDSR_LARGE_FEATURES',
    'check_out_dir',
    'describe',
    'flatten_params',
    'import_weights',
    'infer_arch',
    'infer_backbone',
    'is_model_dir',
    'load_backbone',
    'load_params_npz',
    'load_state_dict',
    'load_vgg19',
    'load_weights',
    'nima_backbone_params_from_state_dict',
    'nima_params_from_state_dict',
    'read_model_dir',
    'resnet18_params_from_state_dict',
    'rrdbnet_params_from_state_dict',
    'save_params_npz',
    'unflatten_params',
    'vgg16_params_from_state_dict',
    'vgg19_params_from_state_dict',
    'warn_random_backbone',
    'warn_random_vgg19',
    'with_backbone_weights',
    'write_model_dir',
]
