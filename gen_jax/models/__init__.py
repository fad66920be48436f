"""Networks only (Flax NNX). A model sees its own frozen config dataclass."""
