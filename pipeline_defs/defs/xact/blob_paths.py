"""Where an XACT attachment lives in OneLake, by the seeds' path rules. A pure function."""

from __future__ import annotations

from typing import Optional

from pipeline_defs.lib.attachments.url_safety import safe_path_segment, url_digest

XACT_ROOT = "xact"


def xact_blob_path(
    status_subtype: str,
    trace_id: str,
    assignment_id: Optional[str],
    estimate_version: Optional[str],
    file_name: str,
    url: str,
) -> str:
    """``xact/<status subtype>/<trace id>/<file>``, the file named by subtype:

    * documentsReceived: ``<assignment>_<name>``
    * firstNoticeOfLossReceived: ``<assignment>_FNOL_<name>``
    * estimatePackageReceived: ``<assignment>_<estimate version or unknown>_<name>``
    * anything else: ``<assignment>_<name>``

    where ``<name>`` is a short digest of the URL, then the file name: two attachments of one
    event with the same file name get two blobs. Every segment is sanitised, so no field can
    climb out of its folder.
    """
    assignment = safe_path_segment(assignment_id)
    name = f"{url_digest(url)}_{safe_path_segment(file_name, fallback='attachment')}"
    if status_subtype == "firstNoticeOfLossReceived":
        file_part = f"{assignment}_FNOL_{name}"
    elif status_subtype == "estimatePackageReceived":
        file_part = f"{assignment}_{safe_path_segment(estimate_version)}_{name}"
    else:
        file_part = f"{assignment}_{name}"
    return "/".join([XACT_ROOT, safe_path_segment(status_subtype), safe_path_segment(trace_id), file_part])
