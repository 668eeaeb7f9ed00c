"""Every parser of untrusted input, fed whatever hypothesis can think of: it answers, or it
raises the project's own rejection type, never anything else."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_defs.defs.claimx.models import ClaimXEnrichmentTask, ClaimXEvent, claimx_blob_path
from pipeline_defs.defs.xact.blob_paths import xact_blob_path
from pipeline_defs.defs.xact.models import XactDownloadTask, XactEvent
from pipeline_defs.lib.attachments.url_safety import (
    BlockedUrl,
    UrlPolicy,
    check_url,
    follow_redirect,
    presigned_expiry,
    safe_file_name,
)
from pipeline_defs.lib.ingest.failures import MAX_RETRY_AFTER_S, retry_after_seconds
from pipeline_defs.lib.ingest.guard import RejectedRecord
from pipeline_defs.lib.kafka.ranges import decode_cursor, decode_ranges
from pipeline_defs.lib.validation.fields import parsed
from pipeline_defs.lib.validation.timestamps import EARLIEST, LATEST, as_utc, from_epoch_ms, parse_http_date, parse_iso

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
POLICY = UrlPolicy(allowed_hosts=("files.example.com", "xn--gla-7ka.com"), allow_http=True, allowed_ports=())

# Text with the characters that break parsers: controls, surrogates, bidi marks, fullwidth forms.
nasty_text = st.text(
    alphabet=st.one_of(
        st.characters(),
        st.sampled_from("%@:/\\?#[]. \t\r\n\x00\u202e\u2028\ufeff\udcff²߀ｆ見ß"),
    ),
    max_size=300,
)
url_like = st.builds(
    lambda scheme, host, port, path, query: f"{scheme}://{host}{port}/{path}?{query}",
    st.sampled_from(["http", "https", "HTTPS", "ftp", "javascript", ""]),
    st.one_of(
        st.sampled_from(["files.example.com", "[::1", "[::1]", "glaß.com", "ｆｉｌｅｓ.example.com", "a@b", "0x7f.1"]), nasty_text
    ),
    st.one_of(st.just(""), st.integers(-5, 99999).map(lambda p: f":{p}")),
    nasty_text,
    nasty_text,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True) | st.integers() | nasty_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4),
    max_leaves=20,
)


@PROPERTY
@given(st.one_of(url_like, nasty_text))
def test_check_url_answers_or_blocks(url):
    try:
        checked = check_url(url, POLICY)
    except BlockedUrl:
        return
    assert checked.url.raw_host == checked.host  # what is checked is what is requested


@PROPERTY
@given(url_like, st.one_of(url_like, nasty_text))
def test_redirects_answer_or_block(start, location):
    try:
        current = check_url(start, POLICY)
    except BlockedUrl:
        current = check_url("https://files.example.com/a.pdf", POLICY)
    with contextlib.suppress(BlockedUrl):
        follow_redirect(current, location, POLICY)


@PROPERTY
@given(st.one_of(url_like, nasty_text), st.one_of(nasty_text, st.integers(-(10**20), 10**20).map(str)))
def test_presigned_expiry_is_none_or_an_aware_instant(url, value):
    for query in (
        f"se={value}&sig=x",
        f"Expires={value}",
        f"X-Amz-Date=20261122T100000Z&X-Amz-Expires={value}",
        f"X-Goog-Date={value}&X-Goog-Expires=60",
    ):
        expiry = presigned_expiry(f"{url}&{query}")
        assert expiry is None or (expiry.tzinfo is not None and EARLIEST <= expiry <= LATEST)


@PROPERTY
@given(
    st.one_of(
        nasty_text, st.integers(-(10**30), 10**30).map(str), st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S"))
    )
)
def test_retry_after_is_none_or_bounded_seconds(value):
    seconds = retry_after_seconds(value)
    assert seconds is None or 0 <= seconds <= MAX_RETRY_AFTER_S


@PROPERTY
@given(st.datetimes(timezones=st.none() | st.timezones()), st.integers(-(10**20), 10**20), nasty_text)
def test_timestamps_are_aware_and_in_range_or_refused(moment, millis, text):
    with contextlib.suppress(ValueError):
        assert as_utc(moment).tzinfo == UTC
    for parsed_moment in (from_epoch_ms(millis), parse_iso(text), parse_http_date(text), parse_iso(moment.isoformat())):
        assert parsed_moment is None or (parsed_moment.tzinfo is not None and EARLIEST <= parsed_moment <= LATEST)


@PROPERTY
@given(nasty_text)
def test_file_names_are_plain_and_never_paths(path):
    name = safe_file_name(path)
    assert name and "/" not in name and "\\" not in name and not name.startswith(".")
    assert name.isascii() and ".." not in name


@PROPERTY
@given(nasty_text, nasty_text, st.none() | nasty_text, st.none() | nasty_text, nasty_text, nasty_text)
def test_blob_paths_stay_in_their_folders(subtype, trace_id, assignment, version, name, url):
    for path in (
        xact_blob_path(subtype, trace_id, assignment, version, name, url),
        claimx_blob_path(trace_id, subtype, name),
    ):
        assert path.isascii() and ".." not in path.split("/") and "//" not in path
        assert path.count("/") == 3


@PROPERTY
@given(st.one_of(st.binary(max_size=400), json_values.map(lambda v: json.dumps(v, allow_nan=True).encode())))
def test_messages_parse_or_are_rejected(raw):
    for model in (XactEvent, ClaimXEvent, XactDownloadTask, ClaimXEnrichmentTask):
        try:
            parsed(model, raw)
        except RejectedRecord as rejection:
            assert rejection.category in ("malformed", "invalid")


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(["trace_id", "event_type", "event_subtype", "timestamp", "payload", "attachments", "source_system"]),
        json_values,
    )
)
def test_xact_events_of_any_shape_parse_or_are_rejected(document):
    base = {
        "trace_id": "t",
        "event_type": "e",
        "event_subtype": "documentsReceived",
        "timestamp": datetime.now(UTC).isoformat(),
    }
    try:
        event = parsed(XactEvent, json.dumps({**base, **document}, allow_nan=True).encode())
    except RejectedRecord:
        return
    assert event.timestamp.tzinfo == UTC
    json.dumps(event.payload, allow_nan=False)  # what is kept is valid JSON


@PROPERTY
@given(st.one_of(nasty_text, json_values.map(lambda v: json.dumps({"topics": v}, allow_nan=True))))
def test_cursors_and_range_tags_decode_or_say_they_are_malformed(text):
    try:
        cursor = decode_cursor(text)
    except ValueError:
        cursor = {}
    assert all(p >= 0 and o >= 0 for offsets in cursor.values() for p, o in offsets.items())
    try:
        ranges = decode_ranges("t", text)
    except ValueError:
        ranges = []
    assert all(0 <= r.start <= r.end for r in ranges)
