import pytest
from pynetdicom import _config


@pytest.fixture(autouse=True)
def _send_files_as_stored(monkeypatch):
    """The test sender sends each file's bytes as stored, as a PACS does (pynetdicom's default
    decodes and re-encodes a file before sending it, which would repair a broken one)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
