"""mint_token and mint_grant: the claims of `ws-edge token` (compared with the CLI's own output),
HMAC signatures checked here, and the arguments refused before anything is signed. That the nodes
accept these tokens is tested against real nodes in test_live.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import time
import unittest

from _support import REPO, SECRET

from wsedge import mint_grant, mint_token
from wsedge.tokens import token_claims


def decode(token: str) -> tuple[dict, dict]:
    header, payload, _ = token.split(".")
    pad = lambda part: part + "=" * (-len(part) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(base64.urlsafe_b64decode(pad(payload)))


def verify(token: str, secret: str, digest) -> bool:
    signing_input, _, signature = token.rpartition(".")
    expected = base64.urlsafe_b64encode(hmac.new(secret.encode(), signing_input.encode(), digest).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(expected, signature)


class MintTokenTest(unittest.TestCase):
    def test_claims_and_signature(self):
        now = 1_800_000_000
        token = mint_token(SECRET, "alice", rooms=["project:*", "channel:42"], ttl=600, username="Alice", issuer="https://app", audience="ws-edge", now=now)
        header, claims = decode(token)
        self.assertEqual(header, {"alg": "HS256", "typ": "JWT"})
        self.assertEqual(claims, {"sub": "alice", "username": "Alice", "rooms": ["project:*", "channel:42"], "iat": now, "exp": now + 600, "iss": "https://app", "aud": "ws-edge"})
        self.assertTrue(verify(token, SECRET, hashlib.sha256))
        self.assertFalse(verify(token, SECRET + "x", hashlib.sha256))

    def test_defaults_match_the_cli(self):
        """`ws-edge token --user alice --secret S`: the same header and claim names, rooms ["*"], 1 h."""
        node = shutil.which("node")
        self.assertIsNotNone(node, "node is not on PATH")
        cli = subprocess.run([node, str(REPO / "dist" / "cli.js"), "token", "--user", "alice", "--secret", SECRET], capture_output=True, text=True, timeout=60, cwd=REPO, env={"PATH": os.environ.get("PATH", "")})
        self.assertEqual(cli.returncode, 0, cli.stderr)
        theirs_header, theirs = decode(cli.stdout.strip())
        ours_header, ours = decode(mint_token(SECRET, "alice"))
        self.assertEqual(ours_header, theirs_header)
        self.assertEqual(set(ours), set(theirs))
        self.assertEqual(ours["rooms"], theirs["rooms"])
        self.assertEqual(ours["exp"] - ours["iat"], theirs["exp"] - theirs["iat"])
        self.assertTrue(verify(cli.stdout.strip(), SECRET, hashlib.sha256))

        grant_cli = subprocess.run([node, str(REPO / "dist" / "cli.js"), "token", "--user", "alice", "--grant", "project:7", "--secret", SECRET], capture_output=True, text=True, timeout=60, cwd=REPO, env={"PATH": os.environ.get("PATH", "")})
        self.assertEqual(grant_cli.returncode, 0, grant_cli.stderr)
        _, theirs = decode(grant_cli.stdout.strip())
        _, ours = decode(mint_grant(SECRET, "alice", "project:7"))
        self.assertEqual(set(ours), set(theirs))
        self.assertEqual((ours["room"], ours["exp"] - ours["iat"]), (theirs["room"], theirs["exp"] - theirs["iat"]))

    def test_hs384_and_hs512(self):
        for alg, digest in (("HS384", hashlib.sha384), ("HS512", hashlib.sha512)):
            token = mint_token(SECRET, "bob", algorithm=alg)
            self.assertEqual(decode(token)[0]["alg"], alg)
            self.assertTrue(verify(token, SECRET, digest))

    def test_the_secret_is_its_utf8_bytes(self):
        token = mint_token("sécret-ключ", "alice")
        self.assertTrue(verify(token, "sécret-ключ", hashlib.sha256))
        self.assertEqual(token, mint_token(b"s\xc3\xa9cret-\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", "alice", now=decode(token)[1]["iat"]))

    def test_int_user_ids_become_strings(self):
        _, claims = decode(mint_token(SECRET, 42))
        self.assertEqual(claims["sub"], "42")
        _, claims = decode(mint_grant(SECRET, 7, "task:9"))
        self.assertEqual((claims["sub"], claims["room"]), ("7", "task:9"))

    def test_rooms_none_leaves_the_claim_out(self):
        self.assertNotIn("rooms", decode(mint_token(SECRET, "alice", rooms=None))[1])

    def test_bad_arguments_are_refused(self):
        with self.assertRaises(TypeError):
            mint_token(SECRET, True)
        with self.assertRaises(TypeError):
            mint_token(SECRET, 4.2)
        with self.assertRaises(ValueError):
            mint_token(SECRET, "alice@example.com")  # sub: 1-64 of [A-Za-z0-9_-]
        with self.assertRaises(ValueError):
            mint_token(SECRET, "x" * 65)
        with self.assertRaises(TypeError):
            mint_token(SECRET, "alice", rooms="project:*")  # a str is not split
        with self.assertRaises(ValueError):
            mint_token(SECRET, "alice", rooms=["projects:*"])
        with self.assertRaises(ValueError):
            mint_token(SECRET, "alice", rooms=["*"] * 1001)
        with self.assertRaises(ValueError):
            mint_token(SECRET, "alice", username="")
        with self.assertRaises(ValueError):
            mint_token(SECRET, "alice", username="é" * 129)
        with self.assertRaises(ValueError):
            mint_token(SECRET, "alice", ttl=0)
        with self.assertRaises(TypeError):
            mint_token(SECRET, "alice", ttl=1.5)
        with self.assertRaises(ValueError):
            mint_token(SECRET, "alice", ttl=10**12)  # exp after year 9999
        with self.assertRaises(ValueError) as caught:
            mint_token(SECRET, "alice", algorithm="RS256")
        self.assertIn("PyJWT", str(caught.exception))
        with self.assertRaises(ValueError):
            mint_token("", "alice")
        with self.assertRaises(TypeError):
            mint_token(None, "alice")  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            mint_grant(SECRET, "alice", "project:*")  # a grant names one room

    def test_token_claims_reads_without_verifying(self):
        token = mint_token(SECRET, "alice", ttl=60)
        claims = token_claims(token)
        self.assertEqual(claims["sub"], "alice")
        self.assertLessEqual(abs(claims["iat"] - time.time()), 5)
        self.assertEqual(token_claims("not a token"), {})


if __name__ == "__main__":
    unittest.main()
