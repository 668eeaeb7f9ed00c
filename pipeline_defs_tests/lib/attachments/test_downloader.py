"""The downloader against a real HTTP server on 127.0.0.1 (reached as attachments.test)."""

import asyncio
import datetime
import hashlib
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipeline_defs.lib.attachments.bodies import DownloadedFile
from pipeline_defs.lib.ingest.failures import FailureCategory, TaskFailure
from pipeline_sim.attachment_host import AttachmentHost, file_body


@pytest.fixture(scope="module")
def host():
    server = AttachmentHost(host_name="attachments.test", file_size=64 * 1024).start_in_thread()
    yield server
    server.stop_thread()


def fetch(attachment_http, tmp_path: Path, *urls: str):
    async def run():
        async with attachment_http.downloader(tmp_path) as downloader:
            return [await downloader.download(url) for url in urls], downloader

    return asyncio.run(run())


def test_a_file_is_streamed_to_disk_with_size_type_and_checksum(attachment_http, tmp_path, host):
    (result,), _ = fetch(attachment_http, tmp_path, host.url("files/T1/report.pdf"))
    assert isinstance(result, DownloadedFile)
    expected, _ = file_body("/files/T1/report.pdf", 64 * 1024)
    assert result.content.read() == expected
    assert result.size == len(expected) and result.sha256 == hashlib.sha256(expected).hexdigest()
    assert result.content_type == "application/pdf" and result.file_name == "report.pdf"


@pytest.mark.parametrize(
    "path, category, code",
    [
        ("status/404/a.pdf", FailureCategory.PERMANENT, "http_404"),
        ("status/410/a.pdf", FailureCategory.PERMANENT, "http_410"),
        ("status/401/a.pdf", FailureCategory.AUTH, "http_401"),
        ("status/503/a.pdf", FailureCategory.TRANSIENT, "http_503"),
        ("status/500/a.pdf", FailureCategory.TRANSIENT, "http_500"),
        ("expired/a.pdf", FailureCategory.PERMANENT, "expired_link"),
        ("as/text%2Fhtml/a.pdf", FailureCategory.PERMANENT, "wrong_file_type"),
        ("files/a.exe", FailureCategory.PERMANENT, "wrong_file_type"),
        ("slow/5/a.pdf", FailureCategory.TRANSIENT, "timeout"),
        ("garbage/a.pdf", FailureCategory.TRANSIENT, "protocol_error"),
    ],
)
def test_failures_are_classified(attachment_http, tmp_path, host, path, category, code):
    (result,), _ = fetch(attachment_http, tmp_path, host.url(path))
    assert isinstance(result, TaskFailure)
    assert (result.category, result.code) == (category, code)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_downloads_run_at_most_the_configured_concurrency(attachment_http, tmp_path):
    limit = attachment_http.settings.concurrency
    quiet_host = AttachmentHost(host_name="attachments.test").start_in_thread()  # no other test's requests
    urls = [quiet_host.url(f"slow/0.3/parallel{i}.pdf") for i in range(limit * 3)]

    async def run():
        async with attachment_http.downloader(tmp_path) as downloader:
            return await asyncio.gather(*(downloader.download(url) for url in urls))

    try:
        results = asyncio.run(run())
    finally:
        quiet_host.stop_thread()
    assert all(isinstance(r, DownloadedFile) for r in results)
    assert quiet_host.most_streaming == limit


def test_retry_after_is_read_from_429(attachment_http, tmp_path, host):
    (result,), _ = fetch(attachment_http, tmp_path, host.url("throttle/120/a.pdf"))
    assert result.category is FailureCategory.TRANSIENT and result.retry_after_s == 120


@pytest.mark.parametrize(
    "url, code",
    [
        ("http://10.0.0.5/a.pdf", "blocked_url"),
        ("http://169.254.169.254/latest/meta-data/iam.pdf", "blocked_url"),
        ("http://internal.test/a.pdf", "blocked_address"),  # resolves to 10.1.2.3
        ("https://files.example.com/a.pdf?X-Amz-Date=20200101T000000Z&X-Amz-Expires=60", "expired_link"),
    ],
)
def test_ssrf_and_expired_links_are_refused_before_fetching(attachment_http, tmp_path, url, code):
    (result,), _ = fetch(attachment_http, tmp_path, url)
    assert (result.category, result.code) == (FailureCategory.PERMANENT, code)


def test_redirects_are_checked_at_every_hop(attachment_http, tmp_path, host):
    to_allowed = host.url(f"redirect?to={host.url('files/T/ok.pdf')}")
    to_localhost = host.url(f"redirect?to=http://localhost:{host.port}/files/T/secret.pdf")
    to_loopback_ip = host.url(f"redirect?to=http://127.0.0.1:{host.port}/files/T/secret.pdf")
    (followed, localhost, loopback), _ = fetch(attachment_http, tmp_path, to_allowed, to_localhost, to_loopback_ip)
    assert isinstance(followed, DownloadedFile)
    assert (localhost.code, loopback.code) == ("blocked_redirect", "blocked_redirect")
    assert host.requests["/files/T/secret.pdf"] == 0


