# -*- test-case-name: tests.unit.test_config -*-
"""
A L{BalancerConfig} from a TOML file's settings and the command line's:
the file read (L{loadConfig}), the two merged and every setting checked
(L{buildConfig}), and command-line text converted (L{parseSetting}).

Every problem found is reported at once, one per line of the
L{ConfigError}, so that a file with three mistakes takes one run to fix.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Any, Callable, Iterable, Mapping, Optional, Union

from attrs import frozen

from tlbalance._checktext import CHECK_SYNTAX
from tlbalance._endpointchecks import backendEndpointString, checkListenString
from tlbalance._rules import Boolean, ConfigError, Rule, rulesOf, show
from tlbalance._schema import BackendConfig, BalancerConfig, HealthCheckConfig

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


_BALANCER_RULES = rulesOf(BalancerConfig)
_BACKEND_RULES = rulesOf(BackendConfig)
_CHECK_RULES = {
    key: rule
    for key, rule in rulesOf(HealthCheckConfig).items()
    if key.startswith("check-")
}
_TOP_KEYS = {
    "listen",
    "backend",
    "check",
    "sessions",
    "stats",
    "secret-file",
    "control",
    *_BALANCER_RULES,
    *_CHECK_RULES,
}
_BACKEND_KEYS = {"endpoint", "name", "check", *_BACKEND_RULES, *_CHECK_RULES}
_COMMAND_LINE_RULES: dict[str, tuple[str, Rule]] = {
    **_BALANCER_RULES,
    **_CHECK_RULES,
}


def describeSetting(key: str) -> str:
    """
    Say what a setting takes, for C{--help}: C{"An integer from 0 to 10."}.

    @param key: a setting with a type or range (a timeout, C{retries},
        C{algorithm}, ...).
    """
    text = _COMMAND_LINE_RULES[key][1].describe()
    return text[0].upper() + text[1:] + "."


def parseSetting(key: str, text: str) -> Any:
    """
    Convert a setting's command-line text to its value.

    @param key: the setting's name, without the leading C{--}.
    @param text: what the user typed.
    @return: an C{int}, C{float}, or word (C{None} for C{"none"}).
    @raise ConfigError: C{text} does not fit; the message names C{--key}.
    """
    rule = _COMMAND_LINE_RULES[key][1]
    if isinstance(rule, Boolean):
        raise KeyError(f"{key} is a flag: it takes no value")
    return rule.parse("--" + key, text)


def loadConfig(path: Union[str, os.PathLike[str]]) -> dict[str, Any]:
    """
    Read a TOML configuration file, without checking its settings (that is
    L{buildConfig}'s job).

    @return: the file's top-level table.
    @raise ConfigError: the file cannot be read or is not TOML (the message
        gives the line and column).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(
            f"{name}: cannot read the configuration file: {e.strerror or e}"
        ) from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{name}: not valid TOML: not UTF-8 text (byte {e.start})"
        ) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name}: not valid TOML: {e}") from e


@frozen
class SessionDaemonSettings:
    """
    The hosted session daemon's settings, in the shape the balancer's
    configuration checks, handed to the check of the daemon's own rules
    (L{buildConfig}'s C{sessionsCheck}).

    @ivar listen: its server endpoint strings, as written.
    @ivar secretFile: its secret file, as an absolute path.
    @ivar insecure: plain listeners such as C{tcp:} are allowed.
    @ivar listenLabel: how to name C{listen} in messages (C{"--sessions"}
        or C{"sessions"}).
    @ivar secretLabel: how to name C{secretFile} in messages.
    @ivar insecureFlag: how the user would allow plain listeners where
        they set C{listen} (C{"--sessions-insecure"} or
        C{"sessions-insecure = true"}).
    """

    listen: tuple[str, ...]
    secretFile: str
    insecure: bool
    listenLabel: str
    secretLabel: str
    insecureFlag: str


#: What L{buildConfig} returns from a check that failed.
_INVALID: Any = object()


