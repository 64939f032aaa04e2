"""PDFs the project makes itself with PyMuPDF: samples on distinct topics, and bad inputs.

What PyMuPDF 1.28 does with the bad ones (the ingest pipeline's typed errors follow from it):
- `encrypted_pdf`: opens, `needs_pass` is true                          -> `encrypted`
- `corrupt_pdf`: `pymupdf.open` raises `FileDataError`                   -> `corrupt`
- `truncated_pdf`: repaired on open; 3 pages, the text of the first, a   -> indexed, partly
  little of the second, none of the third
- `scanned_pdf`: pages with an image and no text layer                  -> `empty`
- `not_a_pdf`, `pdf_named_but_text`: no `%PDF-` in the first bytes      -> `unsupported_type`
- `absurd_page_count_pdf`: "Invalid number of pages" on open             -> `corrupt`
- `bomb_pdf`: a small file whose page takes seconds and a gigabyte to     -> `too_large` (parser
  parse                                                                     memory) or `timeout`
- `form_bomb_pdf`: 2 KB of forms drawing forms: minutes, in flat memory   -> `timeout` (parse limit)
- `text_bomb_pdf`: 300 KB whose 2,000 pages hold 200,000 characters each  -> `too_large` (text
  limit per document)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pymupdf

_PAGE = pymupdf.Rect(0, 0, 595, 842)  # A4
_BOX = pymupdf.Rect(56, 64, 539, 790)
_FIXED_DATE = "D:20260101000000Z"


@dataclass(frozen=True)
class Sample:
    filename: str
    title: str
    pages: tuple[str, ...]
    phrase: str  # appears in this sample only
    phrase_page: int  # 1-based


def text_pdf(title: str, pages: list[str] | tuple[str, ...]) -> bytes:
    """A real text PDF, one string per page, wrapped within the margins."""
    doc = pymupdf.open()
    for text in pages:
        page = doc.new_page(width=_PAGE.width, height=_PAGE.height)
        fontsize = 11.0
        # a text that does not fit is not written at all: shrink it until it fits
        while page.insert_textbox(_BOX, text, fontsize=fontsize, fontname="helv") < 0:
            fontsize -= 0.5
            if fontsize < 4:
                raise ValueError("a page's text does not fit even at 4 pt")
    doc.set_metadata({"title": title, "creationDate": _FIXED_DATE, "modDate": _FIXED_DATE,
                      "producer": "longtask", "creator": "longtask"})
    data = doc.tobytes(garbage=3, deflate=True, no_new_id=True)
    doc.close()
    return data


def encrypted_pdf() -> bytes:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "Quarterly numbers nobody may read.")
    data = doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="user-secret",
                       owner_pw="owner-secret")
    doc.close()
    return data


def corrupt_pdf() -> bytes:
    """The magic bytes of a PDF and then garbage."""
    return b"%PDF-1.7\n" + bytes(range(256)) * 8


def truncated_pdf() -> bytes:
    data = text_pdf("Truncated", ["This document was cut in half in transit. " * 40] * 3)
    return data[: len(data) // 2]


def scanned_pdf(pages: int = 2) -> bytes:
    """Pages that hold only a picture: what a scanner without OCR makes."""
    doc = pymupdf.open()
    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 120, 160), False)
    pixmap.set_rect(pixmap.irect, (235, 230, 220))
    for _ in range(pages):
        page = doc.new_page()
        page.insert_image(pymupdf.Rect(72, 72, 523, 770), pixmap=pixmap)
    data = doc.tobytes(garbage=3, deflate=True)
    doc.close()
    return data


def many_pages_pdf(n: int, words_per_page: int = 300, seed: int = 0) -> bytes:
    """`n` pages of varied words (deterministic), for long-document tests and benchmarks."""
    rng = random.Random(seed)
    doc = pymupdf.open()
    for number in range(1, n + 1):
        words = " ".join(rng.choice(_VOCABULARY) for _ in range(words_per_page))
        doc.new_page(width=_PAGE.width, height=_PAGE.height).insert_textbox(
            _BOX, f"Page {number}. {words.capitalize()}.", fontsize=9, fontname="helv")
    data = doc.tobytes(garbage=3, deflate=True)
    doc.close()
    return data


def absurd_page_count_pdf() -> bytes:
    """One real page under a page tree that claims two billion."""
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "One page, whatever the page tree says.")
    data = doc.tobytes(garbage=0, deflate=False, no_new_id=True)
    doc.close()
    return data.replace(b"/Count 1", b"/Count 2000000000")


def bomb_pdf(operators: int = 300_000) -> bytes:
    """A decompression bomb: one page whose few kilobytes of compressed content stream inflate
    to `operators` text-drawing operators (70 bytes each), slow to parse."""
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "x")
    ops = b"BT /F1 1 Tf 10 10 Td " + (b"(" + b"a" * 64 + b") Tj ") * operators + b"ET"
    doc.update_stream(page.get_contents()[0], ops)  # stored deflated
    data = doc.tobytes(garbage=0, deflate=True)
    doc.close()
    return data


def form_bomb_pdf(depth: int = 8, pages: int = 1) -> bytes:
    """Forms that draw forms: each level draws the one below ten times, so a page that draws
    the top one fills 10**`depth` rectangles. About 5 s per page at depth 6 on one core (ten
    times that per level more), in flat memory: slow whatever the memory limit. Every page
    draws the same top form."""
    doc = pymupdf.open()
    below = 0
    for level in range(depth + 1):
        xref = doc.get_new_xref()
        resources = f"<< /XObject << /X {below} 0 R >> >>" if level else "<< >>"
        doc.update_object(xref, "<< /Type /XObject /Subtype /Form /BBox [0 0 595 842] "
                                f"/Resources {resources} >>")
        doc.update_stream(xref, b"/X Do " * 10 if level else b"0 0 1 1 re f")
        below = xref
    for _ in range(pages):
        page = doc.new_page(width=_PAGE.width, height=_PAGE.height)
        page.insert_text((72, 72), "Slow.")  # gives the page its resources and contents
        doc.xref_set_key(page.xref, "Resources", f"<< /XObject << /X {below} 0 R >> >>")
        doc.update_stream(page.get_contents()[0], b"q /X Do Q")
    data = doc.tobytes(garbage=1, deflate=True)
    doc.close()
    return data


def text_bomb_pdf(pages: int = 2000, chars_per_page: int = 200_000) -> bytes:
    """A page-heavy text bomb: every page shares one small deflated content stream that draws
    `chars_per_page` characters of words in tiny type, so a few hundred kilobytes hold
    `pages * chars_per_page` characters of text. Its words are long (hyphenated runs), which
    makes the bomb quick to extract: PyMuPDF's sorted extraction spends its time per word."""
    doc = pymupdf.open()
    first = doc.new_page(width=_PAGE.width, height=_PAGE.height)
    first.insert_text((72, 72), "x", fontname="helv", fontsize=1)  # the font resource
    line = " ".join("-".join(_VOCABULARY[i:i + 8]) for i in range(0, 24, 8)).encode() + b" "
    ops = b"BT /helv 0.4 Tf 4 TL 5 835 Td " + (
        b"(" + line * 15 + b") Tj T* ") * max(1, chars_per_page // (len(line) * 15)) + b"ET"
    contents = first.get_contents()[0]
    doc.update_stream(contents, ops)  # stored deflated
    resources = doc.xref_get_key(first.xref, "Resources")[1]
    for _ in range(pages - 1):
        page = doc.new_page(width=_PAGE.width, height=_PAGE.height)
        doc.xref_set_key(page.xref, "Resources", resources)
        doc.xref_set_key(page.xref, "Contents", f"{contents} 0 R")
    data = doc.tobytes(garbage=1, deflate=True)
    doc.close()
    return data


def not_a_pdf() -> bytes:
    """A PNG image's bytes."""
    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 8, 8), False)
    return bytes(pixmap.tobytes("png"))


