# -*- test-case-name: tests.unit.test_nevow_loaders -*-
"""
XML templates to stan, with the C{nevow:} namespace.

C{nevow:render}, C{nevow:data} and C{nevow:macro} attributes become
directives, C{nevow:pattern}, C{nevow:key} and C{nevow:remember} plain
specials; C{<nevow:invisible>}, C{<nevow:slot name="" default="">} and
C{<nevow:attr name="">} elements become L{invisible}, L{slot} and a
computed attribute of the enclosing element, and C{<nevow:cached key=""
refresh="" timeout="" version="" vary="">} a L{cached} fragment (whose key
includes a digest of the template, so editing the template gives its
fragments new keys). The C{nevow} namespace declaration itself is dropped
from the output.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Dict, List, Optional, Tuple
from xml.sax import handler, make_parser
from xml.sax.xmlreader import InputSource

from tlcache.nevow.stan import Tag, cached, directive, slot, xml

__all__ = ["NAMESPACE", "TemplateError", "parseTemplate"]

NAMESPACE = "http://nevow.com/ns/nevow/0.1"

_XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"
_DIRECTIVES = ("render", "data", "macro")
_PLAIN_SPECIALS = ("pattern", "key", "remember")
_CACHED_ATTRIBUTES = ("key", "refresh", "timeout", "version", "vary")


class TemplateError(ValueError):
    """
    A template uses the C{nevow:} namespace wrongly.
    """


class _ToStan(handler.ContentHandler, handler.EntityResolver):
    """
    SAX events to a list of stan nodes.
    """

    def __init__(
        self,
        ignoreDocType: bool,
        ignoreComment: bool,
        sourceName: Optional[str],
        digest: str = "",
    ):
        super().__init__()
        self.digest = digest
        self.ignoreDocType = ignoreDocType
        self.ignoreComment = ignoreComment
        self.sourceName = sourceName
        self.document: List[Any] = []
        self.current = self.document
        self.stack: List[Any] = []
        self.prefixes: List[Dict[str, Optional[str]]] = [{_XML_NAMESPACE: "xml"}]
        self.pendingDeclarations: List[Tuple[str, str]] = []
        self.inCDATA = False
        self.locator: Any = None

    def setDocumentLocator(self, locator: Any) -> None:
        self.locator = locator

    def _position(self) -> Dict[str, Any]:
        if self.locator is None:
            return {}
        return {
            "filename": self.sourceName,
            "lineNumber": self.locator.getLineNumber(),
            "columnNumber": self.locator.getColumnNumber(),
        }

    def resolveEntity(self, publicId: Optional[str], systemId: str) -> Any:
        # Never fetch external DTDs or entities.
        return io.BytesIO(b"")

    def skippedEntity(self, name: str) -> None:
        # An HTML entity (&nbsp;) the parser did not define: keep it as is.
        self.current.append(xml(f"&{name};"))

    def processingInstruction(self, target: str, data: str) -> None:
        self.current.append(xml(f"<?{target} {data}?>"))

    def startPrefixMapping(self, prefix: Optional[str], uri: str) -> None:
        mapping = dict(self.prefixes[-1])
        mapping[uri] = prefix
        self.prefixes.append(mapping)
        if uri == NAMESPACE:
            return
        name = "xmlns" if prefix is None else f"xmlns:{prefix}"
        self.pendingDeclarations.append((name, uri))

    def endPrefixMapping(self, prefix: Optional[str]) -> None:
        self.prefixes.pop()

    def _qualified(self, namespace: Optional[str], name: str) -> str:
        if namespace is None:
            return name
        prefix = self.prefixes[-1].get(namespace)
        return name if prefix is None else f"{prefix}:{name}"

    def startElementNS(
        self, name: Tuple[Optional[str], str], qname: Any, attrs: Any
    ) -> None:
        namespace, local = name
        specials: Dict[str, Any] = {}
        attributes: Dict[str, Any] = {}
        for (attrNamespace, attrName), value in attrs.items():
            if attrNamespace == NAMESPACE:
                if attrName in _DIRECTIVES:
                    specials[attrName] = directive(value)
                elif attrName in _PLAIN_SPECIALS:
                    specials[attrName] = value
                else:
                    raise TemplateError(f"unknown attribute nevow:{attrName}")
            else:
                attributes[self._qualified(attrNamespace, attrName)] = value

        if namespace == NAMESPACE:
            if local == "slot":
                if "name" not in attributes:
                    raise TemplateError("<nevow:slot> needs a name attribute")
                node = slot(
                    attributes["name"], attributes.get("default"), **self._position()
                )
                self._open(node, node.children)
                return
            if local == "cached":
                if specials:
                    raise TemplateError("<nevow:cached> takes no nevow: attributes")
                fragment = self._cached(attributes)
                self._open(fragment, fragment.children)
                return
            if local == "attr":
                if not self.stack or not isinstance(self.stack[-1], Tag):
                    raise TemplateError("<nevow:attr> must be inside an element")
                if "name" not in attributes:
                    raise TemplateError("<nevow:attr> needs a name attribute")
                value = Tag("", specials=specials)
                self.stack[-1].attributes[attributes["name"]] = value
                self.stack.append(value)
                self.current = value.children
                return
            if local != "invisible":
                raise TemplateError(f"unknown element nevow:{local}")
            tagName = ""
        else:
            tagName = self._qualified(namespace, local)

        if self.pendingDeclarations:
            for declName, uri in self.pendingDeclarations:
                attributes[declName] = uri
            self.pendingDeclarations = []
        element = Tag(
            tagName, attributes=attributes, specials=specials, **self._position()
        )
        self._open(element, element.children)

    def _cached(self, attributes: Dict[str, Any]) -> cached:
        unknown = sorted(set(attributes) - set(_CACHED_ATTRIBUTES))
        if unknown:
            raise TemplateError(
                f"unknown attribute {unknown[0]} on <nevow:cached>"
                f" (it takes {', '.join(_CACHED_ATTRIBUTES)})"
            )
        key = attributes.get("key")
        if not key:
            raise TemplateError("<nevow:cached> needs a key attribute")
        seconds: Dict[str, Optional[float]] = {}
        for name in ("refresh", "timeout"):
            text = attributes.get(name, "").strip()
            if not text:
                seconds[name] = None
                continue
            try:
                seconds[name] = float(text)
            except ValueError:
                raise TemplateError(
                    f"<nevow:cached key={key!r}>: {name} must be a number of"
                    f" seconds, not {text!r}"
                ) from None
        vary = attributes.get("vary", "")
        try:
            return cached(
                key,
                refresh=seconds["refresh"],
                timeout=seconds["timeout"],
                vary=tuple(v.strip() for v in vary.split(",")) if vary else (),
                version=attributes.get("version", ""),
                digest=self.digest,
            )
        except (TypeError, ValueError) as e:
            raise TemplateError(f"<nevow:cached key={key!r}>: {e}") from None

    def _open(self, node: Any, children: List[Any]) -> None:
        self.current.append(node)
        self.stack.append(node)
        self.current = children

    def endElementNS(self, name: Tuple[Optional[str], str], qname: Any) -> None:
        self.stack.pop()
        self.current = self.stack[-1].children if self.stack else self.document

    def characters(self, content: str) -> None:
        if self.inCDATA:
            self.current.append(xml(content))
        elif self.current and type(self.current[-1]) is str:
            self.current[-1] += content
        else:
            self.current.append(content)

    def startDTD(
        self, name: str, publicId: Optional[str], systemId: Optional[str]
    ) -> None:
        if self.ignoreDocType:
            return
        if publicId:
            doctype = f'<!DOCTYPE {name} PUBLIC "{publicId}" "{systemId}">'
        elif systemId:
            doctype = f'<!DOCTYPE {name} SYSTEM "{systemId}">'
        else:
            doctype = f"<!DOCTYPE {name}>"
        self.current.append(xml(doctype + "\n"))

    def endDTD(self) -> None:
        pass

    def startCDATA(self) -> None:
        self.inCDATA = True
        self.current.append(xml("<![CDATA["))

    def endCDATA(self) -> None:
        self.inCDATA = False
        self.current.append(xml("]]>"))

    def comment(self, content: str) -> None:
        if not self.ignoreComment:
            self.current.append(xml(f"<!--{content}-->"))

    def startEntity(self, name: str) -> None:
        pass

    def endEntity(self, name: str) -> None:
        pass


def parseTemplate(
    source: Any,
    ignoreDocType: bool = False,
    ignoreComment: bool = False,
    sourceName: Optional[str] = None,
) -> List[Any]:
    """
    Parse an XML template (C{str}, C{bytes} or a binary file) into a list
    of stan nodes.
    """
    if isinstance(source, str):
        source = source.encode("utf-8")
    if not isinstance(source, bytes):
        source = source.read()
    digest = hashlib.blake2b(source, digest_size=16).hexdigest()
    source = io.BytesIO(source)
    parser = make_parser()
    parser.setFeature(handler.feature_namespaces, True)
    parser.setFeature(handler.feature_validation, False)
    parser.setFeature(handler.feature_external_ges, False)
    parser.setFeature(handler.feature_external_pes, False)
    builder = _ToStan(ignoreDocType, ignoreComment, sourceName, digest)
    parser.setContentHandler(builder)
    parser.setEntityResolver(builder)
    parser.setProperty(handler.property_lexical_handler, builder)
    inputSource = InputSource(sourceName)
    inputSource.setByteStream(source)
    parser.parse(inputSource)
    return builder.document
