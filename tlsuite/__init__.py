"""
tlsuite: run one Twisted web site on more than one process.

This package holds what the suite's three packages (C{tlbalance},
C{tlsession}, C{tlcache}) share: the version, and private plumbing that
more than one of them needs. Import the three packages for the public API.
"""

from __future__ import annotations

__all__ = ["__version__"]

# The one place the version is written: the distribution's metadata
# (pyproject.toml) and both twistd plugins' --version read it from here.
__version__ = "0.2.0.dev0"
