"""The HTTP API: a FastAPI router with every route under ``/api/model-training``, and ``agroml serve``.

Include it in an existing FastAPI app in one line (the prefix is the router's own: do not add one)::

    import agroml.api
    app.include_router(agroml.api.router)                     # settings from the environment / .env
    app.include_router(agroml.api.make_router(settings))      # or settings of your own

Why the names are looked up lazily: FastAPI is an optional extra (``pip install 'agroml[api]'``), and
`agroml serve` must be able to say so, which it cannot if importing this package fails first.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Where every route lives; mounted once, by the router itself.
PREFIX = "/api/model-training"
_LAZY = {"router": "agroml.api.routes", "make_router": "agroml.api.routes", "create_app": "agroml.api.app"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'agroml.api' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    if name == "router":
        value = module.make_router()
        globals()["router"] = value  # one router per process, like any module-level object
        return value
    return getattr(module, name)
