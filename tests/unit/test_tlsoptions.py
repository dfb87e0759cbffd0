"""
Tests for the balancer's TLS settings on its command line and in its
configuration file: C{--tls-ciphers} / C{tls-ciphers}, and the listen
endpoints whose TLS tlbalance refuses at start-up.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.certs import makeAuthority
from tlbalance._endpoints import quoteEndpointArgument
from tlbalance.config import BalancerConfig, ConfigError, buildConfig
from tlbalance.tap import Options
from tlbalance.tls import TLSSettings

REQUIRED = ["--listen", "tcp:8080", "--backend", "127.0.0.1:8081"]
FILE_REQUIRED = {"listen": ["tcp:8080"], "backend": ["127.0.0.1:8081"]}


def parse(*arguments: str) -> BalancerConfig:
    """
    Parse C{twistd tlbalance} arguments and return the configuration.
    """
    options = Options()
    options.parseOptions(list(arguments))
    config: BalancerConfig = options["config"]
    return config


class TLSCiphersOptionTests(SynchronousTestCase):
    """
    C{--tls-ciphers} and C{tls-ciphers} set the TLS 1.2 suites of every TLS
    listener, checked against OpenSSL at start-up.
    """

    def test_default(self) -> None:
        """
        Without the option, listeners get tlbalance's default settings.
        """
        config = parse(*REQUIRED)
        self.assertIsNone(config.tlsCiphers)
        self.assertEqual(config.tlsSettings(), TLSSettings())

    def test_commandLine(self) -> None:
        """
        C{--tls-ciphers} becomes the listeners' cipher string.
        """
        config = parse(*REQUIRED, "--tls-ciphers", "ECDHE+AESGCM")
        self.assertEqual(config.tlsCiphers, "ECDHE+AESGCM")
        self.assertEqual(config.tlsSettings(), TLSSettings(ciphers="ECDHE+AESGCM"))

    def test_file(self) -> None:
        """
        So does C{tls-ciphers} in the file; the command line wins.
        """
        config = buildConfig({**FILE_REQUIRED, "tls-ciphers": "ECDHE+CHACHA20"})
        self.assertEqual(config.tlsCiphers, "ECDHE+CHACHA20")
        config = buildConfig(
            {**FILE_REQUIRED, "tls-ciphers": "ECDHE+CHACHA20"},
            {"tls-ciphers": "ECDHE+AESGCM"},
        )
        self.assertEqual(config.tlsCiphers, "ECDHE+AESGCM")

    def test_badCommandLine(self) -> None:
        """
        A string OpenSSL selects nothing from stops the start with one line
        naming the option and quoting the string.
        """
        error = self.assertRaises(
            SystemExit, Options().parseOptions, [*REQUIRED, "--tls-ciphers", "NOPE"]
        )
        self.assertEqual(
            error.code,
            "twistd tlbalance: --tls-ciphers: OpenSSL finds no TLS 1.2 cipher "
            "suite in 'NOPE' (see the openssl-ciphers manual for the syntax)",
        )

    def test_badFile(self) -> None:
        """
        The same in the file names the key; a value that is not a string is
        refused too.
        """
        error = self.assertRaises(
            ConfigError, buildConfig, {**FILE_REQUIRED, "tls-ciphers": "NOPE"}
        )
        self.assertTrue(str(error).startswith("tls-ciphers: OpenSSL finds no"))
        error = self.assertRaises(
            ConfigError, buildConfig, {**FILE_REQUIRED, "tls-ciphers": 3}
        )
        self.assertEqual(
            str(error),
            "tls-ciphers: expected an OpenSSL cipher string for TLS 1.2, e.g. "
            "ECDHE+AESGCM:ECDHE+CHACHA20, got 3",
        )

    def test_help(self) -> None:
        """
        C{--help} documents the option and its default.
        """
        text = " ".join(str(Options()).split())
        self.assertIn("--tls-ciphers=", text)
        self.assertIn("[default: Mozilla's intermediate profile", text)


class RefusedListenerTLSTests(SynchronousTestCase):
    """
    Listen endpoints whose TLS would not get tlbalance's settings stop the
    start with one line, when the configuration is checked.
    """

    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="tlbalance-test-")
        self.addCleanup(shutil.rmtree, directory)
        self.pem = os.path.join(directory, "site.pem")
        with open(self.pem, "wb") as f:
            f.write(makeAuthority().issue("alpha.test").combinedPEM())
        self.directory = directory

    def listen(self, description: str) -> str:
        """
        The error for C{--listen description}.
        """
        error = self.assertRaises(
            ConfigError,
            buildConfig,
            {"backend": ["127.0.0.1:8081"]},
            {"listen": [description]},
        )
        self.assertNotIn("\n", str(error))
        return str(error)

    def test_twistedTLSEndpoint(self) -> None:
        """
        Twisted's own C{tls:} server endpoint is refused, pointing to
        C{tlsni:}.
        """
        message = self.listen(f"tls:{quoteEndpointArgument(self.directory)}:port=0")
        self.assertIn("is not a valid server endpoint: tls: server endpoints", message)
        self.assertIn("use tlsni:certdir=DIRECTORY", message)

    def test_dhParameters(self) -> None:
        """
        C{ssl:...:dhParameters=FILE} is refused rather than ignored.
        """
        pem = quoteEndpointArgument(self.pem)
        message = self.listen(f"ssl:0:privateKey={pem}:dhParameters={pem}")
        self.assertIn("dhParameters is not supported", message)

    def test_sslAccepted(self) -> None:
        """
        A plain C{ssl:} listener passes.
        """
        config = buildConfig(
            {"backend": ["127.0.0.1:8081"]},
            {"listen": [f"ssl:0:privateKey={quoteEndpointArgument(self.pem)}"]},
        )
        self.assertEqual(len(config.listen), 1)
