"""Interactive inspector: a local web page to explore dense ViT descriptors (``dinokit inspect``).

Click or hover a point in any image to see its cosine-similarity heat map over
every image with the best match marked; switch layer, facet, binning and
stride; view the saliency, the PCA and the correspondences of a pair.

Example::

    from dinokit.features import Extractor
    from dinokit.inspect import InspectorSession, InspectorServer

    session = InspectorSession(["a.jpg", "b.jpg"], Extractor("dino_vits8", stride=4))
    session.compute()
    with InspectorServer(session) as server:   # 127.0.0.1, a free port
        print(server.url)
        ...

or, blocking until Ctrl-C, :func:`serve_inspector`.
"""

from .server import InspectorServer, create_app, serve_inspector
from .session import DescriptorView, InspectorSession, NotReady, ViewSettings

__all__ = [
    "InspectorSession",
    "InspectorServer",
    "DescriptorView",
    "ViewSettings",
    "NotReady",
    "create_app",
    "serve_inspector",
]
