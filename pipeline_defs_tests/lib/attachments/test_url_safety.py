import asyncio
from datetime import UTC, datetime

import pytest

from pipeline_defs.lib.attachments.url_safety import (
    BlockedAddress,
    BlockedUrl,
    SafeResolver,
    UrlPolicy,
    check_url,
    follow_redirect,
    is_public_address,
    presigned_expiry,
    safe_file_name,
    url_digest,
)
from pipeline_defs.lib.validation.timestamps import LATEST

POLICY = UrlPolicy(allowed_hosts=("files.example.com", "xactware.com"))


def test_allowlisted_https_urls_pass_with_normalised_host():
    checked = check_url("https://Files.Example.com./a/report.pdf?x=1", POLICY)
    assert checked.host == "files.example.com" and checked.port == 443
    assert check_url("https://cdn.xactware.com/a.pdf", POLICY).host == "cdn.xactware.com"


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://files.example.com/a.pdf", "scheme"),
        ("ftp://files.example.com/a.pdf", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("https://user:pw@files.example.com/a.pdf", "credentials"),
        ("https://files.example.com@evil.com/a.pdf", "credentials"),
        ("https://10.0.0.5/a.pdf", "IP address"),
        ("https://169.254.169.254/latest/meta-data/", "IP address"),
        ("https://[::1]/a.pdf", "IP address"),
        ("https://[::ffff:127.0.0.1]/a.pdf", "IP address"),
        ("https://2130706433/a.pdf", "IP address"),
        ("https://0x7f.1/a.pdf", "IP address"),
        ("https://127.1/a.pdf", "IP address"),
        ("https://evil.com/a.pdf", "allowlist"),
        ("https://files.example.com.evil.com/a.pdf", "allowlist"),
        ("https://notfiles.example.com.evil/a.pdf", "allowlist"),
        ("https://badxactware.com/a.pdf", "allowlist"),
        ("https://fıles.example.com/a.pdf", "allowlist"),  # dotless i, an IDNA look-alike
        ("https://files.exаmple.com/a.pdf", "allowlist"),  # Cyrillic a
        ("https://files%2eexample.com/a.pdf", "percent-encoded"),
        ("https://files.example.com:8443/a.pdf", "port"),
        ("https://files.example.com:99999/a.pdf", "unparseable"),
        ("https://files.example.com/a b.pdf", "whitespace"),
        ("https://files.example.com\\@evil.com/a.pdf", "backslash"),
        ("https://files.example.com/" + "a" * 9000, "longer than"),
        ("https://files.example.com/\u202egpj.pdf", "bidi"),
        ("https://[::1/a.pdf", "unparseable"),
        ("https://glaß.com/a.pdf", "allowlist"),
    ],
)
def test_ssrf_and_encoding_tricks_are_blocked(url, reason):
    with pytest.raises(BlockedUrl, match=reason):
        check_url(url, POLICY)


def test_http_and_other_ports_only_when_the_policy_says_so():
    loose = UrlPolicy(allowed_hosts=("attachments.test",), allow_http=True, allowed_ports=())
    assert check_url("http://attachments.test:8765/files/a.pdf", loose).port == 8765


@pytest.mark.parametrize(
    "address, public",
    [
        ("93.184.216.34", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fd00:ec2::254", False),
        ("fe80::1", False),
        ("::ffff:10.0.0.1", False),
        ("2606:4700:4700::1111", True),
    ],
)
def test_only_global_unicast_addresses_are_public(address, public):
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    "path, name",
    [
        ("/files/report.pdf", "report.pdf"),
        ("/files/..%2F..%2Fetc%2Fpasswd.pdf", "passwd.pdf"),
        ("/files/%252e%252e%252fsecret.pdf", "secret.pdf"),
        ("/files/../../x.pdf", "x.pdf"),
        ("/files/..\\..\\win.ini", "win.ini"),
        ("/files/My Photo (1).JPG", "My_Photo_1.JPG"),
        ("/files/%E8%A6%8B%E7%A9%8D%E6%9B%B8.pdf", "attachment.pdf"),
        ("/files/見積書.pdf", "attachment.pdf"),
        ("/files/", "attachment"),
        ("/files/....", "attachment"),
        ("/files/r%C3%A9sum%C3%A9.pdf", "resume.pdf"),
    ],
)
def test_file_names_never_become_paths(path, name):
    assert safe_file_name(path) == name
    assert "/" not in safe_file_name(path) and ".." not in safe_file_name(path)


