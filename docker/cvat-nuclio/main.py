"""CVAT serverless (nuclio) handler for seam-wsss: forwards CVAT's request to the seam API.

CVAT sends {"image": <base64>, "threshold": <float>} and expects a list of
{"label", "confidence", "type": "mask", "points", "mask"}; `POST /cvat/detect` of the seam API
answers exactly that, so this handler only forwards (standard library only, no model here).
Environment: SEAM_URL (e.g. http://seam-api:8000), SEAM_API_KEY (when the API has keys).
"""
import json
import os
import urllib.error
import urllib.request


def init_context(context):
    context.user_data.url = os.environ.get("SEAM_URL", "http://seam-api:8000").rstrip("/") + "/cvat/detect"
    context.user_data.key = os.environ.get("SEAM_API_KEY", "")
    context.user_data.timeout = float(os.environ.get("SEAM_TIMEOUT_S", "110"))


def handler(context, event):
    body = event.body
    if isinstance(body, (bytes, bytearray)):
        body = json.loads(body)
    payload = {"image": body["image"]}
    if body.get("threshold") is not None:
        payload["threshold"] = float(body["threshold"])
    headers = {"Content-Type": "application/json"}
    if context.user_data.key:
        headers["X-API-Key"] = context.user_data.key
    req = urllib.request.Request(context.user_data.url, data=json.dumps(payload).encode(), headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=context.user_data.timeout) as resp:
            status, out = resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # pass the API's error (and status) through to CVAT
        status, out = exc.code, exc.read()
    return context.Response(body=out.decode("utf-8"), headers={}, content_type="application/json",
                            status_code=status)
