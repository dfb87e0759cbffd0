"""
Tests for L{tlbalance._loglevel} and the C{--log-level} option: the level of
the balancer's own log events under C{twistd} and C{twist}.
"""

from __future__ import annotations

from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from tlbalance._loglevel import (
    LevelGate,
    balancerLogger,
    gate,
    logLevelFor,
    parseLogLevel,
)
from tlbalance.service import BalancerService, makeBalancerService
from tlbalance.tap import Options, makeService

ARGUMENTS = ["--listen", "tcp:0:interface=127.0.0.1", "--backend", "127.0.0.1:1"]


class LevelGateTests(SynchronousTestCase):
    """
    A L{LevelGate} passes the events at or above its level.
    """

    def levelsPassed(self, level: object) -> list[str]:
        passed: list[dict[str, object]] = []
        levelGate = LevelGate(passed.append)
        levelGate.setLevel(level)  # type: ignore[arg-type]
        for each in LogLevel.iterconstants():
            levelGate({"log_level": each})
        return [e["log_level"].name for e in passed]  # type: ignore[attr-defined]

    def test_everythingByDefault(self) -> None:
        """
        A new gate, or one set to C{None}, passes every event.
        """
        passed: list[object] = []
        LevelGate(passed.append)({"log_level": LogLevel.debug})
        self.assertEqual(len(passed), 1)
        self.assertEqual(
            self.levelsPassed(None), ["debug", "info", "warn", "error", "critical"]
        )

    def test_info(self) -> None:
        """
        At info, debug events stop; the rest pass.
        """
        self.assertEqual(
            self.levelsPassed(LogLevel.info), ["info", "warn", "error", "critical"]
        )

    def test_error(self) -> None:
        """
        At error, only errors and critical events pass.
        """
        self.assertEqual(self.levelsPassed(LogLevel.error), ["error", "critical"])

    def test_balancerLogger(self) -> None:
        """
        A L{balancerLogger}'s events go through the shared L{gate} to the
        global log publisher.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.addCleanup(gate.setLevel, gate.level)
        log = balancerLogger("tlbalance.test")
        log.debug("one")
        gate.setLevel(LogLevel.info)
        log.debug("two")
        log.info("three")
        self.assertEqual(
            [(e["log_namespace"], e["log_format"]) for e in observer],
            [("tlbalance.test", "one"), ("tlbalance.test", "three")],
        )


class LogLevelChoiceTests(SynchronousTestCase):
    """
    The level comes from C{--log-level}, else from C{twist --log-level},
    else it is info.
    """

    def test_parse(self) -> None:
        """
        Level names are read in any case.
        """
        self.assertIs(parseLogLevel("debug"), LogLevel.debug)
        self.assertIs(parseLogLevel("WARN"), LogLevel.warn)

    def test_parseUnknown(self) -> None:
        """
        An unknown name is refused, naming the choices.
        """
        with self.assertRaises(ValueError) as raised:
            parseLogLevel("warning")
        self.assertEqual(
            str(raised.exception),
            "unknown log level 'warning'; choose one of debug, info, warn, "
            "error, critical",
        )

    def test_own(self) -> None:
        """
        The plugin's own level wins.
        """
        self.assertIs(
            logLevelFor(LogLevel.error, {"logLevel": LogLevel.debug}), LogLevel.error
        )

    def test_twist(self) -> None:
        """
        Under C{twist}, whose options hold its C{--log-level} as
        C{"logLevel"}, that level is the default.
        """
        self.assertIs(logLevelFor(None, {"logLevel": LogLevel.debug}), LogLevel.debug)

    def test_twistd(self) -> None:
        """
        Under twistd, which has no level, it is info.
        """
        config = ServerOptions()
        config.parseOptions(["-n", "tlbalance", *ARGUMENTS])
        self.assertIs(config.subOptions.parent, config)
        self.assertIs(logLevelFor(None, config), LogLevel.info)

    def test_noParent(self) -> None:
        """
        Options parsed on their own default to info too.
        """
        self.assertIs(logLevelFor(None, None), LogLevel.info)
        self.assertIs(logLevelFor(None, {"logLevel": "chatty"}), LogLevel.info)


class OptionTests(SynchronousTestCase):
    """
    C{twistd tlbalance --log-level}.
    """

    def parse(self, *extra: str) -> Options:
        options = Options()
        options.parseOptions([*ARGUMENTS, *extra])
        return options

    def test_default(self) -> None:
        """
        Without the option, the service logs at info.
        """
        service = makeService(self.parse())
        assert isinstance(service, BalancerService)
        self.assertIs(service.logLevel, LogLevel.info)

    def test_debug(self) -> None:
        """
        C{--log-level debug} asks for debug events.
        """
        service = makeService(self.parse("--log-level", "debug"))
        assert isinstance(service, BalancerService)
        self.assertIs(service.logLevel, LogLevel.debug)

    def test_underTwist(self) -> None:
        """
        Parsed by C{twist}, the service follows twist's level.
        """
        options = self.parse()
        options.parent = {"logLevel": LogLevel.warn}  # type: ignore[assignment]
        service = makeService(options)
        assert isinstance(service, BalancerService)
        self.assertIs(service.logLevel, LogLevel.warn)

    def test_unknown(self) -> None:
        """
        An unknown level stops the parse, naming the option and the choices.
        """
        with self.assertRaises(SystemExit) as raised:
            self.parse("--log-level", "chatty")
        self.assertIn("--log-level", str(raised.exception.code))
        self.assertIn("debug, info, warn, error, critical", str(raised.exception.code))


class ServiceLevelTests(SynchronousTestCase):
    """
    The service sets the gate's level while it runs.
    """

    def test_setWhileRunning(self) -> None:
        """
        Starting the service sets its level; stopping it puts the previous
        one back.
        """
        self.addCleanup(gate.setLevel, gate.level)
        gate.setLevel(None)
        options = Options()
        options.parseOptions([*ARGUMENTS, "--drain-timeout", "0"])
        service = makeBalancerService(
            options["config"], MemoryReactorClock(), logLevel=LogLevel.warn
        )
        service.startService()
        self.assertIs(gate.level, LogLevel.warn)
        self.successResultOf(service.stopService())
        self.assertIsNone(gate.level)

    def test_leftAlone(self) -> None:
        """
        A service built without a level (in a C{.tac} file, say) leaves the
        gate as it is.
        """
        self.addCleanup(gate.setLevel, gate.level)
        gate.setLevel(LogLevel.error)
        options = Options()
        options.parseOptions([*ARGUMENTS, "--drain-timeout", "0"])
        service = makeBalancerService(options["config"], MemoryReactorClock())
        service.startService()
        self.assertIs(gate.level, LogLevel.error)
        self.successResultOf(service.stopService())
        self.assertIs(gate.level, LogLevel.error)