class _Problems:
    """
    The problems found so far in a configuration, reported together.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []

    def attempt(self, check: Callable[..., Any], *args: Any) -> Any:
        """
        Return C{check(*args)}; if it raises L{ConfigError}, note its
        problems and return L{_INVALID}.
        """
        try:
            return check(*args)
        except ConfigError as e:
            self.messages.extend(e.problems)
            return _INVALID

    def add(self, error: ConfigError) -> None:
        """
        Note the problems of C{error}.
        """
        self.messages.extend(error.problems)

    def raiseIfAny(self) -> None:
        """
        @raise ConfigError: with every problem noted, one per line.
        """
        if self.messages:
            raise ConfigError(*self.messages)


def buildConfig(
    fileValues: Mapping[str, Any],
    overrides: Optional[Mapping[str, Any]] = None,
    sessionsCheck: Optional[Callable[[SessionDaemonSettings], None]] = None,
) -> BalancerConfig:
    """
    Merge a configuration file's settings with the command line's and check
    the result.

    @param fileValues: the TOML file's top-level table (see L{loadConfig}),
        or C{{}} with no file. Errors name its keys as written.
    @param overrides: command-line settings under the same kebab-case names
        (C{"client-timeout": 0.0}); C{"listen"} and C{"backend"} are lists of
        endpoint strings and replace the file's. Errors name them C{--key}.
    @param sessionsCheck: called with the hosted session daemon's settings
        when they are given and well formed, to check them against the
        daemon's own rules; it raises L{ConfigError} for what they break.
        The balancer does not know those rules: C{twistd tlbalance} passes
        them (L{tlbalance.tap}).
    @raise ConfigError: naming the option or key and the problem, one line
        per problem found.
    """
    if not isinstance(fileValues, Mapping):
        raise ConfigError("the configuration must be a table of settings")
    settings: dict[str, tuple[str, Any]] = {
        key: (key, value) for key, value in fileValues.items()
    }
    for key, value in (overrides or {}).items():
        settings[key] = ("--" + key, value)
    problems = _Problems()

    values: dict[str, Any] = {}
    checkDefaults: dict[str, Any] = {}
    for key, (label, value) in settings.items():
        if key in _BALANCER_RULES:
            attribute, rule = _BALANCER_RULES[key]
            values[attribute] = problems.attempt(rule.check, label, value)
        elif key in _CHECK_RULES:
            attribute, rule = _CHECK_RULES[key]
            checked = problems.attempt(rule.check, label, value)
            if checked is not _INVALID:
                checkDefaults[attribute] = checked
        elif key not in _TOP_KEYS:
            problems.add(_unknown(label, key, _TOP_KEYS))

    defaultCheck = settings.get("check")
    if defaultCheck is not None:
        # Checked once here, rather than once for each backend using it.
        if problems.attempt(_healthCheck, *defaultCheck, checkDefaults) is _INVALID:
            defaultCheck = _INVALID

    listenLabel, listenValue = settings.get("listen", ("--listen", []))
    values["listen"] = problems.attempt(_listenEndpoints, listenLabel, listenValue)
    backendLabel, backendValue = settings.get("backend", ("--backend", []))
    values["backends"] = problems.attempt(
        _backends, backendLabel, backendValue, defaultCheck, checkDefaults
    )
    if "stats" in settings:
        values["stats"] = problems.attempt(_statsEndpoints, *settings["stats"])
    insecure = values.get("sessionsInsecure", False)
    sessions = problems.attempt(_sessionDaemon, settings, insecure is True)
    if sessions is not _INVALID and sessions is not None:
        values.update(sessions=sessions.listen, secretFile=sessions.secretFile)
        # With sessions-insecure itself wrong (and reported), the daemon's
        # rules would only add a confusing second problem.
        if sessionsCheck is not None and insecure is not _INVALID:
            problems.attempt(sessionsCheck, sessions)
    if "control" in settings:
        values["control"] = problems.attempt(_controlPath, *settings["control"])
    problems.raiseIfAny()
    return BalancerConfig(**values)


def _controlPath(label: str, value: object) -> Optional[str]:
    """
    The runtime API's socket path, made absolute (twistd may change
    directory); C{None} when not given.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{label}: expected the path of a unix socket, got {show(value)}"
        )
    return os.path.abspath(value)


