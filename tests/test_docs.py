"""References in the code resolve inside the repository.

Comments and docs cite the project's own notes in docs/ (docs/protocol.md,
docs/provisioning.md, docs/micropython.md) by file and heading anchor. This
checks that no file points outside the repository to engineering notes a user
does not have, and that every docs/<name>.md#<anchor> cited in the code, and
every relative link between the docs, names an existing file and heading.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SCANNED = ["firmware", "tools", "provisioning", "tests", "docs", "README.md", "Makefile"]
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis", ".git", ".venv", "node_modules"}

# Built from pieces so this file does not match itself.
FORBIDDEN = ("spec " + "\u00a7", "spec" + "\u00a7", "shared" + "/spec")

DOC_REF = re.compile(r"docs/([A-Za-z0-9_.-]+\.md)(?:#([A-Za-z0-9_-]+))?")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _files():
    for name in SCANNED:
        p = ROOT / name
        if p.is_file():
            yield p
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not SKIP_DIRS.intersection(f.relative_to(ROOT).parts):
                    yield f


def _text(path):
    data = path.read_bytes()
    if b"\0" in data:
        return None  # binary (certificates, compiled files)
    return data.decode("utf-8", "replace")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    s = s.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(md):
    """Every heading anchor of a markdown file, with GitHub's -1, -2 for repeats."""
    seen = {}
    out = set()
    fence = False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        m = None if fence else HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else "%s-%d" % (base, n))
    return out


def test_slug_matches_github():
    assert slug("Last will and Connectivity") == "last-will-and-connectivity"
    assert slug("`proto-ver`") == "proto-ver"
    assert slug("Security 2") == "security-2"
    assert slug("Dict order and JSON") == "dict-order-and-json"
    assert slug("Closing asyncio streams (Stream.close)") == "closing-asyncio-streams-streamclose"


def test_no_reference_to_notes_outside_the_repository():
    bad = []
    for f in _files():
        text = _text(f)
        if text is None:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if any(s in line for s in FORBIDDEN):
                bad.append("%s:%d: %s" % (f.relative_to(ROOT), i, line.strip()))
    assert not bad, "references to notes outside the repository (cite docs/ instead):\n" + "\n".join(bad)


def test_docs_references_resolve():
    cache = {}

    def check(src, line_no, name, anchor, bad):
        md = DOCS / name
        where = "%s:%d: docs/%s%s" % (src.relative_to(ROOT), line_no, name, "#" + anchor if anchor else "")
        if not md.is_file():
            bad.append(where + " (no such file)")
            return
        if anchor:
            if md not in cache:
                cache[md] = anchors(md)
            if anchor not in cache[md]:
                bad.append(where + " (no such heading; have: %s)" % ", ".join(sorted(cache[md])))

    bad = []
    refs = 0
    for f in _files():
        text = _text(f)
        if text is None:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            for m in DOC_REF.finditer(line):
                refs += 1
                check(f, i, m.group(1), m.group(2), bad)
            if f.suffix == ".md" and f.parent == DOCS:
                # relative links between the docs: "other.md#anchor" or "#anchor"
                for m in MD_LINK.finditer(line):
                    target = m.group(1)
                    if "://" in target or target.startswith("/") or target.startswith("../"):
                        continue
                    name, _, anchor = target.partition("#")
                    if name and not name.endswith(".md"):
                        continue
                    refs += 1
                    check(f, i, name or f.name, anchor, bad)
    assert refs > 20  # the code does cite the docs
    assert not bad, "broken references to docs/:\n" + "\n".join(bad)
