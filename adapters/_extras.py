"""Optional frameworks: import them on demand, or say which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """A framework glue module was used without its framework installed."""

    def __init__(self, module: str, extra: str) -> None:
        self.extra = extra
        super().__init__(f"trackgate's {extra} support needs {module}: pip install 'trackgate[{extra}]'", name=module)


def require(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is not None and exc.name != module and not module.startswith(exc.name + "."):
            raise
        raise MissingExtra(module, extra) from exc


def settings_keywords(items: dict[str, object]) -> dict[str, object]:
    """``TRACKGATE_COOKIE_NAME`` style keys -> Settings keywords (``cookie_name``); other keys are ignored."""
    prefix = "TRACKGATE_"
    return {key[len(prefix) :].lower(): value for key, value in items.items() if key.startswith(prefix)}
