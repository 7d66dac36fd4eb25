#!/usr/bin/env python3
"""Start SeaweedFS with its S3 gateway on :8333, one identity from the environment
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), then create the buckets named in SEAM_S3_BUCKETS
(comma separated) and stay in the foreground with weed. `--check`: the health check (a bucket
of SEAM_S3_BUCKETS answers)."""
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ENDPOINT = "http://127.0.0.1:8333"


def client():
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=ENDPOINT, region_name=os.environ.get("AWS_REGION", "us-east-1"),
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                      connect_timeout=2, read_timeout=5))


def buckets() -> list[str]:
    return [b.strip() for b in os.environ.get("SEAM_S3_BUCKETS", "").split(",") if b.strip()]


def check() -> int:
    try:
        for b in buckets():
            client().head_bucket(Bucket=b)
        return 0
    except Exception as exc:  # noqa: BLE001
        print(f"not ready: {exc}", file=sys.stderr)
        return 1


def main() -> int:
    if "--check" in sys.argv:
        return check()
    key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    config = Path("/data/s3.json")
    config.write_text(json.dumps({"identities": [{"name": "seam", "credentials": [
        {"accessKey": key, "secretKey": secret}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    weed = subprocess.Popen(["weed", "server", "-dir=/data", "-ip.bind=0.0.0.0", "-master.volumeSizeLimitMB=1024",
                             "-volume.max=0", "-filer", "-s3", "-s3.port=8333", f"-s3.config={config}",
                             "-master.telemetry=false"])
    deadline = time.monotonic() + 120
    pending = buckets()
    while pending and time.monotonic() < deadline and weed.poll() is None:
        try:
            c = client()
            for b in list(pending):
                with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou):
                    c.create_bucket(Bucket=b)
                c.put_object(Bucket=b, Key=".ready", Body=b"ok")  # the first volume is allocated lazily
                pending.remove(b)
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    if pending:
        print(f"seaweedfs-start: buckets not created: {pending}", file=sys.stderr)
    return weed.wait()


if __name__ == "__main__":
    sys.exit(main())
