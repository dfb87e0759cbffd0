"""
Render the same 100-row table with twisted.web.template, tlcache.nevow and
Jinja2 in one run, and print microseconds per render and the ratios.

Run C{python bench/render.py --help} for the options; bench/README.md says
what each figure means.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import timeit
from typing import Any, Callable, Dict, List, Sequence, Tuple

import jinja2
from _harness import machineDescription
from twisted.web.template import Element, XMLString, flattenString, renderer

from tlcache.nevow import loaders, rend

ROW_COUNT = 100
# Targets set by issue 4: the shim at least this many times faster than
# twisted.web.template, and at most this many times slower than Jinja2.
TWISTED_TARGET = 10.0
JINJA_TARGET = 5.0

Row = Tuple[str, str]


def makeRows(count: int = ROW_COUNT) -> List[Row]:
    """
    The table's data: every name needs escaping, so all three engines
    really escape (quotes are left out: Jinja2 escapes them in text, the
    other two do not, and either is correct HTML).
    """
    return [(f"item <{i}> & co", f"{i * 37 % 1000}") for i in range(count)]


class TwistedTable(Element):
    """
    The table as a twisted.web.template element: one renderer clones the
    row and fills its two slots for each row.
    """

    loader = XMLString(
        '<table xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1">'
        "<tr><th>name</th><th>value</th></tr>"
        '<tr t:render="rows"><td><t:slot name="name"/></td>'
        '<td><t:slot name="value"/></td></tr></table>'
    )

    def __init__(self, rows: Sequence[Row]) -> None:
        super().__init__()
        self.tableRows = rows

    @renderer
    def rows(self, request: Any, tag: Any) -> Any:
        for name, value in self.tableRows:
            yield tag.clone().fillSlots(name=name, value=value)


class ShimTable(rend.Page):
    """
    The table as a Nevow page: a C{sequence} over C{data_rows} with an
    item pattern whose renderer fills two slots.
    """

    docFactory = loaders.xmlstr(
        '<table xmlns:n="http://nevow.com/ns/nevow/0.1" n:data="rows"'
        ' n:render="sequence"><tr n:pattern="header"><th>name</th>'
        '<th>value</th></tr><tr n:pattern="item" n:render="row">'
        '<td><n:slot name="name"/></td><td><n:slot name="value"/></td></tr>'
        "</table>"
    )

    def data_rows(self, ctx: Any, data: Any) -> Sequence[Row]:
        return self.original  # type: ignore[no-any-return]

    def render_row(self, ctx: Any, data: Row) -> Any:
        ctx.fillSlots("name", data[0])
        ctx.fillSlots("value", data[1])
        return ctx.tag


JINJA_SOURCE = (
    "<table><tr><th>name</th><th>value</th></tr>"
    "{% for name, value in rows %}<tr><td>{{ name }}</td><td>{{ value }}</td>"
    "</tr>{% endfor %}</table>"
)


def makeRenderers(rows: Sequence[Row]) -> Dict[str, Callable[[], bytes]]:
    """
    One zero-argument callable per engine, each returning the table as
    UTF-8 bytes.
    """

    def renderTwisted() -> bytes:
        results: List[bytes] = []
        flattenString(None, TwistedTable(rows)).addCallback(results.append)
        # Nothing in the tree waits, so the Deferred has already fired.
        return results[0]

    page = ShimTable(rows)
    template = jinja2.Environment(autoescape=True).from_string(JINJA_SOURCE)

    def renderJinja() -> bytes:
        return template.render(rows=rows).encode("utf-8")

    return {
        "twisted.web.template": renderTwisted,
        "tlcache.nevow": page.renderSynchronously,
        "jinja2": renderJinja,
    }


def normalise(html: bytes) -> str:
    """
    C{html} with the whitespace between tags removed and runs of other
    whitespace made one space.
    """
    text = re.sub(r">\s+<", "><", html.decode("utf-8"))
    return re.sub(r"\s+", " ", text).strip()


def checkEquivalent(renderers: Dict[str, Callable[[], bytes]], rows: int) -> int:
    """
    Render once with each engine and insist on the same HTML.

    @return: the size of the output in bytes.
    """
    outputs = {name: normalise(render()) for name, render in renderers.items()}
    reference = outputs["jinja2"]
    for name, output in outputs.items():
        if output != reference:
            raise SystemExit(
                f"{name} renders different HTML:\n{output[:400]}\n"
                f"jinja2 renders:\n{reference[:400]}"
            )
    if reference.count("<tr>") != rows + 1 or "&lt;0&gt; &amp; co" not in reference:
        raise SystemExit(f"unexpected table:\n{reference[:400]}")
    return len(reference.encode("utf-8"))


def measure(render: Callable[[], bytes], number: int, repeat: int) -> Dict[str, float]:
    """
    Time C{repeat} runs of C{number} renders each.

    @return: best and median microseconds per render.
    """
    timer = timeit.Timer(render)
    runs = [seconds / number * 1e6 for seconds in timer.repeat(repeat, number)]
    return {"best_us": min(runs), "median_us": statistics.median(runs)}


def interpreterDescription() -> str:
    """
    This interpreter and the versions of the three engines.
    """
    import platform

    import twisted

    name = platform.python_implementation() + " " + sys.version.split()[0]
    pypy = getattr(sys, "pypy_version_info", None)
    if pypy is not None:
        name += " (PyPy " + ".".join(map(str, pypy[:3])) + ")"
    return f"{name}, Twisted {twisted.__version__}, Jinja2 {jinja2.__version__}"


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(
        description="twisted.web.template vs tlcache.nevow vs Jinja2: one table"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer, shorter runs (a smoke test)"
    )
    parser.add_argument("--rows", type=int, default=ROW_COUNT, help="table rows")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """
    Check the three outputs agree, time them, print the table and ratios.

    @return: the exit code: 0 when both targets are met, 1 otherwise.
    """
    options = parseArguments(argv)
    rows = makeRows(options.rows)
    renderers = makeRenderers(rows)
    size = checkEquivalent(renderers, options.rows)
    # (renders per run, runs); the slow engine gets fewer renders so a
    # run lasts roughly as long for each.
    plans = {
        "twisted.web.template": (20, 5) if options.quick else (200, 9),
        "tlcache.nevow": (200, 5) if options.quick else (2000, 9),
        "jinja2": (200, 5) if options.quick else (2000, 9),
    }
    warmup = 50 if options.quick else 500
    results: Dict[str, Dict[str, float]] = {}
    for name, render in renderers.items():
        for _ in range(warmup):
            render()
        number, repeat = plans[name]
        results[name] = measure(render, number, repeat)

    machine = machineDescription()
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, governor "
        f"{machine['governor']}, kernel {machine['kernel']}"
    )
    print(f"python:  {interpreterDescription()}")
    print(f"markup:  {options.rows}-row table, two slots per row, {size} bytes")
    print()
    print(f"{'engine':<22}{'best µs':>12}{'median µs':>12}{'renders':>10}")
    for name, result in results.items():
        number, repeat = plans[name]
        print(
            f"{name:<22}{result['best_us']:>12.1f}{result['median_us']:>12.1f}"
            f"{f'{repeat}×{number}':>10}"
        )
    shim = results["tlcache.nevow"]["median_us"]
    fasterThanTwisted = results["twisted.web.template"]["median_us"] / shim
    slowerThanJinja = shim / results["jinja2"]["median_us"]
    twistedPass = fasterThanTwisted >= TWISTED_TARGET
    jinjaPass = slowerThanJinja <= JINJA_TARGET
    print()
    print(
        f"shim vs twisted.web.template: {fasterThanTwisted:.1f}× faster "
        f"(target ≥ {TWISTED_TARGET:g}×) {'PASS' if twistedPass else 'MISS'}"
    )
    print(
        f"shim vs jinja2:               {slowerThanJinja:.2f}× the time "
        f"(target ≤ {JINJA_TARGET:g}×) {'PASS' if jinjaPass else 'MISS'}"
    )
    if options.json:
        with open(options.json, "w") as f:
            json.dump(
                {
                    "machine": machine,
                    "python": interpreterDescription(),
                    "rows": options.rows,
                    "bytes": size,
                    "quick": options.quick,
                    "results": results,
                    "ratios": {
                        "shim_faster_than_twisted": fasterThanTwisted,
                        "shim_time_over_jinja2": slowerThanJinja,
                    },
                    "pass": {"twisted": twistedPass, "jinja2": jinjaPass},
                },
                f,
                indent=2,
            )
    return 0 if twistedPass and jinjaPass else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
