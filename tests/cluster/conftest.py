"""
Cluster tier: tests against the namespace lab (``lab/``). Each test module builds its own Lab in a
module-scoped fixture (a lab with Salt starts in a few seconds); the lab removes everything it
created when the fixture ends, and a new lab first removes leftovers of crashed runs.
"""

import os
import shutil

import pytest


def pytest_collection_modifyitems(config, items):
    missing = [tool for tool in ("ip", "unshare", "nsenter") if not shutil.which(tool)]
    reason = None
    if os.geteuid() != 0:
        reason = "the cluster lab needs root (network namespaces, bridges, mounts)"
    elif missing:
        reason = f"the cluster lab needs {', '.join(missing)}"
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here + os.sep):
            item.add_marker(pytest.mark.cluster)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
