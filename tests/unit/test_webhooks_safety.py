"""Which webhook URLs are refused, and why (no network needed: IP literals and /etc/hosts)."""

from __future__ import annotations

import pytest

from comfyq.webhooks.safety import (
    UnresolvableWebhookHost,
    UnsafeWebhookURL,
    check_webhook_url,
    display_url,
)

STRICT = {"allow_loopback": False, "allow_private": False}
LENIENT = {"allow_loopback": True, "allow_private": True}


def test_public_addresses_pass_and_their_addresses_are_returned() -> None:
    assert check_webhook_url("https://93.184.215.14/hook", **STRICT) == ["93.184.215.14"]
    assert check_webhook_url("http://[2606:4700::1111]:8080/x?y=1", **STRICT) == ["2606:4700::1111"]


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://93.184.215.14/hook", "scheme 'ftp' is not http or https"),
    ("file:///etc/passwd", "scheme 'file' is not http or https"),
    ("93.184.215.14/hook", "is not http or https"),
    ("http:///hook", "names no host"),
    ("http://93.184.215.14:99999/", "malformed"),
    ("http://exa mple.com/", "without spaces"),
    ("", "non-empty"),
])
def test_malformed_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeWebhookURL, match=reason):
        check_webhook_url(url, **LENIENT)


@pytest.mark.parametrize(("url", "kind", "setting"), [
    ("http://127.0.0.1:8000/hook", "loopback", "ALLOW_LOOPBACK"),
    ("http://localhost/hook", "loopback", "ALLOW_LOOPBACK"),
    ("http://[::1]/hook", "loopback", "ALLOW_LOOPBACK"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback", "ALLOW_LOOPBACK"),
    ("http://10.1.2.3/hook", "private", "ALLOW_PRIVATE"),
    ("http://192.168.1.10/hook", "private", "ALLOW_PRIVATE"),
    ("http://172.16.0.1/hook", "private", "ALLOW_PRIVATE"),
    ("http://[fd12:3456::1]/hook", "private", "ALLOW_PRIVATE"),
    ("http://100.64.0.1/hook", "non-public", "ALLOW_PRIVATE"),
    ("http://169.254.10.1/hook", "link-local", "ALLOW_PRIVATE"),
    ("http://[fe80::1]/hook", "link-local", "ALLOW_PRIVATE"),
])
def test_internal_addresses_are_refused_unless_allowed(url: str, kind: str, setting: str) -> None:
    with pytest.raises(UnsafeWebhookURL, match=f"is a {kind} address .*COMFYQ_WEBHOOK_{setting}"):
        check_webhook_url(url, **STRICT)
    assert check_webhook_url(url, **LENIENT)


def test_loopback_and_private_are_allowed_separately() -> None:
    assert check_webhook_url("http://127.0.0.1/", allow_loopback=True, allow_private=False)
    with pytest.raises(UnsafeWebhookURL, match="private"):
        check_webhook_url("http://10.0.0.1/", allow_loopback=True, allow_private=False)
    with pytest.raises(UnsafeWebhookURL, match="loopback"):
        check_webhook_url("http://127.0.0.1/", allow_loopback=False, allow_private=True)


@pytest.mark.parametrize(("url", "reason"), [
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
    ("http://[fd00:ec2::254]/latest/", "cloud metadata address"),
    ("http://[::ffff:169.254.169.254]/", "cloud metadata address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata host"),
    ("http://METADATA.google.internal./x", "cloud metadata host"),
    ("http://0.0.0.0:6379/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
])
def test_metadata_multicast_unspecified_reserved_are_refused_even_when_allowed(
        url: str, reason: str) -> None:
    with pytest.raises(UnsafeWebhookURL, match=reason):
        check_webhook_url(url, **LENIENT)


def test_unresolvable_hosts_are_their_own_error() -> None:
    with pytest.raises(UnresolvableWebhookHost, match="'nowhere.invalid' does not resolve"):
        check_webhook_url("https://nowhere.invalid/hook", **LENIENT)
    assert issubclass(UnresolvableWebhookHost, UnsafeWebhookURL)


def test_messages_never_show_credentials_or_query() -> None:
    with pytest.raises(UnsafeWebhookURL) as caught:
        check_webhook_url("http://user:hunter2@10.0.0.1/hook?token=abc", **STRICT)
    assert "hunter2" not in str(caught.value) and "abc" not in str(caught.value)
    assert display_url("https://u:p@Example.com:8443/a/b?t=1") == "https://example.com:8443/a/b?..."
