"""Named datasets: registry, cache, verification, offline errors.  Never touches the network."""
from __future__ import annotations

import hashlib
import io
import urllib.error
from pathlib import Path

import pytest

from gptfast.data import named
from gptfast.data.named import DATASETS, NamedDataset, cache_dir, fetch, is_named_dataset, normalize
from gptfast.errors import InputError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TEXT = "First line\nSecond line, with \u00f1\n"
RAW = b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode()  # what a server might send


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any download a test did not arrange for fails loudly."""
    def refuse(url, *a, **k):
        raise AssertionError(f"test tried to reach the network: {url}")
    monkeypatch.setattr(named, "urlopen", refuse)


@pytest.fixture
def toy(monkeypatch, tmp_path) -> NamedDataset:
    """A registered dataset served from a local file:// URL."""
    src = tmp_path / "server" / "toy_raw.txt"
    src.parent.mkdir()
    src.write_bytes(RAW)
    ds = NamedDataset(
        name="toy",
        url=src.as_uri(),
        sha256=hashlib.sha256(TEXT.encode()).hexdigest(),
        description="a test dataset",
        filename="toy.txt",
    )
    monkeypatch.setitem(DATASETS, "toy", ds)
    return ds


def counting_urlopen(monkeypatch):
    import urllib.request

    calls = []

    def opener(url, *a, **k):
        calls.append(url)
        return urllib.request.urlopen(url, *a, **k)

    monkeypatch.setattr(named, "urlopen", opener)
    return calls


def test_fetch_downloads_normalizes_verifies_and_caches(monkeypatch, tmp_path, toy):
    calls = counting_urlopen(monkeypatch)
    cache = tmp_path / "cache"
    path = fetch("toy", cache=cache)
    assert path == cache / "toy.txt"
    assert path.read_bytes() == TEXT.encode()
    assert sorted(p.name for p in cache.iterdir()) == ["toy.txt"]  # no temp files left
    assert len(calls) == 1
    assert fetch("TOY ", cache=cache) == path  # second call: from the cache
    assert len(calls) == 1


def test_fetch_uses_env_cache(monkeypatch, tmp_path, toy):
    counting_urlopen(monkeypatch)
    monkeypatch.setenv("GPTFAST_CACHE", str(tmp_path / "envcache"))
    assert cache_dir() == tmp_path / "envcache"
    assert fetch("toy") == tmp_path / "envcache" / "toy.txt"


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("GPTFAST_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "gptfast" / "datasets"


def test_corrupted_cache_is_fetched_again(monkeypatch, tmp_path, toy):
    calls = counting_urlopen(monkeypatch)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toy.txt").write_text("tampered")
    assert fetch("toy", cache=cache).read_bytes() == TEXT.encode()
    assert len(calls) == 1


def test_offline_gives_one_clear_line(monkeypatch, tmp_path):
    def offline(url, *a, **k):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(named, "urlopen", offline)
    with pytest.raises(InputError) as exc:
        fetch("quijote", cache=tmp_path / "cache")
    msg = str(exc.value)
    assert msg.startswith("could not download dataset 'quijote' (")
    assert "name resolution" in msg
    assert "you appear to be offline: pass a text file instead, e.g. --data path/to/quijote.txt" in msg
    assert "\n" not in msg
    assert not (tmp_path / "cache" / "el_quijote.txt").exists()


def test_timeout_is_reported_as_offline(monkeypatch, tmp_path, toy):
    def slow(url, *a, **k):
        raise TimeoutError("timed out")

    monkeypatch.setattr(named, "urlopen", slow)
    with pytest.raises(InputError, match=r"\(timed out\); you appear to be offline"):
        fetch("toy", cache=tmp_path / "cache")


def test_http_error(monkeypatch, tmp_path, toy):
    def not_found(url, *a, **k):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, io.BytesIO(b""))

    monkeypatch.setattr(named, "urlopen", not_found)
    with pytest.raises(InputError, match=r"could not download dataset 'toy' .*HTTP 404 Not Found.*--data"):
        fetch("toy", cache=tmp_path / "cache")


def test_wrong_content_is_rejected_and_nothing_cached(monkeypatch, tmp_path, toy):
    class FakeResponse(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    monkeypatch.setattr(named, "urlopen", lambda url, *a, **k: FakeResponse(b"<html>rate limited</html>"))
    cache = tmp_path / "cache"
    with pytest.raises(InputError) as exc:
        fetch("toy", cache=cache)
    msg = str(exc.value)
    got = hashlib.sha256(b"<html>rate limited</html>").hexdigest()
    assert f"expected {toy.sha256}, got {got}" in msg and "toy" in msg
    assert not cache.exists() or list(cache.iterdir()) == []


def test_unknown_name_lists_known_ones(tmp_path):
    with pytest.raises(InputError) as exc:
        fetch("hamlet", cache=tmp_path)
    msg = str(exc.value)
    assert "'hamlet'" in msg
    for name in ("shakespeare", "quijote", "lazarillo", "misericordia"):
        assert name in msg


def test_is_named_dataset():
    assert is_named_dataset("shakespeare") and is_named_dataset("Quijote")
    assert not is_named_dataset("data/quijote.txt") and not is_named_dataset("")


def test_normalize():
    assert normalize(b"\xef\xbb\xbfa\r\nb\r\n") == b"a\nb\n"
    assert normalize(b"meta 1\r\nmeta 2\r\n\r\nbody\r\n", skip_lines=3) == b"body\n"
    assert normalize(b"a\r\n", skip_lines=5) == b""


def test_registry_is_pinned():
    for ds in DATASETS.values():
        assert ds.url.startswith("https://raw.githubusercontent.com/")
        assert any(len(part) == 40 and all(c in "0123456789abcdef" for c in part) for part in ds.url.split("/"))
        assert len(ds.sha256) == 64 and ds.description and ds.filename.endswith(".txt")


SHARED_COPIES = {
    "shakespeare": "tinyshakespeare.txt",
    "quijote": "el_quijote.txt",
    "lazarillo": "lazarillo.txt",
    "misericordia": "galdos_misericordia.txt",
}


@pytest.mark.parametrize("name", sorted(SHARED_COPIES))
def test_registry_hashes_match_shared_copies(name):
    path = SHARED_DATA / SHARED_COPIES[name]
    if not path.is_file():
        pytest.skip("shared/data not present")
    data = path.read_bytes()
    assert normalize(data) == data  # the shared copies are already normalized
    assert hashlib.sha256(data).hexdigest() == DATASETS[name].sha256


def test_shared_copy_as_a_download_is_cached(monkeypatch, tmp_path):
    """The real quijote entry, served its shared copy with the BOM and CRLF put back."""
    path = SHARED_DATA / "el_quijote.txt"
    if not path.is_file():
        pytest.skip("shared/data not present")
    raw = tmp_path / "quijote.txt"
    raw.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    real = DATASETS["quijote"]
    monkeypatch.setitem(DATASETS, "quijote", NamedDataset(**{**real.__dict__, "url": raw.as_uri()}))
    counting_urlopen(monkeypatch)
    got = fetch("quijote", cache=tmp_path / "cache")
    assert got.read_bytes() == path.read_bytes()
