"""The SDK's copies of the node's tables, read back from the built node (dist/): the reserved
event types, the close-code reconnect table and the limits the SDK checks before sending. When
the node's catalogue changes, this fails and names what to update in wsedge/_rules.py or
wsedge/policy.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import unittest

from _support import REPO

from wsedge import _rules
from wsedge.policy import RECONNECT

READ = """
Promise.all([import('./dist/messages.js'), import('./dist/close-codes.js')]).then(([m, c]) => console.log(JSON.stringify({
  reserved: [...m.RESERVED_TYPES],
  reconnect: c.RECONNECT,
  limits: { MAX_EVENT_TYPE_LENGTH: m.MAX_EVENT_TYPE_LENGTH, MAX_TOKEN_LENGTH: m.MAX_TOKEN_LENGTH, MAX_HISTORY_LIMIT: m.MAX_HISTORY_LIMIT, MAX_CLOSE_REASON_BYTES: m.MAX_CLOSE_REASON_BYTES },
})));
"""


class CatalogueTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH")
        ran = subprocess.run([node, "--input-type=module", "-e", READ], cwd=REPO, capture_output=True, text=True, timeout=60, env={"PATH": os.environ.get("PATH", "")})
        if ran.returncode != 0:
            raise RuntimeError(f"cannot read the node's tables from dist/ (npm run build first): {ran.stderr}")
        cls.node = json.loads(ran.stdout)

    def test_reserved_types(self):
        self.assertEqual(set(self.node["reserved"]), set(_rules.RESERVED_TYPES), "update RESERVED_TYPES in wsedge/_rules.py")

    def test_reconnect_table(self):
        self.assertEqual({int(code): policy for code, policy in self.node["reconnect"].items()}, RECONNECT, "update RECONNECT in wsedge/policy.py")

    def test_limits(self):
        for name, value in self.node["limits"].items():
            self.assertEqual(getattr(_rules, name), value, f"update {name} in wsedge/_rules.py")


if __name__ == "__main__":
    unittest.main()
