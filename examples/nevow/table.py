"""
A table from a data method through the C{sequence} renderer, with its
header, alternating item, divider, empty and footer patterns, each row's
slots filled by a render method. The readings are random on every request.

Serve with C{twistd -n web --class examples.nevow.table.resource} or
C{python -m examples.nevow.table [PORT]}.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any, List, Optional, Tuple

from twisted.web.server import Site

from tlcache.nevow import appserver, loaders, rend

HERE = os.path.dirname(os.path.abspath(__file__))

SENSORS = ("boiler", "attic", "cellar <north>", "garden & shed")


class Readings(rend.Page):
    """
    Today's sensor readings, or a line saying there are none.

    @ivar randomness: where the readings come from (a seeded
        L{random.Random} makes them repeatable).
    """

    addSlash = True
    docFactory = loaders.xmlfile(os.path.join(HERE, "table.html"))

    def __init__(self, randomness: Optional[random.Random] = None) -> None:
        super().__init__()
        self.randomness = randomness or random.Random()

    def data_readings(self, ctx: Any, data: Any) -> List[Tuple[str, int]]:
        count = self.randomness.randint(0, len(SENSORS))
        sensors = self.randomness.sample(SENSORS, count)
        return [(sensor, self.randomness.randint(-20, 40)) for sensor in sensors]

    def render_reading(self, ctx: Any, data: Tuple[str, int]) -> Any:
        ctx.fillSlots("sensor", data[0])
        ctx.fillSlots("value", f"{data[1]} °C")
        return ctx.tag


def resource() -> rend.Page:
    """
    The example's root page.
    """
    return Readings()


def site() -> Site:
    """
    A site serving L{resource}.
    """
    return appserver.NevowSite(resource())


if __name__ == "__main__":
    from examples.nevow._serve import serve

    serve(site, sys.argv[1:])
