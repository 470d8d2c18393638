"""Ingest of real formatting: hard-wrapped text reflows into whole paragraphs and items, underlined
headings become section context, HTML keeps its headings and loses its navigation - on planted
text and on the shipped real corpora (Debian Policy as plain text, SQLite's documentation as HTML)."""

from __future__ import annotations

from opensem.text.chunk import sections
from opensem.text.ingest import ingest
from opensem.text.reflow import html_to_text, reflow

from conftest import REPO

WRAPPED = """\
3. Binary packages
******************

The Debian distribution is based on the Debian package management
system, called "dpkg". Thus, all packages in the Debian distribution
must be provided in the ".deb" file format.

3.1. The package name
=====================

In addition, the packages in *main*

* must not require or recommend a package outside of *main* for
  compilation or execution (thus, the package must not declare a "Pre-
  Depends" relationship), and

* must not be so buggy that we refuse to support them.

"required"
   Packages which are necessary for the proper functioning of the
   system.

1. Free Redistribution
      The license may not restrict any party from selling or giving
      away the software.

The date has the following format:

   day-of-week, dd month yyyy hh:mm:ss +zzzz
"""


def test_hard_wrapped_text_reflows_into_whole_sentences_items_and_definitions():
    lines = [line for line in reflow(WRAPPED).split("\n") if line]
    assert lines[0] == "# 3. Binary packages" and lines[2] == "## 3.1. The package name"
    assert lines[1] == ('The Debian distribution is based on the Debian package management system, called "dpkg". '
                        'Thus, all packages in the Debian distribution must be provided in the ".deb" file format.')
    assert lines[3] == "In addition, the packages in *main*"
    assert lines[4] == ('* must not require or recommend a package outside of *main* for compilation or execution '
                        '(thus, the package must not declare a "Pre-Depends" relationship), and')  # hyphen re-joined
    assert lines[5] == "* must not be so buggy that we refuse to support them."
    assert lines[6] == '"required": Packages which are necessary for the proper functioning of the system.'
    assert lines[7] == "1. Free Redistribution: The license may not restrict any party from selling or giving away the software."
    assert lines[8] == "The date has the following format:"
    assert lines[9] == "   day-of-week, dd month yyyy hh:mm:ss +zzzz"  # a literal block keeps its layout


def test_markdown_keeps_fenced_code_and_setext_headings():
    text = "Title\n=====\n\nA paragraph that\nwraps.\n\n```\nline one\nline two\n```\n\n| a | b |\n| - | - |\n"
    assert reflow(text).split("\n\n") == ["# Title", "A paragraph that wraps.", "```\nline one\nline two\n```", "| a | b |\n| - | - |\n"]


PAGE = """<html><head><title>STRICT Tables</title><script>var x = 1;</script></head><body>
<div class=nosearch><a href="/">Home</a> <div class="menu mainmenu"><ul><li>About</li><li>Download</li></ul></div>
<div class="fancy_toc"><div class="fancy-toc1"><a href="#intro">1. Introduction</a></div></div></div>
<h1 id="intro"><span>1. </span>Introduction</h1>
<p>SQLite strives to be flexible
regarding the datatype of the content
that it stores.</p>
<ul><li>Every column must have a datatype.</li><li>The datatype must be one of INT, INTEGER, REAL.</li></ul>
<blockquote><pre>CREATE TABLE t1(a ANY) STRICT;
INSERT INTO t1 VALUES('000123');</pre></blockquote>
<footer>Page last modified</footer>
</body></html>"""


def test_html_keeps_headings_and_blocks_and_drops_navigation():
    text = html_to_text(PAGE)
    assert text.split("\n\n") == [
        "# STRICT Tables", "## 1. Introduction",
        "SQLite strives to be flexible regarding the datatype of the content that it stores.",
        "Every column must have a datatype.", "The datatype must be one of INT, INTEGER, REAL.",
        "CREATE TABLE t1(a ANY) STRICT;\nINSERT INTO t1 VALUES('000123');\n",
    ]
    for gone in ("Home", "About", "Download", "var x", "Page last modified"):
        assert gone not in text


def test_the_real_corpora_come_out_as_sections_with_whole_sentences():
    policy, _ = ingest(REPO / "data/debian-policy/raw")
    found = {heading for d in policy for heading, _ in sections(d.text)}
    assert "3. Binary packages > 3.2. The version of a package > 3.2.1. Version numbers based on dates" in found
    assert len(found) >= 40  # the underlined headings of three chapters (the old reader found 5)
    text = "\n".join(d.text for d in policy)
    assert ("The Debian system is maintained and distributed as a collection of *packages*. Since there are so many "
            "of them (currently well over 15000), they are split into *sections*") in text
    assert "\nsystem is maintained" not in text  # no paragraph starts where a source line wrapped

    sqlite, _ = ingest(REPO / "data/sqlite/raw")
    page = next(d.text for d in sqlite if d.name == "stricttables.html")
    assert page.startswith("# STRICT Tables\n\n## 1. Introduction\n")
    for navigation in ("Small. Fast. Reliable.", "Table Of Contents", "Choose any three", "Download"):
        assert navigation not in page
