"""
Tests for L{tlcache.nevow.rend} and L{tlcache.nevow.accessors}: pages,
fragments, render and data methods, the standard renderers.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface

from tlcache.nevow import accessors, compy, context, flat, inevow, loaders, rend
from tlcache.nevow import tags as T
from tlcache.nevow.stan import NodeNotFound

NS = 'xmlns:n="http://nevow.com/ns/nevow/0.1"'

TABLE = f"""<table {NS} n:data="numbers" n:render="sequence">
<tr n:pattern="header"><th>English</th><th>French</th></tr>
<tr n:pattern="item" n:render="row"><td><n:slot name="english"/></td>\
<td><n:slot name="french"/></td></tr>
</table>"""

ROWS = [["one", "un/une"], ["two", "deux"], ["three", "trois"]]


class PageRenderTests(SynchronousTestCase):
    """
    Pages with render and data methods (after Nevow's own TestPage).
    """

    def test_simple(self) -> None:
        """
        A page renders its template.
        """
        page = rend.Page(docFactory=loaders.xmlstr("<p>x</p>"))
        self.assertEqual(page.renderSynchronously(), b"<p>x</p>")

    def test_renderMethod(self) -> None:
        """
        C{render_*} methods replace their tag with what they return.
        """

        class Page(rend.Page):
            docFactory = loaders.xmlstr(
                f'<span {NS} n:render="replace">replace this</span>'
            )

            def render_replace(self, ctx: Any, data: Any) -> Any:
                return ctx.tag.clear()["abc"]

        self.assertEqual(Page().renderSynchronously(), b"<span>abc</span>")

    def test_dataAndRender(self) -> None:
        """
        A data method's result is the data of its tag's renderer; the row
        renderer fills slots in each item pattern.
        """

        class Page(rend.Page):
            docFactory = loaders.xmlstr(TABLE)

            def data_numbers(self, ctx: Any, data: Any) -> Any:
                return ROWS

            def render_row(self, ctx: Any, data: Any) -> Any:
                ctx.fillSlots("english", data[0])
                ctx.fillSlots("french", data[1])
                return ctx.tag

        self.assertEqual(
            Page().renderSynchronously(),
            b"<table><tr><th>English</th><th>French</th></tr>"
            b"<tr><td>one</td><td>un/une</td></tr><tr><td>two</td><td>deux</td></tr>"
            b"<tr><td>three</td><td>trois</td></tr></table>",
        )

    def test_stanDataAndRender(self) -> None:
        """
        Functions from the class body can be used directly as C{data} and
        C{render} specials.
        """

        class Page(rend.Page):
            def data_numbers(context: Any, data: Any) -> Any:
                return ROWS

            def render_row(context: Any, data: Any) -> Any:
                context.fillSlots("english", data[0])
                context.fillSlots("french", data[1])
                return context.tag

            docFactory = loaders.stan(
                T.table(data=data_numbers, render=T.directive("sequence"))[
                    T.tr(pattern="item", render=render_row)[
                        T.td[T.slot("english")], T.td[T.slot("french")]
                    ]
                ]
            )

        self.assertEqual(
            Page().renderSynchronously(),
            b"<table><tr><td>one</td><td>un/une</td></tr><tr><td>two</td><td>deux</td></tr>"
            b"<tr><td>three</td><td>trois</td></tr></table>",
        )

    def test_bareRenderMethodInTree(self) -> None:
        """
        An unbound C{render_*} in the tree gets the page, the context and
        the data.
        """

        class Page(rend.Page):
            def render_title(self, ctx: Any, data: Any) -> Any:
                return f"Title of {type(self).__name__}"

            docFactory = loaders.stan(T.title[render_title])

        self.assertEqual(Page().renderSynchronously(), b"<title>Title of Page</title>")

    def test_noData(self) -> None:
        """
        Without data directives the data is the page's C{original}.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(T.p(render=T.directive("foo")))

            def render_foo(self, ctx: Any, data: Any) -> Any:
                return ctx.tag.clear()[repr(data)]

        self.assertEqual(Page().renderSynchronously(), b"<p>None</p>")
        self.assertEqual(Page({"a": 1}).renderSynchronously(), b"<p>{'a': 1}</p>")

    def test_dataFromOriginal(self) -> None:
        """
        A data directive the page has no method for looks in C{original}.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(
                T.p(data=T.directive("name"), render=T.directive("string"))
            )

        self.assertEqual(
            Page({"name": "<Ann>"}).renderSynchronously(), b"<p>&lt;Ann&gt;</p>"
        )

    def test_dataNotFound(self) -> None:
        """
        Data nobody has is an error.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(T.p(data=T.directive("nothing")))

        self.assertRaises(rend.DataNotFoundError, Page().renderSynchronously)

    def test_missingRenderer(self) -> None:
        """
        A missing renderer is an error (not a message in the page).
        """

        class Page(rend.Page):
            docFactory = loaders.stan(T.html(render=T.directive("notfound")))

        error = self.assertRaises(
            rend.RendererNotFoundError, Page().renderSynchronously
        )
        self.assertIn("render_notfound", str(error))

    def test_parameterisedRendererAndData(self) -> None:
        """
        C{"name a,b"} passes arguments to C{render_name} and C{data_name},
        which return the real renderer and data.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(
                T.p(data=T.directive("repeat x, 3"), render=T.directive("wrap em"))
            )

            def data_repeat(self, text: str, count: str) -> Any:
                return lambda ctx, data: text * int(count)

            def render_wrap(self, name: str) -> Any:
                return lambda ctx, data: T.Tag(name)[data]

        self.assertEqual(Page().renderSynchronously(), b"<em>xxx</em>")

    def test_renderXMLAndData(self) -> None:
        """
        The C{xml} renderer inserts markup as it is; the C{data} renderer
        inserts the data.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(
                T.div[
                    T.p(data=T.directive("markup"), render=T.directive("xml")),
                    T.p(data=T.directive("items"), render=T.directive("data")),
                ]
            )

            def data_markup(self, ctx: Any, data: Any) -> str:
                return "<b>bold</b>"

            def data_items(self, ctx: Any, data: Any) -> Any:
                return [1, "<", 3]

        self.assertEqual(
            Page().renderSynchronously(), b"<div><p><b>bold</b></p><p>1&lt;3</p></div>"
        )

    def test_mapping(self) -> None:
        """
        The C{mapping} renderer fills slots from a dict.
        """

        class Page(rend.Page):
            docFactory = loaders.xmlstr(
                f'<p {NS} n:data="person" n:render="mapping"><n:slot name="name"/> '
                '&lt;<n:slot name="email"/>&gt;</p>'
            )

            def data_person(self, ctx: Any, data: Any) -> Any:
                return {"name": "Ann", "email": "ann@example.com"}

        self.assertEqual(
            Page().renderSynchronously(), b"<p>Ann &lt;ann@example.com&gt;</p>"
        )

    def test_buffered(self) -> None:
        """
        A buffered page renders the same.
        """

        class Page(rend.Page):
            buffered = True
            docFactory = loaders.stan(T.html[T.head[T.title["test"]]])

        self.assertEqual(
            Page().renderSynchronously(),
            b"<html><head><title>test</title></head></html>",
        )

    def test_reusedDocFactory(self) -> None:
        """
        Two pages can share a document factory; each renders with its own
        methods.
        """
        shared = loaders.stan(T.p(render=T.directive("name")))

        class One(rend.Page):
            docFactory = shared

            def render_name(self, ctx: Any, data: Any) -> str:
                return "one"

        class Two(rend.Page):
            docFactory = shared

            def render_name(self, ctx: Any, data: Any) -> str:
                return "two"

        self.assertEqual(
            (One().renderSynchronously(), Two().renderSynchronously()), (b"one", b"two")
        )

    def test_rendererCalledOnce(self) -> None:
        """
        A render method is called once per tag per render.
        """
        calls = []

        class Page(rend.Page):
            docFactory = loaders.stan(T.p(render=T.directive("count")))

            def render_count(self, ctx: Any, data: Any) -> Any:
                calls.append(1)
                return ctx.tag["x"]

        page = Page()
        page.renderSynchronously()
        page.renderSynchronously()
        self.assertEqual(len(calls), 2)

    def test_renderString(self) -> None:
        """
        C{renderString} gives a Deferred with the bytes, waiting for any
        Deferred in the page.
        """
        d: Deferred[Any] = Deferred()

        class Page(rend.Page):
            docFactory = loaders.stan(T.div[T.p(render=T.directive("later"))])

            def render_later(self, ctx: Any, data: Any) -> Any:
                return d

        result = Page().renderString()
        self.assertNoResult(result)
        d.callback("done")
        self.assertEqual(self.successResultOf(result), b"<div>done</div>")

    def test_renderSynchronouslyRefusesToWait(self) -> None:
        """
        C{renderSynchronously} raises when the page needs to wait.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(T.p[Deferred()])

        self.assertRaises(flat.SynchronousRenderError, Page().renderSynchronously)

    def test_parentContext(self) -> None:
        """
        Both render outside a request below a given context.
        """

        class IFoo(compy.Interface):
            pass

        ctx = context.WovenContext()
        ctx.remember("Hello!", IFoo)

        class Page(rend.Page):
            def render_foo(self, ctx: Any, data: Any) -> Any:
                return IFoo(ctx)

            docFactory = loaders.stan(T.p[render_foo])

        self.assertEqual(Page().renderSynchronously(ctx), b"<p>Hello!</p>")
        self.assertEqual(
            self.successResultOf(Page().renderString(ctx)), b"<p>Hello!</p>"
        )

    def test_noDocFactory(self) -> None:
        """
        A page without a document factory cannot render.
        """
        self.assertRaises(TypeError, rend.Page().renderSynchronously)

    def test_keySpecial(self) -> None:
        """
        The C{key} special namespaces keys for render methods.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(
                T.div(key="outer")[T.p(key="inner", render=T.directive("key"))]
            )

            def render_key(self, ctx: Any, data: Any) -> Any:
                return ctx.tag(id=ctx.key)

        self.assertEqual(
            Page().renderSynchronously(), b'<div><p id="outer.inner"></p></div>'
        )


class DeferredMethodTests(SynchronousTestCase):
    """
    Data and render methods that return Deferreds.
    """

    def test_deferredData(self) -> None:
        """
        A data method's Deferred is waited for before its tag renders.
        """
        d: Deferred[Any] = Deferred()

        class Page(rend.Page):
            docFactory = loaders.xmlstr(
                f'<ul {NS} n:data="items" n:render="sequence">'
                '<li n:pattern="item" n:render="string"/></ul>'
            )

            def data_items(self, ctx: Any, data: Any) -> Any:
                return d

        result = Page().renderString()
        self.assertNoResult(result)
        d.callback(["a", "b"])
        self.assertEqual(self.successResultOf(result), b"<ul><li>a</li><li>b</li></ul>")

    def test_deferredRender(self) -> None:
        """
        A render method's Deferred result is rendered when it fires.
        """
        d: Deferred[Any] = Deferred()

        class Page(rend.Page):
            docFactory = loaders.stan(
                T.div[T.p(render=T.directive("slow")), T.p["after"]]
            )

            def render_slow(self, ctx: Any, data: Any) -> Any:
                return d.addCallback(lambda text: ctx.tag[text])

        result = Page().renderString()
        d.callback("late")
        self.assertEqual(
            self.successResultOf(result), b"<div><p>late</p><p>after</p></div>"
        )

    def test_deferredRowData(self) -> None:
        """
        Items of a sequence may be Deferreds.
        """
        pending: Deferred[Any] = Deferred()

        class Page(rend.Page):
            docFactory = loaders.xmlstr(
                f'<ul {NS} n:data="items" n:render="sequence">'
                '<li n:pattern="item" n:render="string"/></ul>'
            )

            def data_items(self, ctx: Any, data: Any) -> Any:
                return [succeed("a"), pending, "c"]

        result = Page().renderString()
        self.assertNoResult(result)
        pending.callback("b")
        self.assertEqual(
            self.successResultOf(result), b"<ul><li>a</li><li>b</li><li>c</li></ul>"
        )

    def test_failingDataMethod(self) -> None:
        """
        A data method that fails later fails the render.
        """
        d: Deferred[Any] = Deferred()

        class Page(rend.Page):
            docFactory = loaders.stan(
                T.p(data=T.directive("x"), render=T.directive("string"))
            )

            def data_x(self, ctx: Any, data: Any) -> Any:
                return d

        result = Page().renderString()
        d.errback(ZeroDivisionError())
        self.failureResultOf(result, ZeroDivisionError)

    def test_failingRenderMethod(self) -> None:
        """
        A render method that raises fails the render.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(T.p(render=T.directive("x")))

            def render_x(self, ctx: Any, data: Any) -> Any:
                raise ValueError("bad")

        self.failureResultOf(Page().renderString(), ValueError)


class SequenceTests(SynchronousTestCase):
    """
    The C{sequence} renderer's patterns.
    """

    def render(self, template: str, data: Any, **methods: Any) -> bytes:
        """
        Render C{template} with C{data} as the data of its root.
        """
        attributes = dict(methods, docFactory=loaders.xmlstr(template))
        attributes["data_items"] = lambda self, ctx, d: data
        return type("Page", (rend.Page,), attributes)().renderSynchronously()

    def test_allPatterns(self) -> None:
        """
        Header, cycled items, dividers between items, footer.
        """
        template = (
            f'<ul {NS} n:data="items" n:render="sequence">'
            '<li n:pattern="header">H</li>'
            '<li n:pattern="item" class="odd" n:render="string"/>'
            '<li n:pattern="item" class="even" n:render="string"/>'
            '<hr n:pattern="divider"/>'
            '<li n:pattern="footer">F</li>'
            '<li n:pattern="empty">E</li></ul>'
        )
        self.assertEqual(
            self.render(template, ["a", "b", "c"]),
            b'<ul><li>H</li><li class="odd">a</li><hr /><li class="even">b</li><hr />'
            b'<li class="odd">c</li><li>F</li></ul>',
        )
        self.assertEqual(
            self.render(template, []), b"<ul><li>H</li><li>E</li><li>F</li></ul>"
        )

    def test_dividerData(self) -> None:
        """
        A divider gets the data of the item before it.
        """
        template = (
            f'<p {NS} n:data="items" n:render="sequence">'
            '<n:invisible n:pattern="item" n:render="string"/>'
            '<i n:pattern="divider" n:render="string"/></p>'
        )
        self.assertEqual(
            self.render(template, [1, 2, 3]), b"<p>1<i>1</i>2<i>2</i>3</p>"
        )

    def test_iterable(self) -> None:
        """
        Any iterable will do as data.
        """
        template = (
            f'<p {NS} n:data="items" n:render="sequence">'
            '<b n:pattern="item" n:render="string"/></p>'
        )
        self.assertEqual(
            self.render(template, (x * 2 for x in range(3))),
            b"<p><b>0</b><b>2</b><b>4</b></p>",
        )

    def test_noItemPattern(self) -> None:
        """
        A sequence without an item pattern is an error.
        """
        template = f'<p {NS} n:data="items" n:render="sequence"/>'
        self.assertRaises(NodeNotFound, self.render, template, [1])

    def test_rowsWithoutRenderer(self) -> None:
        """
        Item patterns without a renderer get their data for the patterns
        inside them.
        """
        template = (
            f'<table {NS} n:data="items" n:render="sequence"><tr n:pattern="item">'
            '<td n:data="0" n:render="string"/><td n:data="1" n:render="string"/>'
            "</tr></table>"
        )
        self.assertEqual(
            self.render(template, [("a", "b"), ("c", "d")]),
            b"<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>",
        )

    def test_rowRendererChangingItsTag(self) -> None:
        """
        A row renderer may change its tag (attributes, children) for one row
        without affecting the others.
        """

        def render_row(self: Any, ctx: Any, data: Any) -> Any:
            ctx.fillSlots("v", str(data))
            if data == 2:
                return ctx.tag(class_="two")["!"]
            if data == 3:
                return T.b["replaced"]
            return ctx.tag

        template = (
            f'<ul {NS} n:data="items" n:render="sequence">'
            '<li n:pattern="item" n:render="row"><n:slot name="v"/></li></ul>'
        )
        self.assertEqual(
            self.render(template, [1, 2, 3, 4], render_row=render_row),
            b'<ul><li>1</li><li class="two">2!</li><b>replaced</b><li>4</li></ul>',
        )

    def test_rowSlotsFromAbove(self) -> None:
        """
        Row slots may be filled above the row, or with stan.
        """

        def render_list(self: Any, ctx: Any, data: Any) -> Any:
            ctx.fillSlots("label", "L")
            return rend.sequence(ctx, data)

        def render_row(self: Any, ctx: Any, data: Any) -> Any:
            ctx.fillSlots("v", T.em[data])
            return ctx.tag

        template = (
            f'<ul {NS} n:data="items" n:render="list">'
            '<li n:pattern="item" n:render="row">'
            '<n:slot name="label"/>:<n:slot name="v"/></li></ul>'
        )
        self.assertEqual(
            self.render(
                template, ["a", "b"], render_list=render_list, render_row=render_row
            ),
            b"<ul><li>L:<em>a</em></li><li>L:<em>b</em></li></ul>",
        )

    def test_rowRendererKeepsTag(self) -> None:
        """
        A row renderer that keeps a reference to its tag and changes it
        later does not change the rows already written or to come.
        """
        kept: List[Any] = []

        def render_row(self: Any, ctx: Any, data: Any) -> Any:
            ctx.fillSlots("v", data)
            kept.append(ctx.tag)
            return ctx.tag

        template = (
            f'<ul {NS} n:data="items" n:render="sequence">'
            '<li n:pattern="item" n:render="row" class="c"><n:slot name="v"/></li></ul>'
        )
        page = type(
            "Page",
            (rend.Page,),
            {
                "docFactory": loaders.xmlstr(template),
                "data_items": lambda self, ctx, d: ["a", "b"],
                "render_row": render_row,
            },
        )()
        self.assertEqual(
            page.renderSynchronously(),
            b'<ul><li class="c">a</li><li class="c">b</li></ul>',
        )
        self.assertEqual(
            page.renderSynchronously(),
            b'<ul><li class="c">a</li><li class="c">b</li></ul>',
        )

    def test_nestedSequence(self) -> None:
        """
        Sequences nest, each item being the data of the inner one.
        """
        template = (
            f'<ul {NS} n:data="items" n:render="sequence">'
            '<li n:pattern="item"><n:invisible n:data="0" n:render="string"/>:'
            '<ol n:data="1" n:render="sequence">'
            '<li n:pattern="item" n:render="string"/></ol></li></ul>'
        )
        self.assertEqual(
            self.render(template, [("x", [1, 2]), ("y", [])]),
            b"<ul><li>x:<ol><li>1</li><li>2</li></ol></li><li>y:<ol></ol></li></ul>",
        )


class SequenceRowTests(SynchronousTestCase):
    """
    The ways of rendering rows: every kind of item pattern renders as it
    would outside a sequence.
    """

    def render(self, *items: Any, data: Any = ("a", "b")) -> bytes:
        """
        Render a list with the given item patterns over C{data}.
        """
        page = rend.Page(
            list(data),
            docFactory=loaders.stan(T.ul(render=T.directive("sequence"))[list(items)]),
        )
        return page.renderSynchronously()

    def test_oneArgumentRenderer(self) -> None:
        """
        A one-argument function gets the item.
        """
        self.assertEqual(
            self.render(T.li(pattern="item", render=lambda data: T.b[data])),
            b"<ul><b>a</b><b>b</b></ul>",
        )

    def test_builtinRenderer(self) -> None:
        """
        A builtin gets the item.
        """
        self.assertEqual(self.render(T.li(pattern="item", render=str)), b"<ul>ab</ul>")

    def test_patternWithKey(self) -> None:
        """
        An item pattern with a C{key} special renders through the general
        path, with its key.
        """

        def render(ctx: Any, data: Any) -> Any:
            return ctx.tag(id=ctx.key)[data]

        self.assertEqual(
            self.render(T.li(pattern="item", key="k", render=render)),
            b'<ul><li id="k">a</li><li id="k">b</li></ul>',
        )

    def test_patternWithFilledSlots(self) -> None:
        """
        Slots filled on the item pattern are visible in each row.
        """
        item = T.li(pattern="item").fillSlots("x", "X")[
            T.slot("x"), T.invisible(render=str)
        ]
        self.assertEqual(self.render(item), b"<ul><li>Xa</li><li>Xb</li></ul>")

    def test_overriddenRendererLookup(self) -> None:
        """
        A page that finds renderers its own way is asked for each row.
        """
        asked: List[str] = []

        class Page(rend.Page):
            def renderer(self, ctx: Any, name: str) -> Any:
                asked.append(name)
                return rend.Page.renderer(self, ctx, name)

            def render_item(self, ctx: Any, data: Any) -> Any:
                return ctx.tag[data]

            docFactory = loaders.stan(
                T.ul(render=T.directive("sequence"))[
                    T.li(pattern="item", render=T.directive("item"))
                ]
            )

        self.assertEqual(
            Page(["a", "b"]).renderSynchronously(), b"<ul><li>a</li><li>b</li></ul>"
        )
        self.assertEqual(asked, ["sequence", "item", "item"])

    def test_rowsWithSlotsAndOtherChildren(self) -> None:
        """
        Rows whose children are not only markup and slots render fully.
        """

        def render(ctx: Any, data: Any) -> Any:
            ctx.fillSlots("s", data)
            return ctx.tag

        item = T.li(pattern="item", render=render)[T.slot("s"), T.invisible(render=str)]
        self.assertEqual(self.render(item), b"<ul><li>aa</li><li>bb</li></ul>")

    def test_rowsWithDynamicAttributes(self) -> None:
        """
        Rows whose attributes are computed render fully.
        """

        def render(ctx: Any, data: Any) -> Any:
            ctx.fillSlots("s", data)
            return ctx.tag

        item = T.li(pattern="item", render=render, title=T.slot("s"))[T.slot("s")]
        self.assertEqual(
            self.render(item),
            b'<ul><li title="a">a</li><li title="b">b</li></ul>',
        )

    def test_rowDataIsNotText(self) -> None:
        """
        Rows render when a slot is filled with something else than text.
        """

        def render(ctx: Any, data: Any) -> Any:
            ctx.fillSlots("s", len(data))
            return ctx.tag

        item = T.li(pattern="item", render=render)[T.slot("s")]
        self.assertEqual(self.render(item, data=["aa"]), b"<ul><li>2</li></ul>")


class PatternPlacementTests(SynchronousTestCase):
    """
    Patterns outside a sequence.
    """

    def test_patternsAreNotRendered(self) -> None:
        """
        A tag with a pattern is not rendered where it stands.
        """
        page = rend.Page(
            docFactory=loaders.stan(T.div[T.p(pattern="x")["hidden"], "shown"])
        )
        self.assertEqual(page.renderSynchronously(), b"<div>shown</div>")

    def test_deferredDataWithoutRenderer(self) -> None:
        """
        A tag whose data comes from a Deferred renders its children with it.
        """
        d: Deferred[Any] = Deferred()
        page = rend.Page(
            docFactory=loaders.stan(
                T.p(data=d)[T.invisible(render=lambda ctx, data: data)]
            )
        )
        result = page.renderString()
        d.callback("value")
        self.assertEqual(self.successResultOf(result), b"<p>value</p>")


class Vertex:
    """
    A plain object for L{accessors.ObjectContainer}.
    """

    def __init__(self, name: str, children: List[Any]) -> None:
        self.name = name
        self.children = children
        self._secret = "hidden"


compy.registerAdapter(accessors.ObjectContainer, Vertex, inevow.IContainer)


class AccessorTests(SynchronousTestCase):
    """
    How C{data} directives look into data.
    """

    def flatten(self, tag: Any, data: Any) -> bytes:
        """
        Flatten C{tag} with C{data} as the current data.
        """
        ctx = context.WovenContext()
        ctx.remember(data, inevow.IData)
        ctx.remember(rend.RenderFactory(), inevow.IRendererFactory)
        return flat.flatten(tag, ctx)

    def test_dict(self) -> None:
        """
        Dicts give their items.
        """
        self.assertEqual(
            self.flatten(
                T.p(data=T.directive("foo"), render=rend.data), {"foo": "bar"}
            ),
            b"<p>bar</p>",
        )

    def test_listIndexAndSlice(self) -> None:
        """
        Lists give items by index and slices.
        """
        tag = T.p[
            T.b(data=T._1, render=T.directive("string")),
            T.i(data=T.directive("1:3"), render=T.directive("data")),
        ]
        self.assertEqual(
            self.flatten(tag, [10, 20, 30, 40]), b"<p><b>20</b><i>2030</i></p>"
        )

    def test_objectContainer(self) -> None:
        """
        L{accessors.ObjectContainer} gives attributes, never private ones.
        """
        vertex = Vertex("top", [Vertex("a", []), Vertex("b", [])])
        tag = T.div[
            T.b(data=T.directive("name"), render=T.directive("string")),
            T.ul(data=T.directive("children"), render=T.directive("sequence"))[
                T.li(pattern="item")[
                    T.invisible(data=T.directive("name"), render=T.directive("string"))
                ]
            ],
        ]
        self.assertEqual(
            self.flatten(tag, vertex),
            b"<div><b>top</b><ul><li>a</li><li>b</li></ul></div>",
        )
        self.assertRaises(
            ValueError, self.flatten, T.p(data=T.directive("_secret")), vertex
        )

    def test_noContainer(self) -> None:
        """
        Data that is no container cannot be looked into.
        """
        self.assertRaises(
            rend.DataNotFoundError, self.flatten, T.p(data=T.directive("x")), 12
        )

    def test_convertToData(self) -> None:
        """
        L{accessors.convertToData} resolves a directive in a context.
        """
        ctx = context.WovenContext().remember({"k": "v"}, inevow.IData)
        self.assertEqual(accessors.convertToData(T.directive("k"), ctx), "v")
        self.assertEqual(accessors.DirectiveAccessor(T.directive("k")).get(ctx), "v")

    def test_slotAsData(self) -> None:
        """
        A slot used as data gives the value it was filled with.
        """
        ctx = context.WovenContext().remember({}, inevow.IData)
        ctx.fillSlots("s", ["x", "y"])
        tag = T.ul(data=T.slot("s"), render=T.directive("sequence"))[
            T.li(pattern="item", render=T.directive("string"))
        ]
        ctx.remember(rend.RenderFactory(), inevow.IRendererFactory)
        self.assertEqual(flat.flatten(tag, ctx), b"<ul><li>x</li><li>y</li></ul>")


class FragmentTests(SynchronousTestCase):
    """
    L{rend.Fragment} inside pages.
    """

    def test_component(self) -> None:
        """
        A fragment renders with its own methods and its C{original} as
        data.
        """

        class Data:
            foo = "foo"
            bar = "bar"

        class Component(rend.Fragment):
            def render_foo(self, context: Any, data: Any) -> Any:
                return T.strong[data.foo]

            def render_bar(self, context: Any, data: Any) -> Any:
                return data.bar

            docFactory = loaders.stan(T.p[render_foo, " ", render_bar])

        class Page(rend.Page):
            docFactory = loaders.stan(T.div[Component(Data())])

        self.assertEqual(
            Page().renderSynchronously(), b"<div><p><strong>foo</strong> bar</p></div>"
        )

    def test_fragmentInSlot(self) -> None:
        """
        A fragment can fill a slot; it does not disturb the page's own
        renderers around it.
        """

        class Fragment(rend.Fragment):
            docFactory = loaders.stan(T.p(render=T.directive("foo")))

            def render_foo(self, ctx: Any, data: Any) -> str:
                return "foo"

        class Page(rend.Page):
            docFactory = loaders.stan(
                T.html(render=T.directive("template"))[
                    T.body[
                        T.p(render=T.directive("before")),
                        T.p[T.slot(name="maincontent")],
                        T.p(render=T.directive("after")),
                    ]
                ]
            )

            def render_before(self, context: Any, data: Any) -> Any:
                return context.tag["before"]

            def render_template(self, context: Any, data: Any) -> Any:
                context.fillSlots("maincontent", Fragment())
                return context.tag

            def render_after(self, context: Any, data: Any) -> Any:
                return context.tag["after"]

        self.assertEqual(
            Page().renderSynchronously(),
            b"<html><body><p>before</p><p>foo</p><p>after</p></body></html>",
        )

    def test_pageInPage(self) -> None:
        """
        A page returned by a render method renders in place.
        """

        class Page(rend.Page):
            def render_inner(self, context: Any, data: Any) -> Any:
                return rend.Page(docFactory=loaders.stan(T.div(id="inner")))

            docFactory = loaders.stan(T.div(id="outer")[T.span(render=render_inner)])

        self.assertEqual(
            Page().renderSynchronously(),
            b'<div id="outer"><div id="inner"></div></div>',
        )

    def test_rememberOnPage(self) -> None:
        """
        What a page was told to C{remember} can be located in its render
        contexts below a L{context.PageContext}.
        """

        class IColour(Interface):
            pass

        class Page(rend.Page):
            docFactory = loaders.stan(T.p(render=lambda ctx, data: IColour(ctx)))

        page = Page()
        page.remember("red", IColour)
        self.assertEqual(page.renderSynchronously(), b"red")


class HookTests(SynchronousTestCase):
    """
    C{beforeRender} and C{afterRender}.
    """

    def test_order(self) -> None:
        """
        C{beforeRender} runs before rendering, C{afterRender} after; both
        may return Deferreds, which are waited for.
        """
        events: List[str] = []
        before: Deferred[None] = Deferred()

        class Page(rend.Page):
            docFactory = loaders.stan(T.p(render=T.directive("body")))

            def beforeRender(self, ctx: Any) -> Any:
                events.append("before")
                return before

            def render_body(self, ctx: Any, data: Any) -> Any:
                events.append("render")
                return ctx.tag["x"]

            def afterRender(self, ctx: Any) -> Any:
                events.append("after")
                return succeed(None)

        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b""])
        request.prepath = [b""]
        page = Page()
        page.render(request)
        self.assertEqual(events, ["before"])
        before.callback(None)
        self.assertEqual(events, ["before", "render", "after"])
        self.assertEqual(request.written, [b"<p>x</p>"])
        self.assertEqual(request.finished, 1)
