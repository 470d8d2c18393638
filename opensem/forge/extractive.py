"""The offline teacher: question/answer pairs derived from the text itself, no model, no key.

Patterns, strongest first:
    reverse definition  "... is an **option contract**."      -> "What is <subject> called?"
    definition          "A **condition** is a term that ..."  -> "What is a condition?"
    labelled list item  "- **Revocation**: the offeror ..."   -> "In the context of <section>, what is revocation?"
    counted list        "... six essential elements:" + items -> "How many essential elements ...?"
    cloze               a number, a case or a statute in a sentence is replaced by a question word:
                        "... within 6 years of the breach"    -> "... within how many years of the breach?"
    statement           yes/no, what, when, why of a sentence's subject and verb:
                        "The license must permit ..."         -> "Must the license permit ...?", "What must the license permit?"
    condition           "If no rowid can be found, the insert fails ..." -> "What happens if no rowid can be found?"
    passive             "The changelog must be encoded in UTF-8" -> "How must the changelog be encoded?"
    numbered section    "## 2.2.1. The main archive area"     -> "What does section 2.2.1, The main archive area, say?"
Two rules keep the pairs honest: a question never contains the fact its answer states, and an
answer never restates its question (either way the model would learn to echo); an answer opens
with the fact, in the source's own words, so it is grounded in its chunk. `unfaithful` checks
every pair the forge keeps: the answer is the chunk's own words, and a Yes/No agrees with the
polarity of the source sentence.
"""

from __future__ import annotations

import re

from opensem.forge.quality import ENDS_A_SENTENCE, NEGATION, content_words, is_complete_sentence, points_outside
from opensem.llm import Completion
from opensem.text.chunk import Chunk
from opensem.text.reflow import split_sentences

NUMBER_WORDS = "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|eighteen|twenty"
_LIST_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+\*\*(?P<term>[^*]+)\*\*\s*(?:[:\-–—]\s*)(?P<desc>.+)$")
_ANY_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+(?P<body>.+)$")
_DEFINITION = re.compile(
    r"^(?:(?P<art>A|An|The)\s+)?\*\*(?P<term>[^*]{2,60})\*\*(?P<tail>(?:\s+[a-z][a-z-]*){0,2}?)\s+"
    r"(?P<verb>is|are|means|occurs|happens)\s+(?P<pred>(?!not\b).+)$"
)
_REVERSE = re.compile(r"^(?P<subject>[A-Z][^*]{15,}?)\s+(?:is|are)\s+(?:also\s+)?(?:called\s+)?(?:an?\s+|the\s+)?\*\*(?P<term>[^*]{2,60})\*\*\s*\.$")
_COUNT = re.compile(rf"\b(?P<count>{NUMBER_WORDS}|\d+)\s+(?P<what>(?:main\s+|essential\s+|key\s+)?[a-z]+(?:\s+[a-z]+)?)\s*:$", re.I)
_NAME = r"[A-Z][\w.&'-]*"
_CASE = re.compile(
    rf"\*?(?P<case>(?!In\s)(?:Re\s+)?{_NAME}(?:\s+(?:{_NAME}|and|of))*\s+v\.?\s+{_NAME}(?:\s+(?:{_NAME}|\(No\s\d+\)))*?)\*?\s+\((?P<year>1[5-9]\d\d|20\d\d)\)"
)
_STATUTE = re.compile(
    r"\b(?:the\s+)?(?P<act>[A-Z][\w()-]*\s+(?:(?:[A-Z(][\w()-]*|of|and|for)\s+){0,7}Act\s+(?:of\s+)?(?:1[6-9]\d\d|20\d\d)"
    r"|(?:[A-Z]\w+\s+)?Statute\s+of\s+[A-Z]\w+(?:\s+of\s+1[5-9]\d\d)?)"
)
_FUNCTION_WORDS = {"the", "a", "an", "how", "what", "which", "when", "why", "who"}
_QUANTITY = re.compile(
    rf"\b(?P<num>\d+(?:,\d{{3}})*|{NUMBER_WORDS})\s+(?P<unit>years?|months?|days?|weeks?|dollars|pounds|percent)\b", re.I
)
_EMPHASIS = re.compile(r"\*\*|\*|__|`")


