import pytest

from pipeline_defs.lib.attachments.file_types import WrongFileType, check_content, check_extension

XACT_ALLOWED = frozenset({"pdf", "xml", "jpg", "jpeg", "png"})


def test_extension_must_be_allowlisted():
    assert check_extension("pdf", XACT_ALLOWED)
    for extension in ("exe", "html", "", "mp4"):
        with pytest.raises(WrongFileType):
            check_extension(extension, XACT_ALLOWED)


@pytest.mark.parametrize(
    "extension, content_type, head",
    [
        ("pdf", "application/pdf", b"%PDF-1.7\n..."),
        ("pdf", "application/octet-stream", b"%PDF-1.4"),
        ("jpg", "image/jpeg; charset=binary", b"\xff\xd8\xff\xe0"),
        ("png", "binary/octet-stream", b"\x89PNG\r\n\x1a\n...."),
        ("xml", "text/xml", b'<?xml version="1.0"?>'),
    ],
)
def test_matching_content_passes(extension, content_type, head):
    check_content(extension, content_type, head)


@pytest.mark.parametrize(
    "extension, content_type, head",
    [
        ("pdf", "text/html", b"<html>login</html>"),
        ("pdf", "application/pdf", b"<html>not a pdf</html>"),
        ("pdf", "application/octet-stream", b"MZ\x90\x00"),
        ("jpg", "image/png", b"\x89PNG"),
        ("png", "", b"\x89PNG\r\n\x1a\n"),
    ],
)
def test_mismatched_content_is_rejected(extension, content_type, head):
    with pytest.raises(WrongFileType):
        check_content(extension, content_type, head)
