"""VideoNarrator: synchronized video storytelling (Yang et al., ACL 2024), reimplemented."""
import os

__version__ = "0.1.0"

# oneDNN (torch's CPU kernels for bf16 matrix products) keeps a compiled kernel, with its own
# buffers, for every shape it meets, up to 1,024 by default.  Packed training meets new sequence
# lengths at every step, so that cache only grew: a default training's memory crept from 2 to
# 6.2 GB.  Shapes repeat within a step (30 layers share them), so 128 entries keep the reuse
# (benchmarks/RESULTS.md).  oneDNN reads this once, at its first kernel: set here, before torch
# runs anything; a value already in the environment wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "128")
