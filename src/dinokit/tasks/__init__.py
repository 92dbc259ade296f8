"""Zero-shot tasks built on dense ViT descriptors: correspondences, PCA, similarity maps and more.

Each task lives in its own module (``dinokit.tasks.<name>``) and is a plain
Python API that the matching ``dinokit <name>`` command wraps.
"""
