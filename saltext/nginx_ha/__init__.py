"""
nginx-ha as a Salt extension (``pip install .``, or ``salt-pip install .`` on onedir Salt).

The wheel is the checkout's own layout, folder for folder (``pyproject.toml`` maps them; no
second copy of any code in the repository)::

    saltext/nginx_ha/loader.py     Salt's "salt.loader" entry point (get_dirs)
    saltext/nginx_ha/_modules/     <- _modules/   execution module
    saltext/nginx_ha/_states/      <- _states/    state modules
    saltext/nginx_ha/_runners/     <- _runners/   runners
    saltext/nginx_ha/_engines/     <- _engines/   engine
    saltext/nginx_ha/_utils/       <- _utils/     the shared Python (schema, model, event wire format, ...)

Shared Python. The modules import ``_utils/`` as ordinary Python (``import nginx_ha_event``),
never through ``__utils__`` or by file path. Salt's loader puts utils directories on ``sys.path``
while it imports a module, but only those it syncs or is configured with
(``<extension_modules>/utils``, ``utils_dirs``): Salt 3008 never asks entry points for utils
(``salt.loader.utils`` calls ``_module_dirs(..., load_extensions=False)``), and a runner found
through ``runner_dirs`` gets no utils directory either. So a module that imports ``_utils`` first
does this, the one mechanism::

    if importlib.util.find_spec("nginx_ha_event") is None:  # not on the loader's sys.path
        sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_utils"))

i.e. the ``_utils`` folder beside the module's own folder: ``<repo>/_utils`` for the checkout
(``runner_dirs: <repo>/_runners``), ``saltext/nginx_ha/_utils`` for this package; a module synced
to ``<extension_modules>`` finds ``<extension_modules>/utils`` on the loader's path. Each module
thus imports the utils installed with it; within one process the first import of a name wins,
so keep one install (both at once: see the README).
"""
