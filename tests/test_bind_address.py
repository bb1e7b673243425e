"""deploy.mlflow_server binds only loopback or a private address assigned to this machine."""

from __future__ import annotations

import ipaddress

import pytest

from deploy import mlflow_server
from deploy.bind_address import interface_addresses


@pytest.mark.parametrize(
    "address",
    ["0.0.0.0", "::", "::ffff:0.0.0.0", "::ffff:0:0", "0.0.0.1", "169.254.1.1", "fe80::1", "8.8.8.8", "::ffff:8.8.8.8"],
)
def test_wildcards_link_local_and_public_addresses_are_refused(address):
    with pytest.raises(SystemExit, match="refusing"):
        mlflow_server.resolve_host(address)


def test_a_private_address_of_another_machine_is_refused():
    with pytest.raises(SystemExit, match="not an address of this machine"):
        mlflow_server.resolve_host("10.255.254.253", local_addresses=lambda: {ipaddress.ip_address("10.0.0.5")})


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "127.0.0.2", "::ffff:127.0.0.1"])
def test_loopback_is_accepted(address):
    assert mlflow_server.resolve_host(address) == address


def test_a_private_address_of_this_machines_interfaces_is_accepted():
    private = sorted(
        str(ip) for ip in interface_addresses() if ip.is_private and not (ip.is_loopback or ip.is_link_local)
    )
    if not private:
        pytest.skip("this machine has no private interface address")
    assert mlflow_server.resolve_host(private[0]) == private[0]
    assert mlflow_server.resolve_host("auto", detect=lambda: private[0]) == private[0]
