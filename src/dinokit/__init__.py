"""dinokit: self-supervised Vision Transformers (DINO) and dense ViT descriptors."""

import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    # Back PyTorch's CPU tensors of 2 MiB and more with transparent huge pages (Linux). Dense descriptors
    # are large fresh buffers (log-binned ViT-S/8 keys at stride 4 are 80 MB per image) and first touching
    # them page by page costs more than computing them. PyTorch reads this once, on import; set
    # THP_MEM_ALLOC_ENABLE=0 to keep its default.
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
