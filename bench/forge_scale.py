"""How the forge's time and memory grow with the corpus: 1, 10 and 50 MB of documents.

    python -m bench forge_scale                 # 1, 10 and 50 MB (the 50 MB case takes the longest)
    python -m bench forge_scale --sizes 1,10    # megabytes of text per case

Each case is a project copy of legal (its golden and dev sets, so decontamination runs as it
does for a user) whose raw/ holds generated documents of about 200 KB each, up to the size:
the text of the three sample SEMs' documents (legal, debian-policy, sqlite), copy k with every
capitalised word and number marked with k, so no sentence repeats across copies and the
near-duplicate filter has real work, not a corpus it can collapse. `opensem forge` runs on the
defaults (the offline extractive teacher, forge.max_pairs) in a process of its own. Printed per
case: megabytes, chunks, chunks asked, pairs kept, seconds, seconds per MB, and the forge
process's peak resident memory. What should hold (issue 48): seconds per MB about the same in
every case, and peak memory bounded by the pairs cap, not growing with the corpus.
Results: docs/measurements/forge-scale.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, project_copy
from bench.memory import measured

SOURCES = ("legal", "debian-policy", "sqlite")
DOCUMENT_BYTES = 200_000
MARKED = re.compile(r"\b([A-Z][a-z]+|\d+)\b")


def write_corpus(raw: Path, megabytes: float) -> int:
    """Documents of about DOCUMENT_BYTES each in raw/ until `megabytes` are written; returns bytes."""
    texts = [p.read_text(encoding="utf-8") for sem in SOURCES for p in sorted((ROOT / "data" / sem / "raw").iterdir()) if p.is_file()]
    shutil.rmtree(raw)
    raw.mkdir(parents=True)
    goal, written, copy, document, part = int(megabytes * 1_000_000), 0, 0, 0, []
    while written < goal:
        for text in texts:
            marked = MARKED.sub(lambda m, k=copy: f"{m.group(1)}{'' if m.group(1).isdigit() else '-'}{k}", text)
            part.append(marked)
            if sum(len(t) for t in part) >= DOCUMENT_BYTES or written + sum(len(t) for t in part) >= goal:
                body = "\n\n".join(part)
                (raw / f"doc-{document:05d}.md").write_text(f"# Collection part {document}\n\n{body}\n", encoding="utf-8")
                written += len(body.encode("utf-8"))
                document, part = document + 1, []
                if written >= goal:
                    break
        copy += 1
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench forge_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,50", help="corpus sizes in MB (default 1,10,50)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="a config override for the forge")
    args = parser.parse_args(argv or [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (float(s) for s in args.sizes.split(",")):
            project = project_copy(Path(tmp) / f"{size:g}mb", "legal")
            written = write_corpus(project / "data" / "legal" / "raw", size)
            sets = sum((["--set", s] for s in args.sets), [])
            seconds, peak = measured([sys.executable, "-m", "opensem", "forge", "--sem", "legal", *sets], project,
                                     Path(tmp) / f"forge-{size:g}mb.log")
            manifest = json.loads((project / "data" / "legal" / "processed" / "manifest.json").read_text())
            rows.append((written / 1e6, manifest.get("chunks"), manifest.get("chunks_asked"), manifest.get("pairs_kept"),
                         seconds, peak))
            print(f"  {written / 1e6:.1f} MB: {seconds:.0f} s, peak {peak:.2f} GB", flush=True)
            shutil.rmtree(project)

    print("\n| corpus (MB) | chunks | chunks asked | pairs kept | seconds | seconds per MB | peak RSS (GB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mb, chunks, asked, kept, seconds, peak in rows:
        print(f"| {mb:.1f} | {chunks} | {asked} | {kept} | {seconds:.0f} | {seconds / mb:.1f} | {peak:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
