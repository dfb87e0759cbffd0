# -*- test-case-name: tests.unit.test_config -*-
"""
The rules of the balancer's settings: each says what one setting takes (a
number in a range, a word from a list, true or false, trusted peers, an
OpenSSL cipher string), in words for C{--help} and for error messages.

The same rule converts a value read from TOML, parses command-line text,
and (as an attrs validator, L{validateField}) guards configuration objects
built directly in code. L{ConfigError} is what every check of the
configuration raises.
"""

from __future__ import annotations

import ipaddress
import json
import math
from typing import Any, Mapping, Optional, Union

from attrs import Attribute, fields, frozen

from tlbalance.tls import TLSConfigError, checkCiphers


class ConfigError(ValueError):
    """
    The configuration is unusable. The message names the option or key and
    the problem, ready to show to the user as it is; when several problems
    were found at once, it holds one per line.

    @ivar problems: each problem, in one line.
    """

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = problems


def show(value: object) -> str:
    """
    Render a configuration value the way it would be written in TOML, so
    that an error message quotes what the user wrote.
    """
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "a table"
    return str(value)


def _number(value: float) -> str:
    """
    Print C{2.0} as C{2} in messages.
    """
    return str(int(value)) if float(value).is_integer() else str(value)


@frozen
class Number:
    """
    An integer or a finite number within a range.

    @ivar above: the value must be strictly greater than C{minimum}.
    @ivar optional: C{None} is allowed too (never written in a file, since
        TOML has no null: it means "not set").
    """

    integer: bool
    minimum: float
    maximum: Optional[float] = None
    above: bool = False
    unit: str = ""
    optional: bool = False

    def describe(self) -> str:
        """
        Say what is expected, e.g. C{an integer from 0 to 256}.
        """
        noun = "an integer" if self.integer else "a number"
        if self.unit:
            noun += f" of {self.unit}"
        low = _number(self.minimum)
        if self.maximum is not None:
            return f"{noun} from {low} to {_number(self.maximum)}"
        return f"{noun} {'>' if self.above else '>='} {low}"

    def check(self, label: str, value: object) -> Any:
        """
        Return C{value} as an C{int} or C{float}, or raise L{ConfigError}.
        """
        if value is None and self.optional:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (self.integer and not isinstance(value, int))
        ):
            raise self.error(label, value)
        if (
            not math.isfinite(value)
            or value < self.minimum
            or (self.above and value == self.minimum)
            or (self.maximum is not None and value > self.maximum)
        ):
            raise self.error(label, value)
        return value if self.integer else float(value)

    def parse(self, label: str, text: str) -> Any:
        """
        Convert command-line text, then L{check} it; errors quote the text.
        """
        try:
            number: float = int(text) if self.integer else float(text)
            return self.check(label, number)
        except (ValueError, ConfigError):
            # Quote what was typed ("0"), not the converted number (0.0).
            raise self.error(label, text) from None

    def error(self, label: str, value: object) -> ConfigError:
        """
        The error for a value that breaks this rule.
        """
        return ConfigError(f"{label}: expected {self.describe()}, got {show(value)}")


@frozen
class Choice:
    """
    One word out of a fixed list; case does not matter.

    @ivar noneWord: a word that means "off" and becomes C{None}.
    """

    choices: tuple[str, ...]
    optional: bool = False
    noneWord: Optional[str] = None

    def describe(self) -> str:
        """
        List the words accepted.
        """
        words = self.choices + ((self.noneWord,) if self.noneWord else ())
        return "one of " + ", ".join(words)

    def check(self, label: str, value: object) -> Optional[str]:
        """
        Return the word in lower case (or C{None}), or raise L{ConfigError}.
        """
        if value is None and self.optional:
            return None
        if isinstance(value, str):
            word = value.strip().lower()
            if word in self.choices:
                return word
            if self.noneWord is not None and word == self.noneWord:
                return None
        raise ConfigError(f"{label}: expected {self.describe()}, got {show(value)}")

    def parse(self, label: str, text: str) -> Optional[str]:
        """
        Command-line text is checked as it is.
        """
        return self.check(label, text)


