"""The lab's TCP forwarder (apis_lab.proxy), for the end-to-end tests: cut and restored (the
broker goes away cleanly and comes back) or black-holed (the link dies silently)."""

from apis_lab.proxy import TcpProxy

__all__ = ["TcpProxy"]
