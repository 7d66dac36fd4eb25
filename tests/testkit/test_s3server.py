"""The S3 test server (testkit/s3server.py) is a real one: buckets, put, get, list, delete, and
the keys matter (a wrong secret is refused)."""
import pytest

pytestmark = pytest.mark.slow


def test_put_get_list_delete(s3_server, s3_bucket):
    s3 = s3_server.client()
    for i in range(3):
        s3.put_object(Bucket=s3_bucket, Key=f"a/{i}.txt", Body=f"v{i}".encode())
    s3.put_object(Bucket=s3_bucket, Key="b/other.txt", Body=b"x")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="a/")["Contents"]]
    assert keys == ["a/0.txt", "a/1.txt", "a/2.txt"]
    assert s3.get_object(Bucket=s3_bucket, Key="a/1.txt")["Body"].read() == b"v1"
    s3.delete_object(Bucket=s3_bucket, Key="a/1.txt")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="a/")["Contents"]]
    assert keys == ["a/0.txt", "a/2.txt"]


def test_wrong_secret_refused(s3_server, s3_bucket):
    import boto3
    from botocore.exceptions import ClientError

    intruder = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.access_key,
                            aws_secret_access_key="not-the-secret", region_name=s3_server.region)
    with pytest.raises(ClientError):
        intruder.put_object(Bucket=s3_bucket, Key="x", Body=b"x")


def test_env_names_the_server(s3_server):
    env = s3_server.env()
    assert env["AWS_ENDPOINT_URL"] == s3_server.endpoint
    assert env["AWS_ACCESS_KEY_ID"] == s3_server.access_key
