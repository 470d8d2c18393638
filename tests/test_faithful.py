"""Training data never states the opposite of its source: every extractive pair is checked for the
source's own words and for the polarity of its Yes/No, on planted sentences and on every shipped
corpus; questions are questions; the forge reports its yield (pairs per KB, complete sentences)."""

from __future__ import annotations

import re

import pytest

from opensem.text.chunk import Chunk, chunk_document
from opensem.forge.extractive import extract_pairs, unfaithful
from opensem.text.ingest import ingest
from opensem.config import load_config
from opensem.forge.quality import check_pair, contradicts_source, is_complete_sentence

from conftest import REPO

PLANTED = """Packages in main must comply with the Debian Free Software Guidelines; the archive team checks this.
A package in main must not depend on a package outside main for its compilation; contrib exists for that.
The maintainer is responsible for answering the bugs reported against the package; a team may share it.
An orphaned package is not maintained by any single person in the project; the QA group looks after it.
A column with INTEGER affinity can store a text string that is not a number; it keeps the string as it is.
SQLite does not enforce the length of a VARCHAR column in a table; the number in brackets is ignored."""
NEGATED = {"A package in main", "An orphaned package", "SQLite"}


def chunk(text, heading="Rules"):
    return Chunk("doc#0", "doc.md", heading, text, len(text) // 4)


def test_yes_no_answers_keep_the_polarity_of_their_source_sentence():
    pairs = [(q, a) for q, a in extract_pairs(chunk(PLANTED)) if a.startswith(("Yes. ", "No. "))]
    assert len(pairs) >= 5 and {a[:3] for _, a in pairs} == {"Yes", "No."}
    for question, answer in pairs:
        source = next(s for s in PLANTED.split("\n") if s.rstrip(".") in answer)
        negated = any(source.startswith(n) for n in NEGATED)
        assert answer.startswith("No. " if negated else "Yes. "), (question, answer)
        assert unfaithful(question, answer, chunk(PLANTED)) is None


@pytest.mark.parametrize("question, answer, reason", [
    ("Must packages in main comply with the guidelines?", "No. Packages in main must comply with the Debian Free Software Guidelines.", "polarity"),
    ("Must a package in main depend on a package outside main?", "Yes. A package in main must not depend on a package outside main for its compilation.", "polarity"),
    ("Must packages in main comply with the guidelines?", "Yes. Packages in main must comply with the Debian Free Software Guidelines.", None),
    ("Who answers the bugs?", "The maintainer answers every bug within a week.", "not_verbatim"),
    ("Is however, the maintainer responsible?", "Yes. The maintainer is responsible for answering the bugs reported against the package.", "ungrammatical"),
    ("Why is [6] This an important criterion?", "The maintainer is responsible for answering the bugs reported against the package.", "ungrammatical"),
])
def test_unfaithful_pairs_are_caught(question, answer, reason):
    assert unfaithful(question, answer, chunk(PLANTED)) == reason


OPEN = """A text comparison may not be required in the case of numeric values.
A contract is not frustrated simply because performance has become more expensive.
The license may not require a royalty for such sale.
A contract is not frustrated by a change of law that makes performance more expensive."""


@pytest.mark.parametrize("question, answer, reason", [
    # "may not" can mean "need not": "May it be required?" has no "No." in the source
    ("May a text comparison be required?", "No. A text comparison may not be required in the case of numeric values.", "no_not_entailed"),
    # a denied reason is no denied fact
    ("Is a contract frustrated?", "No. A contract is not frustrated simply because performance has become more expensive.", "no_not_entailed"),
    # a "may not" of permission is dropped too: the words alone cannot tell the two apart
    ("May the license require a royalty for such sale?", "No. The license may not require a royalty for such sale.", "no_not_entailed"),
    ("Is a contract frustrated by a change of law that makes performance more expensive?",
     "No. A contract is not frustrated by a change of law that makes performance more expensive.", None),
])
def test_a_no_the_source_leaves_open_is_not_trained_on(question, answer, reason):
    assert unfaithful(question, answer, chunk(OPEN)) == reason
    # the teacher does write such a "No." (asked one way or another); the check is what keeps it out
    made = [(q, a) for q, a in extract_pairs(chunk(OPEN)) if a == answer]
    assert made and {unfaithful(q, a, chunk(OPEN)) for q, a in made} == {reason}


_ASKS = re.compile(r"\b(?:what|when|why|which|how|who|where|whom|whose)\b|^(?:[^?]{0,120},\s+)?(?:is|are|can|must|may|should|does|do|will|was|were|has|have|did)\b", re.I)


def kept_pairs(sem: str) -> tuple[list, list[tuple[str, str, Chunk]]]:
    """A shipped corpus's documents, and every (question, answer, chunk) the extractive teacher
    writes from them and its faithfulness check keeps (the forge's default chunking)."""
    docs, _ = ingest(REPO / f"data/{sem}/raw")
    chunks = [c for d in docs for c in chunk_document(d, lambda s: max(1, len(s) // 4), 384, 48)]
    return docs, [(q, a, c) for c in chunks for q, a in extract_pairs(c) if unfaithful(q, a, c) is None]


@pytest.mark.parametrize("sem", ["legal", "debian-policy", "sqlite"])
def test_every_kept_pair_of_a_shipped_corpus_is_faithful_and_asks_a_question(sem):
    docs, pairs = kept_pairs(sem)
    kept = [(q, a) for q, a, _ in pairs]
    kb = sum(len(d.text.encode()) for d in docs) / 1000
    assert len(kept) / kb >= 1.5  # a floor: the real corpora gave 1.1 per KB before conditions, passives and plurals were asked
    for question, answer in kept:
        assert question.endswith("?") and _ASKS.search(question), question
        if answer.startswith("No. "):  # a "No." repeats the source's own negation
            assert re.search(r"\b(?:no|not|never|cannot|none|neither|nor)\b|n't\b", answer[4:], re.I), (question, answer)


def test_complete_sentences_are_told_from_fragments():
    assert is_complete_sentence("Yes. The maintainer is responsible for the package.")
    assert not is_complete_sentence("Six years.")
    assert not is_complete_sentence("A voidable.")
    assert not is_complete_sentence("the maintainer is responsible for the package")
    # "Yes," / "No," go on with the same sentence, in lower case; "Yes." / "No." end one
    assert is_complete_sentence("Yes, you can put AUTOINCREMENT on an INTEGER PRIMARY KEY column.")
    assert is_complete_sentence("No, the clean target does not remove the changelog.")
    assert not is_complete_sentence("No. the clean target does not remove the changelog.")
    assert not is_complete_sentence("Yes, six years.")


@pytest.mark.parametrize("sentence, absent, expected", [
    # an opening phrase the lead pattern does not know is not the subject
    ("Unlike most other SQL engines, SQLite does not have a separate BOOLEAN storage type.", "unlike",
     "SQLite does not have a separate BOOLEAN storage type."),
    ("Since these packages cannot be easily removed, the essential flag must not be used lightly.", "since",
     "The essential flag must not be used lightly."),
    # a subject that names nothing outside its paragraph
    ("The value is a NULL value stored in the record header.", "what is the value", "The record header stores a NULL value."),
    # a polar question asks the first clause only
    ("The file named by the INTO clause must not previously exist, or else it must be an empty file.", ", or",
     "Must the file named by the INTO clause previously exist?"),
    # ", only B" belongs to the answer: the question asks about A
    ("The sequence table does not track ROWID changes made by UPDATE, only INSERT statements.", "only insert",
     "Does the sequence table track ROWID changes made by UPDATE?"),
    # a second verb phrase after "and" is left to the answer
    ("WITHOUT ROWID is found only in SQLite and is used by no other engine.", "and is used",
     "Is WITHOUT ROWID found only in SQLite?"),
    # a subject that ends in "and" holds a clause of its own ("X contains Y and is not used for Z")
    ("The installer section contains special packages used by the installer and is not used for normal packages.", "contains",
     "The installer section must not be used for normal packages."),
    # a framing lead stays in the answer, not in the question
    ("For example, the license must not insist that other programs on the medium are free software.", "for example",
     "Must the license insist that other programs on the medium are free software?"),
    # "Of course" states a consequence of the sentence before: asked alone, "No." would be false
    # (sqlite: rigid type enforcement does occur, except in the old versions just described)
    ("Of course, rigid type enforcement will not occur because the earlier versions of SQLite do not know how to do that.",
     "rigid type enforcement", "Rigid type enforcement will not occur in the earlier versions of SQLite."),
])
def test_questions_do_not_inherit_the_sentences_framing(sentence, absent, expected):
    """`expected` is the question the sentence must give, or (a sentence, not a question) one
    without the framing that must give a question: so that a silent extractor fails here too."""
    questions = [q for q, _ in extract_pairs(chunk(sentence))]
    assert not any(absent in q.lower() for q in questions), questions
    if expected.endswith("?"):
        assert expected in questions
    else:
        assert extract_pairs(chunk(expected)), f"the control {expected!r} asks nothing"


@pytest.mark.parametrize("question, reason", [
    ("Under circumstances described below, may the engine convert values?", "needs_context"),
    ("Will ordinary rowid tables run faster in that case?", "needs_context"),  # which case?
    ("Does SQLite enforce this restriction?", "needs_context"),
    ("Are the following targets required by debian/rules?", "needs_context"),
    ('Is "this" a reserved word in SQLite?', None),  # quoted: a name, not a pointer
    ("Does SQLite enforce the length of a VARCHAR column?", None),
])
def test_questions_that_lean_on_the_surrounding_text_are_rejected(question, reason):
    answer = "No. SQLite does not enforce the length of a VARCHAR column in a table."
    assert check_pair(question, answer, PLANTED, load_config(REPO, "legal", []).forge) == reason


def test_a_question_cut_inside_a_quote_is_ungrammatical():
    text = 'Conversions in comparisons of the form "x IN (SELECT y)" are handled as if the comparison were x=y.'
    assert unfaithful('Are conversions in comparisons of the form "x IN?', "Yes. " + text, chunk(text)) == "ungrammatical"


@pytest.mark.parametrize("sentence, expected, answer_opens", [
    # a condition asked as users ask it; an instruction after it asks what to do
    ("If no free rowid can be found after many attempts, the insert fails with an SQLITE_FULL error.",
     "What happens if no free rowid can be found after many attempts?", "If no"),
    ("If you do not want default values, do not use the Default field at all.",
     "What should you do if you do not want default values?", "If you"),
    # passives: how, or where
    ("The entire changelog must be encoded in UTF-8.", "How must the entire changelog be encoded?", "The entire"),
    ("The upstream signature is stored in the debian/upstream directory.", "Where is the upstream signature stored?", "The upstream"),
    # a plural subject with a plain verb
    ("The archive maintainers provide the authoritative list of sections.", "What do the archive maintainers provide?", "The archive"),
    # quotes that close are part of a subject
    ('The "binary-arch" and "binary-indep" targets must exist; the build daemons call them.',
     'Must the "binary-arch" and "binary-indep" targets exist?', "Yes. "),
    # "never" is a negation: the answer says No
    ("The extended description should never include a question.", "Should the extended description include a question?", "No. "),
    # a connective is left out of the question, kept in the answer
    ("However, the maintainer must answer the bugs reported against the package.",
     "Must the maintainer answer the bugs reported against the package?", "Yes. However, the maintainer"),
    # after a condition, a lower-case subject is still a subject
    ("When a row is deleted, the index drops the entry for that row.", "When a row is deleted, what does the index drop?", "When a row"),
])
def test_conditions_passives_and_plurals_are_asked(sentence, expected, answer_opens):
    pairs = dict(extract_pairs(chunk(sentence)))
    assert expected in pairs, list(pairs)
    assert pairs[expected].startswith(answer_opens) and unfaithful(expected, pairs[expected], chunk(sentence)) is None


@pytest.mark.parametrize("sentence, wrong, control", [
    ("If so, the maintainer must close the bug.", "What happens if so?",  # no clause: asks nothing
     "If the bug is fixed, the maintainer must close the bug."),
    ("When grouping values with the clause values with different classes are distinct, except for numbers.", "What happens",
     "When grouping values, values with different storage classes are distinct."),
    ("The separate package allows bug reports against the list to be sorted.", "What do the separate package",
     "The separate package allows the maintainers to sort the bug reports."),
    ("Perhaps they might be ill or away — you do not know who may be on the receiving side.", "Do perhaps",
     "The sender does not know who may be on the receiving side."),
    ("Packages must be placed in non-free if they are not free.", "How must packages be placed?",  # a place, not a manner
     "Packages must be placed in non-free if they are not free."),
    # half of a choice: its "Yes." says more than the source
    ("Statements made during negotiations are either terms, which are part of the contract, or mere representations.",
     "Are statements made during negotiations either", "Statements made during negotiations can become terms of the contract."),
    # a bracket inside a phrase would end the question mid-phrase ("... only recognized by version 3.37.0?" drops "and later")
    ("The keyword is only recognized by SQLite version 3.37.0 (2021-11-27) and later.", "Is the keyword only recognized",
     "The keyword must not be used in a table name."),
    ("The optimization is helpful for tables that have composite (multi-column) PRIMARY KEYs.", "Is the optimization helpful",
     "The optimization must not be used for tables without a PRIMARY KEY."),
    # a noun taken for a verb: the clause's verb comes later
    ('Numeric arguments in parentheses that follow the type name (ex: "VARCHAR(255)") are ignored by SQLite.', "Does numeric",
     "SQLite does not enforce numeric arguments in parentheses."),
    ("A good strategy is to wait until the end of development; the tests then decide.", "Is a good strategy",
     "A good strategy is to wait until the end of development."),
])
def test_clauses_that_are_no_condition_or_subject_ask_nothing(sentence, wrong, control):
    """`control`: a sentence of the same kind that does give a question, so that an extractor
    that asks nothing at all fails here."""
    questions = [q for q, _ in extract_pairs(chunk(sentence))]
    assert not any(q.startswith(wrong) for q in questions), questions
    assert extract_pairs(chunk(control)), f"the control {control!r} asks nothing"


def test_a_question_that_says_do_so_needs_its_context():
    answer = "No. SQLite does not enforce the length of a VARCHAR column in a table."
    assert check_pair("What happens if you do not do so?", answer, PLANTED, load_config(REPO, "legal", []).forge) == "needs_context"


def test_a_numbered_section_is_asked_about_by_its_number_once():
    from opensem.text.ingest import Document

    text = ("# Quirks of the engine\n\n## 3. Flexible typing\n\nThe engine keeps a value in any column. Types are hints only.\n\n"
            + "Each row also has a rowid that the engine assigns when none is given in the insert. " * 40 + "\n\n## Notes\n\nA note is short here.")
    chunks = chunk_document(Document("quirks.md", text), lambda s: max(1, len(s) // 4), 200, 20)
    assert [c.opens_section for c in chunks if c.heading.endswith("Flexible typing")][:2] == [True, False]
    asked = [(q, a) for c in chunks for q, a in extract_pairs(c) if "section" in q]
    assert asked == [("In Quirks of the engine, what does section 3, Flexible typing, say?",
                      "The engine keeps a value in any column. Types are hints only.")]


@pytest.mark.parametrize("sentence, expected, absent", [
    ('The main table uses the hidden rowid as the key and stores the "word" column as data.',
     "Does the main table use the hidden rowid as the key?", "and store"),
    # no comma ends the condition: no "What happens when ...?" that swallows the clause; with one, it is asked
    ("When auto_vacuum is enabled for a database free pages may be reclaimed after deleting data.",
     "When auto_vacuum is enabled, free pages may be reclaimed after deleting data.", "What happens when auto_vacuum is enabled for"),
])
def test_a_question_asks_one_clause(sentence, expected, absent):
    """`expected`: the question the sentence gives, or a control sentence that must give one."""
    questions = [q for q, _ in extract_pairs(chunk(sentence))]
    assert not any(absent in q for q in questions), questions
    if expected.endswith("?"):
        assert expected in questions, questions
    else:
        assert extract_pairs(chunk(expected)), f"the control {expected!r} asks nothing"


def test_a_fragment_opening_with_a_connective_asks_nothing():
    assert extract_pairs(chunk("In addition, the packages in main")) == []
    # the whole sentence, connective and all, is asked about
    assert [q for q, _ in extract_pairs(chunk("In addition, the packages in main are free software."))] == [
        "Are the packages in main free software?"]


def test_a_sentence_the_documents_cut_off_with_its_list_is_never_an_answer():
    """debian-policy's "Packages should build reproducibly, which ... means that given" runs on
    into a list: a pair on it would teach an answer that stops mid-sentence."""
    lead_in = chunk("Packages should build reproducibly, which for the purposes of this document means that given\n"
                    "* a version of a source package unpacked at a given path;\n* a set of versions of installed build dependencies;")
    cut = [(q, a) for q, a in extract_pairs(lead_in) if "reproducibly" in a]
    assert cut and {unfaithful(q, a, lead_in) for q, a in cut} == {"fragment"}
    whole = chunk("Packages should build reproducibly, which means the same source gives the same bytes.")
    assert {unfaithful(q, a, whole) for q, a in extract_pairs(whole) if "reproducibly" in a} == {None}


# -- an LLM teacher's answers: contradicts_source --------------------------------------------------
SOURCE = ("The build target must not do anything that might require root privilege. A STRICT table is stored in "
          "the same on-disk format as an ordinary table, but older versions cannot read it.\n"
          "A contract is a legally binding agreement.")


@pytest.mark.parametrize("answer, inverted", [
    ("No. The build target may do things that require root privilege.", True),  # drops the source's "not"
    ("No. A STRICT table is not stored in the same on-disk format as an ordinary table.", True),  # adds one
    ("No. A contract is not a legally binding agreement.", True),
    ("Yes. The build target must not do anything that might require root privilege.", False),
    ("No. A STRICT table uses the same on-disk format as an ordinary table.", False),  # denied by another fact
    ("Yes. Older versions cannot read a STRICT table.", False),  # the "but" clause, not the sentence's first
    ("A contract is a legally binding agreement between two parties.", False),
    ("The build target. It must not do anything that might require root privilege.", False),  # a bare term first
])
def test_contradicts_source_catches_an_inverted_restatement(answer, inverted):
    assert contradicts_source(answer, SOURCE) is inverted


def test_contradicts_source_flags_none_of_the_shipped_corpora_faithful_pairs():
    """The extractive teacher's checked pairs restate their sources faithfully: any flag here is a
    false alarm that would cost an LLM teacher good pairs (terms inside longer sentences were)."""
    for sem in ("legal", "debian-policy", "sqlite"):
        pairs = [(a, c) for _, a, c in kept_pairs(sem)[1]]
        assert len(pairs) > 150, sem
        assert [a for a, c in pairs if contradicts_source(a, c.text)] == [], sem
