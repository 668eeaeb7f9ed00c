import pytest

from pipeline_defs.defs.xact.blob_paths import xact_blob_path
from pipeline_defs.lib.attachments.url_safety import url_digest

URL = "https://files.example.com/a/report.pdf"
H = url_digest(URL)


@pytest.mark.parametrize(
    "subtype, version, expected",
    [
        ("documentsReceived", None, f"xact/documentsReceived/T1/A9_{H}_report.pdf"),
        ("firstNoticeOfLossReceived", None, f"xact/firstNoticeOfLossReceived/T1/A9_FNOL_{H}_report.pdf"),
        ("estimatePackageReceived", "3", f"xact/estimatePackageReceived/T1/A9_3_{H}_report.pdf"),
        ("estimatePackageReceived", None, f"xact/estimatePackageReceived/T1/A9_unknown_{H}_report.pdf"),
        ("statusChanged", None, f"xact/statusChanged/T1/A9_{H}_report.pdf"),
    ],
)
def test_seed_path_rules_by_status_subtype(subtype, version, expected):
    assert xact_blob_path(subtype, "T1", "A9", version, "report.pdf", URL) == expected


def test_two_attachments_with_one_file_name_get_two_blobs():
    first = xact_blob_path("documentsReceived", "T1", "A9", None, "report.pdf", "https://h/1/report.pdf")
    second = xact_blob_path("documentsReceived", "T1", "A9", None, "report.pdf", "https://h/2/report.pdf")
    assert first != second and first.endswith("_report.pdf") and second.endswith("_report.pdf")


def test_no_field_can_escape_its_folder():
    path = xact_blob_path("../..", "../../etc", "../x", None, "../passwd", "https://h/../passwd")
    assert ".." not in path.split("/")
    assert path.startswith("xact/") and path.count("/") == 3


def test_missing_assignment_is_named_unknown():
    assert xact_blob_path("documentsReceived", "T", None, None, "a.pdf", URL) == f"xact/documentsReceived/T/unknown_{H}_a.pdf"
