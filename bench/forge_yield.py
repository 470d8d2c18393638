"""`python -m bench forge_yield [FOLDER ...]`: how much training data does the offline teacher make?

Per corpus: KB of text after ingest, pairs the extractive teacher writes and the faithfulness and
quality checks keep (before near-duplicate removal and decontamination, which depend on the run),
pairs per KB, the share of yes/no answers, and the rejections by reason (`--about` or `--about=every`:
with that experimental.about_questions). The corpora: the three
sample SEMs, and any folder named on the command line - a real corpus nobody here wrote, with no
golden set, so that a change to the teacher is checked on text it was not written against. Two
that Debian ships and were used that way (not part of the project):

    apt-get download developers-reference python3.11-doc && for f in *.deb; do dpkg-deb -x "$f" x; done
    # x/usr/share/developers-reference/{best-pkging-practices,developer-duties,beyond-pkging}.html
    # x/usr/share/doc/python3.11/html/tutorial/{controlflow,datastructures,classes,errors}.html

Takes seconds; no model is loaded.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEMS = ["legal", "debian-policy", "sqlite"]


def measure(folder: Path, about_questions: str = "off") -> dict:
    from opensem.config import load_config
    from opensem.text.chunk import chunk_document
    from opensem.forge.extractive import extract_pairs, unfaithful
    from opensem.text.ingest import ingest
    from opensem.forge.quality import check_pair

    fcfg = load_config(ROOT, "legal", []).forge  # the project defaults' filter thresholds
    docs, _ = ingest(folder)
    kb = sum(len(d.text.encode()) for d in docs) / 1000
    kept, rejected = [], Counter()
    for doc in docs:
        # chunks as the forge makes them with its defaults, a rough token count for speed
        for chunk in chunk_document(doc, lambda s: max(1, len(s) // 4), fcfg.chunk_tokens, fcfg.chunk_overlap):
            for question, answer in extract_pairs(chunk, about_questions):
                reason = unfaithful(question, answer, chunk) or check_pair(question, answer, chunk.text, fcfg)
                if reason:
                    rejected[reason] += 1
                else:
                    kept.append(answer)
    yes_no = sum(a.startswith(("Yes. ", "No. ")) for a in kept)
    return {"kb": kb, "kept": len(kept), "per_kb": len(kept) / kb if kb else 0.0, "yes_no": yes_no / len(kept) if kept else 0.0,
            "rejected": dict(rejected.most_common())}


def main(args: list[str] | None = None) -> dict:
    """args: folders of documents; `--about=MODE` sets experimental.about_questions."""
    args = list(args or [])
    about = next((a.split("=", 1)[1] if "=" in a else "unmatched" for a in args if a.split("=")[0] == "--about"), "off")
    args = [a for a in args if a.split("=")[0] != "--about"]
    folders = {sem: ROOT / "data" / sem / "raw" for sem in SEMS} | {Path(a).name: Path(a) for a in args}
    print("| corpus | KB | pairs kept | per KB | yes/no share | rejected |")
    print("| --- | --- | --- | --- | --- | --- |")
    results = {}
    for name, folder in folders.items():
        r = results[name] = measure(folder, about)
        rejected = ", ".join(f"{k} {v}" for k, v in r["rejected"].items()) or "none"
        print(f"| {name} | {r['kb']:.1f} | {r['kept']} | {r['per_kb']:.2f} | {r['yes_no']:.0%} | {rejected} |", flush=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
