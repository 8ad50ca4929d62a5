"""Reading htmx answers in tests: which elements sit at the top level of a fragment, and their attributes."""

from html.parser import HTMLParser

_VOID = {"input", "br", "img", "meta", "link", "hr", "source", "wbr", "area", "col", "embed", "track"}


class _TopLevel(HTMLParser):
    def __init__(self):
        super().__init__()
        self.depth, self.tags = 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "template":  # htmx reads out-of-band table parts from inside a top-level <template>
            return
        if self.depth == 0:
            self.tags.append((tag, dict(attrs)))
        if tag not in _VOID:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag not in _VOID and tag != "template":
            self.depth -= 1


def top_level(html: str) -> list[tuple[str, dict]]:
    """(tag, attributes) of each top-level element of an htmx answer."""
    parser = _TopLevel()
    parser.feed(html)
    return parser.tags


def out_of_band(html: str) -> dict[str, str]:
    """id → hx-swap-oob of the top-level elements; raises when one would land in the request's target."""
    tags = top_level(html)
    inline = [(tag, attrs.get("id")) for tag, attrs in tags if "hx-swap-oob" not in attrs]
    assert not inline, f"elements that are not out of band: {inline}"
    return {attrs["id"]: attrs["hx-swap-oob"] for _, attrs in tags}
