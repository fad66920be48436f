r"""Class-conditional GAN on MNIST: conditional batch norm in the generator, a
spectrally normalized projection discriminator (Miyato & Koyama, 2018), hinge
loss.

Adam lr 2e-4, betas (0.5, 0.999), one discriminator update per generator
update (setting C of the SNGAN paper's standard-CNN sweep). The sample grid has
one row per class; the final eval adds the class accuracy of conditional
samples under the project's MNIST classifier, besides the Fréchet distance and
precision/recall.

  python -m gen_jax.main --exp=cgan_mnist --workdir=runs/cgan_mnist
  python -m gen_jax.main --exp=cgan_mnist:smoke --workdir=/tmp/cgan_smoke
"""

from gen_jax import config as config_lib

_dcgan_mnist = config_lib.load_module("dcgan_mnist")
smoke = _dcgan_mnist.smoke


def get_config():
  c = _dcgan_mnist.get_config()
  c.model.loss = "hinge"
  c.model.num_classes = 10
  c.model.spectral_norm = True
  c.model.d_norm = "none"
  c.eval.num_samples = 80  # 8 per class
  return c
