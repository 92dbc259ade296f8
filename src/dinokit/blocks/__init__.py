"""Building blocks under the tasks: k-means, matching, mask refinement, drawing, descriptor storage.

Each module holds one tool and imports only from :mod:`dinokit.features`,
:mod:`dinokit.io` and :mod:`dinokit.errors`, never from the tasks, the
evaluation code, the inspector or the CLI.
"""
