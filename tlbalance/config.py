# -*- test-case-name: tests.unit.test_config -*-
"""
The balancer's configuration: one validated, frozen L{BalancerConfig} built
from a TOML file, the command line, or both.

The file uses the command line's option names as keys (C{client-timeout =
300}, C{send-proxy = "v2"}) plus one C{[[backend]]} table per backend. A
setting given on the command line wins over the file; C{--listen} and
C{--backend} replace the file's lists. Every problem is reported in a
L{ConfigError}, one line each, naming the option or key
(C{backend[2].weight}, counting backends from 0) and saying what was
expected.

Backends may be written as client endpoint strings or, for convenience, as
C{HOST:PORT}, C{[IPv6]:PORT} or an absolute socket path; these become
C{tcp:host=HOST:port=PORT} and C{unix:path=PATH}, and the backend keeps the
short form as its default name. C{check}, C{check-inter}, C{check-rise},
C{check-fall} and C{check-timeout} at the top level are defaults for every
backend that does not set its own; C{check = "none"} turns a check off.

C{sessions} (endpoint strings), C{secret-file} and C{sessions-insecure}
ask C{twistd tlbalance} to host the tlsession daemon in the balancer. Here
they are only checked for shape; the daemon's own rules (private
listeners, a private secret file) are tlsession's, which C{twistd
tlbalance} applies (L{tlbalance.tap}).

Nothing here listens, connects or uses a reactor. Endpoint strings are
checked by parsing them against an object that is not a reactor, so a typo
fails start-up instead of the first connection. Parsing an C{ssl:} or
C{tls:} string that names certificate or key files reads those files, as
Twisted's parsers do, and a C{tlsni:} string loads its certificate
directory. C{tls-ciphers} is checked against OpenSSL.

This module is the public face; the work is done in private modules, one
idea each: the rules of single settings (L{tlbalance._rules}), the health
check language (L{tlbalance._checktext}), the attrs classes
(L{tlbalance._schema}), endpoint strings (L{tlbalance._endpointchecks}) and
the merge of the file with the command line (L{tlbalance._merge}).
"""

from __future__ import annotations

from tlbalance._endpointchecks import DEFAULT_BACKLOG, withListenBacklog
from tlbalance._merge import (
    SessionDaemonSettings,
    backendFromTable,
    buildConfig,
    describeSetting,
    loadConfig,
    parseSetting,
)
from tlbalance._rules import ConfigError
from tlbalance._schema import (
    ALGORITHMS,
    BackendConfig,
    BalancerConfig,
    HealthCheckConfig,
)

__all__ = [
    "ALGORITHMS",
    "BackendConfig",
    "BalancerConfig",
    "ConfigError",
    "DEFAULT_BACKLOG",
    "HealthCheckConfig",
    "SessionDaemonSettings",
    "backendFromTable",
    "buildConfig",
    "describeSetting",
    "loadConfig",
    "parseSetting",
    "withListenBacklog",
]
