"""Words, content words and complete sentences: the vocabulary the forge's filters, retrieval,
coverage and the offline judge count with.

The offline judge's scores depend on these lists; `tests/test_judge.py` holds their digest beside
the judge's version name (judge/offline.py NAME), so changing them means a new judge version.
"""

from __future__ import annotations

import re
import unicodedata

# A compact English stop list: these words carry no fact, so overlap is measured without them.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers him his how i if in into is it its itself just may me might more most
    must my no nor not now of off on once only or other our ours out over own same shall she should so
    some such than that the their theirs them then there these they this those through to too under
    until up very was we were what when where which while who whom why will with would you your yours
    it's i'm don't yes""".split()
)
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(unicodedata.normalize("NFKC", text))]


def content_words(text: str) -> set[str]:
    """Lower-cased words minus stop words, with a light plural strip (terms -> term)."""
    out = set()
    for w in words(text):
        if w in STOPWORDS or (len(w) < 2 and not w.isdigit()):
            continue
        out.add(w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w)
    return out


_OPENS_POLAR = re.compile(r"^(?:yes|no)[.,]\s+", re.I)
ENDS_A_SENTENCE = re.compile(r"[.!?][\"'”’)]*$")  # . ! or ?, then any closing quotes or bracket


def is_complete_sentence(answer: str) -> bool:
    """At least five words, opening with a capital or a digit and closing with . ! or ? (after a
    leading Yes./No.): a statement, not a fragment such as "Six years." or "A voidable.". After
    "Yes," or "No," the sentence goes on, so it may open in lower case ("No, the file must not
    exist.")."""
    answer = answer.strip()
    opener = _OPENS_POLAR.match(answer)
    body = answer[opener.end():] if opener else answer
    goes_on = bool(opener) and opener.group().rstrip().endswith(",")
    opens = body[:1].isupper() or body[:1].isdigit() or (goes_on and body[:1].isalpha())
    return len(body.split()) >= 5 and opens and bool(ENDS_A_SENTENCE.search(body))


