"""
No module of the suite but L{tlsuite._twisted} reaches into Twisted's
private names: a scan of the sources fails, naming the module, when one
does. L{tlsuite._twisted} holds every reach, each pinned by
tests/unit/test_twisted_internals.py.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import FrozenSet, List, Set, Tuple

from twisted.trial.unittest import SynchronousTestCase

# Where the suite's code lives, relative to the checkout; tlsuite/_twisted.py
# is the one module allowed to reach into Twisted's private names.
_ROOT = Path(__file__).resolve().parent.parent.parent
_SCANNED = ("tlbalance", "tlsession", "tlcache", "tlsuite", "twisted/plugins")
_COMPAT = "tlsuite/_twisted.py"

# Private attributes of Twisted objects the suite has reached for before
# (endpoints, headers, requests): reading one of these on anything but
# self or cls is a reach, whatever the object is called.
_KNOWN_ATTRIBUTES = frozenset(
    {
        "_backlog",
        "_bindAddress",
        "_checkPID",
        "_encoder",
        "_forceSSL",
        "_host",
        "_interface",
        "_parse",
        "_path",
        "_port",
        "_rawHeaders",
        "_shouldShutdown",
        "_reactor",
        "_sslContextFactory",
        "_timeout",
        "_wrappedEndpoint",
        "_wrapperFactory",
    }
)

# Private attributes of Twisted classes the suite subclasses: setting or
# reading one is a reach even on self.
_INHERITED_ATTRIBUTES = frozenset({"_raiseSynchronously", "_waitingForPort"})

# Reaches other changes are still removing, as (path, what the scan
# reports): the lead empties this list as they land. An entry that is no
# longer found fails the test, so the list only shrinks. (Empty: the last
# one, tlbalance/config.py's own endpoints._parse, went with its split into
# tlbalance._endpointchecks.)
_PENDING: FrozenSet[Tuple[str, str]] = frozenset()

# Matches of the known attribute names that are not Twisted's: the suite's
# own private attributes read from a neighbouring module of the same
# package. Each says whose attribute it is.
_NOT_TWISTED = frozenset(
    {
        # PBSessionStore's own reactor, read by its login helper.
        ("tlsession/stores/_pblogin.py", "store._reactor"),
    }
)


def _isPrivate(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def privateReaches(source: str) -> List[str]:
    """
    Every reach into a private Twisted name in C{source}, described in a
    few words: imports of private modules or names from C{twisted}, private
    attributes of names imported from C{twisted}, the known private
    attributes of Twisted objects on any object but C{self}/C{cls} (read
    directly or through C{getattr} and friends), and C{getclosurevars},
    which reads a Twisted closure's variables.
    """
    tree = ast.parse(source)
    found: List[str] = []
    fromTwisted = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "twisted":
                    continue
                fromTwisted.add((alias.asname or alias.name).split(".")[0])
                if any(_isPrivate(part) for part in alias.name.split(".")):
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "twisted":
                continue
            privateModule = any(_isPrivate(p) for p in node.module.split("."))
            for alias in node.names:
                fromTwisted.add(alias.asname or alias.name)
                if privateModule or _isPrivate(alias.name):
                    found.append(f"from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _isPrivate(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in fromTwisted:
                found.append(ast.unparse(node))
            elif node.attr in _INHERITED_ATTRIBUTES or (
                node.attr in _KNOWN_ATTRIBUTES
                and not (
                    isinstance(node.value, ast.Name)
                    and node.value.id in ("self", "cls")
                )
            ):
                found.append(ast.unparse(node))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in _KNOWN_ATTRIBUTES
        ):
            found.append(f"{node.func.id}(..., {node.args[1].value!r})")
        elif (isinstance(node, ast.Name) and node.id == "getclosurevars") or (
            isinstance(node, ast.Attribute) and node.attr == "getclosurevars"
        ):
            found.append("getclosurevars")
        elif isinstance(node, ast.alias) and node.name == "getclosurevars":
            found.append("getclosurevars")
    return found


def suiteReaches() -> Set[Tuple[str, str]]:
    """
    C{(path, reach)} for every reach in the suite's modules but
    L{tlsuite._twisted}.
    """
    reaches = set()
    for package in _SCANNED:
        for path in sorted((_ROOT / package).rglob("*.py")):
            relative = path.relative_to(_ROOT).as_posix()
            if relative == _COMPAT:
                continue
            for reach in privateReaches(path.read_text("utf-8")):
                reaches.add((relative, reach))
    return reaches


class PrivateReachScanTests(SynchronousTestCase):
    """
    No module of the suite but L{tlsuite._twisted} reaches into Twisted's
    private names.
    """

    maxDiff = None

    def test_noNewReaches(self) -> None:
        """
        Every reach found is one still being removed, or not Twisted's: a
        new one fails here, naming the module. Put it in
        L{tlsuite._twisted} instead, with a test in this file.
        """
        new = suiteReaches() - _PENDING - _NOT_TWISTED
        self.assertEqual(
            sorted(new),
            [],
            "private Twisted names reached outside tlsuite/_twisted.py",
        )

    def test_allowListsCurrent(self) -> None:
        """
        Every allowed entry is still found: once a reach is gone, its entry
        goes too.
        """
        stale = (_PENDING | _NOT_TWISTED) - suiteReaches()
        self.assertEqual(sorted(stale), [], "remove these from the allow-lists")

    def test_scannerFindsEachKind(self) -> None:
        """
        The scan recognises each way of reaching a private name.
        """
        source = """
import twisted.protocols._sni
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.endpoints import _parse, clientFromString
from twisted.internet import endpoints
from inspect import getclosurevars
import inspect
endpoints._parse("tcp:80")
endpoint._reactor
endpoint.wrapped._sslContextFactory
getattr(headers, "_rawHeaders", None)
inspect.getclosurevars(f)
self._reactor
cls._port
other.public
endpoints.serverFromString
"""
        self.assertEqual(
            sorted(privateReaches(source)),
            sorted(
                [
                    "import twisted.protocols._sni",
                    "from twisted.internet._sslverify import IOpenSSLTrustRoot",
                    "from twisted.internet.endpoints import _parse",
                    "getclosurevars",
                    "getclosurevars",
                    "endpoints._parse",
                    "endpoint._reactor",
                    "endpoint.wrapped._sslContextFactory",
                    "getattr(..., '_rawHeaders')",
                ]
            ),
        )
