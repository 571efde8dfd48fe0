"""Where dataset files come from: Debian's package, the user cache ($XDG_CACHE_HOME), and
torchvision's own downloaders behind ``--download``.

No test touches the network: torchvision's mirrors are pointed at an HTTP server on 127.0.0.1
serving tiny IDX and CIFAR pickle fixtures written here, so torchvision's real download code
(redirect check, MD5 check, extraction) runs and gtn-nas reads the files it produced.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR100, FashionMNIST

from gtn_nas.data import FASHION_CLASSES, data_cache_root, load_dataset
from gtn_nas.data import core
from gtn_nas.errors import DataError


def _one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    return message


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class _Server:
    """A static HTTP server on 127.0.0.1 over one folder (the fake mirror)."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        _QuietHandler.requests.append(self.path)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local mirror folder and its server; proxies bypassed for 127.0.0.1."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = _Server(folder)
    _QuietHandler.requests = []
    yield folder, server
    server.stop()


@pytest.fixture
def no_system_data(tmp_path, monkeypatch) -> Path:
    """No Debian package, and a fresh user cache under $XDG_CACHE_HOME; returns the cache."""
    monkeypatch.setattr(core, "FASHION_MNIST_ROOT", str(tmp_path / "no-debian-package"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "gtn-nas" / "data"


# --------------------------------------------------------------------------------- cache root

def test_cache_root_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_cache_root() == tmp_path / "xdg" / "gtn-nas" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_cache_root() == tmp_path / "home" / ".cache" / "gtn-nas" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: ignore it
    assert data_cache_root() == tmp_path / "home" / ".cache" / "gtn-nas" / "data"


# ------------------------------------------------------------------------------ fashion-mnist

def _idx(array: torch.Tensor) -> bytes:
    header = bytes([0, 0, 8, array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    return header + array.to(torch.uint8).numpy().tobytes()


def _fashion_arrays() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return {"train-images-idx3-ubyte": torch.randint(0, 256, (30, 28, 28), generator=gen),
            "train-labels-idx1-ubyte": torch.arange(30) % 10,
            "t10k-images-idx3-ubyte": torch.randint(0, 256, (10, 28, 28), generator=gen),
            "t10k-labels-idx1-ubyte": torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])}


def _publish_fashion(folder: Path, monkeypatch, url: str) -> dict[str, torch.Tensor]:
    """The four .gz files in the mirror; torchvision's FashionMNIST pointed at it."""
    arrays = _fashion_arrays()
    resources = []
    for stem, array in arrays.items():
        path = folder / f"{stem}.gz"
        path.write_bytes(gzip.compress(_idx(array)))
        resources.append((path.name, _md5(path)))
    monkeypatch.setattr(FashionMNIST, "mirrors", [url])
    monkeypatch.setattr(FashionMNIST, "resources", resources)
    return arrays


def test_fashion_download_fetches_into_the_xdg_cache_and_reads_it(mirror, no_system_data,
                                                                   monkeypatch):
    folder, server = mirror
    arrays = _publish_fashion(folder, monkeypatch, server.url)
    splits = load_dataset("fashion-mnist", download=True, channels=1, augment=False)
    raw = no_system_data / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        [f"{stem}.gz" for stem in arrays] + list(arrays))  # downloaded, then extracted
    # each file once for torchvision's redirect check, once for the download itself
    assert sorted(_QuietHandler.requests) == sorted(2 * [f"/{stem}.gz" for stem in arrays])
    assert (len(splits.train), len(splits.val), len(splits.test)) == (27, 3, 10)
    assert splits.class_names == FASHION_CLASSES
    assert splits.test.labels.tolist() == [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    (mean,), (std,) = splits.test.mean, splits.test.std
    pixels = (torch.stack([splits.test[i][0][0] for i in range(10)]) * std + mean) * 255
    assert torch.allclose(pixels, arrays["t10k-images-idx3-ubyte"].float(), atol=1e-3)

    server.stop()  # the cache is enough now, with or without --download
    _QuietHandler.requests = []
    again = load_dataset("fashion-mnist", channels=1, augment=False)
    assert torch.equal(again.test.labels, splits.test.labels)
    assert torch.equal(again.train.indices, splits.train.indices)
    load_dataset("fashion-mnist", download=True)
    assert _QuietHandler.requests == []


def test_fashion_download_into_data_root(mirror, no_system_data, monkeypatch, tmp_path):
    folder, server = mirror
    _publish_fashion(folder, monkeypatch, server.url)
    root = tmp_path / "my-data"
    splits = load_dataset("fashion-mnist", root=root, download=True)
    assert (root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert not no_system_data.exists(), "a --data-root download leaves the cache alone"
    assert splits.test.labels.tolist() == [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]


def test_fashion_debian_package_comes_first(no_system_data, monkeypatch, tmp_path):
    debian = tmp_path / "debian"
    debian.mkdir()
    for stem, array in _fashion_arrays().items():
        (debian / f"{stem}.gz").write_bytes(gzip.compress(_idx(array)))
    monkeypatch.setattr(core, "FASHION_MNIST_ROOT", str(debian))
    splits = load_dataset("fashion-mnist", download=True)  # present: nothing is fetched
    assert len(splits.test) == 10 and not no_system_data.exists()


def test_fashion_without_data_says_how_to_get_it(no_system_data):
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist")
    message = _one_line(info)
    assert message.startswith("fashion-mnist: not found in ")
    assert str(no_system_data / "FashionMNIST" / "raw") in message
    assert f"pass --download to fetch it with torchvision into {no_system_data}" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-root DIR" in message


def test_fashion_failed_download_is_one_line(mirror, no_system_data, monkeypatch):
    folder, server = mirror
    monkeypatch.setattr(FashionMNIST, "mirrors", [server.url + "missing/"])
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", download=True)
    message = _one_line(info)
    assert message.startswith(f"fashion-mnist: could not download into "
                              f"{no_system_data / 'FashionMNIST' / 'raw'} (RuntimeError: ")
    assert "HTTP Error 404" in message and "check the internet connection" in message


def test_fashion_corrupted_download_is_refused_by_its_checksum(mirror, no_system_data,
                                                               monkeypatch):
    folder, server = mirror
    _publish_fashion(folder, monkeypatch, server.url)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"not the file the MD5 promises")
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", download=True)
    message = _one_line(info)
    assert "could not download" in message and "t10k-images-idx3-ubyte.gz" in message


# ---------------------------------------------------------------------------------- cifar100

def _publish_cifar(folder: Path, monkeypatch, url: str) -> dict[str, np.ndarray]:
    """cifar-100-python.tar.gz (train/test/meta pickles, tiny) in the mirror; torchvision's
    CIFAR100 pointed at it with the fixture's checksums."""
    rng = np.random.default_rng(5)
    parts = {"train": (rng.integers(0, 256, (200, 3072), dtype=np.uint8), np.arange(200) % 100),
             "test": (rng.integers(0, 256, (100, 3072), dtype=np.uint8),
                      (np.arange(100) * 7) % 100)}
    names = [f"class{i:02d}" for i in range(100)]
    files = {name: pickle.dumps({"data": data, "fine_labels": labels.tolist(),
                                 "coarse_labels": (labels // 5).tolist()})
             for name, (data, labels) in parts.items()}
    files["meta"] = pickle.dumps({"fine_label_names": names, "coarse_label_names": names[:20]})
    archive = folder / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    md5 = {name: hashlib.md5(payload).hexdigest() for name, payload in files.items()}
    monkeypatch.setattr(CIFAR100, "url", url + archive.name)
    monkeypatch.setattr(CIFAR100, "tgz_md5", _md5(archive))
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5["meta"]})
    return {"train_data": parts["train"][0], "test_labels": parts["test"][1], "names": names}


def test_cifar100_download_fetches_into_the_xdg_cache_and_reads_it(mirror, no_system_data,
                                                                   monkeypatch):
    folder, server = mirror
    fixture = _publish_cifar(folder, monkeypatch, server.url)
    splits = load_dataset("cifar100", download=True, augment=False)
    assert (no_system_data / "cifar-100-python" / "train").is_file()
    assert _QuietHandler.requests == ["/cifar-100-python.tar.gz"] * 2
    assert (len(splits.train), len(splits.val), len(splits.test)) == (180, 20, 100)
    assert splits.num_classes == 100 and splits.class_names == tuple(fixture["names"])
    assert splits.test.labels.tolist() == fixture["test_labels"].tolist()
    first = splits.train.indices[0].item()
    image = splits.train[0][0] * torch.tensor(splits.train.std).view(3, 1, 1) \
        + torch.tensor(splits.train.mean).view(3, 1, 1)
    expected = torch.from_numpy(fixture["train_data"][first].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(image, expected, atol=1e-5)

    server.stop()
    again = load_dataset("cifar100", augment=False)  # from the cache, no --download
    assert torch.equal(again.test.labels, splits.test.labels)


def test_cifar100_without_data_names_the_cache_and_download(no_system_data):
    with pytest.raises(DataError) as info:
        load_dataset("cifar100")
    message = _one_line(info)
    assert message.startswith(f"cifar100: files not found in {no_system_data}/cifar-100-python/")
    assert f"pass --download to fetch it with torchvision into {no_system_data}" in message


def test_cifar100_foreign_pickle_is_refused_by_its_checksum(mirror, no_system_data,
                                                            monkeypatch):
    folder, server = mirror
    _publish_cifar(folder, monkeypatch, server.url)
    load_dataset("cifar100", download=True)
    (no_system_data / "cifar-100-python" / "test").write_bytes(pickle.dumps({"evil": True}))
    with pytest.raises(DataError) as info:
        load_dataset("cifar100")  # never unpickled: its MD5 is not the release's
    assert "cifar100: could not load" in _one_line(info)
    assert "corrupted" in _one_line(info)


def test_cifar100_failed_download_is_one_line(mirror, no_system_data, monkeypatch):
    folder, server = mirror
    monkeypatch.setattr(CIFAR100, "url", server.url + "missing.tar.gz")
    with pytest.raises(DataError) as info:
        load_dataset("cifar100", download=True)
    message = _one_line(info)
    assert message.startswith(f"cifar100: could not download into {no_system_data} (")
    assert "HTTP Error 404" in message


def test_train_teacher_without_data_is_one_line_exit_2(no_system_data, capsys, tmp_path):
    from gtn_nas.cli import main

    code = main(["train-teacher", "--method", "standard", "--teacher", "tiny", "--data",
                 "cifar100", "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("gtn-nas: error: cifar100: files not found in ") and "--download" in err