def pdf_named_but_text() -> bytes:
    return b"Meeting notes, not a PDF at all, whatever the file name says.\n" * 20


_VOCABULARY = (
    "river harbour lantern granite orchard copper signal meadow engine ledger compass tide "
    "quartz forest bridge archive valley summit cedar harvest beacon canyon glacier market "
    "timber weaver pilot mirror saddle thunder violet winter anchor basin cobalt delta ember "
    "falcon garnet hollow island jasper kettle lagoon marble nectar oasis prairie quarry ridge "
    "spruce tundra umber vessel willow yarrow zenith measure gather travel build carry steady "
    "quiet bright distant ancient narrow gentle rapid silent golden hidden northern"
).split()


SAMPLES: tuple[Sample, ...] = (
    Sample(
        "water-cycle", "The Water Cycle",
        (
            "The water cycle describes how water moves continuously between the oceans, the "
            "atmosphere and the land. Energy from the sun drives it. Every day the sun warms "
            "the surface of seas, lakes and rivers, and a small share of that water turns "
            "into vapour and rises into the air. Plants add to this flow through "
            "transpiration: they draw water from the soil through their roots and release it "
            "from their leaves. Together, evaporation and transpiration move roughly half a "
            "million cubic kilometres of water into the atmosphere each year.",
            "As warm, moist air rises it expands and cools. Cooler air holds less vapour, so "
            "the vapour condenses on tiny particles of dust, salt and smoke and forms the "
            "droplets that make up clouds. Condensation releases heat, which is why "
            "thunderstorms can grow so tall on summer afternoons. When cloud droplets collide "
            "and merge they grow heavy enough to fall as rain, or as snow and hail when the "
            "air is cold. Meteorologists say that precipitation returns about nine tenths of "
            "evaporated water directly to the oceans.",
            "Rain that falls on land follows several paths. Some runs off the surface into "
            "streams and rivers. Some soaks into the ground and slowly recharges the aquifers "
            "that feed wells and springs; groundwater can remain underground for thousands "
            "of years before it returns to the surface. Snow stored in mountain snowpack "
            "melts in spring and keeps rivers flowing through dry summers. Over time, every "
            "drop eventually finds its way back to the sea, and the cycle begins again.",
        ),
        "groundwater can remain underground for thousands of years", 3,
    ),
    Sample(
        "sourdough", "Baking Sourdough Bread",
        (
            "Sourdough bread is leavened by a culture of wild yeast and lactic acid bacteria "
            "instead of commercial baker's yeast. The culture, called a starter, is a simple "
            "mixture of flour and water that is fed regularly. Within a week a healthy "
            "starter smells pleasantly sour, bubbles vigorously after each feeding and "
            "reliably rises in its jar. Bakers keep a starter for years, feeding it fresh "
            "flour and water once or twice a day, or storing it in the refrigerator between "
            "bakes.",
            "On baking day a portion of the starter is mixed with more flour and water to "
            "build a levain. The levain should double within six hours at warm room "
            "temperature; if it does not, the dough will rise slowly and taste flat. The "
            "levain is then combined with the main dough. Hydration, the weight of water "
            "divided by the weight of flour, shapes the crumb: a dough at seventy percent "
            "hydration is easy to handle, while eighty percent gives a more open, glossy "
            "crumb but needs practised hands.",
            "During bulk fermentation the dough is folded every half hour to build strength. "
            "It is then shaped into a tight loaf, placed in a floured basket and proofed, "
            "often overnight in the refrigerator, which deepens the flavour. Just before "
            "baking the loaf is scored with a razor so that steam can escape in a controlled "
            "way. Baking in a covered cast iron pot traps steam for the first twenty minutes, "
            "giving a crackling, blistered crust once the lid comes off.",
        ),
        "The levain should double within six hours", 2,
    ),
    Sample(
        "rust-ownership", "Ownership and Borrowing in Rust",
        (
            "Rust manages memory without a garbage collector through a system of ownership "
            "checked at compile time. Every value has exactly one owner, a variable. When "
            "the owner goes out of scope, the value is dropped and its memory is freed. "
            "Assigning a value to another variable or passing it to a function moves it: "
            "the original variable can no longer be used. Types that are cheap to copy, such "
            "as integers, implement the Copy trait and are duplicated instead of moved.",
            "Moving values everywhere would be inconvenient, so Rust lets code borrow them "
            "through references. A shared reference allows reading, and any number of them "
            "may exist at once. A mutable reference allows changing the value, but while it "
            "exists no other reference to the same value may exist. This rule, enforced by "
            "the borrow checker, prevents data races at compile time: two threads can never "
            "write the same memory without synchronisation.",
            "References must never outlive the data they point to. The compiler tracks this "
            "with lifetimes, usually inferred, sometimes written explicitly with annotations "
            "such as 'a. A function that returns a reference derived from its arguments must "
            "say which argument the result borrows from. When the rules feel too strict, "
            "types such as Rc, RefCell and Arc move some checks to run time, trading a "
            "little speed for flexibility in shared ownership.",
        ),
        "prevents data races at compile time", 2,
    ),
    Sample(
        "bicycle-history", "A Short History of the Bicycle",
        (
            "The first recognisable ancestor of the bicycle was the running machine built by "
            "Karl Drais in Mannheim in 1817. It had two wheels in line and a steerable front "
            "wheel, but no pedals: the rider pushed along the ground with both feet. The "
            "draisine was fashionable for a few years and showed that a person could balance "
            "on two wheels while moving, an idea many people had thought impossible.",
            "In the 1860s French makers fitted pedals and cranks directly to the front wheel, "
            "creating the velocipede, nicknamed the boneshaker for its iron tyres on cobbled "
            "streets. To go faster, builders enlarged the front wheel, which led to the high "
            "wheeler or penny-farthing of the 1870s, whose front wheel could be a metre and a "
            "half across. It was fast but dangerous, and a sudden stop could throw the rider "
            "over the handlebars.",
            "The safety bicycle of the 1880s, with two wheels of equal size and a chain "
            "driving the rear wheel, solved that problem. John Kemp Starley's Rover of 1885 "
            "set the pattern still used today. The pneumatic tyre, patented by John Boyd "
            "Dunlop in 1888, made riding comfortable, and the bicycle boom of the 1890s gave "
            "millions of people, women among them, a new freedom to travel on their own.",
        ),
        "The pneumatic tyre, patented by John Boyd Dunlop in 1888", 3,
    ),
)
