"""`opensem golden check`: is this golden set able to tell a right answer from a wrong one?

A key fact is a case-insensitive regular expression that a correct answer must match. A loose
one lets wrong answers pass, and then every score built on it is noise. For each item:

errors (the check fails, exit 2; baseline, evaluate and pipeline refuse to run):
    own-answer     its own golden answer misses a key fact (the oracle control could not pass)
    in-question    its own question matches a key fact (restating the question scores it)
    cross-answer   another item's golden answer matches all its key facts (a wrong answer to
                   this question passes it)
    An item named in `golden.allow_overlap` (id -> reason) is exempt from the last two.
warnings (printed, never fatal):
    short-token    a short word or a number matches inside longer words ("four" in "Balfour",
                   "18" in "1854", "less" in "unless"): write \\b(four|4)\\b
    polarity-only  a bare "Yes." or "No." states every key fact: pair the polarity with the
                   content fact
    bare-polarity  a bare "Yes." or "No." states one of its key facts: half credit for a guess
    single-fact    one key fact only: one lucky word passes the item
The table also counts, per item, how many of its single key facts some other item's answer
matches (the cross-answer control for single facts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from opensem.errors import OpenSEMError
from opensem.golden import GoldenItem

# Replies that state nothing but a polarity: a fact any of these matches is a polarity fact.
POLARITY_REPLIES = ("Yes.", "No.", "Yes, it is.", "No, it is not.", "Yes, it does.", "No, it does not.",
                    "Yes, you can.", "No, you cannot.", "It is not.", "Not necessarily.", "Generally not.")
NUMBER_WORDS = frozenset("""one two three four five six seven eight nine ten eleven twelve thirteen fourteen
    fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety
    hundred thousand million first second third fourth fifth sixth""".split())
_ESCAPE = re.compile(r"\\.")
_TOKEN = re.compile(r"[A-Za-z0-9]+")


@dataclass
class ItemCheck:
    id: str
    n_facts: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    allowed: str | None = None  # the reason from golden.allow_overlap, when an overlap was exempted
    full_matches: list[str] = field(default_factory=list)  # other items whose answers state all its facts
    facts_matched_elsewhere: int = 0  # of its key facts, how many some other item's answer matches


@dataclass
class LintReport:
    path: Path
    items: list[ItemCheck]
    config_errors: list[str] = field(default_factory=list)

    @property
    def failing(self) -> list[ItemCheck]:
        return [i for i in self.items if i.errors]

    @property
    def ok(self) -> bool:
        return not (self.failing or self.config_errors)

    @property
    def n_warnings(self) -> int:
        return sum(len(i.warnings) for i in self.items)

    def verdict(self) -> str:
        errors = len(self.failing) + len(self.config_errors)
        state = "passes" if self.ok else "FAILS"
        return (f"golden set {self.path.name}: {state}: {len(self.items)} items, {errors} with errors, "
                f"{sum(1 for i in self.items if i.warnings)} with warnings ({self.n_warnings} warnings)")

    def raise_on_errors(self, sem_name: str) -> None:
        if self.config_errors:
            raise OpenSEMError(f"{self.path}: {self.config_errors[0]}")
        if self.failing:
            shown = "; ".join(f"{i.id}: {i.errors[0]}" for i in self.failing[:4])
            more = f" (and {len(self.failing) - 4} more)" if len(self.failing) > 4 else ""
            raise OpenSEMError(
                f"{self.path}: {len(self.failing)} golden items cannot tell right answers from wrong ones - {shown}{more}; "
                f"tighten their key_facts (see `opensem golden check --sem {sem_name}`), or exempt an item with a reason "
                f"under golden.allow_overlap in configs/sems/{sem_name}.yaml")


def matches(fact: str, text: str) -> bool:
    return re.search(fact, text, re.I) is not None


def short_tokens_unbounded(fact: str) -> list[str]:
    """Short words and numbers of a key fact that it also matches inside a longer word.

    Found by probing, not by parsing the pattern: each short token is wrapped in letters (or
    digits, for a number) and the fact is tried on that, so `\\b(six|6)\\b` passes and `six|6`
    does not, however the pattern is written."""
    loose = []
    for token in dict.fromkeys(_TOKEN.findall(_ESCAPE.sub(" ", fact))):
        is_number = token.isdigit() or token.lower() in NUMBER_WORDS
        if not (is_number or len(token) <= 4):
            continue
        pad = "9" if token.isdigit() else "q"
        probes = (f"{pad}{token}{pad}", f"{pad}{token}", f"{token}{pad}", f"{pad}{token} ", f"{pad}{token}.")
        if any(matches(fact, probe) for probe in probes):
            loose.append(token)
    return loose


def _is_polarity(fact: str) -> bool:
    return any(matches(fact, reply) for reply in POLARITY_REPLIES)


def check(items: list[GoldenItem], path: Path, allow_overlap: dict[str, str] | None = None) -> LintReport:
    allow_overlap = allow_overlap or {}
    known = {i.id for i in items}
    report = LintReport(path, [])
    for name in allow_overlap:
        if name not in known:
            report.config_errors.append(f"golden.allow_overlap names item {name!r}, which is not in the golden set; remove it")
        elif not str(allow_overlap[name]).strip():
            report.config_errors.append(f"golden.allow_overlap[{name!r}] needs a reason: say why the overlap is acceptable")
    for item in items:
        result = ItemCheck(item.id, len(item.key_facts))
        if item.id.startswith("example-") or item.question.startswith("Replace me"):
            result.errors.append("placeholder: the example item `opensem new-sem` wrote; replace it with a real question")
        missed = [f for f in item.key_facts if not matches(f, item.answer)]
        if missed:
            result.errors.append(f"own-answer: its golden answer does not match key fact {missed[0]!r}")
        overlaps = []
        in_question = [f for f in item.key_facts if matches(f, item.question)]
        if in_question:
            overlaps.append(f"in-question: its question matches key fact {in_question[0]!r}")
        others = [o for o in items if o.id != item.id]
        result.full_matches = [o.id for o in others if all(matches(f, o.answer) for f in item.key_facts)]
        result.facts_matched_elsewhere = sum(1 for f in item.key_facts if any(matches(f, o.answer) for o in others))
        if result.full_matches:
            overlaps.append(f"cross-answer: the answer of {', '.join(result.full_matches[:3])} matches all its key facts")
        if overlaps and item.id in allow_overlap:
            result.allowed = allow_overlap[item.id]
        else:
            result.errors += overlaps

        for fact in item.key_facts:
            loose = short_tokens_unbounded(fact)
            if loose:
                bounded = "|".join(loose)
                result.warnings.append(f"short-token: {fact!r} matches {loose[0]!r} inside longer words; write \\b({bounded})\\b")
        if all(_is_polarity(f) for f in item.key_facts):
            result.warnings.append("polarity-only: a bare yes/no states every key fact; add the content fact")
        elif bare := [f for f in item.key_facts if matches(f, "Yes.") or matches(f, "No.")]:
            result.warnings.append(f"bare-polarity: a bare \"Yes.\" or \"No.\" matches key fact {bare[0]!r}; "
                                   "bind the polarity to its content (\"not required\", not \"\\bno\\b|...\")")
        if len(item.key_facts) == 1:
            result.warnings.append("single-fact: one key fact only; add a second where the answer has one")
        report.items.append(result)
    return report


def print_report(report: LintReport, console) -> None:
    from rich.table import Table

    table = Table(title=f"golden check: {report.path}", show_lines=False)
    for column in ("item", "facts", "matched elsewhere", "problems"):
        table.add_column(column, overflow="fold")
    for item in report.items:
        problems = [f"[red]error[/red] {e}" for e in item.errors] + [f"[yellow]warn[/yellow] {w}" for w in item.warnings]
        if item.allowed:
            problems.append(f"[dim]overlap allowed: {item.allowed}[/dim]")
        if problems:
            elsewhere = f"{item.facts_matched_elsewhere}/{item.n_facts}" + (f", all by {len(item.full_matches)}" if item.full_matches else "")
            table.add_row(item.id, str(item.n_facts), elsewhere, "\n".join(problems))
    if table.row_count:
        console.print(table)
    for problem in report.config_errors:
        console.print(f"[red]error[/red] {problem}")
    colour = "green" if report.ok else "red"
    console.print(f"[bold {colour}]{report.verdict()}[/bold {colour}]", highlight=False)


def check_sem(sem, cfg, items: list[GoldenItem] | None = None, console=None) -> LintReport:
    """The check that baseline, evaluate and pipeline run first: errors stop them (exit 2),
    warnings are one line."""
    from opensem.golden import load_golden_for_scoring

    items = items if items is not None else load_golden_for_scoring(sem.golden_set)
    report = check(items, sem.golden_set, cfg.golden.allow_overlap)
    report.raise_on_errors(sem.name)
    if console is not None and report.n_warnings:
        console.print(f"[yellow]{report.verdict()}[/yellow] - details: opensem golden check --sem {sem.name}",
                      highlight=False, soft_wrap=True)
    return report


def run(sem, cfg) -> LintReport:
    """`opensem golden check`: the whole table, then the verdict (the CLI exits 2 unless `ok`)."""
    from rich.console import Console

    from opensem.golden import load_golden

    report = check(load_golden(sem.golden_set), sem.golden_set, cfg.golden.allow_overlap)
    print_report(report, Console(soft_wrap=True))
    return report
