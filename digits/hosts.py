"""The names the drawing page is served under: which Host and Origin headers are its own, whether it
serves only this machine, and the URL a browser opens. No HTTP statuses here: the server says those.

A web page elsewhere can reach a local server under its own name by DNS rebinding (its name made to
resolve to this machine's address); the Host header its browser then sends names that site, not an
address this server listens on, whatever --host is.
"""

import ipaddress
import socket
from urllib.parse import urlsplit


def _address(name):
    """The IP address a Host name writes literally ("127.0.0.2", "[::1]"); None for a name."""
    try:
        return ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
    except ValueError:
        return None


class ServedNames:
    """The names and addresses a server bound to `bound` (its (host, port, ...)) answers under;
    `asked` is the --host it was given (a name such as localhost, or an address)."""

    def __init__(self, asked, bound):
        self.address, self.port = ipaddress.ip_address(bound[0].split("%")[0]), bound[1]
        self.everywhere = self.address.is_unspecified  # 0.0.0.0 or ::: every address of this machine
        self.loopback = self.address.is_loopback  # 127.0.0.0/8 or ::1: only this machine reaches it
        self.names = {asked.lower().strip("[]")} if _address(asked) is None else set()
        if self.loopback or self.everywhere:
            self.names.add("localhost")
        if not self.loopback:  # the machine's own names, as other machines may reach it
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    def serves(self, name):
        """Whether a host name or address (as a URL writes it, without its port) is this server's."""
        address = _address(name)
        if address is None:
            return name.lower().rstrip(".") in self.names
        return self.everywhere or address == self.address

    def host_allowed(self, host):
        """Whether a Host header ("name", "name:port", "[v6]:port") names this server."""
        if host is None:  # HTTP/1.0 without Host: no browser sends that
            return True
        if host.startswith("["):  # an IPv6 address, its port after the bracket
            name = host[:host.find("]") + 1]
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return bool(name) and self.serves(name)

    def origin_allowed(self, origin):
        """Whether an Origin header is this server's own page (none: not a browser's cross-site request)."""
        if origin is None:
            return True
        try:
            parts = urlsplit(origin)
            port = parts.port or 80
        except ValueError:
            return False
        return parts.scheme == "http" and parts.hostname is not None and port == self.port and self.serves(
            f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname)

    def url(self):
        """The page's URL as a browser opens it: for every address (0.0.0.0, ::), this machine's loopback."""
        if self.everywhere:
            host = "127.0.0.1" if self.address.version == 4 else "[::1]"
        else:
            host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"http://{host}:{self.port}/"
