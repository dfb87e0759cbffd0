"""
Tests for L{tlcache.nevow.flat}: precompiling and flattening stan to UTF-8
bytes, escaping, Deferreds and registered flatteners.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, List

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import template as twtemplate
from zope.interface import Interface, implementer

from tlcache.nevow import context, flat, inevow, stan
from tlcache.nevow import tags as T
from tlcache.nevow._flatten import _AttrValue, _Static


def flattened(stan_: Any, ctx: Any = None) -> bytes:
    """
    Flatten both directly and after precompiling; check they agree.

    @return: the bytes.
    """
    direct = flat.flatten(stan_, ctx)
    compiled = flat.flatten(flat.precompile(stan_), ctx)
    assert direct == compiled, (direct, compiled)
    return direct


class SerializationTests(SynchronousTestCase):
    """
    Golden outputs for the basic node types.
    """

    def test_nestedTags(self) -> None:
        """
        Tags nest; attributes keep their order.
        """
        self.assertEqual(
            flattened(T.html[T.body(id="b", class_="c")[T.p["hi"]]]),
            b'<html><body id="b" class="c"><p>hi</p></body></html>',
        )

    def test_voidAndEmptyElements(self) -> None:
        """
        Void elements without children are self-closed; other empty
        elements get an end tag.
        """
        self.assertEqual(
            flattened(T.div[T.br, T.img(src="a"), T.div(), T.span, T.input()]),
            b'<div><br /><img src="a" /><div></div><span></span><input /></div>',
        )

    def test_textEscaping(self) -> None:
        """
        Text is escaped; quotes are left alone outside attributes.
        """
        self.assertEqual(
            flattened(T.p["<script>alert('x') & \"y\"</script>"]),
            b"<p>&lt;script&gt;alert('x') &amp; \"y\"&lt;/script&gt;</p>",
        )

    def test_attributeEscaping(self) -> None:
        """
        Attribute values are escaped, double quotes included.
        """
        self.assertEqual(
            flattened(T.a(href='x" onclick="evil()', title="<&>")["t"]),
            b'<a href="x&quot; onclick=&quot;evil()" title="&lt;&amp;&gt;">t</a>',
        )

    def test_unicode(self) -> None:
        """
        Text is encoded as UTF-8.
        """
        self.assertEqual(
            flattened(T.p(title="\u00e9t\u00e9")["\u20ac \u00a3"]),
            '<p title="\u00e9t\u00e9">\u20ac \u00a3</p>'.encode(),
        )

    def test_bytesAreText(self) -> None:
        """
        Bytes are UTF-8 text, escaped like C{str}.
        """
        self.assertEqual(
            flattened(T.p[b"a<b \xc3\xa9"]), "<p>a&lt;b \u00e9</p>".encode()
        )

    def test_xmlAndRawAreNotEscaped(self) -> None:
        """
        C{xml} and C{raw} content passes through as it is.
        """
        self.assertEqual(
            flattened(
                T.div[T.xml("<b>bold</b>"), T.raw("<i>it</i>"), T.xml(b"<u>u</u>")]
            ),
            b"<div><b>bold</b><i>it</i><u>u</u></div>",
        )

    def test_numbersAndNone(self) -> None:
        """
        Numbers render as text; C{None} renders as nothing.
        """
        self.assertEqual(
            flattened(T.p[1, " ", 2.5, " ", True, " ", Decimal("1.10"), None]),
            b"<p>1 2.5 True 1.10</p>",
        )

    def test_noneAttributeIsOmitted(self) -> None:
        """
        An attribute whose value is C{None} is left out.
        """
        self.assertEqual(flattened(T.p(id=None, class_="c")), b'<p class="c"></p>')

    def test_invisible(self) -> None:
        """
        C{invisible} renders only its children.
        """
        self.assertEqual(
            flattened(T.div[T.invisible["a", T.b["b"]]]), b"<div>a<b>b</b></div>"
        )

    def test_listsTuplesGenerators(self) -> None:
        """
        Lists, tuples and generators render their items in order.
        """
        self.assertEqual(
            flat.flatten(
                T.ul[[T.li[i] for i in range(2)], (T.li["t"],), (x for x in "ab")]
            ),
            b"<ul><li>0</li><li>1</li><li>t</li>ab</ul>",
        )

    def test_comment(self) -> None:
        """
        Comments keep their content.
        """
        self.assertEqual(
            flattened(T.div[T.comment["a comment"]]), b"<div><!--a comment--></div>"
        )

    def test_tagInAttribute(self) -> None:
        """
        A visible tag inside an attribute value is an error.
        """
        self.assertRaises(TypeError, flat.flatten, T.a(href=T.b["x"]))
        self.assertRaises(TypeError, flat.precompile, T.a(href=T.b["x"]))

    def test_unsupportedType(self) -> None:
        """
        Objects nothing knows how to render raise
        L{flat.UnsupportedTypeError}.
        """
        self.assertRaises(flat.UnsupportedTypeError, flat.flatten, T.p[object()])


class SlotTests(SynchronousTestCase):
    """
    Slots filled on tags and contexts.
    """

    def test_tagFillSlots(self) -> None:
        """
        A slot is filled from the nearest enclosing tag's C{fillSlots}.
        """
        tree = T.div.fillSlots("a", "outer")[
            T.p[T.slot("a")], T.p.fillSlots("a", "inner")[T.slot("a")]
        ]
        self.assertEqual(flattened(tree), b"<div><p>outer</p><p>inner</p></div>")

    def test_contextFillSlots(self) -> None:
        """
        A slot is filled from the rendering context.
        """
        ctx = context.WovenContext()
        ctx.fillSlots("a", "<x>")
        self.assertEqual(flat.flatten(T.p[T.slot("a")], ctx), b"<p>&lt;x&gt;</p>")

    def test_slotInAttribute(self) -> None:
        """
        A slot in an attribute value is escaped for the attribute.
        """
        tree = T.div.fillSlots("u", 'a"b')[T.a(href=T.slot("u"))["x"]]
        self.assertEqual(flattened(tree), b'<div><a href="a&quot;b">x</a></div>')

    def test_slotFilledWithStan(self) -> None:
        """
        Slots can be filled with stan.
        """
        tree = T.div.fillSlots("s", T.b["bold"])[T.slot("s")]
        self.assertEqual(flattened(tree), b"<div><b>bold</b></div>")

    def test_slotDefault(self) -> None:
        """
        An unfilled slot renders its default.
        """
        self.assertEqual(flattened(T.p[T.slot("s", default="d")]), b"<p>d</p>")

    def test_unfilledSlot(self) -> None:
        """
        An unfilled slot without a default is an error.
        """
        self.assertRaises(KeyError, flat.flatten, T.p[T.slot("s")])


class RenderFunctionTests(SynchronousTestCase):
    """
    Render functions in the tree and in the C{render} special.
    """

    def test_calledWithContextAndData(self) -> None:
        """
        A two-argument function gets the context and the data; its result
        is rendered.
        """
        calls: List[Any] = []

        def render(ctx: Any, data: Any) -> Any:
            calls.append((ctx.tag, data))
            return ctx.tag["rendered"]

        self.assertEqual(flattened(T.p(data="d", render=render)), b"<p>rendered</p>")
        self.assertEqual(calls[0][1], "d")

    def test_oneArgumentGetsData(self) -> None:
        """
        A one-argument function, a builtin or a class gets the data only.
        """
        self.assertEqual(flat.flatten(T.p(data=12, render=str)), b"12")
        self.assertEqual(
            flat.flatten(T.p(data="x")[lambda data: data * 2]), b"<p>xx</p>"
        )

    def test_bareFunctionChild(self) -> None:
        """
        A function among children renders in a context of its own whose tag
        is invisible.
        """

        def render(ctx: Any, data: Any) -> Any:
            return ctx.tag["in ", type(ctx.tag).__name__]

        self.assertEqual(flat.flatten(T.div[render]), b"<div>in Tag</div>")

    def test_threeArgumentFunction(self) -> None:
        """
        A three-argument function (a C{render_*} taken from a class body)
        gets the renderer, the context and the data.
        """
        ctx = context.WovenContext()
        owner = object()
        ctx.remember(owner, inevow.IRenderer)
        seen = []

        def render_x(self: Any, ctx: Any, data: Any) -> str:
            seen.append(self)
            return "x"

        self.assertEqual(flat.flatten(T.p[render_x], ctx), b"<p>x</p>")
        self.assertEqual(seen, [owner])

    def test_renderResultReplacesTheTag(self) -> None:
        """
        What a render function returns is rendered instead of its tag; text
        is escaped.
        """
        self.assertEqual(
            flat.flatten(T.div[T.p(render=lambda ctx, data: "<b>")]),
            b"<div>&lt;b&gt;</div>",
        )

    def test_templateNotChangedByRender(self) -> None:
        """
        A render function gets a copy of the template's tag: changing it
        leaves the precompiled document alone.
        """

        def render(ctx: Any, data: Any) -> Any:
            return ctx.tag(class_="changed")["more"]

        doc = flat.precompile(T.div[T.p(render=render)["base"]])
        self.assertEqual(
            flat.flatten(doc), b'<div><p class="changed">basemore</p></div>'
        )
        self.assertEqual(
            flat.flatten(doc), b'<div><p class="changed">basemore</p></div>'
        )

    def test_renderInAttribute(self) -> None:
        """
        An invisible tag with a render function can compute an attribute.
        """
        tree = T.a(href=T.invisible(render=lambda ctx, data: 'u"1'))["x"]
        self.assertEqual(flattened(tree), b'<a href="u&quot;1">x</a>')

    def test_coroutine(self) -> None:
        """
        A render function may be a coroutine function.
        """

        async def render(ctx: Any, data: Any) -> Any:
            return ctx.tag["async"]

        self.assertEqual(flat.flatten(T.p(render=render)), b"<p>async</p>")


class DeferredTests(SynchronousTestCase):
    """
    Deferreds anywhere in the tree.
    """

    def test_firedDeferredIsSynchronous(self) -> None:
        """
        A Deferred that already fired renders at once.
        """
        self.assertEqual(flat.flatten(T.p[succeed("now")]), b"<p>now</p>")

    def test_pendingDeferredWaits(self) -> None:
        """
        L{flat.flattenString} waits for a Deferred and resumes after it.
        """
        d: Deferred[Any] = Deferred()
        result = flat.flattenString(T.div[T.p["before"], d, T.p["after"]])
        self.assertNoResult(result)
        d.callback(T.b["middle"])
        self.assertEqual(
            self.successResultOf(result),
            b"<div><p>before</p><b>middle</b><p>after</p></div>",
        )

    def test_deferredInAttribute(self) -> None:
        """
        A Deferred attribute value is escaped for the attribute.
        """
        d: Deferred[Any] = Deferred()
        result = flat.flattenString(T.a(href=d)["x"])
        d.callback('a"b')
        self.assertEqual(self.successResultOf(result), b'<a href="a&quot;b">x</a>')

    def test_deferredData(self) -> None:
        """
        A C{data} special that gives a Deferred delays the render function
        until it fires.
        """
        d: Deferred[Any] = Deferred()
        result = flat.flattenString(
            T.p(data=d, render=lambda ctx, data: ctx.tag[data.upper()])
        )
        self.assertNoResult(result)
        d.callback("late")
        self.assertEqual(self.successResultOf(result), b"<p>LATE</p>")

    def test_deferredFailure(self) -> None:
        """
        A Deferred that fails makes the whole flatten fail.
        """
        d: Deferred[Any] = Deferred()
        result = flat.flattenString(T.p["x", d])
        d.errback(ValueError("boom"))
        self.failureResultOf(result, ValueError)

    def test_failedDeferredSynchronously(self) -> None:
        """
        A Deferred that already failed raises out of L{flat.flatten}.
        """
        self.assertRaises(ValueError, flat.flatten, T.p[fail(ValueError("x"))])

    def test_flattenRaisesOnPendingDeferred(self) -> None:
        """
        L{flat.flatten} cannot wait: it raises
        L{flat.SynchronousRenderError}.
        """
        self.assertRaises(flat.SynchronousRenderError, flat.flatten, T.p[Deferred()])

    def test_exceptionInRendererFailsFlattenString(self) -> None:
        """
        An exception from a render function fails the Deferred.
        """

        def broken(ctx: Any, data: Any) -> Any:
            raise RuntimeError("broken")

        self.failureResultOf(flat.flattenString(T.p(render=broken)), RuntimeError)

    def test_exceptionAfterResuming(self) -> None:
        """
        An exception from a render function after a Deferred fails the
        Deferred too.
        """
        d: Deferred[Any] = Deferred()

        def broken(ctx: Any, data: Any) -> Any:
            raise RuntimeError("broken")

        result = flat.flattenString(T.div[d, T.p(render=broken)])
        d.callback("x")
        self.failureResultOf(result, RuntimeError)

    def test_cancel(self) -> None:
        """
        Cancelling the result cancels the Deferred being waited on.
        """
        cancelled = []
        d: Deferred[Any] = Deferred(lambda _: cancelled.append(True))
        result = flat.flattenString(T.p[d])
        result.cancel()
        self.assertEqual(cancelled, [True])
        self.failureResultOf(result)

    def test_flattenFactory(self) -> None:
        """
        C{flattenFactory} gives the bytes to the writer, then calls the
        finisher.
        """
        written: List[bytes] = []
        result = flat.flattenFactory(
            T.p["x"], context.WovenContext(), written.append, lambda r: "done"
        )
        self.assertEqual(self.successResultOf(result), "done")
        self.assertEqual(written, [b"<p>x</p>"])


class PrecompileTests(SynchronousTestCase):
    """
    L{flat.precompile}: static markup merged into encoded chunks.
    """

    def test_staticMerged(self) -> None:
        """
        A static document becomes one chunk.
        """
        doc = flat.precompile(T.html[T.body[T.p(class_="x")["a & b"], T.br]])
        self.assertEqual(
            doc, [b'<html><body><p class="x">a &amp; b</p><br /></body></html>']
        )
        self.assertIsInstance(doc[0], _Static)

    def test_dynamicNodesKept(self) -> None:
        """
        Slots, directives and tags with specials stay; the static markup
        around them is merged.
        """
        doc = flat.precompile(
            T.div[T.p["a"], T.slot("s"), T.directive("d"), T.p(render=str)["b"]]
        )
        self.assertEqual(doc[0], b"<div><p>a</p>")
        self.assertIsInstance(doc[1], stan.slot)
        self.assertEqual(doc[2], stan.directive("d"))
        self.assertIsInstance(doc[3], stan.Tag)
        self.assertEqual(doc[3].children, [b"b"])
        self.assertEqual(doc[4], b"</div>")

    def test_dynamicAttribute(self) -> None:
        """
        A dynamic attribute value becomes an attribute-mode node between the
        static parts of its tag.
        """
        doc = flat.precompile(T.a(href=T.slot("u"), id="i")["x"])
        self.assertEqual(doc[0], b'<a href="')
        self.assertIsInstance(doc[1], _AttrValue)
        self.assertEqual(doc[2], b'" id="i">x</a>')

    def test_inputNotChanged(self) -> None:
        """
        Precompiling does not change the stan it was given.
        """
        tree = T.div[T.p(render=str)["x"]]
        flat.precompile(tree)
        self.assertEqual(tree.children[0].children, ["x"])

    def test_userBytesAreNotTrustedMarkup(self) -> None:
        """
        Bytes given by users are text: only precompiled chunks are written
        as they are.
        """
        doc = flat.precompile(
            T.p(render=lambda ctx, data: ctx.tag.clear()[b"<b>"])["x"]
        )
        self.assertEqual(flat.flatten(doc), b"<p>&lt;b&gt;</p>")


class IFoo(Interface):
    """
    An interface for flattener registration tests.
    """


class Point:
    """
    A type with a registered flattener.
    """

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


@implementer(IFoo)
class Foo:
    """
    A type with a flattener registered for its interface.
    """


class SubPoint(Point):
    """
    A subclass, found through its base class's flattener.
    """


class RegisterFlattenerTests(SynchronousTestCase):
    """
    L{flat.registerFlattener} and L{flat.getFlattener}.
    """

    def setUp(self) -> None:
        flat.registerFlattener(
            lambda p, ctx: T.span(class_="pt")[f"{p.x}<{p.y}"], Point
        )
        flat.registerFlattener(lambda f, ctx: "foo!", IFoo)

    def test_forClass(self) -> None:
        """
        A flattener registered for a class renders its instances; what it
        returns is rendered (and escaped) in turn.
        """
        self.assertEqual(
            flattened(T.p[Point(1, 2)]), b'<p><span class="pt">1&lt;2</span></p>'
        )

    def test_forSubclass(self) -> None:
        """
        Subclasses use their base class's flattener.
        """
        self.assertEqual(
            flat.flatten(SubPoint(3, 4)), b'<span class="pt">3&lt;4</span>'
        )

    def test_forInterface(self) -> None:
        """
        A flattener registered for an interface renders its providers.
        """
        self.assertEqual(flat.flatten(T.p[Foo()]), b"<p>foo!</p>")

    def test_getFlattener(self) -> None:
        """
        L{flat.getFlattener} finds the registered flattener, or C{None}.
        """
        self.assertIsNotNone(flat.getFlattener(SubPoint(1, 1)))
        self.assertIsNotNone(flat.getFlattener(Foo()))
        self.assertIsNone(flat.getFlattener(object()))


class TwistedTemplateTests(SynchronousTestCase):
    """
    twisted.web.template objects inside a stan tree.
    """

    def test_tag(self) -> None:
        """
        A twisted.web.template tag renders with Twisted's flattener.
        """
        self.assertEqual(
            flat.flatten(T.div[twtemplate.tags.span("<x>", class_="t")]),
            b'<div><span class="t">&lt;x&gt;</span></div>',
        )

    def test_element(self) -> None:
        """
        A twisted.web.template Element renders with its own renderers.
        """

        class Greeting(twtemplate.Element):
            loader = twtemplate.TagLoader(twtemplate.tags.em(render="name"))

            @twtemplate.renderer
            def name(self, request: Any, tag: Any) -> Any:
                return tag("world")

        self.assertEqual(
            flat.flatten(T.p["hello ", Greeting()]), b"<p>hello <em>world</em></p>"
        )
