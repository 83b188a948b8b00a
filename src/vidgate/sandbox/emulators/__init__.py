"""One module per emulated wire protocol. Each exposes ``PROTOCOL`` and ``router(core)``."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def emulator_modules() -> dict[str, ModuleType]:
    mods: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        mods[mod.PROTOCOL] = mod
    return mods
