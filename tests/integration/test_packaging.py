# -*- test-case-name: tests.integration.test_packaging -*-
"""
The wheel users install: it must ship the Twisted plugin dropin without
claiming the C{twisted} or C{twisted.plugins} packages, and once installed
(away from this checkout) C{twistd} must list C{tlbalance} and the
endpoint parsers must include C{tlproxy} and C{tlsni}.
"""

from __future__ import annotations

import glob
import os
import shutil
import sysconfig
import tempfile
import zipfile
from typing import ClassVar, Optional

import pytest
from twisted.trial.unittest import TestCase

from tests.integration._support import (
    CHECKOUT,
    PYTHON,
    TWISTD,
    describeRun,
    runProgram,
    temporaryDirectory,
)

pytestmark = pytest.mark.integration

_BUILD_JUNK = shutil.ignore_patterns(
    ".venv*",
    ".git",
    "*.egg-info",
    "build",
    "dist",
    "tests.*",
    "__pycache__",
    "_trial_temp*",
    ".*_cache",
    "run",
)

_INSPECT = """\
import sys
import tlbalance
import twisted.plugins.tlsuite
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import getPlugins
print("tlbalance", tlbalance.__file__)
print("dropin", twisted.plugins.tlsuite.__file__)
parsers = getPlugins(IStreamServerEndpointStringParser)
print("parsers", *sorted(p.prefix for p in parsers))
print("path", *sys.path)
"""


class WheelTests(TestCase):
    """
    A wheel built from this checkout (in a copy, so that the build leaves
    nothing behind in it).
    """

    timeout = 240
    workspace: ClassVar[str]
    wheel: ClassVar[Optional[str]] = None

    @classmethod
    def setUpClass(cls) -> None:
        """
        Make the directory the wheel is built and installed in.
        """
        cls.workspace = tempfile.mkdtemp(prefix="tli-wheel-")

    @classmethod
    def tearDownClass(cls) -> None:
        """
        Remove it.
        """
        shutil.rmtree(cls.workspace, True)

    async def buildWheel(self) -> str:
        """
        Build the wheel once for the whole class.

        @return: its path.
        """
        if WheelTests.wheel is not None:
            return WheelTests.wheel
        source = os.path.join(self.workspace, "source")
        shutil.copytree(CHECKOUT, source, ignore=_BUILD_JUNK)
        out = os.path.join(self.workspace, "dist")
        result = await runProgram(
            [PYTHON, "-m", "build", "--wheel", "--outdir", out, source],
            timeout=200,
        )
        self.assertEqual(result.returncode, 0, describeRun(result))
        [wheel] = glob.glob(os.path.join(out, "*.whl"))
        WheelTests.wheel = wheel
        return wheel

    async def test_contents(self) -> None:
        """
        The wheel holds the dropin C{twisted/plugins/tlsuite.py} and the
        C{tlbalance} package, but no C{twisted/__init__.py} or
        C{twisted/plugins/__init__.py} (which would shadow Twisted itself
        once installed) and no stale C{dropin.cache}.
        """
        wheel = await self.buildWheel()
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
        self.assertIn("twisted/plugins/tlsuite.py", names)
        self.assertIn("tlbalance/tap.py", names)
        self.assertIn("tlbalance/upstream.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertEqual(sorted(n for n in names if n.endswith("dropin.cache")), [])
        self.assertEqual(
            sorted(n for n in names if n.startswith("twisted/")),
            ["twisted/plugins/tlsuite.py"],
        )

    async def test_typedLicensedVersioned(self) -> None:
        """
        Every package carries C{py.typed} (its types are checked, so users'
        type checkers may trust them), the MIT license travels with the
        wheel, and the version is tlsuite.__version__.
        """
        import tlsuite

        wheel = await self.buildWheel()
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
            text = archive.read(metadata).decode("utf-8")
        for package in ("tlsuite", "tlbalance", "tlsession", "tlcache"):
            self.assertIn(f"{package}/py.typed", names)
        self.assertTrue(
            any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
        )
        self.assertIn("License-Expression: MIT", text)
        self.assertIn(f"Version: {tlsuite.__version__}", text)

    async def test_installedPlugins(self) -> None:
        """
        Installed into a directory of its own and run from elsewhere, with
        only Twisted and the other dependencies beside it (not this
        checkout): C{twistd --help} lists C{tlbalance}, C{twistd tlbalance
        --help} works, and the C{tlproxy} and C{tlsni} endpoint parsers are
        found.
        """
        wheel = await self.buildWheel()
        target = os.path.join(self.workspace, "site")
        install = await runProgram(
            [PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
            + ["--target", target, wheel],
            timeout=120,
        )
        self.assertEqual(install.returncode, 0, describeRun(install))
        elsewhere = temporaryDirectory(self)
        # -S: no site module, so no .pth file (such as the editable install's,
        # which points at this checkout) can add anything to sys.path.
        dependencies = sysconfig.get_paths()["purelib"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([target, dependencies]))
        env.pop("PYTHONHOME", None)

        inspect = await runProgram(
            [PYTHON, "-S", "-c", _INSPECT], env=env, cwd=elsewhere
        )
        self.assertEqual(inspect.returncode, 0, describeRun(inspect))
        facts = {
            line.split(" ", 1)[0]: line.split(" ", 1)[1]
            for line in inspect.stdout.splitlines()
        }
        self.assertTrue(
            facts["tlbalance"].startswith(target + os.sep), describeRun(inspect)
        )
        self.assertTrue(facts["dropin"].startswith(target + os.sep))
        self.assertNotIn(CHECKOUT, facts["path"].split())
        self.assertIn("tlproxy", facts["parsers"].split())
        self.assertIn("tlsni", facts["parsers"].split())

        twistdHelp = await runProgram(
            [TWISTD[0], "-S", *TWISTD[1:], "--help"], env=env, cwd=elsewhere
        )
        self.assertEqual(twistdHelp.returncode, 0, describeRun(twistdHelp))
        self.assertIn("tlbalance", twistdHelp.stdout)

        pluginHelp = await runProgram(
            [TWISTD[0], "-S", *TWISTD[1:], "tlbalance", "--help"],
            env=env,
            cwd=elsewhere,
        )
        self.assertEqual(pluginHelp.returncode, 0, describeRun(pluginHelp))
        self.assertIn("--accept-proxy", pluginHelp.stdout)
