"""Which data-set URLs a job may name: configured buckets/prefixes only for s3://, configured
hosts with public addresses (unless allowed) for http(s), nothing else."""
import pytest
from seam.service.datasets.policy import DatasetPolicy, UrlRefused


def resolver(table):
    return lambda host, port: table[host]


def test_s3_only_under_configured_buckets_and_prefixes():
    p = DatasetPolicy(buckets=["data", "shared/team-a"])
    assert p.check_s3("s3://data/anything/x.jpg").bucket == "data"
    assert p.check_s3("s3://shared/team-a/x.jpg").prefix == "team-a/x.jpg/"
    for url in ("s3://shared/team-b/x.jpg", "s3://shared/team-ab/x.jpg", "s3://other/x.jpg", "s3://shared/"):
        with pytest.raises(UrlRefused, match="SEAM_DATASET_BUCKETS"):
            p.check_s3(url)
    with pytest.raises(UrlRefused, match="disabled"):
        DatasetPolicy().check_s3("s3://data/x.jpg")
    with pytest.raises(UrlRefused):
        p.check_s3("s3://data/../x")


def test_http_hosts_and_addresses():
    table = {"imgs.example.org": ["93.184.216.34"], "intranet": ["10.0.0.5"], "both": ["93.184.216.34", "127.0.0.1"]}
    p = DatasetPolicy(http_hosts=["imgs.example.org", "intranet", "both", "ported:8080"], resolver=resolver(table))
    assert p.check_http("https://imgs.example.org/a.jpg") == ("imgs.example.org", 443, "93.184.216.34")
    for url, why in [("https://intranet/a.jpg", "non-public"), ("http://both/a.jpg", "non-public"),
                     ("https://evil.example/a.jpg", "not one of"), ("https://user@imgs.example.org/a", "user-info"),
                     ("ftp://imgs.example.org/a", "scheme"), ("file:///etc/passwd", "scheme"),
                     ("http://ported:9090/a", "not one of")]:
        with pytest.raises(UrlRefused, match=why):
            p.check_http(url)
    private_ok = DatasetPolicy(http_hosts=["intranet"], allow_private=True, resolver=resolver(table))
    assert private_ok.check_http("http://intranet/a.jpg")[2] == "10.0.0.5"
    with pytest.raises(UrlRefused, match="disabled"):
        DatasetPolicy(resolver=resolver(table)).check_http("https://imgs.example.org/a.jpg")
