"""
Stan prototypes for the HTML elements, plus the stan vocabulary.

C{from tlcache.nevow import tags as T}, then
C{T.html[T.body[T.p(class_="x")["text"]]]}. Names that clash with Python
builtins or keywords get a leading underscore (C{_del}, C{_dir}, C{_map},
C{_object}); C{_0} ... C{_99} are C{directive("0")} ... C{directive("99")},
for picking items out of sequence data. C{cached(key=..., refresh=N)[...]}
is a fragment whose bytes are cached (see L{tlcache.fragment}).
"""

from __future__ import annotations

from typing import List

from tlcache.nevow.stan import CommentProto, Proto, directive

# Re-exported: Nevow code finds stan's names in tags too.
from tlcache.nevow.stan import Tag as Tag
from tlcache.nevow.stan import cached as cached
from tlcache.nevow.stan import cdata as cdata
from tlcache.nevow.stan import invisible as invisible
from tlcache.nevow.stan import raw as raw
from tlcache.nevow.stan import slot as slot
from tlcache.nevow.stan import xml as xml

_NAMES = """
a abbr acronym address applet area article aside audio b base basefont bdi bdo
big blockquote body br button canvas caption center cite code col colgroup
datalist dd details dfn dialog div dl dt em embed fieldset figcaption figure
font footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html i
iframe img input ins isindex kbd label legend li link main mark menu meta meter
nav noframes noscript ol optgroup option output p param picture pre progress q
rp rt ruby s samp script section select small source span strike strong style
sub summary sup table tbody td template textarea tfoot th thead time title tr
track tt u ul var video wbr
""".split()

comment = CommentProto()

_dir = Proto("dir")
_del = Proto("del")
_object = Proto("object")
_map = Proto("map")

_namespace = globals()
for _name in _NAMES:
    _namespace[_name] = Proto(_name)
for _number in range(100):
    _namespace[f"_{_number}"] = directive(str(_number))
del _name, _number, _namespace


def drange(count: int) -> List[directive]:
    """
    The directives C{_0} ... C{_<count-1>}.
    """
    return [directive(str(i)) for i in range(count)]


def _exported() -> List[str]:
    # Every tag, the directives _0 ... _99, and the rest of stan's names,
    # for Nevow code that does "from nevow.tags import *".
    return [
        *_NAMES,
        "Tag",
        "_del",
        "_dir",
        "_map",
        "_object",
        "cached",
        "cdata",
        "comment",
        "directive",
        "drange",
        "invisible",
        "raw",
        "slot",
        "xml",
        *[f"_{i}" for i in range(100)],
    ]


# Through globals(): the names are made above at import time, and static
# tools (pydoctor) cannot read a list built from them.
globals()["__all__"] = _exported()
