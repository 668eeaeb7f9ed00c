import pytest

from pipeline_defs.lib.blob_paths import xact_blob_path


@pytest.mark.parametrize(
    "subtype, version, expected",
    [
        ("documentsReceived", None, "xact/documentsReceived/T1/A9_report.pdf"),
        ("firstNoticeOfLossReceived", None, "xact/firstNoticeOfLossReceived/T1/A9_FNOL_report.pdf"),
        ("estimatePackageReceived", "3", "xact/estimatePackageReceived/T1/A9_3_report.pdf"),
        ("estimatePackageReceived", None, "xact/estimatePackageReceived/T1/A9_unknown_report.pdf"),
        ("statusChanged", None, "xact/statusChanged/T1/A9_report.pdf"),
    ],
)
def test_seed_path_rules_by_status_subtype(subtype, version, expected):
    assert xact_blob_path(subtype, "T1", "A9", version, "report.pdf") == expected


def test_no_field_can_escape_its_folder():
    path = xact_blob_path("../..", "../../etc", "../x", None, "../passwd")
    assert ".." not in path.split("/")
    assert path.startswith("xact/") and path.count("/") == 3


def test_missing_assignment_is_named_unknown():
    assert xact_blob_path("documentsReceived", "T", None, None, "a.pdf") == "xact/documentsReceived/T/unknown_a.pdf"
