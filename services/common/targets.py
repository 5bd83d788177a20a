"""Addresses of services that may run as several replicas, as gRPC targets.

A channel balances its calls over every endpoint its target resolves to (``round_robin``,
see clients.make_channel), so an address may name several replicas:

- ``host:port``: a name resolved by DNS (every address it resolves to), or one IP endpoint;
- ``dns:///host:port``: the same, explicitly; in Kubernetes, a headless Service's name, whose
  DNS record lists every ready pod;
- ``dns://server:port/host:port``: the name looked up at that DNS server rather than the
  system's resolver;
- ``ipv4:a.b.c.d:port,a.b.c.d:port`` or ``ipv6:[::1]:port,...``: a fixed list of endpoints;
- ``a.b.c.d:port,a.b.c.d:port``: the same list without its scheme (IP addresses only: a list
  of names has no single gRPC target; give one DNS name that resolves to them all).
"""

from __future__ import annotations

import ipaddress

from rectune.domain.errors import quoted

IpFamily = type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]
IP_SCHEMES: dict[str, IpFamily] = {"ipv4:": ipaddress.IPv4Address, "ipv6:": ipaddress.IPv6Address}


class AddressError(ValueError):
    """An address that names no endpoint; the message says the rule it broke."""


def grpc_target(address: str) -> str:
    """The gRPC target of an address in any accepted form; AddressError names the rule."""
    if not address:
        raise AddressError("must name at least one endpoint (host:port)")
    if address.startswith("dns://"):
        server, slash, name = address.removeprefix("dns://").partition("/")
        if not slash:
            raise AddressError(
                f"a dns:// address is dns:///host:port or dns://server:port/host:port, got {quoted(address)}"
            )
        if server:
            _split_endpoint(server)
        _split_endpoint(name)
        return address
    if address.startswith("dns:"):
        _split_endpoint(address.removeprefix("dns:"))
        return address
    for scheme, family in IP_SCHEMES.items():
        if address.startswith(scheme):
            for endpoint in address[len(scheme) :].split(","):
                _ip_endpoint(endpoint, family)
            return address
    if "," not in address:
        _split_endpoint(address)
        return address
    return _ip_list(address.split(","))


def _ip_list(endpoints: list[str]) -> str:
    """``ipv4:`` or ``ipv6:`` and the list, when every endpoint is an IP address of one family."""
    families = set()
    for endpoint in endpoints:
        host, _ = _split_endpoint(endpoint)
        try:
            families.add(type(ipaddress.ip_address(host)))
        except ValueError:
            raise AddressError(
                f"a list of endpoints must name IP addresses ({quoted(host)} is a name): "
                "use one DNS name that resolves to every replica (dns:///name:port)"
            ) from None
    if len(families) > 1:
        raise AddressError("a list of endpoints must be all IPv4 or all IPv6")
    scheme = "ipv4:" if families == {ipaddress.IPv4Address} else "ipv6:"
    return scheme + ",".join(endpoints)


def _ip_endpoint(endpoint: str, family: IpFamily) -> None:
    host, _ = _split_endpoint(endpoint)
    try:
        family(host)
    except ValueError:
        kind = "IPv4" if family is ipaddress.IPv4Address else "IPv6"
        raise AddressError(f"every endpoint of the list must be an {kind} address, got {quoted(host)}") from None


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    """Host (brackets of an IPv6 literal removed) and port of ``host:port``."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise AddressError(f"each endpoint must be host:port with a port in 1..65535, got {quoted(endpoint)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
