"""Every merge-method module in this package, imported so that each registers itself in ``MERGE_METHODS``.

New files are picked up automatically (``pkgutil``): drop ``extra_<name>.py`` here, decorate its functions with
:func:`tutti.merging.base.merge_method`, and the method is available by name from YAML and the Python API.
"""

from __future__ import annotations

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
