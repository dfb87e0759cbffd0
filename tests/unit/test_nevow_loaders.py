"""
Tests for L{tlcache.nevow.loaders}: stan, XML string and XML file
templates, the C{nevow:} namespace, caching and reloading.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from tlcache.nevow import flat, inevow, loaders, rend
from tlcache.nevow import tags as T
from tlcache.nevow._xml import TemplateError

NS = 'xmlns:n="http://nevow.com/ns/nevow/0.1"'


def render(docFactory: Any, **methods: Any) -> bytes:
    """
    Render a page with C{docFactory} and the given methods.
    """
    page = type("TestPage", (rend.Page,), dict(methods, docFactory=docFactory))()
    return page.renderSynchronously()


class StanLoaderTests(SynchronousTestCase):
    """
    L{loaders.stan}.
    """

    def test_load(self) -> None:
        """
        The stan loader renders its tree.
        """
        self.assertEqual(render(loaders.stan(T.p["hi"])), b"<p>hi</p>")

    def test_precompiledOnce(self) -> None:
        """
        C{load} precompiles once and returns the same list every time.
        """
        loader = loaders.stan(T.div[T.p["x"]])
        self.assertIs(loader.load(), loader.load())
        self.assertEqual(loader.load(), [b"<div><p>x</p></div>"])

    def test_pattern(self) -> None:
        """
        With C{pattern}, only that pattern of the tree is rendered.
        """
        loader = loaders.stan(
            T.div[T.p(pattern="one")["1"], T.p(pattern="two")["2"]], pattern="two"
        )
        self.assertEqual(render(loader), b"<p>2</p>")

    def test_providesIDocFactory(self) -> None:
        """
        Loaders provide L{inevow.IDocFactory} and can be queried for patterns.
        """
        loader = loaders.stan(T.div[T.p(pattern="x")["y"]])
        self.assertTrue(inevow.IDocFactory.providedBy(loader))
        self.assertEqual(inevow.IQ(loader).onePattern("x").children, [b"y"])

    def test_loaderInStanTree(self) -> None:
        """
        A loader placed in a stan tree renders its document there.
        """
        inner = loaders.xmlstr("<p>fo</p>")
        self.assertEqual(render(loaders.stan(T.div[inner])), b"<div><p>fo</p></div>")

    def test_preprocessors(self) -> None:
        """
        A page's C{preprocessors} (from every class of its hierarchy) change
        the document before it is precompiled.
        """

        def shout(doc: Any) -> Any:
            return [T.invisible[doc, "!"]]

        def wrap(doc: Any) -> Any:
            return [T.div[doc]]

        class Base(rend.Page):
            preprocessors = [shout]

        class Page(Base):
            preprocessors = [wrap]
            docFactory = loaders.stan(T.p["x"])

        self.assertEqual(Page().renderSynchronously(), b"<div><p>x</p>!</div>")


class XMLStringTests(SynchronousTestCase):
    """
    L{loaders.xmlstr} and the C{nevow:} namespace.
    """

    def test_plain(self) -> None:
        """
        A template without directives renders as it was written.
        """
        xhtml = '<ul id="nav"><li>one</li><li>two</li><li>three</li></ul>'
        self.assertEqual(render(loaders.xmlstr(xhtml)), xhtml.encode())

    def test_renderAndData(self) -> None:
        """
        C{nevow:render} and C{nevow:data} name methods of the page.
        """
        xhtml = (
            f'<ul {NS} id="nav" n:data="numbers" n:render="sequence">'
            '<li n:pattern="item" n:render="string">number</li></ul>'
        )
        self.assertEqual(
            render(
                loaders.xmlstr(xhtml),
                data_numbers=lambda self, ctx, data: ["one", "two"],
            ),
            b'<ul id="nav"><li>one</li><li>two</li></ul>',
        )

    def test_namespaceDeclarationDropped(self) -> None:
        """
        The C{nevow:} namespace declaration does not appear in the output;
        other namespace declarations do.
        """
        xhtml = (
            f'<html xmlns="http://www.w3.org/1999/xhtml" {NS}>'
            '<p n:render="x">y</p></html>'
        )
        self.assertEqual(
            render(loaders.xmlstr(xhtml), render_x=lambda self, ctx, data: ctx.tag),
            b'<html xmlns="http://www.w3.org/1999/xhtml"><p>y</p></html>',
        )

    def test_slotWithDefault(self) -> None:
        """
        C{<nevow:slot>} is a slot; its C{default} attribute is used when it
        is not filled.
        """
        xhtml = f'<p {NS}><n:slot name="a"/>/<n:slot name="b" default="dflt"/></p>'

        def render_fill(self: Any, ctx: Any, data: Any) -> Any:
            ctx.fillSlots("a", "A")
            return ctx.tag

        xhtml = xhtml.replace("<p ", '<p n:render="fill" ')
        self.assertEqual(
            render(loaders.xmlstr(xhtml), render_fill=render_fill), b"<p>A/dflt</p>"
        )

    def test_attr(self) -> None:
        """
        C{<nevow:attr name="x">} computes the attribute C{x} of its parent
        element from its content, slots included (escaped for the
        attribute).
        """
        xhtml = (
            f'<a {NS} n:render="link" class="c"><n:attr name="href">/item/'
            '<n:slot name="id"/></n:attr>text</a>'
        )

        def render_link(self: Any, ctx: Any, data: Any) -> Any:
            ctx.fillSlots("id", '1"2')
            return ctx.tag

        self.assertEqual(
            render(loaders.xmlstr(xhtml), render_link=render_link),
            b'<a class="c" href="/item/1&quot;2">text</a>',
        )

    def test_invisible(self) -> None:
        """
        C{<nevow:invisible>} renders only its children.
        """
        xhtml = f'<div {NS}><n:invisible n:render="x">ignored</n:invisible></div>'
        self.assertEqual(
            render(
                loaders.xmlstr(xhtml),
                render_x=lambda self, ctx, data: ctx.tag.clear()["shown"],
            ),
            b"<div>shown</div>",
        )

    def test_patternAttribute(self) -> None:
        """
        C{nevow:pattern} marks patterns; the loader's C{pattern} argument
        picks one.
        """
        xhtml = f'<div {NS}><p n:pattern="a">A</p><p n:pattern="b">B</p></div>'
        self.assertEqual(render(loaders.xmlstr(xhtml, pattern="b")), b"<p>B</p>")

    def test_doctypeAndComments(self) -> None:
        """
        The doctype and comments are kept, unless ignored.
        """
        xhtml = (
            '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
            '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">'
            "<html><!-- note --><body>x</body></html>"
        )
        self.assertEqual(
            render(loaders.xmlstr(xhtml)),
            b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
            b'"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n'
            b"<html><!-- note --><body>x</body></html>",
        )
        self.assertEqual(
            render(loaders.xmlstr(xhtml, ignoreDocType=True, ignoreComment=True)),
            b"<html><body>x</body></html>",
        )

    def test_html5Doctype(self) -> None:
        """
        The HTML5 doctype is kept as it is.
        """
        self.assertEqual(
            render(loaders.xmlstr("<!DOCTYPE html><p>x</p>")),
            b"<!DOCTYPE html>\n<p>x</p>",
        )

    def test_entitiesAndCDATA(self) -> None:
        """
        Character references become characters (escaped again as needed),
        HTML entities of an XHTML document are kept, CDATA sections are
        not escaped.
        """
        xhtml = (
            '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
            '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">'
            "<p>&amp;&#233;&nbsp;<script><![CDATA[if (a < b) {}]]></script></p>"
        )
        self.assertEqual(
            render(loaders.xmlstr(xhtml, ignoreDocType=True)),
            (
                "<p>&amp;\u00e9&nbsp;<script><![CDATA[if (a < b) {}]]></script></p>"
            ).encode(),
        )

    def test_emptyElements(self) -> None:
        """
        Empty void elements are self-closed, others get an end tag.
        """
        self.assertEqual(
            render(loaders.xmlstr('<div><br/><span/><img src="x"/></div>')),
            b'<div><br /><span></span><img src="x" /></div>',
        )

    def test_unknownNevowElement(self) -> None:
        """
        Unknown C{nevow:} elements and attributes are errors.
        """
        self.assertRaises(TemplateError, loaders.xmlstr(f"<p {NS}><n:bogus/></p>").load)
        self.assertRaises(TemplateError, loaders.xmlstr(f'<p {NS} n:bogus="x"/>').load)
        self.assertRaises(
            TemplateError, loaders.xmlstr(f"<n:attr {NS} name='x'/>").load
        )
        self.assertRaises(TemplateError, loaders.xmlstr(f"<p {NS}><n:slot/></p>").load)

    def test_macro(self) -> None:
        """
        C{nevow:macro} runs the page's C{macro_*} once, at precompile time.
        """
        calls = []

        def macro_content(self: Any, ctx: Any) -> Any:
            calls.append(ctx.tag)
            return T.p["macro"]

        class Page(rend.Page):
            docFactory = loaders.xmlstr(
                f'<div {NS}><n:invisible n:macro="content"/></div>'
            )

        Page.macro_content = macro_content
        self.assertEqual(Page().renderSynchronously(), b"<div><p>macro</p></div>")
        self.assertEqual(Page().renderSynchronously(), b"<div><p>macro</p></div>")
        self.assertEqual(len(calls), 1)

    def test_macroPerClass(self) -> None:
        """
        A document shared by page classes with different macros is
        precompiled once per class.
        """

        class Base(rend.Page):
            docFactory = loaders.xmlstr(
                f'<div {NS}><n:invisible n:macro="content"/></div>'
            )

        class One(Base):
            def macro_content(self, ctx: Any) -> Any:
                return "one"

        class Two(Base):
            def macro_content(self, ctx: Any) -> Any:
                return "two"

        self.assertEqual(One().renderSynchronously(), b"<div>one</div>")
        self.assertEqual(Two().renderSynchronously(), b"<div>two</div>")
        self.assertEqual(One().renderSynchronously(), b"<div>one</div>")

    def test_parameterisedMacro(self) -> None:
        """
        C{macro="name a,b"} passes arguments after the context.
        """

        class Page(rend.Page):
            def macro_pair(self, ctx: Any, first: str, second: str) -> Any:
                return T.b[first, "+", second]

            docFactory = loaders.stan(
                T.div[T.invisible(macro=T.directive("pair x, y"))]
            )

        self.assertEqual(Page().renderSynchronously(), b"<div><b>x+y</b></div>")

    def test_missingMacro(self) -> None:
        """
        A missing macro is an error.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(T.div[T.invisible(macro=T.directive("nothing"))])

        self.assertRaises(rend.RendererNotFoundError, Page().renderSynchronously)


