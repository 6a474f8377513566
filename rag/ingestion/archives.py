"""Zip archives (``.docx .xlsx .xlsm .pptx``, and an ``.xls`` that is really an ``.xlsx``) checked before any
parser opens them.

A zip bomb is a small file that inflates to gigabytes: a 1.2 MB ``.docx`` whose ``document.xml`` unpacks to
384 MB took 5.4 GB of memory in python-docx, which parses each part whole. :func:`check_archive` refuses, with an
:class:`ArchiveRefused` naming the setting to raise, an archive whose members together unpack to
more than :attr:`ZipLimits.max_bytes`, one member packed more tightly than :attr:`ZipLimits.max_ratio` to one, or
one of more than :attr:`ZipLimits.max_members` members.

The sizes a zip's central directory declares may lie. Python's :mod:`zipfile`, which every reader here goes
through, never yields more than a member's declared size, but reading a member whole inflates all of its
compressed data (up to 2 GB) before cutting it to that size: a crafted 60 kB file declaring 3 kB took 60 MB. So each deflated member is inflated once here, a
block at a time, and an archive holding more than it declares is refused; the compression ratio is then measured
on what the data really holds. Only the two methods Office files use are accepted: stored and deflated
(:mod:`zipfile` inflates bzip2 and LZMA members with no bound on what one call gives).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings

# A member smaller than this, unpacked, is harmless however tightly it is packed (a blank sheet's XML is).
RATIO_GRACE_BYTES = 1_000_000
_BLOCK = 1 << 20  # compressed bytes read, and at most this many inflated bytes held, at a time
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then the file name's and the extra field's lengths
_LOCAL_SIGNATURE = b"PK\x03\x04"
_ENCRYPTED = 0x1


class ArchiveRefused(Exception):
    """A zip archive is not unpacked; the message is the user-facing reason (the readers turn it into a
    :class:`~rag.ingestion.reading.LoadError`)."""


@dataclass(frozen=True)
class ZipLimits:
    """How far a zip archive may unpack (see :class:`rag.config.Settings`: ``max_unzipped_mb``,
    ``max_zip_ratio``, ``max_zip_members``)."""

    max_bytes: int = 256_000_000  # all members together, unpacked
    max_ratio: float = 100.0  # unpacked size / packed size of one member (over RATIO_GRACE_BYTES unpacked)
    max_members: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> ZipLimits:
        """The limits ``settings`` give."""
        return cls(int(settings.max_unzipped_mb * 1e6), settings.max_zip_ratio, settings.max_zip_members)


def check_archive(path: Path, limits: ZipLimits) -> None:
    """Raise :class:`ArchiveRefused` when ``path`` is a zip archive that would unpack past
    ``limits`` or holds more than it declares; return quietly for anything else (a file that is no zip is its
    reader's to judge, and so is an archive zipfile cannot list: its reader fails on it the same way, before
    unpacking anything)."""
    with open(path, "rb") as fh:
        try:
            archive = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, struct.error):
            return
        with archive:
            members = archive.infolist()
            kind = path.suffix or "zip"
            if len(members) > limits.max_members:
                raise ArchiveRefused(f"refused: the {kind} archive holds {len(members)} files, more than the "
                                     f"{limits.max_members} allowed (max_zip_members)")
            declared = sum(m.file_size for m in members)
            if declared > limits.max_bytes:
                raise ArchiveRefused(f"refused: the {kind} archive would unpack to {_mb(declared)}, more than the "
                                     f"{_mb(limits.max_bytes)} allowed (max_unzipped_mb)")
            for member in members:
                if member.flag_bits & _ENCRYPTED:
                    raise ArchiveRefused(f"refused: {member.filename} in the {kind} archive is encrypted")
                if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise ArchiveRefused(f"refused: {member.filename} in the {kind} archive is packed with compression "
                                         f"method {member.compress_type}, which Office files do not use")
                _check_ratio(kind, member.filename, member.file_size, member.compress_size, limits)
            for member in members:
                if member.compress_type != zipfile.ZIP_DEFLATED:
                    continue  # a stored member is its compressed bytes, which zipfile cuts to the declared size
                inflated, packed = _inflate(fh, member, kind)
                if inflated > member.file_size:
                    raise ArchiveRefused(f"refused: {member.filename} in the {kind} archive holds more than the "
                                         f"{member.file_size} bytes it declares (a damaged or crafted file)")
                _check_ratio(kind, member.filename, inflated, packed, limits)


def _check_ratio(kind: str, name: str, unpacked: int, packed: int, limits: ZipLimits) -> None:
    if unpacked > RATIO_GRACE_BYTES and unpacked > limits.max_ratio * max(packed, 1):
        raise ArchiveRefused(f"refused: {name} in the {kind} archive would unpack to {_mb(unpacked)} from "
                             f"{packed / 1e3:.0f} kB ({unpacked / max(packed, 1):.0f} to 1, more than the "
                             f"{limits.max_ratio:g} to 1 allowed: max_zip_ratio); a zip bomb?")


def _inflate(fh: IO[bytes], member: zipfile.ZipInfo, kind: str) -> tuple[int, int]:
    """``(bytes inflated, compressed bytes used)`` of a deflated member, reading the compressed bytes its entry
    declares (what zipfile reads) a block at a time, and stopping once past its declared size."""
    fh.seek(member.header_offset)
    header = fh.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or _LOCAL_HEADER.unpack(header)[0] != _LOCAL_SIGNATURE:
        raise ArchiveRefused(f"not a readable {kind} file (damaged zip archive: no header for {member.filename})")
    _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    fh.seek(member.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as zip members hold it
    inflated = read = 0
    left = member.compress_size
    try:
        while left > 0 and not inflater.eof and inflated <= member.file_size:
            block = fh.read(min(left, _BLOCK))
            if not block:
                break
            left -= len(block)
            read += len(block)
            pending = block
            while pending and inflated <= member.file_size:
                inflated += len(inflater.decompress(pending, _BLOCK))
                pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise ArchiveRefused(f"not a readable {kind} file (damaged zip archive: {member.filename}: {exc})") from None
    return inflated, read - len(inflater.unused_data)


def _mb(size: float) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size / 1e6:.1f} MB"
