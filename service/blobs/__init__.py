"""Blob stores: where job files live, by URL (`SEAM_STORAGE_URL`): a folder (`file://`, the
default: the data directory) or an S3-compatible bucket prefix (`s3://`). One interface
(`base.BlobStore`), one module per backend."""
