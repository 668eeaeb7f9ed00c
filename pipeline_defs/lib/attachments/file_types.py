"""File-type allowlist: the URL's extension, the response's content type and, where it is
cheap, the first bytes must all agree."""

from __future__ import annotations

from dataclasses import dataclass


class WrongFileType(Exception):
    pass


@dataclass(frozen=True)
class FileType:
    content_types: frozenset[str]
    magic: tuple[bytes, ...] = ()  # any prefix matches; empty: no magic check
    magic_offset: int = 0


_XML = FileType(frozenset({"application/xml", "text/xml"}), (b"<", b"\xef\xbb\xbf<"))
_JPEG = FileType(frozenset({"image/jpeg", "image/jpg", "image/pjpeg"}), (b"\xff\xd8\xff",))
_TIFF = FileType(frozenset({"image/tiff"}), (b"II*\x00", b"MM\x00*"))
_HEIF = FileType(frozenset({"image/heic", "image/heif"}), (b"ftyp",), magic_offset=4)
_MP4 = FileType(frozenset({"video/mp4", "video/quicktime"}), (b"ftyp",), magic_offset=4)

KNOWN_TYPES: dict[str, FileType] = {
    "pdf": FileType(frozenset({"application/pdf"}), (b"%PDF-",)),
    "xml": _XML,
    "jpg": _JPEG,
    "jpeg": _JPEG,
    "png": FileType(frozenset({"image/png"}), (b"\x89PNG\r\n\x1a\n",)),
    "gif": FileType(frozenset({"image/gif"}), (b"GIF87a", b"GIF89a")),
    "tif": _TIFF,
    "tiff": _TIFF,
    "heic": _HEIF,
    "heif": _HEIF,
    "mp4": _MP4,
    "mov": _MP4,
    "txt": FileType(frozenset({"text/plain"})),
    "csv": FileType(frozenset({"text/csv", "text/plain"})),
    "docx": FileType(
        frozenset({"application/vnd.openxmlformats-officedocument.wordprocessingml.document"}),
        (b"PK\x03\x04",),
    ),
    "xlsx": FileType(
        frozenset({"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}),
        (b"PK\x03\x04",),
    ),
}

# Object stores often label everything this way; then the magic bytes must decide.
GENERIC_CONTENT_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
MAGIC_BYTES_NEEDED = 16


def check_extension(extension: str, allowed: frozenset[str]) -> FileType:
    if extension not in allowed or extension not in KNOWN_TYPES:
        raise WrongFileType(f"extension {extension or '(none)'!r} not allowed")
    return KNOWN_TYPES[extension]


def check_content(extension: str, content_type: str, head: bytes) -> None:
    """Raise ``WrongFileType`` unless the response looks like a file of ``extension``."""
    expected = KNOWN_TYPES[extension]
    base_type = content_type.split(";", 1)[0].strip().lower()
    if base_type not in expected.content_types and base_type not in GENERIC_CONTENT_TYPES:
        raise WrongFileType(f"content type {base_type or '(none)'!r} does not match .{extension}")
    if expected.magic:
        window = head[expected.magic_offset :]
        if not any(window.startswith(m) for m in expected.magic):
            raise WrongFileType(f"content does not start like a .{extension} file")