class XMLFileTests(SynchronousTestCase):
    """
    L{loaders.xmlfile}.
    """

    def setUp(self) -> None:
        self.path = FilePath(self.mktemp())
        self.path.makedirs()
        self.template = self.path.child("page.html")
        self.template.setContent(b"<p>first</p>")

    def test_load(self) -> None:
        """
        The file's document is rendered; C{templateDir} and L{FilePath}s
        work.
        """
        self.assertEqual(render(loaders.xmlfile(self.template.path)), b"<p>first</p>")
        self.assertEqual(
            render(loaders.xmlfile("page.html", templateDir=self.path.path)),
            b"<p>first</p>",
        )
        self.assertEqual(render(loaders.xmlfile(self.template)), b"<p>first</p>")

    def test_cached(self) -> None:
        """
        While the file does not change, C{load} returns the same document.
        """
        loader = loaders.xmlfile(self.template.path)
        self.assertIs(loader.load(), loader.load())

    def test_reloadWhenChanged(self) -> None:
        """
        The file is read again when its modification time changes.
        """
        loader = loaders.xmlfile(self.template.path)
        self.assertEqual(render(loader), b"<p>first</p>")
        self.template.setContent(b"<p>second</p>")
        stat = os.stat(self.template.path)
        os.utime(self.template.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        self.assertEqual(render(loader), b"<p>second</p>")

    def test_reloadWhenSizeChanged(self) -> None:
        """
        A change of size within the same modification time is seen too.
        """
        loader = loaders.xmlfile(self.template.path)
        self.assertEqual(render(loader), b"<p>first</p>")
        stat = os.stat(self.template.path)
        self.template.setContent(b"<p>longer one</p>")
        os.utime(self.template.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        self.assertEqual(render(loader), b"<p>longer one</p>")

    def test_missingFile(self) -> None:
        """
        A missing template is an error when the page renders.
        """
        loader = loaders.xmlfile(self.path.child("missing.html").path)
        self.assertRaises(OSError, loader.load)


class FlattenLoaderTests(SynchronousTestCase):
    """
    A loaded document is an ordinary precompiled list.
    """

    def test_flattenLoaded(self) -> None:
        """
        L{flat.flatten} renders a loaded document.
        """
        self.assertEqual(
            flat.flatten(loaders.xmlstr("<p>a&amp;b</p>").load()), b"<p>a&amp;b</p>"
        )
