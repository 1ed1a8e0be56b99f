"""Shared by the fixture scripts: check that a directory is nanochat at b7629ef, file by file."""
import hashlib
import sys


def git_blob_sha1(path):
    """The git blob id of a file (what `git rev-parse b7629ef:<path>` prints for it)."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def verify_checkout(root, expected_blobs):
    """Exit with a message unless every file has the blob id it has at b7629ef."""
    for rel, expected in expected_blobs.items():
        path = root / rel
        if not path.is_file():
            sys.exit(f"error: {path} missing; is {root} a nanochat checkout at b7629ef?")
        actual = git_blob_sha1(path)
        if actual != expected:
            sys.exit(f"error: {rel} has blob {actual}, expected {expected} (nanochat b7629ef)")
