"""The committed stubs are exactly what protoc generates from the .proto files."""

import subprocess
import sys

from tests.conftest import REPO


def test_generated_stubs_match_the_proto_files():
    result = subprocess.run([sys.executable, "scripts/gen_proto.py", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_every_message_field_and_enum_value_is_documented():
    import re

    for proto in sorted((REPO / "proto" / "kgverify" / "v1").glob("*.proto")):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            declares = re.match(r"^(message|enum|service|rpc)\s", stripped) or re.match(
                r"^(optional |repeated )?[\w.<>, ]+ \w+ = \d+;", stripped)
            if declares and not stripped.startswith("//"):
                assert lines[i - 1].strip().startswith("//"), f"{proto.name}:{i + 1} lacks a comment: {stripped}"
