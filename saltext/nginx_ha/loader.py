"""
Salt's ``salt.loader`` entry point (``pyproject.toml``): where this package's modules are.

Salt calls :func:`get_dirs` whenever it builds a loader and takes the list under the loader's
kind (``_module_dirs`` in ``salt/loader/__init__.py``). Salt 3008 asks for every kind but
``utils`` (its utils loader skips entry points); ``utils`` is listed for completeness: the
modules import ``_utils`` as ordinary Python (see ``saltext/nginx_ha/__init__.py``).
"""

import os

PACKAGE_ROOT = os.path.dirname(os.path.abspath(__file__))

# Salt's loader kind -> the folder, named as in the checkout.
FOLDERS = {"modules": "_modules", "states": "_states", "runners": "_runners", "engines": "_engines", "utils": "_utils"}


def _folder(name):
    installed = os.path.join(PACKAGE_ROOT, name)
    if os.path.isdir(installed):
        return installed
    return os.path.normpath(os.path.join(PACKAGE_ROOT, os.pardir, os.pardir, name))  # pip install -e: the checkout's


def get_dirs():
    """``{kind: [directory]}`` for Salt's loader."""
    return {kind: [_folder(folder)] for kind, folder in FOLDERS.items()}
