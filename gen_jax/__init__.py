"""gen_jax: every family of generative model through one trainer."""

__version__ = "0.1.0"
