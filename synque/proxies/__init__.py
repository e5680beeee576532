"""Proxies: the registry plus one module per proxy (importing a module registers it)."""

from synque.proxies import frechet, kid, mauve, mdm, mmd, pad, prdc  # noqa: F401  (registration)
from synque.proxies.registry import (
    PROXIES,
    ProxySpec,
    ProxyWarning,
    check_proxy_config,
    compute_proxy,
    register,
)

__all__ = [
    "PROXIES",
    "ProxySpec",
    "ProxyWarning",
    "check_proxy_config",
    "compute_proxy",
    "register",
]