@frozen
class Boolean:
    """
    C{true} or C{false}.
    """

    def describe(self) -> str:
        """
        Say what is expected.
        """
        return "true or false"

    def check(self, label: str, value: object) -> bool:
        """
        Return the boolean, or raise L{ConfigError}.
        """
        if not isinstance(value, bool):
            raise ConfigError(f"{label}: expected true or false, got {show(value)}")
        return value


@frozen
class Peers:
    """
    Trusted PROXY senders: CIDR networks, bare IP addresses and C{unix},
    as a list or one comma-separated string. Bare addresses become
    single-address networks (C{127.0.0.1/32}).
    """

    def describe(self) -> str:
        """
        Say what is expected.
        """
        return 'CIDR networks, IP addresses and/or "unix", separated by commas'

    def parse(self, label: str, text: str) -> tuple[str, ...]:
        """
        Command-line text is one comma-separated string.
        """
        return self.check(label, text)

    def check(self, label: str, value: object) -> tuple[str, ...]:
        """
        Return the normalised entries, or raise L{ConfigError}.
        """
        if isinstance(value, str):
            items: list[object] = list(value.split(","))
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{label}: expected {self.describe()}, got {show(value)}")
        peers: list[str] = []
        for item in items:
            if not isinstance(item, str):
                raise ConfigError(
                    f"{label}: expected {self.describe()}, got {show(item)}"
                )
            text = item.strip()
            if not text:
                continue
            if text.lower() == "unix":
                peers.append("unix")
                continue
            try:
                network = ipaddress.ip_network(text, strict=True)
            except ValueError:
                try:
                    loose = ipaddress.ip_network(text, strict=False)
                except ValueError:
                    raise ConfigError(
                        f"{label}: {show(text)} is not an IP address, a CIDR "
                        'network or "unix"'
                    ) from None
                raise ConfigError(
                    f"{label}: {show(text)} has host bits set; did you mean "
                    f"{show(str(loose))}?"
                ) from None
            peers.append(str(network))
        return tuple(peers)


@frozen
class Ciphers:
    """
    The TLS 1.2 cipher suites of every TLS listener: an OpenSSL cipher
    string that OpenSSL selects something from.
    """

    def describe(self) -> str:
        """
        Say what is expected.
        """
        return "an OpenSSL cipher string for TLS 1.2, e.g. ECDHE+AESGCM:ECDHE+CHACHA20"

    def check(self, label: str, value: object) -> Optional[str]:
        """
        Return the string (C{None} when not set), or raise L{ConfigError}.
        """
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{label}: expected {self.describe()}, got {show(value)}")
        try:
            return checkCiphers(value.strip())
        except TLSConfigError as e:
            raise ConfigError(f"{label}: {e}") from None

    def parse(self, label: str, text: str) -> Optional[str]:
        """
        Command-line text is checked as it is.
        """
        return self.check(label, text)


#: Any rule.
Rule = Union[Number, Choice, Boolean, Peers, Ciphers]

#: Seconds, 0 or more.
SECONDS = Number(integer=False, minimum=0, unit="seconds")

#: Seconds, above 0.
POSITIVE_SECONDS = Number(integer=False, minimum=0, above=True, unit="seconds")


def setting(key: str, rule: Rule) -> dict[str, Any]:
    """
    Field metadata: the setting's name in files and on the command line, and
    its rule.
    """
    return {"key": key, "rule": rule}


def validateField(instance: object, attribute: Attribute[Any], value: Any) -> None:
    """
    attrs validator applying a field's rule, for objects built in code.
    """
    attribute.metadata["rule"].check(attribute.name, value)


def rulesOf(cls: type) -> dict[str, tuple[str, Rule]]:
    """
    Map each setting name of the attrs class C{cls} to its attribute name
    and rule.
    """
    return {
        f.metadata["key"]: (f.name, f.metadata["rule"])
        for f in fields(cls)
        if "rule" in f.metadata
    }
