"""Proxies: the registry plus one module per proxy (importing a module registers it)."""

from synque.proxies import mauve, mdm, mmd, pad  # noqa: F401  (registration)
from synque.proxies.registry import (
    PROXIES,
    ProxySpec,
    check_proxy_config,
    compute_proxy,
    register,
)

__all__ = ["PROXIES", "ProxySpec", "check_proxy_config", "compute_proxy", "register"]
