"""wsedge.webhooks: signature vectors, one computed by Node's node:crypto and pinned here, random
secrets and bodies signed live by `node` with node:crypto and with the node's own signer
(dist/webhooks.js `sign`, what src/webhooks.ts puts in X-WsEdge-Signature), and every refusal
with its code: tampered body, wrong secret, stale and future timestamps, malformed headers and
bodies, and secret rotation in both directions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import unittest

from _support import REPO

from wsedge.webhooks import DEFAULT_TOLERANCE, WebhookError, sign, verify, verify_request

# Computed with Node 20's node:crypto:
#   node -e 'const {createHmac}=require("node:crypto"); const ts="1767225600";
#     const body=JSON.stringify({events:[{id:"1767225599000-0",type:"room.message",room:"channel:7",data:{text:"héllo 👋"}}]});
#     for (const s of ["whsec_wsedge-python-vector-0123456789","whsec_sécret-🔑"])
#       console.log("v1="+createHmac("sha256",s).update(`${ts}.${body}`).digest("hex"))'
VECTOR_BODY = '{"events":[{"id":"1767225599000-0","type":"room.message","room":"channel:7","data":{"text":"héllo 👋"}}]}'.encode("utf-8")
VECTOR_TIMESTAMP = "1767225600"
VECTOR_SECRET = "whsec_wsedge-python-vector-0123456789"
VECTOR_SIGNATURE = "v1=a0b7f97d0e37367a454f71fe9e8f4cec19f39ebc17e19d920de20f019241c048"
# A secret beyond ASCII: the key is its UTF-8 bytes on both sides.
VECTOR_SECRET_UTF8 = "whsec_sécret-🔑"
VECTOR_SIGNATURE_UTF8 = "v1=fe99915d4e581df774da87222b49e64ab01be0d6583ed6f8480c1d383ac03175"
NOW = int(VECTOR_TIMESTAMP)

# [secret, timestamp, body] on stdin; [node:crypto's signature, the node's sign()] for each on stdout.
NODE_SIGN = """
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
const { sign } = await import(process.argv[1]);
const cases = JSON.parse(readFileSync(0, 'utf8'));
console.log(JSON.stringify(cases.map(([secret, ts, body]) => [
  'v1=' + createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex'),
  sign(secret, Number(ts), body),
])));
"""


class WebhookVectorTest(unittest.TestCase):
    def refused(self, code: str, *args, **kwargs) -> WebhookError:
        with self.assertRaises(WebhookError) as caught:
            verify(*args, **kwargs)
        self.assertEqual(caught.exception.code, code, str(caught.exception))
        return caught.exception

    def test_the_node_crypto_vector(self):
        self.assertEqual(sign(VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP), VECTOR_SIGNATURE)
        self.assertEqual(sign(VECTOR_SECRET_UTF8, VECTOR_BODY, NOW), VECTOR_SIGNATURE_UTF8)
        body = verify(VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)
        self.assertEqual(body["events"][0]["data"]["text"], "héllo 👋")
        self.assertEqual(verify(VECTOR_SECRET_UTF8, VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE_UTF8, now=NOW), body)
        # bytes secrets are used as they are
        self.assertEqual(verify(VECTOR_SECRET_UTF8.encode(), VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE_UTF8, now=NOW), body)

    def test_node_and_python_agree_on_random_secrets_and_bodies(self):
        node = shutil.which("node")
        self.assertIsNotNone(node, "node is not on PATH: this suite runs real ws-edge nodes")
        signer = REPO / "dist" / "webhooks.js"
        self.assertTrue(signer.exists(), f"{signer} is missing: run npm run build (npm test does)")
        cases = []
        for i in range(50):
            secret = os.urandom(12).hex() + "é🔑"[: i % 3]
            text = "".join(chr(c) for c in os.urandom(20) if c >= 32) + "ü€😀"[: i % 4]
            body = json.dumps({"events": [{"id": f"{i}-0", "data": {"text": text}}]}, ensure_ascii=bool(i % 2))
            cases.append([secret, str(NOW + i), body])
        ran = subprocess.run(
            [node, "--input-type=module", "-e", NODE_SIGN, signer.as_uri()], input=json.dumps(cases), capture_output=True, text=True, encoding="utf-8", timeout=60
        )
        self.assertEqual(ran.returncode, 0, ran.stderr)
        signatures = json.loads(ran.stdout)
        self.assertEqual(len(signatures), len(cases))
        for (secret, ts, body), (crypto, nodes) in zip(cases, signatures):
            self.assertEqual(nodes, crypto, "the node's sign() is HMAC-SHA256 of <timestamp>.<body>")
            self.assertEqual(sign(secret, body.encode("utf-8"), ts), nodes)
            self.assertEqual(verify(secret, body.encode("utf-8"), ts, nodes, now=int(ts))["events"][0]["id"], json.loads(body)["events"][0]["id"])
        print(f"\n  [webhooks] the node's sign(), node:crypto and wsedge.webhooks agree on {len(signatures)} random secrets and bodies", flush=True)

    def test_a_tampered_body_or_timestamp_is_refused(self):
        tampered = VECTOR_BODY.replace(b"channel:7", b"channel:8")
        self.refused("bad_signature", VECTOR_SECRET, tampered, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)
        self.refused("bad_signature", VECTOR_SECRET, VECTOR_BODY + b" ", VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)
        self.refused("bad_signature", VECTOR_SECRET, VECTOR_BODY[:-1], VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)
        # The same JSON encoded again (as a framework's parsed body would be) is not the body signed.
        self.refused("bad_signature", VECTOR_SECRET, json.dumps(json.loads(VECTOR_BODY)).encode(), VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)
        # The timestamp is signed: moving it (to pass the window) breaks the signature.
        self.refused("bad_signature", VECTOR_SECRET, VECTOR_BODY, str(NOW + 1), VECTOR_SIGNATURE, now=NOW)
        flipped = VECTOR_SIGNATURE[:-1] + ("f" if VECTOR_SIGNATURE[-1] != "f" else "e")
        self.refused("bad_signature", VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP, flipped, now=NOW)

    def test_a_wrong_secret_is_refused(self):
        err = self.refused("bad_signature", "whsec_another-secret", VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)
        self.assertEqual(err.status, 401)
        self.refused("bad_signature", VECTOR_SECRET + "x", VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)
        self.refused("bad_signature", VECTOR_SECRET_UTF8, VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)

    def test_stale_and_future_timestamps(self):
        inside = (NOW + DEFAULT_TOLERANCE, NOW - DEFAULT_TOLERANCE, NOW + 0.5)
        for now in inside:
            verify(VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=now)
        stale = self.refused("stale_timestamp", VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW + DEFAULT_TOLERANCE + 1)
        self.assertIn("ago", stale.message)
        self.assertEqual(stale.status, 401)
        future = self.refused("stale_timestamp", VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW - DEFAULT_TOLERANCE - 1)
        self.assertIn("future", future.message)
        # A replay a day later, and the tolerance as given.
        self.refused("stale_timestamp", VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW + 86_400)
        verify(VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, tolerance=86_400, now=NOW + 86_400)
        self.refused("stale_timestamp", VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, tolerance=0, now=NOW + 1)
        # Signed, but not unix seconds: refused as a timestamp, after the signature held.
        for stamp in ("+1767225600", "1767225600.0", "1_767_225_600", "-5", "١٧٦٧٢٢٥٦٠٠", "99999999999999"):
            self.refused("stale_timestamp", VECTOR_SECRET, VECTOR_BODY, stamp, sign(VECTOR_SECRET, VECTOR_BODY, stamp), now=NOW)
        # A stale request with a wrong signature is a bad signature: the timestamp is read only once the signature holds.
        self.refused("bad_signature", "whsec_another-secret", VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW + 86_400)
        # The clock by default: the vector was signed long ago (or far ahead).
        self.refused("stale_timestamp", VECTOR_SECRET, VECTOR_BODY, "1000000000", sign(VECTOR_SECRET, VECTOR_BODY, "1000000000"))

    def test_secret_rotation(self):
        old, new = "whsec_old-secret-0123456789", VECTOR_SECRET
        both = sign([old, new], VECTOR_BODY, VECTOR_TIMESTAMP)
        self.assertEqual(both.split(",")[1], VECTOR_SIGNATURE)
        # The node signs with both while rotating: a receiver holding either accepts.
        for held in (old, new, [old], [new, old]):
            verify(held, VECTOR_BODY, VECTOR_TIMESTAMP, both, now=NOW)
        # The receiver holds both while rotating: a node signing with either is accepted.
        verify([old, new], VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)
        verify([old, new], VECTOR_BODY, VECTOR_TIMESTAMP, sign(old, VECTOR_BODY, VECTOR_TIMESTAMP), now=NOW)
        verify((s for s in [old, new]), VECTOR_BODY, VECTOR_TIMESTAMP, " v1=" + "0" * 64 + " , " + VECTOR_SIGNATURE + " ", now=NOW)
        self.refused("bad_signature", ["whsec_a", "whsec_b"], VECTOR_BODY, VECTOR_TIMESTAMP, both, now=NOW)

    def test_malformed_signatures_and_bodies(self):
        for signature in (None, "", "v1=", "v0=" + VECTOR_SIGNATURE[3:], VECTOR_SIGNATURE[3:], "sha256=" + VECTOR_SIGNATURE[3:], "v1=ünïcödé", 42):
            self.refused("bad_signature", VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP, signature, now=NOW)
        # Unknown schemes next to v1 are ignored; hex case does not matter.
        verify(VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP, "v2=abc," + VECTOR_SIGNATURE.upper().replace("V1=", "v1="), now=NOW)
        self.refused("bad_signature", VECTOR_SECRET, VECTOR_BODY, None, VECTOR_SIGNATURE, now=NOW)
        for raw in (b"not json", b"\xff\xfe{", b"[]", b'{"events": {}}', b'{"event": []}', b"null"):
            err = self.refused("bad_body", VECTOR_SECRET, raw, VECTOR_TIMESTAMP, sign(VECTOR_SECRET, raw, VECTOR_TIMESTAMP), now=NOW)
            self.assertEqual(err.status, 400)
        self.assertEqual(verify(VECTOR_SECRET, b'{"events": []}', "7", sign(VECTOR_SECRET, b'{"events": []}', 7), now=7), {"events": []})

    def test_arguments_no_request_can_fix(self):
        with self.assertRaises(TypeError):
            verify(VECTOR_SECRET, VECTOR_BODY.decode(), VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)  # a str body
        for secret in ("", [], [""], b""):
            with self.assertRaises(ValueError):
                verify(secret, VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)
        with self.assertRaises(TypeError):
            verify([VECTOR_SECRET, 7], VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)
        for tolerance in (-1, float("nan"), "300", True):
            with self.assertRaises(ValueError):
                verify(VECTOR_SECRET, VECTOR_BODY, VECTOR_TIMESTAMP, VECTOR_SIGNATURE, tolerance=tolerance, now=NOW)
        # bytearray and memoryview are raw bytes too
        verify(VECTOR_SECRET, bytearray(VECTOR_BODY), VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)
        verify(VECTOR_SECRET, memoryview(VECTOR_BODY), VECTOR_TIMESTAMP, VECTOR_SIGNATURE, now=NOW)

    def test_verify_request_reads_the_headers_in_any_case(self):
        for headers in (
            {"X-WsEdge-Timestamp": VECTOR_TIMESTAMP, "X-WsEdge-Signature": VECTOR_SIGNATURE},
            {"x-wsedge-timestamp": VECTOR_TIMESTAMP, "x-wsedge-signature": VECTOR_SIGNATURE, "content-type": "application/json"},
            [(b"x-wsedge-timestamp", VECTOR_TIMESTAMP.encode()), (b"x-wsedge-signature", VECTOR_SIGNATURE.encode())],  # ASGI scope headers
        ):
            self.assertEqual(len(verify_request(VECTOR_SECRET, VECTOR_BODY, headers, now=NOW)["events"]), 1)
        with self.assertRaises(WebhookError) as caught:
            verify_request(VECTOR_SECRET, VECTOR_BODY, {"X-WsEdge-Timestamp": VECTOR_TIMESTAMP}, now=NOW)
        self.assertEqual(caught.exception.code, "bad_signature")


if __name__ == "__main__":
    unittest.main()
