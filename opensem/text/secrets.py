"""Credentials inside documents (forge.secrets): found before the forge writes anything.

A key pasted into a document would be copied into training pairs, the teacher's prompts and
cache, MLflow artifacts, the logged model's passages and every adapter. The documents as read
(ingest.py) are scanned with detect-secrets' detectors for credentials that have a known shape
(cloud and API keys, tokens, private keys, user:password in URLs). Its detectors that flag
ordinary prose are left out: high-entropy strings (checksums, ids and hashes that documentation
quotes), password keywords, and IP addresses.

    stop    (default) one line naming document:line and kind of each, nothing written
    redact  each whitespace-delimited word holding one becomes [REDACTED], everywhere it is read
    allow   read as they are
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from opensem.errors import OpenSEMError

# detect-secrets' detectors that flag ordinary documentation text, not credentials
PROSE_DETECTORS = {"Base64 High Entropy String", "Hex High Entropy String", "Secret Keyword", "Public IP (ipv4)"}
REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class Finding:
    document: str
    line: int  # 1-based, in the document as read (a PDF's or page's extracted text)
    kind: str
    value: str


def find(docs) -> list[Finding]:
    """Every credential detect-secrets' credential detectors find in the documents."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import transient_settings

    plugins = [{"name": cls.__name__} for kind, cls in get_mapping_from_secret_type_to_class().items() if kind not in PROSE_DETECTORS]
    found = []
    with transient_settings({"plugins_used": plugins, "filters_used": []}):
        for doc in docs:
            for number, line in enumerate(doc.text.splitlines(), 1):
                found += [Finding(doc.name, number, s.type, s.secret_value or "") for s in scan_line(line)]
    return found


def redacted(text: str, values: set[str]) -> str:
    """The text with each word (run of non-space characters) that holds one of the values replaced."""
    import re

    wanted = [v for v in values if v]
    if not wanted:
        return text
    return re.sub(r"\S+", lambda m: REDACTED if any(v in m.group(0) for v in wanted) else m.group(0), text)


def checked(docs, policy: str, raw_dir) -> list:
    """The documents under the forge.secrets policy: as they are (allow, or none found), redacted,
    or a one-line error that names where each credential is (stop)."""
    if policy == "allow":
        return docs
    findings = find(docs)
    if not findings:
        return docs
    if policy == "redact":
        by_document: dict[str, set[str]] = {}
        for f in findings:
            by_document.setdefault(f.document, set()).add(f.value)
        return [replace(d, text=redacted(d.text, by_document[d.name])) if d.name in by_document else d for d in docs]
    where = ", ".join(f"{raw_dir}/{f.document}:{f.line} ({f.kind})" for f in findings[:5])
    more = f" and {len(findings) - 5} more" if len(findings) > 5 else ""
    raise OpenSEMError(f"the documents hold what look like credentials: {where}{more}; they would be copied into the training "
                       "pairs, MLflow and every adapter. Remove them, or --set forge.secrets=redact to replace them with "
                       f"{REDACTED} (forge.secrets=allow keeps them)")
