"""Plain `nn.Module`s, registered by name. Importing this package registers them all.

Every module in this folder is imported here, so a new model file needs no other edit.
Models import only torch (and the registry): never training, config or logging code.
"""

import importlib
import pkgutil

from vislab.models.registry import create_model, list_models, model_entry, register_model

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["create_model", "list_models", "model_entry", "register_model"]
