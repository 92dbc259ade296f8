"""dinokit: self-supervised Vision Transformers (DINO) and dense ViT descriptors."""

__version__ = "0.1.0"
