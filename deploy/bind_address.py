"""Which addresses a service on this machine may listen on: loopback, or a private address of one of its interfaces.

`ipaddress`'s `is_private` alone lets through addresses that answer on every interface or on none:
`::ffff:0.0.0.0` is the IPv4 wildcard seen through IPv6 (binding it listens on the machine's public
address too), `0.0.0.1` is in 0.0.0.0/8 ("this network"), `169.254.1.1` is link-local. Requiring the
address to be on one of this machine's interfaces rules out every wildcard and every address of
somebody else's network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def unwrap(ip: IPAddress) -> IPAddress:
    """`::ffff:a.b.c.d` is the IPv4 address a.b.c.d (the socket layer treats it so)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def interface_addresses() -> set[IPAddress]:
    """Every IP address assigned to one of this machine's network interfaces."""
    import socket

    import psutil  # installed with ray

    addresses = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                addresses.add(unwrap(ipaddress.ip_address(entry.address.split("%")[0])))
    return addresses


def refusal(address: str, local_addresses: Callable[[], Iterable[IPAddress]] = interface_addresses) -> str | None:
    """Why `address` must not be bound (None: it may): only loopback or a private interface address."""
    try:
        ip = unwrap(ipaddress.ip_address(address))
    except ValueError:
        return f"{address!r} is not an IP address"
    if ip.is_loopback:
        return None
    if ip.is_unspecified:
        return f"{address} listens on every interface"
    if ip.is_link_local or ip.is_multicast or not ip.is_private:
        return f"{address} is not a private (VPC) address"
    if ip not in set(local_addresses()):
        return f"{address} is not an address of this machine's interfaces"
    return None
