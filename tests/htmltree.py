"""A parsed HTML page for structure tests (the standard library's html.parser; no lxml needed):
elements with their attributes, children and text, found by tag and attributes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)
    parent: Element | None = None

    def text(self) -> str:
        """The element's text, as a browser's textContent (entities decoded)."""
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def words(self) -> str:
        """The text with runs of white space as one space."""
        return " ".join(self.text().split())

    def iter(self) -> Iterator[Element]:
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Descendants with this tag (any when None) whose attributes have these values
        (`class_` for class: one of its words)."""
        found = []
        for e in self.iter():
            if tag is not None and e.tag != tag:
                continue
            if all(_has(e, k.rstrip("_"), v) for k, v in attrs.items()):
                found.append(e)
        return found

    def find(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag or '*'} {attrs}> in the page"
        return found[0]

    def by_id(self, ident: str) -> Element:
        return self.find(id=ident)

    def ancestors(self) -> Iterator[Element]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


def _has(e: Element, key: str, value: str) -> bool:
    if key == "class":
        return value in e.attrs.get("class", "").split()
    return e.attrs.get(key) == value


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.node = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        e = Element(tag, {k: v or "" for k, v in attrs}, parent=self.node)
        self.node.children.append(e)
        if tag not in VOID:
            self.node = e

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.node.children.append(Element(tag, {k: v or "" for k, v in attrs}, parent=self.node))

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.node
        while node is not None and node.tag != tag:
            node = node.parent
        assert node is not None and node.parent is not None, f"</{tag}> closes nothing open"
        self.node = node.parent

    def handle_data(self, data: str) -> None:
        self.node.children.append(data)


def parse(page: str) -> Element:
    """The page as a tree; an end tag that closes nothing open fails the test."""
    builder = _Builder()
    builder.feed(page)
    builder.close()
    return builder.root


def rows(table: Element) -> list[list[str]]:
    """A table's rows as lists of cell text (header cells included)."""
    return [
        [c.words() for c in tr.children if isinstance(c, Element)] for tr in table.find_all("tr")
    ]


def header(table: Element) -> list[str]:
    return [th.words() for th in table.find_all("th")]
