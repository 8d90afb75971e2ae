"""
nginx-ha: keepalived + nginx high availability, seen from one minion.

The cluster is described once in the ``nginx_ha`` pillar (see ``pillar/nginx_ha.sls`` in the
nginx-ha repository). This module answers, on each node, what that pillar means for it.

Sync it to minions first: ``salt '*' saltutil.sync_all``.
"""

import copy
import logging

import salt.utils.dictupdate
import salt.utils.platform
import salt.utils.yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "nginx_ha"

DEFAULTS_URL = "salt://nginx_ha/defaults.yaml"
OSFAMILYMAP_URL = "salt://nginx_ha/osfamilymap.yaml"


def __virtual__():
    if not salt.utils.platform.is_linux():
        return (False, "nginx_ha: keepalived VRRP and this module need Linux")
    if "nginx_ha_model.node_view" not in __utils__:
        return (False, "nginx_ha: the nginx_ha_model utils module is missing; run saltutil.sync_all")
    return __virtualname__


def _load_yaml(url, what):
    text = __salt__["cp.get_file_str"](url, saltenv=__opts__.get("saltenv") or "base")
    if not text:
        raise CommandExecutionError(f"nginx_ha: cannot read {what} from {url}; is the formula in the master's file_roots?")
    return salt.utils.yaml.safe_load(text)


def merged_config(defaults=None, osfamilymap=None, pillar=None):
    """
    Return the cluster configuration as the formula sees it: ``defaults.yaml`` merged with this
    OS family's entry of ``osfamilymap.yaml`` (under ``lookup``) and the ``nginx_ha`` pillar.
    Not validated; see :py:func:`node_config`.

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.merged_config
    """
    if defaults is None:
        defaults = _load_yaml(DEFAULTS_URL, "the formula defaults")
    if osfamilymap is None:
        osfamilymap = _load_yaml(OSFAMILYMAP_URL, "the OS family map")
    if pillar is None:
        # unmask: Salt 3008 redacts pillar values returned to callers unless asked not to.
        pillar = __salt__["pillar.get"]("nginx_ha", {}, unmask=True)
    if not isinstance(pillar, dict):
        raise SaltInvocationError(f"nginx_ha: pillar key nginx_ha is {pillar!r}, not a mapping")
    config = copy.deepcopy(defaults.get("nginx_ha", defaults))
    os_family = __grains__.get("os_family")
    lookup = copy.deepcopy((osfamilymap or {}).get(os_family) or {})
    if not lookup:
        raise CommandExecutionError(
            f"nginx_ha: os_family {os_family!r} is not in osfamilymap.yaml; set nginx_ha:lookup in the pillar"
        )
    config["lookup"] = salt.utils.dictupdate.update(lookup, config.get("lookup") or {}, merge_lists=False)
    return salt.utils.dictupdate.update(config, copy.deepcopy(pillar), merge_lists=False)


def node_config(minion_id=None, defaults=None, osfamilymap=None, pillar=None):
    """
    Return this node's validated view of the cluster: its VRRP instances (with its own state,
    priority, interface and unicast peers), the health check and the nginx site, as the
    ``nginx_ha`` states render them.

    Raises ``SaltInvocationError`` listing every invalid pillar key with its value, or when this
    minion has no role in any instance.

    minion_id
        Whose view to compute (default: this minion's id).

    CLI Example:

    .. code-block:: bash

        salt 'web-*' nginx_ha.node_config
        salt 'web-a' nginx_ha.node_config minion_id=web-b
    """
    config = merged_config(defaults=defaults, osfamilymap=osfamilymap, pillar=pillar)
    minion_id = minion_id or __grains__["id"]
    try:
        view = __utils__["nginx_ha_model.node_view"](config, minion_id)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from exc
    view["lookup"] = config["lookup"]
    return view


def validate_pillar(pillar=None):
    """
    Check the ``nginx_ha`` pillar for the whole cluster and return the list of problems, each
    naming its pillar key and the bad value (an empty list when it is valid).

    CLI Example:

    .. code-block:: bash

        salt 'web-a' nginx_ha.validate_pillar
    """
    return __utils__["nginx_ha_model.validate"](merged_config(pillar=pillar))
