"""The URL rules shared by the Label Studio fetcher and the data-set policy (core/urlrules.py)."""
import pytest
from seam.service.core.urlrules import Origin, UrlRefused, checked_address, host_listed


@pytest.mark.parametrize("url, why", [
    ("ftp://h/x", "scheme"), ("http://u:p@h/x", "user-info"), ("http://@h/x", "user-info"),
    ("http://h/\x00x", "control"), ("http:///x", "no host"), ("http://h:99999/x", "port"),
    ("http://[::1/x", "malformed"),
])
def test_origin_refusals(url: str, why: str) -> None:
    with pytest.raises(UrlRefused, match=why):
        Origin.of(url)


def test_origin_defaults_and_normalises() -> None:
    assert Origin.of("HTTPS://Example.ORG./a") == Origin("https", "example.org", 443)
    assert Origin.of("http://h:8080/a").netloc() == "h:8080"


def test_host_listed() -> None:
    entries = ["a.example", " B.example:8080 ", ""]
    assert host_listed(entries, "a.example", 1234)
    assert host_listed(entries, "b.example", 8080)
    assert not host_listed(entries, "b.example", 80)
    assert not host_listed(entries, "", 80)


def test_checked_address() -> None:
    table = {"pub": ["93.184.216.34", "93.184.216.35"], "priv": ["10.0.0.1"], "mc": ["224.0.0.1"], "none": []}

    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("unknown")
        return table[host]

    assert checked_address("pub", 80, resolve, False, "hint") == "93.184.216.34"
    with pytest.raises(UrlRefused, match="non-public address 10.0.0.1; set X"):
        checked_address("priv", 80, resolve, False, "set X")
    assert checked_address("priv", 80, resolve, True, "") == "10.0.0.1"
    for host, why in [("mc", "unusable"), ("none", "no address"), ("gone", "cannot resolve")]:
        with pytest.raises(UrlRefused, match=why):
            checked_address(host, 80, resolve, True, "")
