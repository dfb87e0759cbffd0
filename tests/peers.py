"""
Finding the real peers (nginx, HAProxy, curl, openssl, wrk) integration tests use.

A missing peer skips the test with a clear reason on a developer's machine and
fails it under CI (C{CI=true}), where C{.ci/run} must have installed it.
"""

from __future__ import annotations

import os
import shutil

from twisted.trial.unittest import SkipTest

_SEARCH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"]
)


def requirePeer(name: str) -> str:
    """
    Return the absolute path of the program C{name}, or skip (fail under CI).

    @param name: the program, e.g. C{"nginx"}.
    @return: its path.
    @raise SkipTest: when it is missing and C{CI} is not C{true}.
    @raise AssertionError: when it is missing under CI.
    """
    path = shutil.which(name, path=_SEARCH)
    if path is not None:
        return path
    reason = f"{name} is not installed (apt-get install {_PACKAGES.get(name, name)})"
    if os.environ.get("CI", "").lower() == "true":
        raise AssertionError(f"CI must provide every peer: {reason}")
    raise SkipTest(reason)


_PACKAGES = {
    "nginx": "nginx-light",
    "initdb": "postgresql",
    "testssl": "testssl.sh",
    "ab": "apache2-utils",
}