def test_presigned_expiry_for_s3_gcs_v2_and_azure_sas():
    s3 = "https://b.s3.amazonaws.com/k.pdf?X-Amz-Date=20261122T100000Z&X-Amz-Expires=3600&X-Amz-Signature=s"
    assert presigned_expiry(s3) == datetime(2026, 11, 22, 11, tzinfo=UTC)
    gcs = "https://storage.googleapis.com/b/k.pdf?X-Goog-Date=20261122T100000Z&X-Goog-Expires=60"
    assert presigned_expiry(gcs) == datetime(2026, 11, 22, 10, 1, tzinfo=UTC)
    assert presigned_expiry("https://h/k?Expires=1795300000&Signature=s") == datetime(2026, 11, 21, 22, 26, 40, tzinfo=UTC)
    sas = "https://a.blob.core.windows.net/c/k.pdf?sv=2024&se=2026-11-22T12:00:00Z&sig=abc"
    assert presigned_expiry(sas) == datetime(2026, 11, 22, 12, tzinfo=UTC)
    assert presigned_expiry("https://files.example.com/a.pdf") is None


def test_presigned_expiry_never_breaks_on_odd_values():
    assert presigned_expiry("https://a.blob.core.windows.net/c/k.pdf?se=2030-01-01&sig=x") == datetime(2030, 1, 1, tzinfo=UTC)
    far = presigned_expiry("https://b/k.pdf?X-Amz-Date=20261122T100000Z&X-Amz-Expires=99999999999999")
    assert far is not None and far.year == 9999
    assert presigned_expiry("https://h/k?Expires=99999999999999&Signature=s") == LATEST
    assert presigned_expiry("https://h/k?Expires=%C2%B2&Signature=s") is None  # a superscript two is no number
    assert presigned_expiry("https://a/c?se=not-a-date&sig=x") is None


def test_the_checked_host_is_the_requested_host():
    """One IDNA normalisation for the check and the request: ``glaß.com`` is ``xn--gla-7ka.com``
    (UTS-46), never ``glass.com`` (IDNA 2003), and the request goes to the checked URL."""
    policy = UrlPolicy(allowed_hosts=("xn--gla-7ka.com", "glass.com"))
    checked = check_url("https://GLAß.com./a.pdf", policy)
    assert checked.host == "xn--gla-7ka.com" and checked.url.raw_host == "xn--gla-7ka.com"
    fullwidth = check_url("https://ｆｉｌｅｓ.example.com/a.pdf", POLICY)
    assert fullwidth.url.raw_host == fullwidth.host == "files.example.com"


def test_redirects_are_resolved_and_checked_like_the_first_url():
    start = check_url("https://files.example.com/a/b.pdf", POLICY)
    assert str(follow_redirect(start, "../c.pdf?x=1", POLICY).url) == "https://files.example.com/c.pdf?x=1"
    for location, reason in [
        ("https://[::1", "unparseable"),
        ("https://evil.com/x.pdf", "allowlist"),
        ("//10.0.0.1/x", "IP address"),
    ]:
        with pytest.raises(BlockedUrl, match=reason):
            follow_redirect(start, location, POLICY)


def test_url_digests_are_short_and_stable():
    assert url_digest("https://h/a.pdf") == url_digest("https://h/a.pdf") != url_digest("https://h/b.pdf")
    assert len(url_digest("https://h/\udcff")) == 10


def test_the_resolver_refuses_what_real_dns_maps_to_a_private_address():
    """``localhost`` goes through the system resolver (no pinned address) and comes back as
    loopback: refused unless the host is explicitly a loopback test host."""
    policy = UrlPolicy(allowed_hosts=("localhost",))

    async def resolve(policy: UrlPolicy):
        resolver = SafeResolver(policy)  # aiohttp resolvers belong to a running loop
        try:
            return await resolver.resolve("localhost", 443)
        finally:
            await resolver.close()

    with pytest.raises(BlockedAddress, match="non-public address"):
        asyncio.run(resolve(policy))
    trusted = UrlPolicy(allowed_hosts=("localhost",), loopback_hosts=("localhost",))
    assert {r["host"] for r in asyncio.run(resolve(trusted))} <= {"127.0.0.1", "::1"}
