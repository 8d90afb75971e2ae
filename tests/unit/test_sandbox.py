"""tests/support/sandbox.py itself: nothing a test writes into the sandbox reaches the machine."""

import hashlib
import os

import pytest

from tests.support import sandbox

DEFAULT_SITE = "/etc/nginx/sites-enabled/default"


@pytest.mark.skipif(not os.path.islink(DEFAULT_SITE), reason="needs Debian's sites-enabled/default link")
def test_a_file_given_at_a_linked_path_replaces_the_link_in_the_copy_not_the_machines_file():
    real = os.path.realpath(DEFAULT_SITE)
    before = hashlib.sha256(open(real, "rb").read()).hexdigest()
    res = sandbox.run_checked({DEFAULT_SITE: ("# the sandbox's own\n", 0o644)}, ["cat", DEFAULT_SITE])
    assert res.returncode == 0 and res.stdout == "# the sandbox's own\n", res
    assert hashlib.sha256(open(real, "rb").read()).hexdigest() == before
    assert os.path.islink(DEFAULT_SITE)
