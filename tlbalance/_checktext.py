# -*- test-case-name: tests.unit.test_config -*-
"""
The little language of health checks as the configuration writes them:
C{tcp}, or C{http [METHOD] [/PATH] [STATUS]} (C{http} alone is C{http GET
/ 200}), read into the attributes of a
L{HealthCheckConfig<tlbalance.config.HealthCheckConfig>}.
"""

from __future__ import annotations

import re
from typing import Any

from tlbalance._rules import ConfigError, show

#: How a check is written, for messages.
CHECK_SYNTAX = '"tcp", "http [METHOD] [/PATH] [STATUS]" or "none"'


def parseCheckText(text: str) -> dict[str, Any]:
    """
    Read a check written as C{tcp} or C{http [METHOD] [/PATH] [STATUS]}.

    @param text: the check, e.g. C{"http GET /health 200"}.
    @return: the check's C{kind}, and for C{http} its C{method}, C{path}
        and C{expectStatus}.
    @raise ConfigError: the text is not a check; the message quotes it.
    """
    words = text.split()
    if not words:
        raise ConfigError(f"empty health check; expected {CHECK_SYNTAX}")
    kind = words[0].lower()
    rest = words[1:]
    if kind == "tcp":
        if rest:
            raise ConfigError(f"{show(text)}: a tcp check takes no arguments")
        return {"kind": "tcp"}
    if kind != "http":
        raise ConfigError(
            f"{show(text)}: unknown kind of check {show(words[0])}; "
            f"expected {CHECK_SYNTAX}"
        )
    method, path, status = "GET", "/", 200
    if rest and not rest[0].startswith("/") and not rest[0].isdigit():
        word = rest.pop(0)
        if not re.fullmatch("[A-Z]+", word):
            raise ConfigError(
                f"{show(text)}: {show(word)} is neither a method "
                '(upper case, like GET) nor a path (starting with "/")'
            )
        method = word
    if rest and rest[0].startswith("/"):
        path = rest.pop(0)
        if not all(33 <= ord(c) < 127 for c in path):
            raise ConfigError(
                f"{show(text)}: the path must be printable ASCII "
                "(percent-encode anything else)"
            )
    if rest and re.fullmatch("[0-9]{3}", rest[0]):
        status = int(rest.pop(0))
        if not 100 <= status <= 599:
            raise ConfigError(
                f"{show(text)}: the status must be from 100 to 599, got {status}"
            )
    if rest:
        raise ConfigError(
            f"{show(text)}: unexpected {show(rest[0])}; expected {CHECK_SYNTAX}"
        )
    return {"kind": "http", "method": method, "path": path, "expectStatus": status}