def test_a_failing_host_opens_its_circuit(attachment_http, tmp_path, host):
    urls = [host.url(f"status/503/c{i}.pdf") for i in range(7)]
    results, downloader = fetch(attachment_http, tmp_path, *urls)
    codes = [r.code for r in results]
    assert codes[:5] == ["http_503"] * 5 and codes[5:] == ["circuit_open"] * 2
    assert [(t.from_state.value, t.to_state.value) for t in downloader.breakers.transitions] == [("closed", "open")]


def test_a_certificate_nobody_vouches_for_is_refused(attachment_http, tmp_path):
    tls_host = AttachmentHost(host_name="attachments.test", tls=_self_signed(tmp_path, "attachments.test")).start_in_thread()
    try:
        (result,), _ = fetch(attachment_http, tmp_path / "spool", tls_host.url("files/a.pdf"))
    finally:
        tls_host.stop_thread()
    assert isinstance(result, TaskFailure)
    assert (result.category, result.code) == (FailureCategory.PERMANENT, "ssl_error")
    assert tls_host.requests == {}  # nothing was asked before the handshake failed


def _self_signed(folder: Path, host_name: str) -> ssl.SSLContext:
    """A server context with a self-signed certificate for ``host_name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def bounded(attachment_http, **changes):
    return attachment_http.model_copy(update={"settings": attachment_http.settings.model_copy(update=changes)})


def test_a_compressed_body_is_decompressed_before_its_type_is_checked(attachment_http, tmp_path, host):
    (result,), _ = fetch(attachment_http, tmp_path, host.url("gzip/z.pdf"))
    expected, _ = file_body("/gzip/z.pdf", 64 * 1024)
    assert isinstance(result, DownloadedFile) and result.content.read() == expected
    assert result.sha256 == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize(
    "path, code, changes",
    [
        # the host compresses as it serves: generous read timeout, so a busy machine cannot turn it into a timeout
        (f"bomb/{256 * 1024 * 1024}/b.pdf", "too_large", {"max_file_bytes": 1024 * 1024, "read_timeout_s": 120}),
        ("encoded/br/b.pdf", "unsupported_encoding", {}),
        ("encoded/gzip/b.pdf", "bad_encoding", {}),  # labelled gzip, but it is not
        ("drip/0.2/d.pdf", "deadline_exceeded", {"download_deadline_s": 2.0}),
        ("files/big.pdf", "too_large", {"temp_disk_bytes": 1024}),  # larger than the whole disk budget
        ("loop/l.pdf", "too_many_redirects", {}),
    ],
)
def test_hostile_answers_fail_that_attachment_only(attachment_http, tmp_path, host, path, code, changes):
    (result,), _ = fetch(bounded(attachment_http, **changes), tmp_path, host.url(path))
    assert isinstance(result, TaskFailure) and result.code == code, result
    assert list(tmp_path.iterdir()) == []


def test_downloads_wait_for_room_in_the_disk_budget_and_release_it(attachment_http, tmp_path, host):
    budget_for_two = bounded(attachment_http, temp_disk_bytes=2 * 8 * 1024 * 1024, chunk_bytes=1024 * 1024, concurrency=8)
    urls = [host.url(f"files/budget/{i}.pdf") for i in range(8)]

    peak = 0

    async def run():
        nonlocal peak
        async with budget_for_two.downloader(tmp_path) as downloader:

            async def one(url):  # as the sink does: the file is uploaded, then discarded
                nonlocal peak
                result = await downloader.download(url)
                peak = max(peak, downloader.budget.used)
                await asyncio.sleep(0.2)
                if isinstance(result, DownloadedFile):
                    result.discard()
                return result

            results = await asyncio.gather(*(one(url) for url in urls))
            return results, downloader.budget.used

    results, after = asyncio.run(run())
    assert all(isinstance(r, DownloadedFile) for r in results), results
    assert after == 0 and peak <= 2 * 8 * 1024 * 1024


def test_a_full_temporary_disk_fails_the_run_not_the_attachment(attachment_http, tmp_path, host, monkeypatch):
    import pipeline_defs.lib.attachments.bodies as bodies_module

    class FullDisk:
        def __init__(self, *args, **kwargs):
            pass

        def write(self, chunk):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    monkeypatch.setattr(bodies_module.tempfile, "SpooledTemporaryFile", FullDisk)
    with pytest.raises(bodies_module.TempStorageUnavailable):
        fetch(attachment_http, tmp_path, host.url("files/full.pdf"))
