"""``ulmfit serve``: a classifier over HTTP, with micro-batching and a page that shows why.

The server (:mod:`ulmfit.serve.app`: ``create_app``, ``serve``) needs the ``serve``
extra (FastAPI, uvicorn, Prometheus client, Captum); its settings do not.
"""

from ulmfit.serve.config import ServeConfig

__all__ = ["ServeConfig"]