def plain(text: str) -> str:
    return re.sub(r"\s+", " ", _EMPHASIS.sub("", text)).strip()


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _question(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip().rstrip(".;:, ")
    return _cap(text) + "?"


def _topic(heading: str) -> str:
    last = heading.split(" > ")[-1].rstrip("?").strip()
    first = last.split(" ", 1)[0]
    return last[:1].lower() + last[1:] if first.lower() in _FUNCTION_WORDS else last


def _term(text: str) -> str:
    """Lower-case a common noun at the start of a sentence ("Acceptance"), keep names ("UCC")."""
    return text[:1].lower() + text[1:] if text[:2].istitle() or (len(text) > 1 and text[1:2].islower()) else text


def chunk_topic(chunk: Chunk) -> str | None:
    """The term a section is about: its heading when the text uses it ("The postal rule"), else its
    first emphasised term when that shares a word with the heading ("The privity rule" ->
    "privity of contract"). Answers that do not name it are closed with it, so that the model
    links the facts of a section to the section's term, which is what users ask about."""
    heading = re.sub(r"^(?:the|a|an)\s+", "", _topic(chunk.heading), flags=re.I)
    if not heading:
        return None
    text = plain(chunk.text)
    found = re.search(re.escape(heading), text, re.I)
    first_bold = re.search(r"\*\*([^*]{2,60})\*\*", chunk.text)
    if found:
        topic = found[0]
    elif first_bold and content_words(first_bold[1]) & content_words(heading):
        topic = plain(first_bold[1])
    else:
        return None
    if len(topic.split()) > 5 or "," in topic:
        return None
    return topic if re.search(r"\s[A-Z]", topic) else _term(topic)  # keep "Statute of Frauds"


def extract_pairs(chunk: Chunk, about_questions: str = "off", yes_no: bool = True,
                  yes_opener: bool = True) -> list[tuple[str, str]]:
    """Every pair the patterns find in a chunk. about_questions (experimental.about_questions):
    "unmatched" asks about a sentence no pattern fits by a name it mentions, "every" asks so about
    every sentence that names something, beside its pattern's questions. yes_no=False
    (experimental.yes_no_questions) drops the yes/no pairs, whose answers open with Yes./No.;
    yes_opener=False (experimental.yes_opener) keeps them and answers an agreeing one with its
    sentence alone (a denial still opens with "No.")."""
    pairs: list[tuple[str, str]] = []
    lines = chunk.text.split("\n")
    list_lead: tuple[str, str, str] | None = None  # (count, what, lead sentence) awaiting its items
    items: list[str] = []
    definitions: list[tuple[str, str, str]] = []  # (term, what it is, its sentence), in order
    section_term = chunk_topic(chunk)
    terms = frozenset(plain(t).lower() for t in re.findall(r"\*\*([^*]{2,60})\*\*", chunk.text))
    antecedent: str | None = None  # what an opening "It" refers to
    for line in lines + [""]:
        item = _LIST_ITEM.match(line)
        if item:
            term, desc = plain(item["term"]), plain(item["desc"]).rstrip(".")
            items.append(term)
            topic = _topic(chunk.heading)
            q = f"In the context of {topic}, what is {_term(term)}?" if topic else f"What is {_term(term)}?"
            pairs.append((q, f"{_cap(term)}: {desc}."))
            continue
        other = _ANY_ITEM.match(line)
        if other:
            body = other["body"]
            bold = re.match(r"\*\*(?P<t>[^*]+)\*\*", body)
            items.append(plain(bold["t"]) if bold else plain(body).rstrip(".;"))
            for sentence in split_sentences(body):
                pairs.extend(_sentence_pairs(sentence, chunk.heading))
            continue
        if list_lead and items:
            count, what, lead = list_lead
            subject = plain(lead.rsplit(count, 1)[0]).rstrip(" ,")
            q = _question(f"{subject} how many {what}")
            pairs.append((q, f"{_cap(count)}: {', '.join(items)}."))
        list_lead, items = None, []
        for raw in split_sentences(line):
            if not raw:
                continue
            counted = _COUNT.search(raw)
            if counted and raw.rstrip().endswith(":"):
                list_lead = (counted["count"], counted["what"], raw)
                continue
            defined = defined_term(raw)
            term = defined[0] if defined else None
            if defined:
                definitions.append((*defined, plain(raw)))
            antecedent = term or antecedent
            found = _sentence_pairs(raw, chunk.heading, antecedent if not term else None, section_term, terms)
            if about_questions == "every" or (about_questions == "unmatched" and not found):
                found = found + _about_pairs(raw, chunk)
            pairs.extend(found)
        antecedent = None  # a paragraph ends
    pairs.extend(difference_pairs(definitions))
    pairs.extend(section_pairs(chunk))
    kept = [(q, a) for q, a in pairs if not points_outside(q) and (yes_no or not _YES_NO.match(a))]
    return _unique([(q, a.removeprefix("Yes. ") if not yes_opener else a) for q, a in kept])


# a name a sentence mentions: quoted, written as code (backticks; an underscore, a slash or "()"
# in a word), or a run of words in capitals ("INTEGER PRIMARY KEY", not the "PRIMARY" of "KEYs")
_NAMED = re.compile(r"[\"“](?P<quoted>[^\"”?!,]{2,40})[\"”]|`(?P<code>[^`]{2,40})`"
                    r"|(?P<ident>\b[A-Za-z][\w.-]*(?:_|/|\(\))[\w./()-]*)"
                    r"|(?P<caps>\b[A-Z][A-Z0-9_]{2,}(?:\s+[A-Z][A-Z0-9_]+)*)(?![\w-])")
_LABEL = re.compile(r"^[\"“](?P<label>[^\"”:]{2,40})[\"”]:\s+(?P<body>[A-Z].+)$")  # '"noopt": The presence of ...'
# capitals that are emphasis or a note's label, not a name
_NOT_A_NAME = {"not", "and", "the", "must", "should", "may", "all", "any", "none", "note", "warning", "update", "only", "never", "and/or"}


def _names(raw: str, sentence: str, chunk: Chunk) -> list[str]:
    """What a sentence is about, by name: short, not the section's own name, and said at most twice
    in the chunk (a word the whole section uses, "SQL" in SQLite's pages, identifies no fact). A
    word pair with a slash names something only when quoted or when it is a path ("/etc/papersize"
    yes, "client/server" no)."""
    label = _LABEL.match(sentence)
    found = [label["label"]] if label else [next(g for g in m.groups() if g) for m in _NAMED.finditer(raw)]
    names = []
    for name in (plain(n).strip(".,;:!?'’ ") for n in found):  # as the answer spells it (plain drops markup)
        plain_words = re.fullmatch(r"[A-Za-z]+(?:/[A-Za-z]+)+", name) and f'"{name}"' not in raw and f"`{name}`" not in raw
        if (len(name) >= 3 and len(name.split()) <= 4 and name.lower() not in _NOT_A_NAME and not plain_words
                and name.lower() not in chunk.heading.lower() and chunk.text.count(name) <= 2):
            names.append(name)
    return names


def _about_pairs(raw: str, chunk: Chunk) -> list[tuple[str, str]]:
    """A sentence asked about by a name it mentions, as users ask about a named option, file or
    keyword (experimental.about_questions says which sentences): '"nostrip": This tag means that the debugging symbols
    should not be stripped ...' -> "What does section 4.9.1 say about nostrip?". The answer is
    the sentence; a sentence that names nothing, or is no complete sentence, asks nothing."""
    sentence = plain(raw)
    label = _LABEL.match(sentence)
    if not (40 <= len(sentence) <= 400) or sentence.endswith(("?", ":")) or not is_complete_sentence(label["body"] if label else sentence):
        return []
    names = _names(raw, sentence, chunk)
    if not names:
        return []
    parts = chunk.heading.split(" > ")
    numbered = re.match(r"(?P<number>\d+(?:\.\d+)*)\.?\s", plain(parts[-1]))
    if numbered:  # a numbering that restarts in every document is qualified by the document, as section_pairs does
        qualified = len(parts) > 1 and not re.match(r"\d", parts[0]) and re.fullmatch(r"[A-Za-z0-9][\w ,.:'’&/()—-]{1,80}", plain(parts[0]))
        where = f"section {numbered['number']}" + (f" of {plain(parts[0])}" if qualified else "")
    else:
        where = f"the section {plain(parts[-1])}" if parts[-1] else "the documentation"
    question = f"What does {where} say about {names[0]}?"
    return [(question, sentence)] if _informative(question, sentence) else []


_NUMBERED = re.compile(r"^(?P<number>\d+(?:\.\d+)*)\.?\s+(?P<title>[A-Z].{2,80})$")


def section_pairs(chunk: Chunk) -> list[tuple[str, str]]:
    """A numbered section asked about by its number and title, as users cite it: "What does section
    2.2.1, The main archive area, say?" -> the section's opening sentence (two when the first is
    short), in its own words. Only the chunk that opens the section asks, so that the question has
    one answer; a section number that restarts in every document is qualified by the document
    ("In SQLite Autoincrement, what does section 1, Summary, say?")."""
    parts = chunk.heading.split(" > ")
    m = _NUMBERED.match(parts[-1])
    if not chunk.opens_section or not m:
        return []
    sentences = [plain(s) for s in split_sentences(chunk.text.split("\n")[0])]
    answer = " ".join(sentences[:2] if sentences and len(sentences[0]) < 100 else sentences[:1])
    if not answer or not is_complete_sentence(answer) or len(answer) > 400:
        return []
    qualified = len(parts) > 1 and not _NUMBERED.match(parts[0])
    if qualified and not re.fullmatch(r"[A-Za-z0-9][\w ,.:'’&/()—-]{1,80}", plain(parts[0])):
        return []  # a "heading" that is a line of code
    qualifier = f"In {plain(parts[0])}, w" if qualified else "W"
    return [(f"{qualifier}hat does section {m['number']}, {plain(m['title']).rstrip('.:')}, say?", answer)]


def _sentence_pairs(
    raw: str, heading: str, antecedent: str | None = None, topic: str | None = None, terms: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    sentence = plain(raw)
    if len(sentence) < 25 or sentence.endswith(("?", ":")):
        return []
    out: list[tuple[str, str]] = []
    rev = _REVERSE.match(raw.strip())
    if rev:
        term = plain(rev["term"])
        subject = plain(rev["subject"])
        article = "An" if term[:1].lower() in "aeiou" else "A"
        out.append((f"What is {subject[:1].lower() + subject[1:]} called?", f"{article} {_term(term)}."))
    d = _DEFINITION.match(raw.strip())
    if d:
        term = _term((plain(d["term"]) + d["tail"]).strip())
        art = (d["art"] or "").lower()
        named = f"{art} {term}".strip() if art in ("a", "an") else term
        verb = d["verb"]
        if verb in ("occurs", "happens"):
            q = f"When does {named} {verb[:-1]}?"
        elif verb == "means":
            q = f"What does {named} mean?"
        else:
            q = f"What {verb} {named}?"
        out.append((q, sentence))
    out.extend(_reverse_definition_pairs(raw))
    out.extend(_named_rule_pairs(raw))
    out.extend(_statement_pairs(raw, antecedent, topic, terms))
    out.extend(_cloze(sentence, heading))
    # key fact first, then the sentence that states it: trained on bare facts ("Six years.", "An
    # offer."), the tuned model answered a fifth of legal's golden questions with a fragment
    stated = _cap(re.sub(r"[;,]$", ".", sentence))  # a list item ("- a claim ... of the breach;") as a sentence
    if not is_complete_sentence(stated):
        return out  # a lead-in its list cut off: `unfaithful` drops its pairs as fragments
    return [(q, a if is_complete_sentence(a) or sentence in a else f"{a} {stated}") for q, a in out]


def _cloze(sentence: str, heading: str) -> list[tuple[str, str]]:
    """Hide one fact (a quantity, a case, a statute) behind a question word."""
    out = []
    topic = _topic(heading)
    prefix = f"On {topic}: " if topic else ""
    q = _QUANTITY.search(sentence)
    if q:
        unit = q["unit"].lower()
        unit = unit if unit.endswith("s") else unit + "s"
        asked = sentence[: q.start()] + f"how many {unit}" + sentence[q.end():]
        out.append((_question(prefix + asked[:1].lower() + asked[1:] if prefix else asked), f"{_cap(q['num'])} {q['unit']}."))
    c = _CASE.search(sentence)
    if c:
        case = f"{c['case'].strip()} ({c['year']})"
        m = re.match(r"^In\s+" + re.escape(c.group(0)) + r",?\s*(?P<rest>.+)$", sentence)
        if m:
            rest = re.sub(r"^the (court|house of lords) (held|decided) that\s+", "", m["rest"], flags=re.I)
            rest = rest[:1].lower() + rest[1:]
            asked = f"In which case {rest}" if " held " in f" {rest} " else f"In which case was it held that {rest}"
        else:
            asked = (prefix + sentence[: c.start()] + "which case" + sentence[c.end():]).strip()
        out.append((_question(asked), f"{case}."))
    s = _STATUTE.search(sentence)
    if s and not c:
        asked = (prefix + sentence[: s.start()] + "which statute" + sentence[s.end():]).strip()
        out.append((_question(asked), f"The {s['act']}."))
    # the heading may name the very fact hidden ("On the Statute of Frauds: ... which statute")
    return [(q, a) for q, a in out if a.rstrip(".").lower().removeprefix("the ") not in q.lower()]


# -- questions a user would ask about a statement ----------------------------------------------
# A rule-based question generator in the classic style (subject/auxiliary inversion), written out
# here because no maintained library does it without a parser model we cannot download. A fact
# seen under several question shapes is what lets a small model retrieve it when the question is
# worded differently (the "knowledge augmentation" finding of Allen-Zhu & Li, Physics of LMs 3.1).
_LEAD = re.compile(
    r"^(?P<lead>(?:If|When|Under|In|For|Once|Unless|Where|After|Before|Since|While|As|At|On|By|Without|With|Outside)\b[^,;:]{3,90}),\s+(?P<main>.+)$"
)
_AUX = re.compile(
    r"\s(?P<aux>is|are|can|cannot|must|may|will|does|do|should)"
    r"(?P<adv>\s+(?:generally|usually|normally|always|often|also|still))?(?P<neg>\s+(?:not|never)\b)?\s"
)
_NON_SUBJECT = {  # a sentence opening with these has no subject a question can stand on
    "this", "it", "these", "those", "that", "there", "they", "he", "she", "we", "you", "i", "such", "each",
    "both", "neither", "either", "nobody", "whoever", "another", "here", "its", "their", "his", "her", "but",
    "and", "or", "so", "then", "however", "also", "only", "even", "most", "some", "many", "all", "not", "no",
    "under", "in", "after", "before", "for", "with", "as", "to", "at", "on", "by", "if", "when", "once",
    "while", "although", "unless", "where", "which", "who", "whom", "whose", "what", "whether", "until", "nor",
    "thus", "hence", "therefore", "additionally", "instead", "likewise", "similarly", "note", "finally", "otherwise",
    "since", "unlike", "like", "because", "despite", "though", "besides", "during", "within", "among", "from",
    "following", "given", "per", "via", "regardless", "due", "except", "apart", "according", "upon", "through",
    "throughout", "against", "beyond", "between", "whereas", "above", "below", "one", "sometimes", "usually",
    "generally", "normally", "typically", "always", "never", "currently", "perhaps", "maybe", "please",
}
# A lead that frames the sentence rather than conditions it: dropped from the question ("For
# example, must the license ...?" is not how anyone asks), kept in the answer.
_DISCOURSE_LEAD = re.compile(
    r"^(?:For (?:example|instance)|In (?:general|particular|practice|addition|other words|short|fact|most cases)"
    r"|As a rule|Typically|Usually|Normally|Generally)$", re.I)
# A connective that opens a sentence without making it depend on the one before it: left out of
# the question ("However, is X ...?" is no question), kept in the answer. "Thus", "Otherwise",
# "Instead" and "Of course" are not here: their sentence states a consequence of the previous one
# ("Of course, rigid type enforcement will not occur" holds for the old versions just described).
_CONNECTIVE = re.compile(r"^(?:However|Also|Additionally|In addition|Furthermore|Moreover|Note that|Note also that),?\s+(?=\S)")
# A subject that names nothing without its paragraph ("What is the value?", "What will the new
# database contain?"): the question cannot be answered by anyone who has not just read the text.
_VAGUE_SUBJECT = re.compile(
    r"^(?:the|a|an)\s+(?:(?:new|old|same|other|first|second|last|original|resulting|current|given)\s+)?"
    r"(?:values?|columns?|results?|files?|database|tables?|data|content|strings?|numbers?|text|expressions?|operands?"
    r"|functions?|options?|commands?|statements?|process|entry|entries|fields?|items?|objects?|names?|types?|things?"
    r"|ones?|cases?|rules?|way|group|list)$", re.I)
_CLAUSE_WORD = re.compile(
    r"\b(?:if|when|because|unless|until|whether|only|that|which|who|whose|it|before|after|whereas|while|although|though|as)\b", re.I
)
_CONDITION = re.compile(r"\s(?P<mark>(?:only\s+)?(?:when|as soon as|once|until|if|unless))\s")
_BECAUSE = re.compile(r"\s(?:because|since)\s")
_NOT_IN_A_SUBJECT = re.compile(r"\s(?:might|could|would|should|must|may|will|can)\s|\s[—–-]\s")  # a clause, not a noun phrase
_DETERMINER = re.compile(r"^(?:an?|the|one|any|two|three|four|five|six)\s", re.I)


def _article(noun: str) -> str:
    vowel_sound = noun[:1].lower() in "aeiou" and not re.match(r"(?i)u(?:ni|s[eu])|eu|one", noun)
    return "An" if vowel_sound else "A"


def _informative(question: str, answer: str, lead: str = "") -> bool:
    """The answer is mostly news to the question (the rule the module docstring states); a
    condition both repeat ("When a row is deleted, ...") is no part of either."""
    question, answer = question.replace(lead, "", 1), answer.replace(lead, "", 1)
    a_words = content_words(answer)
    return len(a_words & content_words(question)) <= 0.7 * len(a_words)


def _lower_first(text: str) -> str:
    return _term(text) if text[:1].isupper() else text


def _names_a_term(text: str, terms: set[str]) -> bool:
    low = text.lower()
    return any(t in low for t in terms)


def _statement_pairs(
    raw: str, antecedent: str | None = None, topic: str | None = None, terms: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """Yes/no, when/why and what-is questions about one sentence; the answer is the sentence,
    closed by the section's topic when it names none of the section's `terms` ("... (privity)").

    `antecedent` stands in for an opening "It" (the term the previous sentence defined)."""
    answer = plain(raw)
    if topic and topic.lower() not in answer.lower() and "**" not in raw and not _names_a_term(answer, terms):
        answer = f"{answer.rstrip('.')} ({topic})."
    if antecedent and re.match(r"It\s(?!is\s+(?:not\s+)?(?:possible|common|usual|important|necessary))", answer):
        answer = _cap(antecedent) + answer[2:]
    sentence = _cap(_CONNECTIVE.sub("", (split_sentences(answer) or [answer])[0].rstrip(".")))
    m = _LEAD.match(sentence)
    if m and re.search(r"\sv\.?\s", m["lead"]):
        return []  # "In <case>, ..." is the cloze rule's
    lead, main = (m["lead"] + ", ", m["main"]) if m else ("", sentence)
    if m and _DISCOURSE_LEAD.match(m["lead"]):
        lead = ""
    happens = _what_happens(sentence, answer)
    # a bracket inside a phrase ("composite (multi-column) PRIMARY KEYs") cuts the phrase in two
    cut_in_phrase = bool(re.match(r"[^;:(]*\([^()]+\)\s+[\w\"]", main))  # "f()" is a name, not a bracket
    main = re.split(r"\s*[;:]\s+|\s+\(", main)[0]
    aux = _AUX.search(" " + main + " ")
    if not aux:
        return happens + _do_support_pairs(lead, main, answer)
    subject = main[: aux.start()].strip()
    rest = main[aux.end() - 1 :].strip()
    subject_words = subject.split()
    if (
        not (1 <= len(subject_words) <= (10 if lead else 16) and rest)
        or subject_words[0].lower().rstrip(",;:") in _NON_SUBJECT
        or _CLAUSE_WORD.search(subject)
        or _unbalanced(subject)
        or _NOT_IN_A_SUBJECT.search(subject)
        or "," in subject  # an opening phrase the lead pattern did not know ("Unlike X, SQLite ...")
        or subject_words[-1].lower() in ("and", "or", "but", "nor")  # "X contains Y and [is not used]": two clauses
        or not subject[:1].isalnum()
        or (_VAGUE_SUBJECT.match(subject) and not lead)  # "When two BLOB values are compared, the result ..."
    ):
        return happens
    verb, negated = aux["aux"], bool(aux["neg"]) or aux["aux"] == "cannot"  # "should never include" asks "Should ... include?"
    if verb in ("do", "does") and not negated:
        return happens  # "do" without "not" is a main verb here ("not to do something")
    asked = {"cannot": "can"}.get(verb, verb)
    asked = asked if lead else _cap(asked)
    subj = _lower_first(subject) + (aux["adv"] or "")
    answer = _cap(answer)
    out = happens
    # the question asks the first clause only: "Must the file exist, or else ..., or ...?" is no question
    polar_rest = re.split(r"\s+(?:but|because)\s+|,\s+(?:or|so|and|but|which|thus|only)\s+|,\s+(?:since|as|unless|except)\b"
                          r"|\s+and\s+(?=(?:is|are|can|cannot|must|may|should|will|does|do|you|it|they|we)\s)", rest)[0]
    polar_rest = re.sub(r"\s+(?:simply|merely|only|either|also)$", "", polar_rest)
    polar = _question(f"{lead}{asked} {subj} {polar_rest}")
    # "Must it be either a NULL?" asks half of a choice, and its "Yes." says more than the source
    half_choice = bool(re.search(r"\beither(?:\s+\S+){1,2}$", polar_rest))
    # "A good strategy is to wait" turns into no question ("Is a good strategy to wait?")
    no_question = verb in ("is", "are") and rest.startswith("to ") and subject_words[0].lower() in ("a", "an")
    teaches = negated or content_words(answer) - content_words(polar)  # a bare "Yes." + echo teaches nothing
    if teaches and not (half_choice or cut_in_phrase or no_question):
        out.append((polar, f"{'No' if negated else 'Yes'}. {answer}"))
    wh = "when" if lead else "When"
    cond = _CONDITION.search(" " + rest + " ")
    if cond and not negated and 0 < len(rest[: cond.start()].split()) <= 6:
        out.append((_question(f"{lead}{wh} {asked.lower()} {subj} {rest[: cond.start() - 1]}"), answer))
    why = _BECAUSE.search(" " + rest + " ")
    if why and 0 < len(rest[: why.start()].split()) <= 8:
        neg = " not" if negated else ""
        cause = re.sub(r"\s+(?:simply|merely|only)$", "", rest[: why.start() - 1])
        out.append((_question(f"{lead}{'why' if lead else 'Why'} {asked.lower()} {subj}{neg} {cause}"), answer))
    out.extend(_obligation_pairs(lead, verb, negated, subj, rest, answer))
    if verb in ("is", "are") and not negated and not lead and _DETERMINER.match(rest) and (len(subject_words) >= 2 or subject[:1].isupper()):
        out.append((_question(f"What {verb} {_lower_first(subject)}"), answer))
    informative = [(q, a) for q, a in out if a.startswith(("Yes. ", "No. ")) or _informative(q, a, lead)]
    # a passive question leaves its whole object out, so its answer is news however short ("UTF-8")
    return informative + _passive_pairs(lead, verb, negated, subj, rest, answer)


_CONDITION_LEAD = re.compile(r"^(?P<cond>(?:If|When|Whenever|Once)\s[^,;:]{8,120}?)(?:,\s+|\s+then\s+)(?P<main>[a-z].{8,})$")
_CONDITION_VERB = re.compile(r"\s(?:is|are|was|were|be|been|has|have|can|cannot|must|may|should|will|do|does|don't|[a-z]{3,}(?:s|ed))\b")
# a comma the source left out: "If X is enabled free pages may be reclaimed" holds two clauses
_SECOND_CLAUSE = re.compile(r"\s(?:it|they|we|he|she)\s+(?:is|are|should|must|will|can|may)\b")
_FINITE = re.compile(r"\b(?:is|are|was|were|may|might|must|should|can|will|could|would)\b")
_NOT_A_MAIN_CLAUSE = {"except", "which", "and", "or", "but", "as", "so", "like", "such", "including", "unless", "until", "whereas"}
# the main clause gives an instruction: "If you do not want defaults, do not use Default at all"
_IMPERATIVE = re.compile(r"^(?:do|don't|please|just|use|leave|build|run|see|make|check|ask|contact|try|consider|avoid|add|set|put|remove"
                         r"|install|send|file|read|include|keep|write|call|look|follow|refer|be|choose|create|specify|mention|tell)\b")


def _what_happens(sentence: str, answer: str) -> list[tuple[str, str]]:
    """What a condition leads to, asked as users ask it: "If no unused ROWID can be found, the
    insert fails with SQLITE_FULL" -> "What happens if no unused ROWID can be found?"; an
    instruction in the main clause -> "What should you do if ...?". The answer is the sentence; a
    condition that is no clause ("If so", "When possible") asks nothing."""
    m = _CONDITION_LEAD.match(sentence)
    if (not m or not _CONDITION_VERB.search(m["cond"]) or _SECOND_CLAUSE.search(m["cond"]) or len(_FINITE.findall(m["cond"])) > 1
            or m["main"].split()[0] in _NOT_A_MAIN_CLAUSE):
        return []
    asked = "What should you do" if _IMPERATIVE.match(m["main"]) else "What happens"
    return [(_question(f"{asked} {_lower_first(m['cond'])}"), _cap(answer))]


_MODALS = {"must", "may", "should", "can", "will"}
_VERB_OBJECT = re.compile(r"^(?P<adv>(?:[a-z]+ly\s+)*)(?P<verb>[a-z]{2,})\s+(?P<obj>\S.*)$")
_NOT_AN_OBJECT = {"to", "in", "on", "at", "by", "for", "with", "from", "into", "as", "if", "when", "whether", "about", "of",
                  "and", "or", "only", "not", "also", "be", "been", "than", "so", "because", "unless", "until", "once",
                  "sometimes", "often", "always", "never", "still", "even", "just", "already", "then", "again", "either"}
_PASSIVE = re.compile(r"^(?P<be>be\s+)?(?P<participle>[a-z]{3,}(?:ed|en))\s+(?P<prep>using|with|via|as|in|into|on|at|under)\s+(?P<obj>\S.*)$")
# participles that take a complement rather than a manner or a place ("based on", "used to")
_NOT_A_MANNER = {"based", "related", "interested", "concerned", "involved", "known", "called", "named", "needed", "required",
                 "allowed", "permitted", "supposed", "expected", "given", "taken", "seen", "written", "broken", "chosen"}


def _obligation_pairs(lead: str, verb: str, negated: bool, subj: str, rest: str, answer: str) -> list[tuple[str, str]]:
    """What a modal sentence obliges or allows, asked about its object: "The license must permit
    distribution of ..." -> "What must the license permit?"; "The maintainer must be specified in
    the Maintainer field" -> "Where must the maintainer be specified?". The answer is the sentence."""
    if verb not in _MODALS or negated:
        return []
    what = "what" if lead else "What"
    if rest.startswith("be "):
        return []  # a passive: _passive_pairs asks how or where
    m = _VERB_OBJECT.match(rest)
    if not m or m["verb"] in _NOT_AN_OBJECT or m["verb"].endswith("ly") or m["obj"].split()[0].lower() in _NOT_AN_OBJECT:
        return []
    return [(_question(f"{lead}{what} {verb} {subj} {m['adv']}{m['verb']}"), answer)]


_MANNER_IN = {"encoded", "expressed", "formatted", "compressed", "written", "measured", "represented", "given", "phrased"}


def _passive_pairs(lead: str, verb: str, negated: bool, subj: str, rest: str, answer: str) -> list[tuple[str, str]]:
    """How or where a passive sentence says a thing is done: "The entire changelog must be encoded
    in UTF-8" -> "How must the entire changelog be encoded?"; "The maintainer must be specified in
    the Maintainer field" -> "Where must the maintainer be specified?". The answer is the sentence."""
    m = _PASSIVE.match(rest)
    if negated or not m or m["participle"] in _NOT_A_MANNER or bool(m["be"]) != (verb in _MODALS):
        return []
    placed = m["prep"] in ("in", "into", "on", "at", "under") and m["participle"] not in _MANNER_IN
    if m["prep"] in ("on", "at", "under") and not re.match(r"(?:the|a|an)\s", m["obj"]):
        return []  # "on demand", "at once": neither a place nor a manner
    wh = ("where" if placed else "how") if lead else ("Where" if placed else "How")
    return [(_question(f"{lead}{wh} {verb} {subj} {m['be'] or ''}{m['participle']}"), answer)]


_VERB_S = re.compile(
    r"^(?P<subject>(?:(?!\b(?:is|are|was|were)\b)[^,;:]){2,60}?)\s+(?P<verb>[a-z]{3,}(?<![su]s)(?<!is)s)\s+"
    r"(?P<rest>(?:a|an|the|to|in|on|that|its|their|no|only|all|for|with|by|from|out|up)\s.+)$"
)


# "The Debian archive maintainers provide the list": a plural subject (its last word ends in -s) and
# a verb in its plain form; the verb must not be a word that commonly follows a plural noun unverbed.
_VERB_PLURAL = re.compile(
    r"^(?P<subject>(?:(?!\b(?:is|are|was|were)\b)[^,;:]){2,60}?[a-z]{2,}(?<!s)s)\s+(?P<verb>(?!(?:that|which|who|and|or|of|in|on|for|with|to|from|by|as|at|than|can|may|must|will|should|might|could|would|do|have|also|only|always|often|never|still|all|both"
    r"|against|about|upon|within|without|across|along|among|around|behind|beyond|despite|during|except|inside|outside|over|under|until|via|whether|where|when|while|into|onto|like|per|after|before|between|through|the|a|an)\b)[a-z]{3,}(?<!s)(?<!ly)(?<!ed)(?<!ing))\s+"
    r"(?P<rest>(?:a|an|the|to|in|on|that|its|their|no|only|all|for|with|by|from|out|up)\s.+)$"
)


# a finite "is/are" later in the clause: the word taken for the verb was a noun (not "that is", a relative)
_LATER_VERB = re.compile(r"(?<!\bthat)(?<!\bwhich)(?<!\bwho)\s(?:is|are)\s")


def _after(sentence: str, word: str) -> str:
    """The sentence after `word`, brackets left out (the clause goes on behind them)."""
    flat = sentence
    while (bare := re.sub(r"\s*\([^()]*\)", "", flat)) != flat:  # inner brackets first: "(ex: "VARCHAR(255)")"
        flat = bare
    return flat.partition(word)[2]


def _lemma(verb: str) -> str:
    if verb == "has":
        return "have"
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    if re.search(r"(?:ch|sh|x|ss|zz)es$", verb):
        return verb[:-2]
    return verb[:-1]


def _do_support_pairs(lead: str, main: str, answer: str) -> list[tuple[str, str]]:
    """ "Breach of a condition allows the innocent party to terminate" -> "Does breach of a
    condition allow the innocent party to terminate ...?" and "What does ... allow?" """
    m = _VERB_S.match(main)
    plural = _VERB_PLURAL.match(main) if not m else None
    m = m or plural
    if not m:
        return []
    subject, verb, rest = m["subject"].strip(), m["verb"], m["rest"]
    words_ = subject.split()
    head = subject.split(" of ")[0].split()
    if (
        len(words_) > 8 or words_[0].lower() in _NON_SUBJECT or _CLAUSE_WORD.search(subject)
        or _DETERMINER.fullmatch(subject + " ")  # "The packages in main": a noun taken for a verb
        or not (subject[:1].isupper() or (lead and subject[:1].isalpha()))  # after a lead it starts lower-case
        or (_VAGUE_SUBJECT.match(subject) and not lead) or _unbalanced(subject)
        or (not plural and any(w.endswith("s") and not w.endswith("ss") for w in head))  # a plural word: "periods" was no verb
        or (plural and len(words_) < 2 and not subject[:1].isupper())
        or (plural and any(w.endswith("s") and not w.endswith("ss") and nxt not in ("of", "and", "or")
                           for w, nxt in zip(words_, words_[1:])))  # "The package allows bug reports": a verb inside
        or re.search(r"\b(?:this|it|that|them)$", rest)
        or _LATER_VERB.search(re.split(r"[;:,]", _after(answer, f" {verb} "))[0])  # "Numeric arguments ... are ignored": a noun
    ):
        return []
    do = "do" if plural else "does"
    subj, base = _lower_first(subject), verb if plural else _lemma(verb)
    # the first clause only: "Does the table use X as the key and stores Y?" is no question
    first = re.split(r"\s+(?:but|because)\s+|,\s+(?:or|so|and|but|which|thus)\s+|\s+and\s+(?=no\s|[a-z]+s\s)", rest)[0]
    polar = _question(f"{lead}{do if lead else _cap(do)} {subj} {base} {first}")
    out = [(polar, f"Yes. {_cap(answer)}")] if content_words(answer) - content_words(polar) else []
    if re.match(r"(?:a|an|the)\s", rest):  # not "to": "SQLite strives to be ..." has no object to ask for
        out.append((_question(f"{lead}{'what' if lead else 'What'} {do} {subj} {base}"), _cap(answer)))
    cond = _CONDITION.search(" " + rest + " ")
    if cond and 0 < len(rest[: cond.start()].split()) <= 6:
        out.append((_question(f"{lead}{'when' if lead else 'When'} {do} {subj} {base} {rest[: cond.start() - 1]}"), _cap(answer)))
    return [(q, a) for q, a in out if a.startswith("Yes. ") or _informative(q, a, lead)]


_UNDER_TERM = re.compile(r"^Under\s+the\s+(?P<doctrine>(?:doctrine|rule|principle)\s+of\s+)?\*\*(?P<term>[^*]{2,60})\*\*,\s+(?P<main>[^;:]+?)\.?$")


def _named_rule_pairs(raw: str) -> list[tuple[str, str]]:
    """ "Under the **parol evidence rule**, <statement>" -> "Which rule says that <statement>?" """
    m = _UNDER_TERM.match(raw.strip())
    if not m:
        return []
    term = plain(m["term"])
    kind = m["doctrine"].split()[0] if m["doctrine"] else term.split()[-1].lower()
    if kind not in ("doctrine", "rule", "principle", "test", "presumption"):
        kind = "rule"
    name = f"the {m['doctrine'] or ''}{term}"
    main = plain(m["main"])
    return [(_question(f"Which {kind} says that {_lower_first(main)}"), f"{_cap(name)}.")]


def defined_term(raw: str) -> tuple[str, str] | None:
    """(the term a definition sentence defines, with its article ("a condition"), what it is), or None."""
    d = _DEFINITION.match(raw.strip())
    if not d:
        return None
    term = _term((plain(d["term"]) + d["tail"]).strip())
    art = (d["art"] or "").lower()
    return (f"{art} {term}".strip() if art in ("a", "an", "the") else term), plain(d["pred"])


def difference_pairs(definitions: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """Two kindred terms defined one after the other -> "What is the difference between X and Y?".
    Kindred: they share a word (void / voidable contract) or a definition's opening (the transfer of)."""
    out = []
    for (a, a_pred, a_def), (b, b_pred, b_def) in zip(definitions, definitions[1:]):
        bare_a, bare_b = re.sub(r"^(?:an?|the)\s+", "", a), re.sub(r"^(?:an?|the)\s+", "", b)
        kindred = set(bare_a.lower().split()) & set(bare_b.lower().split()) or a_pred.split()[:3] == b_pred.split()[:3]
        if kindred and bare_a.lower() != bare_b.lower():
            out.append((f"What is the difference between {bare_a} and {bare_b}?", f"{a_def} {b_def}"))
    return out


_TERM_DEFINED = re.compile(r"^(?:(?P<art>An?|The)\s+)?\*\*(?P<term>[^*]{2,60})\*\*\s+(?:is|are|means)\s+(?P<pred>(?:an?|the)\s+[^:;]+?)\.?$")
_IN_A_TERM = re.compile(r"^In\s+(?:an?|the)\s+\*\*(?P<term>[^*]{2,60})\*\*,?\s+(?P<clause>[a-z].+?)\.?$")


def _reverse_definition_pairs(raw: str) -> list[tuple[str, str]]:
    """From a definition, the question that names the thing from its description."""
    raw = raw.strip()
    out = []
    d = _TERM_DEFINED.match(raw)
    if d:
        term, pred = plain(d["term"]), plain(d["pred"])
        named = f"{_article(term)} {_term(term)}" if d["art"] else _cap(term)
        out.append((_question(f"What is the term for {pred}"), f"{named}."))
    i = _IN_A_TERM.match(raw)
    if i:
        term = plain(i["term"])
        head = term.split()[-1]
        article = _article(term)
        out.append((_question(f"What kind of {head} is it when {plain(i['clause'])}"), f"{article} {_term(term)}."))
    return out


# -- the faithfulness check every extractive pair passes (forge/stage.py counts the rejections) ------
_YES_NO = re.compile(r"^(?P<polarity>Yes|No)\.\s+")
_CLOSING_TOPIC = re.compile(r"\s\([^()]{1,60}\)\.$")  # the section's term that closes an answer
_FIRST_CLAUSE = re.compile(r"\s*[;:]\s+|\s\(|\s+(?:but|because|except|unless|although|though|however|while|whereas)\b|,\s+(?:and|or|so)\s+")
_UNGRAMMATICAL = re.compile(
    r"\[\d+\]|(?:^|\s)(?:--|/\*|\*\*)|^(?:\w+\s+)(?:however|for example|additionally|thus|also|instead|similarly|in addition|"
    r"therefore|hence|otherwise|in general|in other words|finally|note that|so|and|but)\b", re.I)


# A "not" that leaves the question's answer open: "may not be required" can mean "need not be"
# (so "May it be required?" is no "No."), and "is not frustrated simply because it costs more"
# denies a reason, not the fact ("Is a contract frustrated?" is no "No." either).
_MAY_NOT = re.compile(r"\b(?:may|might)\s+not\b", re.I)
_NOT_BECAUSE = re.compile(r"\bnot\s+(?:\S+\s+){0,6}?(?:simply|merely|just|only|solely)\s+because\b", re.I)


def _unbalanced(text: str) -> bool:
    """A quote or bracket left open: the question was cut inside it ("... of the form "x IN?")."""
    return text.count('"') % 2 == 1 or text.count("(") != text.count(")") or text.count("“") != text.count("”")


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", plain(text)).strip().lower()


def _negations(clause: str) -> int:
    return len(NEGATION.findall(_FIRST_CLAUSE.split(clause)[0]))


def _in_source(core: str, source: str) -> bool:
    """The answer's words stand in the source: whole, or sentence by sentence (two definitions
    side by side), or item by item ("Six: offer, acceptance, ..."), or with the term that
    replaced an opening "It" put back."""
    if core in source or re.sub(r"^(?:the|a|an) ", "", core) in source:  # a cloze answer adds its article
        return True
    for sentence in re.split(r"(?<=\.)\s+", core):
        sentence = sentence.rstrip(".")
        words = sentence.split()
        if sentence in source or any(" ".join(["it", *words[k:]]) in source for k in range(1, min(5, len(words)))):
            continue
        parts = [p for p in re.split(r":\s+|,\s+(?:and\s+)?|\s+and\s+", sentence) if len(p) > 2]
        if not parts or not all(p in source for p in parts):
            return False
    return True


def unfaithful(question: str, answer: str, chunk: Chunk) -> str | None:
    """Why a pair may not be trained on, or None. Training data must never say more, or the
    opposite, of what its source says:
        ungrammatical  the question carries a footnote mark, a code comment, or a discourse word
                       where its subject should be ("Do however, X ...?"), or a quote or bracket it
                       never closes
        not_verbatim   the answer (less its Yes/No and a closing section term) is not the source's
                       own words: each of its parts must stand in the chunk
        polarity       "No." where the source sentence does not negate the question's statement,
                       or "Yes." where it does (compared clause against clause)
        no_not_entailed  "No." from a "not" that leaves the answer open: "may not"/"might not"
                       (possibly not, or not allowed?) or a denied reason ("not X simply because Y")
        fragment       the answer does not end a sentence (. ! ?): a lead-in the documents cut off
                       with the list it introduces ("... means that given")
    """
    if _UNGRAMMATICAL.search(question.rstrip("?")) or _unbalanced(question):
        return "ungrammatical"
    m = _YES_NO.match(answer)
    body = _CLOSING_TOPIC.sub(".", answer[m.end():] if m else answer)
    source = _normal(chunk.heading + " . " + chunk.text)
    core = _normal(body).rstrip(".")
    if not _in_source(core, source):
        return "not_verbatim"
    if m and (m["polarity"] == "No") != (_negations(body) > _negations(question)):
        return "polarity"
    if m and m["polarity"] == "No" and (_MAY_NOT.search(_FIRST_CLAUSE.split(body)[0]) or _NOT_BECAUSE.search(body)):
        return "no_not_entailed"
    if not ENDS_A_SENTENCE.search(answer.strip()):
        return "fragment"
    return None


def _unique(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen, out = set(), []
    for q, a in pairs:
        if q.lower() not in seen:
            seen.add(q.lower())
            out.append((q, a))
    return out


class ExtractiveTeacher:
    provider = "extractive"
    name = "extractive"

    def __init__(self, about_questions: str = "off", yes_no: bool = True, yes_opener: bool = True):
        self.about_questions, self.yes_no, self.yes_opener = about_questions, yes_no, yes_opener

    async def ask(self, chunk: Chunk, n_pairs: int | None) -> Completion:
        pairs = extract_pairs(chunk, self.about_questions, self.yes_no, self.yes_opener)
        return Completion(result=pairs[:n_pairs])  # None: every pair found

    async def aclose(self) -> None:
        pass

    def close(self) -> None:
        pass
