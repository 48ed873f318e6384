"""Upper bounds shared by the models' option checks (:data:`OPTION_RULES` of each model).

They stop typos (``10**6`` channels, a learning rate of 1000) at build, before minutes of allocation or a
diverging run; every real configuration of the papers and benchmarks is far below them.
"""

__all__ = ["MAX_DEPTH", "MAX_EPOCHS", "MAX_KERNEL", "MAX_LEARNING_RATE", "MAX_WEIGHT", "MAX_WIDTH"]

MAX_WIDTH = 8192
"""Channels, feature and hidden widths."""
MAX_DEPTH = 256
"""Blocks, layer indices."""
MAX_KERNEL = 255
"""Convolution and filter kernel sides."""
MAX_EPOCHS = 100_000
MAX_LEARNING_RATE = 10.0
MAX_WEIGHT = 1e6
"""Loss weights."""
