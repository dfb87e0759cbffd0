"""
Tests for L{tlcache.nevow.stan}, L{tlcache.nevow.tags} and
L{tlcache.nevow.entities}: building stan trees.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tlcache.nevow import entities, inevow, stan
from tlcache.nevow import tags as T
from tlcache.nevow.flat import flatten


class TagTests(SynchronousTestCase):
    """
    L{stan.Tag}: attributes with C{()}, children with C{[]}, specials.
    """

    def test_callSetsAttributes(self) -> None:
        """
        Calling a tag sets attributes; a trailing or leading underscore is
        dropped so Python keywords can be used.
        """
        tag = T.div(class_="a", _for="b", id="c")
        self.assertEqual(tag.attributes, {"class": "a", "for": "b", "id": "c"})
        self.assertEqual(tag.tagName, "div")

    def test_callSetsSpecials(self) -> None:
        """
        The specials are kept apart from the attributes.
        """
        directive = T.directive("x")
        tag = T.p(data=directive, render=str, pattern="item", key="k", remember=1)
        self.assertEqual(tag.attributes, {})
        self.assertIs(tag.data, directive)
        self.assertIs(tag.render, str)
        self.assertEqual(tag.pattern, "item")
        self.assertEqual(tag.key, "k")
        self.assertEqual(tag.remember, 1)
        self.assertIs(tag.macro, stan.Unset)

    def test_getitemAppendsChildren(self) -> None:
        """
        Indexing appends children; a list or tuple appends each item.
        """
        tag = T.ul["a"][["b", "c"]][("d",)]
        self.assertEqual(tag.children, ["a", "b", "c", "d"])

    def test_chainingReturnsTheTag(self) -> None:
        """
        Both C{()} and C{[]} return the tag itself.
        """
        tag = stan.Tag("p")
        self.assertIs(tag(id="x"), tag)
        self.assertIs(tag["y"], tag)

    def test_notIterable(self) -> None:
        """
        Iterating over a tag (a common mistake) raises L{TypeError} instead
        of looping forever.
        """
        self.assertRaises(TypeError, list, T.div["x"])
        self.assertRaises(TypeError, list, stan.slot("s"))

    def test_cloneDeep(self) -> None:
        """
        A deep clone copies children, attributes and filled slots.
        """
        inner = T.span(id="i")["text"]
        tag = T.div(class_="c", render=T.directive("r"))[inner].fillSlots("s", T.b["x"])
        clone = tag.clone()
        self.assertEqual(clone.tagName, "div")
        self.assertEqual(clone.attributes, {"class": "c"})
        self.assertIsNot(clone.attributes, tag.attributes)
        self.assertIsNot(clone.children[0], inner)
        self.assertEqual(clone.children[0].children, ["text"])
        self.assertIsNot(clone.slotData["s"], tag.slotData["s"])
        self.assertEqual(clone.render, T.directive("r"))

    def test_cloneShallow(self) -> None:
        """
        A shallow clone has its own children list holding the same children.
        """
        inner = T.span
        tag = T.div[inner]
        clone = tag.clone(deep=False)
        self.assertIsNot(clone.children, tag.children)
        self.assertIs(clone.children[0], inner)

    def test_cloneClearPattern(self) -> None:
        """
        C{clearPattern} gives the clone a C{None} pattern.
        """
        self.assertIsNone(T.li(pattern="item").clone(clearPattern=True).pattern)

    def test_clear(self) -> None:
        """
        C{clear} removes the children and the specials, not the attributes.
        """
        tag = T.p(id="x", render=str, data=1)["child"]
        self.assertIs(tag.clear(), tag)
        self.assertEqual(tag.children, [])
        self.assertIs(tag.render, stan.Unset)
        self.assertIs(tag.data, stan.Unset)
        self.assertEqual(tag.attributes, {"id": "x"})

    def test_fillSlots(self) -> None:
        """
        C{fillSlots} records slot values on the tag.
        """
        tag = T.div.fillSlots("a", 1).fillSlots("b", 2)
        self.assertEqual(tag.slotData, {"a": 1, "b": 2})

    def test_unknownSpecial(self) -> None:
        """
        The C{specials} constructor argument only takes the known specials.
        """
        self.assertRaises(TypeError, stan.Tag, "p", specials={"colour": 1})

    def test_repr(self) -> None:
        """
        The repr shows the name, attributes, specials and children.
        """
        self.assertEqual(
            repr(T.p(id="x", pattern="p")["c"]),
            "Tag('p', attributes={'id': 'x'}, specials={'pattern': 'p'}, "
            "children=['c'])",
        )

    def test_providesIQ(self) -> None:
        """
        Tags answer pattern queries themselves.
        """
        tag = T.div
        self.assertTrue(inevow.IQ.providedBy(tag["x"]))


class PatternTests(SynchronousTestCase):
    """
    Pattern queries: C{onePattern}, C{allPatterns}, C{patternGenerator}.
    """

    def setUp(self) -> None:
        self.tree = T.div[
            T.p(pattern="a")["first"],
            T.ul[T.li(pattern="b")["one"], T.li(pattern="b")["two"]],
            T.div(pattern="c")[T.p(pattern="a")["hidden below another pattern"]],
        ]

    def test_onePattern(self) -> None:
        """
        C{onePattern} returns a copy of the only pattern with that name,
        its pattern cleared.
        """
        found = self.tree.onePattern("a")
        self.assertEqual(found.children, ["first"])
        self.assertIsNone(found.pattern)
        self.assertIsNot(found, self.tree.children[0])

    def test_onePatternNotFound(self) -> None:
        """
        L{stan.NodeNotFound} when there is none.
        """
        error = self.assertRaises(stan.NodeNotFound, self.tree.onePattern, "z")
        self.assertEqual(
            str(error), "The pattern named 'z' was not found in the template."
        )

    def test_onePatternTooMany(self) -> None:
        """
        L{stan.TooManyNodes} when there is more than one.
        """
        self.assertRaises(stan.TooManyNodes, self.tree.onePattern, "b")

    def test_onePatternOnItself(self) -> None:
        """
        A tag that is itself the pattern returns a copy of itself.
        """
        tag = T.p(pattern="x")["y"]
        self.assertEqual(tag.onePattern("x").children, ["y"])

    def test_allPatterns(self) -> None:
        """
        C{allPatterns} returns copies of all, in document order, not
        looking below other patterns.
        """
        self.assertEqual(
            [t.children for t in self.tree.allPatterns("b")], [["one"], ["two"]]
        )
        self.assertEqual(len(self.tree.allPatterns("a")), 1)

    def test_patternGeneratorCycles(self) -> None:
        """
        The generator cycles through the patterns, giving fresh copies, and
        supports C{()}, C{[]}, C{fillSlots} and C{next}.
        """
        generator = self.tree.patternGenerator("b")
        first = generator(id="1")
        second = generator["more"]
        third = generator.fillSlots("s", 1)
        fourth = next(generator)
        self.assertEqual(first.children, ["one"])
        self.assertEqual(first.attributes, {"id": "1"})
        self.assertEqual(second.children, ["two", "more"])
        self.assertEqual(third.children, ["one"])
        self.assertEqual(third.slotData, {"s": 1})
        self.assertEqual(fourth.children, ["two"])
        self.assertEqual(self.tree.children[1].children[0].children, ["one"])

    def test_patternGeneratorDefault(self) -> None:
        """
        Without patterns, the generator gives copies of the default, or
        raises L{stan.NodeNotFound} at once when there is no default.
        """
        generator = self.tree.patternGenerator("none", T.hr)
        self.assertEqual(flatten(generator()), b"<hr />")
        self.assertRaises(stan.NodeNotFound, self.tree.patternGenerator, "none")

    def test_iqOfList(self) -> None:
        """
        C{IQ} adapts lists (documents) too.
        """
        found = inevow.IQ([self.tree]).allPatterns("b")
        self.assertEqual(len(found), 2)

    def test_slotChildrenAreSearched(self) -> None:
        """
        Patterns inside a slot's children are found (they are not rendered).
        """
        tree = T.div[stan.slot("s")[T.p(pattern="x")["in slot"]]]
        self.assertEqual(tree.onePattern("x").children, ["in slot"])

    def test_patternsByName(self) -> None:
        """
        L{stan.patternsByName} indexes all patterns in one pass.
        """
        index = stan.patternsByName(self.tree)
        self.assertEqual(sorted(index), ["a", "b", "c"])
        self.assertEqual(len(index["b"]), 2)

    def test_visit(self) -> None:
        """
        L{stan.visit} calls the visitor with each node, parents first.
        """
        seen = []
        stan.visit(
            [T.div[T.p["x"]]], lambda node: seen.append(getattr(node, "tagName", node))
        )
        self.assertEqual(seen, ["div", "p", "x"])


class MarkerTests(SynchronousTestCase):
    """
    The other stan nodes.
    """

    def test_directiveEquality(self) -> None:
        """
        Directives compare and hash by name.
        """
        self.assertEqual(stan.directive("a"), stan.directive("a"))
        self.assertNotEqual(stan.directive("a"), stan.directive("b"))
        self.assertEqual(len({stan.directive("a"), stan.directive("a")}), 1)
        self.assertEqual(repr(stan.directive("a")), "directive('a')")

    def test_slot(self) -> None:
        """
        Slots have a name, a default and children for patterns.
        """
        s = stan.slot("name", default="d")["child"]
        self.assertEqual((s.name, s.default, s.children), ("name", "d", ["child"]))
        self.assertEqual(repr(s), "slot('name')")
        self.assertEqual(s.clone().children, ["child"])

    def test_protoCallAndIndex(self) -> None:
        """
        Prototypes make new tags each time.
        """
        self.assertIsInstance(T.p(), stan.Tag)
        self.assertIsNot(T.p(), T.p())
        self.assertEqual(T.p["x"].children, ["x"])
        self.assertEqual(T.p.fillSlots("a", 1).slotData, {"a": 1})
        self.assertIs(T.p.clone(), T.p)

    def test_comment(self) -> None:
        """
        C{comment[...]} makes a comment, which takes no attributes.
        """
        c = T.comment["hello"]
        self.assertIsInstance(c, stan.Comment)
        self.assertEqual(flatten(c), b"<!--hello-->")
        self.assertRaises(TypeError, T.comment)
        self.assertRaises(TypeError, c)

    def test_cdata(self) -> None:
        """
        C{cdata} wraps its text in a CDATA section, not escaped.
        """
        self.assertEqual(flatten(T.cdata("a<b")), b"<![CDATA[a<b]]>")

    def test_unsetIsFalse(self) -> None:
        """
        L{stan.Unset} is false and says so.
        """
        self.assertFalse(stan.Unset)
        self.assertEqual(repr(stan.Unset), "Unset")


class TagsModuleTests(SynchronousTestCase):
    """
    L{tlcache.nevow.tags}.
    """

    def test_elements(self) -> None:
        """
        HTML elements, including the HTML5 ones, are prototypes.
        """
        for name in ("html", "div", "table", "section", "nav", "video"):
            self.assertEqual(getattr(T, name), name)
            self.assertIsInstance(getattr(T, name), stan.Proto)

    def test_renamedElements(self) -> None:
        """
        Elements named like Python builtins get a leading underscore.
        """
        self.assertEqual(
            (T._del, T._dir, T._map, T._object), ("del", "dir", "map", "object")
        )

    def test_numberedDirectives(self) -> None:
        """
        C{_0} ... C{_99} are directives for sequence items; C{drange} lists
        them.
        """
        self.assertEqual(T._0, stan.directive("0"))
        self.assertEqual(T._99, stan.directive("99"))
        self.assertEqual(T.drange(2), [T._0, T._1])

    def test_reExports(self) -> None:
        """
        The stan vocabulary is available from C{tags}.
        """
        self.assertIs(T.invisible, stan.invisible)
        self.assertIs(T.slot, stan.slot)
        self.assertIs(T.xml, stan.xml)
        self.assertIs(T.raw, stan.raw)
        self.assertIs(T.directive, stan.directive)
        self.assertIs(T.Tag, stan.Tag)


class EntityTests(SynchronousTestCase):
    """
    L{tlcache.nevow.entities}.
    """

    def test_named(self) -> None:
        """
        Entities render as numeric references, except the XML ones.
        """
        self.assertEqual(
            flatten(T.p[entities.nbsp, entities.amp, entities.copy]),
            b"<p>&#160;&amp;&#169;</p>",
        )

    def test_getEntity(self) -> None:
        """
        L{entities.getEntity} finds an entity by code point or character.
        """
        self.assertIs(entities.getEntity(160), entities.nbsp)
        self.assertIs(entities.getEntity("\u00a9"), entities.copy)
        self.assertRaises(KeyError, entities.getEntity, 1)
