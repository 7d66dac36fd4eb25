"""Data sets where they live: jobs over an S3 prefix or a manifest (JSONL or CSV of image URIs,
optional labels), read as streams of entries; the URL rules they obey; reading their images.
docs/storage.md describes the forms, the manifest formats and the settings."""