def _sessionDaemon(
    settings: Mapping[str, tuple[str, Any]], insecure: bool
) -> Optional[SessionDaemonSettings]:
    """
    Check the shape of the hosted session daemon's settings: its listen
    endpoints and its secret file, each needing the other.

    @param insecure: the checked C{sessions-insecure}.
    @return: the settings, or C{None} when no daemon is hosted.
    """
    sessionsLabel, sessionsValue = settings.get("sessions", ("--sessions", []))
    secretLabel, secretValue = settings.get("secret-file", ("--secret-file", None))
    sessions = _strings(sessionsLabel, sessionsValue, "server endpoint strings")
    if not sessions:
        if secretValue is not None:
            raise ConfigError(
                f"{secretLabel}: only used with --sessions ENDPOINT (the session "
                "daemon the balancer can host)"
            )
        return None
    problems = _Problems()
    if secretValue is None:
        problems.add(
            ConfigError(
                f"{sessionsLabel}: the session daemon needs --secret-file FILE "
                "(the secret its clients log in with)"
            )
        )
    elif not isinstance(secretValue, str) or not secretValue.strip():
        problems.add(
            ConfigError(f"{secretLabel}: expected a file name, got {show(secretValue)}")
        )
    seen: set[str] = set()
    for description in sessions:
        problems.attempt(checkListenString, sessionsLabel, description)
        if description in seen:
            problems.add(
                ConfigError(f"{sessionsLabel}: {show(description)} is given twice")
            )
        seen.add(description)
    problems.raiseIfAny()
    # Name the flag the way the user would set it, where they set sessions.
    if sessionsLabel.startswith("--"):
        flag = "--sessions-insecure"
    else:
        flag = "sessions-insecure = true"
    return SessionDaemonSettings(
        listen=tuple(sessions),
        secretFile=os.path.abspath(secretValue),
        insecure=insecure,
        listenLabel=sessionsLabel,
        secretLabel=secretLabel,
        insecureFlag=flag,
    )


def _unknown(label: str, key: str, known: Iterable[str]) -> ConfigError:
    """
    The error for a misspelt or unsupported key, with the nearest real one.
    """
    message = f"{label}: unknown {'option' if label.startswith('--') else 'setting'}"
    close = difflib.get_close_matches(key, sorted(known), n=1)
    if close:
        message += f"; did you mean {close[0]}?"
    return ConfigError(message)


