"""What a local input folder holds that Hadoop's listing gets wrong, found before Spark lists it.

Hadoop's local file system follows symbolic links without remembering where it has been:
a folder linking to its own ancestor is listed again at every level (two folders linking
to each other turned 6 images into 86 rows), and a folder with two such links grows the
listing exponentially. It also cannot open a name that is not valid UTF-8 (the JVM
replaces the bytes) and drops it silently. So local inputs are walked here first:

- links are followed (a data set assembled from links is common), and every real file counts
  once: a file reached again through a link (an alias) is skipped, keeping the path that
  goes through no link (else the first in sorted order);
- a folder link that leads back to one of its own ancestors is refused (the listing would
  never end): one line names the link;
- names that are not valid UTF-8 are recorded as errors with a reason.

- files that cannot be read as files (a broken link, a named pipe: reading one would block
  its task forever) are recorded as errors too.

The walk also keeps what it finds, so that Spark need not list the folder again: the paths in
Spark's spelling, as Arrow strings (~100 bytes a file, in chunks: no Python object per file
is kept). Hadoop's listing of the same tree cost the JVM ~90 us and ~3 KB a file (14,410
images: 1.3 s); this walk ~7 us (BENCHMARKS.md, twelfth round). A tree with links is walked a
second time, noting the real path of every image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from featurizer.errors import ConfigError
from featurizer.images import hidden, is_image_name


@dataclass
class LocalScan:
    aliases: list[str] = field(default_factory=list)  # Spark paths to skip
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    links: int = 0
    # Spark paths of the files to read, aliases left out; None: not walked (no such folder,
    # a single file, a glob), Spark lists the input then.
    paths: pa.ChunkedArray | None = None


CHUNK = 8192  # paths gathered as Python strings before they become one Arrow chunk


def spark_path(local: str) -> str:
    """The `path` column binaryFile gives a local file: file:/abs/path, not URI-encoded."""
    return "file:" + local


def printable(local: str) -> str:
    """A path with undecodable bytes shown as \\xNN (os.fsdecode keeps them as surrogates)."""
    return local.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def scan(root: str) -> LocalScan:
    """Walk `root` (a local folder) as Spark's listing would, minus its blind spots."""
    if not os.path.isdir(root):
        return LocalScan()
    result = _walk(root, record=False)
    if result.links:  # links seen: walk again, noting where each file really is
        result = _walk(root, record=True)
        if result.aliases and result.paths is not None:
            kept = pc.invert(pc.is_in(result.paths, value_set=pa.array(result.aliases)))
            result.paths = result.paths.filter(kept)
    return result


def _walk(root: str, record: bool) -> LocalScan:
    result = LocalScan()
    reached: dict[str, list[tuple[bool, str]]] = {}  # real file -> [(via a link, path)]
    chunks: list[pa.Array] = []
    batch: list[str] = []
    # Depth first, names sorted: (folder, its real path, real folders above it, via a link)
    stack: list[tuple[str, str, tuple[str, ...], bool]] = [
        (root, os.path.realpath(root), (), False)
    ]
    while stack:
        folder, real, above, via_link = stack.pop()
        chain = above + (real,)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name, reverse=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot read input folder {printable(folder)}: {exc.strerror or exc}"
            ) from None
        for entry in entries:
            if hidden(entry.name):
                continue
            link = entry.is_symlink()
            result.links += link
            if entry.is_dir():  # follows links
                target = os.path.realpath(entry.path) if link else os.path.join(real, entry.name)
                if link and _leads_back(target, chain):
                    raise ConfigError(
                        f"input folder link {printable(entry.path)} -> {printable(target)} "
                        f"leads back into a folder above it (the listing would never end): "
                        f"remove the link or choose an --input that does not hold it"
                    )
                stack.append((entry.path, target, chain, via_link or link))
            elif is_image_name(entry.name):
                reason = _unreadable(entry)
                if reason:
                    result.unreadable.append((spark_path(printable(entry.path)), reason))
                    continue
                batch.append(spark_path(entry.path))
                if len(batch) == CHUNK:
                    chunks.append(pa.array(batch, pa.string()))
                    batch.clear()
                if record:
                    through = via_link or link
                    real_file = (
                        os.path.realpath(entry.path) if through else os.path.join(real, entry.name)
                    )
                    reached.setdefault(real_file, []).append((through, entry.path))
    result.paths = pa.chunked_array([*chunks, pa.array(batch, pa.string())])
    for paths in reached.values():
        if len(paths) > 1:
            keep = min(paths)  # a path through no link first, then by name
            result.aliases += [spark_path(path) for via, path in paths if (via, path) != keep]
    result.aliases.sort()
    return result


def _leads_back(target: str, chain: tuple[str, ...]) -> bool:
    """Is `target` one of the folders being listed (`chain`) or above one of them?"""
    return any(target == folder or folder.startswith(target.rstrip("/") + "/") for folder in chain)


def _unreadable(entry: os.DirEntry) -> str | None:
    """Why an image-named entry that is not a folder cannot be read as a file, if it cannot."""
    if not _utf8(entry.path):  # the name, or a folder's above it
        return "file name is not valid UTF-8: Spark cannot open it (rename the file)"
    if entry.is_file():
        return None
    if entry.is_symlink() and not os.path.exists(entry.path):
        return "broken link: its target does not exist"
    return "not a regular file (a pipe, socket or device)"


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
