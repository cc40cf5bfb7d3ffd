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

Given a folder, the walk also writes what it finds there, so that Spark need not list the input
again: the paths in Spark's spelling, as Parquet files of `per_file` paths (a fresh run's queue,
FileSource.enqueue), written as the walk goes (no memory per file). Hadoop's listing of the
same tree cost the JVM ~90 us and ~3 KB a file (14,410 images: 1.3 s); this walk ~7 us
(BENCHMARKS.md, twelfth round). A tree with links is walked a second time, noting the real path
of every image (memory per file then).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from featurizer.errors import ConfigError
from featurizer.images import hidden, is_image_name


@dataclass
class LocalScan:
    aliases: list[str] = field(default_factory=list)  # Spark paths to skip
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    links: int = 0
    # A folder of Parquet files of the Spark paths to read (aliases left out), `listed` of
    # them; None: not written (no folder given, no such input folder, a single file, a
    # glob): Spark lists the input then.
    files: str | None = None
    listed: int = 0


class _Files:
    """Paths written as they come, `per_file` to a Parquet file of one `path` column."""

    def __init__(self, folder: str, per_file: int) -> None:
        self.folder, self.per_file = folder, per_file
        self.batch: list[str] = []
        self.written = 0

    def add(self, path: str) -> None:
        self.batch.append(path)
        if len(self.batch) == self.per_file:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.batch:
            name = f"part-{self.written // self.per_file:05d}.parquet"
            pq.write_table(
                pa.table({"path": pa.array(self.batch, pa.string())}),
                os.path.join(self.folder, name),
            )
            self.written += len(self.batch)
            self.batch.clear()


def spark_path(local: str) -> str:
    """The `path` column binaryFile gives a local file: file:/abs/path, not URI-encoded."""
    return "file:" + local


def printable(local: str) -> str:
    """A path with undecodable bytes shown as \\xNN (os.fsdecode keeps them as surrogates)."""
    return local.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def scan(root: str, folder: str | None = None, per_file: int = 4096) -> LocalScan:
    """Walk `root` (a local folder) as Spark's listing would, minus its blind spots; with
    `folder` (an empty one), write the paths to read there too (LocalScan.files)."""
    if not os.path.isdir(root):
        return LocalScan()
    files = _Files(folder, per_file) if folder else None
    result = _walk(root, record=False, add=files.add if files else None)
    if result.links:  # links seen: walk again, noting where each file really is
        kept: list[str] = []
        result = _walk(root, record=True, add=kept.append)
        if files is not None:  # written again, without the aliases
            for name in os.listdir(files.folder):
                os.remove(os.path.join(files.folder, name))
            files = _Files(files.folder, per_file)
            skip = set(result.aliases)
            for path in kept:
                if path not in skip:
                    files.add(path)
    if files is not None:
        files.flush()
        result.files, result.listed = files.folder, files.written
    return result


def _walk(root: str, record: bool, add: Callable[[str], None] | None = None) -> LocalScan:
    """One walk, handing each readable image's Spark path to `add`."""
    result = LocalScan()
    reached: dict[str, list[tuple[bool, str]]] = {}  # real file -> [(via a link, path)]
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
                if add is not None:
                    add(spark_path(entry.path))
                if record:
                    through = via_link or link
                    real_file = (
                        os.path.realpath(entry.path) if through else os.path.join(real, entry.name)
                    )
                    reached.setdefault(real_file, []).append((through, entry.path))
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