def _strings(label: str, value: object, what: str) -> list[str]:
    """
    A list of strings, or one string as a list of one.
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(
        isinstance(item, str) for item in items
    ):
        raise ConfigError(f"{label}: expected a list of {what}, got {show(value)}")
    return list(items)


def _statsEndpoints(label: str, value: object) -> tuple[str, ...]:
    """
    Check the stats listeners' endpoint strings, each on its own.
    """
    stats = _strings(label, value, "server endpoint strings")
    problems = _Problems()
    seen = set()
    for description in stats:
        problems.attempt(checkListenString, label, description)
        if description in seen:
            problems.add(ConfigError(f"{label}: {show(description)} is given twice"))
        seen.add(description)
    problems.raiseIfAny()
    return tuple(stats)


def _listenEndpoints(label: str, value: object) -> tuple[str, ...]:
    """
    Check the listen endpoint strings, each on its own.
    """
    listen = _strings(label, value, "server endpoint strings")
    if not listen:
        raise ConfigError(
            "no listen endpoint: give --listen ENDPOINT (or listen = [...] in "
            "the configuration file)"
        )
    problems = _Problems()
    seen = set()
    for description in listen:
        problems.attempt(checkListenString, label, description)
        if description in seen:
            problems.add(ConfigError(f"{label}: {show(description)} is given twice"))
        seen.add(description)
    problems.raiseIfAny()
    return tuple(listen)


def _backends(
    label: str,
    value: object,
    defaultCheck: Optional[tuple[str, Any]],
    checkDefaults: dict[str, Any],
) -> tuple[BackendConfig, ...]:
    """
    Build every backend, each from an endpoint string or a C{[[backend]]}
    table, giving them the default check where they name none.

    @param defaultCheck: the label and text of the check for backends that
        name none, C{None} for no check, or L{_INVALID} when it is wrong
        (and reported already).
    """
    if isinstance(value, Mapping):
        raise ConfigError(
            f"{label}: expected a list of backends, got a table; write "
            "[[backend]] (double brackets) before each backend"
        )
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"{label}: expected a list of backends, got {show(value)}")
    if not entries:
        raise ConfigError(
            "no backend: give --backend ENDPOINT (or [[backend]] tables in "
            "the configuration file)"
        )
    problems = _Problems()
    backends: list[BackendConfig] = []
    names: dict[str, str] = {}
    for index, entry in enumerate(entries):
        entryLabel = label if label.startswith("--") else f"{label}[{index}]"
        if isinstance(entry, str):
            entry = {"endpoint": entry}
            keyLabel = {"endpoint": entryLabel}
        elif isinstance(entry, Mapping):
            keyLabel = {key: f"{entryLabel}.{key}" for key in entry}
        else:
            problems.add(
                ConfigError(
                    f"{entryLabel}: expected a [[backend]] table or an endpoint "
                    f"string, got {show(entry)}"
                )
            )
            continue
        backend = problems.attempt(
            _backend, entryLabel, entry, keyLabel, defaultCheck, checkDefaults
        )
        if backend is _INVALID:
            continue
        if backend.name in names:
            if entryLabel.startswith("--"):
                message = f"{entryLabel}: {show(backend.name)} is given twice"
            else:
                message = (
                    f"{entryLabel}.name: the backend name {show(backend.name)} is "
                    f"already used by {names[backend.name]}; give each backend a "
                    "distinct name"
                )
            problems.add(ConfigError(message))
            continue
        names[backend.name] = entryLabel
        backends.append(backend)
    problems.raiseIfAny()
    return tuple(backends)


def _backend(
    label: str,
    table: Mapping[str, Any],
    keyLabel: Mapping[str, str],
    defaultCheck: Optional[tuple[str, Any]],
    checkDefaults: dict[str, Any],
) -> BackendConfig:
    """
    Build one backend from its table, checking each key on its own.

    @param keyLabel: how to name each of the table's keys in errors.
    """
    problems = _Problems()
    values: dict[str, Any] = {}
    params = dict(checkDefaults)
    for key, value in table.items():
        if key == "endpoint":
            values["endpoint"] = problems.attempt(
                backendEndpointString, keyLabel[key], value
            )
            if isinstance(value, str) and "name" not in values:
                values["name"] = value.strip()
        elif key == "name":
            if not isinstance(value, str) or not value.strip():
                problems.add(
                    ConfigError(
                        f"{keyLabel[key]}: expected a non-empty string, got "
                        f"{show(value)}"
                    )
                )
            values["name"] = value
        elif key in _BACKEND_RULES:
            attribute, rule = _BACKEND_RULES[key]
            values[attribute] = problems.attempt(rule.check, keyLabel[key], value)
        elif key in _CHECK_RULES:
            attribute, rule = _CHECK_RULES[key]
            checked = problems.attempt(rule.check, keyLabel[key], value)
            if checked is not _INVALID:
                params[attribute] = checked
        elif key != "check":
            problems.add(_unknown(keyLabel[key], key, _BACKEND_KEYS))
    if "endpoint" not in table:
        problems.add(
            ConfigError(f"{label}: missing endpoint (a client endpoint string)")
        )
    if "check" in table:
        checkSetting: Any = (keyLabel["check"], table["check"])
    else:
        checkSetting = defaultCheck
    check = None
    if checkSetting is not None and checkSetting is not _INVALID:
        check = problems.attempt(_healthCheck, *checkSetting, params)
    # A wrong default check is reported once already: the settings for it
    # are not unused.
    if check is None and checkSetting is not _INVALID:
        for key in _CHECK_RULES:
            if key in table:
                problems.add(
                    ConfigError(f"{keyLabel[key]}: set, but this backend has no check")
                )
    problems.raiseIfAny()
    values["check"] = check
    return BackendConfig(**values)


def backendFromTable(table: Mapping[str, Any], label: str = "server") -> BackendConfig:
    """
    Build one backend from the keys of a C{[[backend]]} table, as the
    runtime API's C{add server} does. Top-level check defaults do not
    apply: a check is given with the C{check} key.

    @param table: C{endpoint}, C{name}, C{weight}, C{check}...
    @param label: how to name the backend in errors; keys are named as
        written.
    @raise ConfigError: naming each bad key, one line per problem.
    """
    return _backend(label, table, {key: key for key in table}, None, {})


def _healthCheck(
    label: str, text: object, params: Mapping[str, Any]
) -> Optional[HealthCheckConfig]:
    """
    Parse a check setting; C{"none"} means no check.
    """
    if not isinstance(text, str):
        raise ConfigError(
            f"{label}: expected a health check ({CHECK_SYNTAX}), got {show(text)}"
        )
    if text.strip().lower() == "none":
        return None
    try:
        return HealthCheckConfig.parse(text, **params)
    except ConfigError as e:
        raise ConfigError(f"{label}: {e}") from None
