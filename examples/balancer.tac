"""
tlbalance configured in Python: the settings go through
L{tlbalance.config.buildConfig} (the same checks as a TOML file) and
L{tlbalance.service.makeBalancerService} builds the service.

Run it in the foreground with::

    twistd -n --pidfile= -y examples/balancer.tac

It listens on 127.0.0.1:8080 and balances over 127.0.0.1:8081 and
127.0.0.1:8082 (two copies of C{examples/backend.tac}), sending each a
PROXY v2 header and checking them with C{GET /} every two seconds. The
environment can change the addresses: C{TLBALANCE_LISTEN=tcp:9080},
C{TLBALANCE_BACKENDS=127.0.0.1:9081,127.0.0.1:9082}.
"""

from __future__ import annotations

import os

from twisted.application.service import Application
from twisted.internet import reactor

from tlbalance.config import buildConfig
from tlbalance.service import makeBalancerService

LISTEN = os.environ.get("TLBALANCE_LISTEN", "tcp:8080:interface=127.0.0.1")
BACKENDS = os.environ.get("TLBALANCE_BACKENDS", "127.0.0.1:8081,127.0.0.1:8082")

# Keys and values as in a TOML file; a mistake raises ConfigError naming
# the key, and twistd stops before listening.
config = buildConfig(
    {
        "listen": [LISTEN],
        "algorithm": "leastconn",
        "send-proxy": "v2",
        "check": "http GET / 200",
        "backend": [
            {"endpoint": endpoint.strip(), "name": f"web{index}"}
            for index, endpoint in enumerate(BACKENDS.split(","), 1)
        ],
    }
)

application = Application("tlbalance")
makeBalancerService(config, reactor).setServiceParent(application)
