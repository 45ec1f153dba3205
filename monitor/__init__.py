"""Integration Monitor: a sidecar daemon that watches third-party API integrations."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("integration-monitor")
except PackageNotFoundError:  # running from a checkout without an install
    __version__ = "0.0.0+local"
