"""The extra CA is in the system trust store that apt, pip and Python use."""

from pathlib import Path

TEST_CA = (Path(__file__).parent.parent / "files/test-ca.pem").read_text().strip()


def test_certificate_is_installed(host) -> None:
    assert host.file("/usr/local/share/ca-certificates/extra/test-ca.crt").exists


def test_certificate_is_in_the_system_bundle(host) -> None:
    assert TEST_CA in host.file("/etc/ssl/certs/ca-certificates.crt").content_string
