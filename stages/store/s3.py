"""A store in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW, ...).

Connection settings, first found wins:

- endpoint: ``AVATAR_S3_ENDPOINT``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, the config file's
  ``endpoint``; none means AWS itself;
- credentials: boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles,
  instance roles), or the config file's ``access_key``/``secret_key``;
- region: ``AWS_REGION``/``AWS_DEFAULT_REGION``, the config file's ``region``, else ``us-east-1``.

The config file is JSON at ``$AVATAR_S3_CONFIG`` (default ``~/.config/avatar/s3.json``).

Each object carries its sha256 as user metadata (``x-amz-meta-sha256``); downloads are verified
against it, so a corrupted object is detected. Large files go up as multipart uploads (the object
appears only when the upload completes: readers never see part of it). Transient faults (connection
refused, timeouts, throttling, 5xx) are retried with exponential backoff by botocore's ``standard``
retry mode and, if they persist, raise :class:`~stages.errors.Transient` (exit 75).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from stages.errors import BadInput, Transient
from stages.store.base import IntegrityError, Store, check_key, sha256_bytes, sha256_file

_MULTIPART_THRESHOLD = 16 << 20
_TRANSIENT_CODES = {"500", "502", "503", "504", "SlowDown", "RequestTimeout", "InternalError",
                    "ServiceUnavailable", "Throttling", "ThrottlingException", "RequestTimeTooSkewed"}


def _config_file() -> dict[str, Any]:
    path = Path(os.environ.get("AVATAR_S3_CONFIG", "~/.config/avatar/s3.json")).expanduser()
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix the S3 config file") from None


class S3Store(Store):
    """Objects under ``s3://bucket/prefix/``."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 max_attempts: int | None = None, connect_timeout: float = 5.0, read_timeout: float = 60.0):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        cfg = _config_file()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.endpoint = (endpoint or os.environ.get("AVATAR_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3")
                         or os.environ.get("AWS_ENDPOINT_URL") or cfg.get("endpoint"))
        attempts = max_attempts or int(os.environ.get("AVATAR_S3_MAX_ATTEMPTS", "5"))
        session = boto3.session.Session(
            aws_access_key_id=cfg.get("access_key") if not os.environ.get("AWS_ACCESS_KEY_ID") else None,
            aws_secret_access_key=cfg.get("secret_key") if not os.environ.get("AWS_ACCESS_KEY_ID") else None,
            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or cfg.get("region") or "us-east-1",
        )
        self.client = session.client(
            "s3",
            endpoint_url=self.endpoint,
            config=Config(
                retries={"mode": "standard", "max_attempts": attempts},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                s3={"addressing_style": "path"},
                signature_version="s3v4",
            ),
        )
        self.transfer = TransferConfig(multipart_threshold=_MULTIPART_THRESHOLD,
                                       multipart_chunksize=_MULTIPART_THRESHOLD, max_concurrency=4)

    # -- error mapping ------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.uri} (endpoint {self.endpoint or 'AWS default'})"

    def _call(self, what: str, fn, *args, **kwargs):
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError as BotoConnectionError,
                                         EndpointConnectionError, NoCredentialsError)
        from boto3.exceptions import S3UploadFailedError

        try:
            return fn(*args, **kwargs)
        except NoCredentialsError:
            raise BadInput(f"{self._where()}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                           "or write them to the S3 config file") from None
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise KeyError(f"{self.uri}/{args[0] if args else ''}") from None
            if code == "NoSuchBucket":
                raise BadInput(f"{self._where()}: bucket {self.bucket!r} does not exist; create it or fix --store") from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise BadInput(f"{self._where()}: access denied ({code}) while trying to {what}; "
                               "check the S3 credentials and the bucket policy") from None
            if code in _TRANSIENT_CODES or status.startswith("5"):
                raise Transient(f"{self._where()}: S3 error {code or status} while trying to {what}; retry later") from None
            raise
        except (EndpointConnectionError, BotoConnectionError, S3UploadFailedError, BotoCoreError, OSError) as e:
            if isinstance(e, S3UploadFailedError) and "NoSuchBucket" in str(e):
                raise BadInput(f"{self._where()}: bucket {self.bucket!r} does not exist; create it or fix --store") from None
            raise Transient(f"{self._where()}: S3 unreachable while trying to {what} "
                            f"({type(e).__name__}); check the endpoint and network, then retry") from None

    def _k(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- primitives -------------------------------------------------------------------------------

    def put_file(self, key: str, path: str | Path) -> str:
        digest = sha256_file(path)
        self._call(f"upload {key}", self.client.upload_file, str(path), self.bucket, self._k(key),
                   ExtraArgs={"Metadata": {"sha256": digest}}, Config=self.transfer)
        return digest

    def put_bytes(self, key: str, data: bytes) -> str:
        digest = sha256_bytes(data)
        self._call(f"write {key}", self.client.put_object, Bucket=self.bucket, Key=self._k(key), Body=data,
                   Metadata={"sha256": digest})
        return digest

    def _head(self, key: str) -> dict[str, Any]:
        return self._call(f"read {key}", self.client.head_object, Bucket=self.bucket, Key=self._k(key))

    def _recorded(self, key: str, expect: str | None) -> str | None:
        if expect is not None:
            return expect
        return self._head(key).get("Metadata", {}).get("sha256")

    def _integrity(self, key: str, want: str) -> IntegrityError:
        return IntegrityError(f"{self.uri}/{key}: content does not match its recorded sha256 {want[:12]}; "
                              "the object is corrupt, re-run the stage that wrote it")

    def get_file(self, key: str, dest: str | Path, expect_sha256: str | None = None) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        want = self._recorded(key, expect_sha256)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        try:
            self._call(f"download {key}", self.client.download_file, self.bucket, self._k(key), tmp, Config=self.transfer)
            if want is not None and sha256_file(tmp) != want:
                raise self._integrity(key, want)
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return dest

    def get_bytes(self, key: str, expect_sha256: str | None = None) -> bytes:
        resp = self._call(f"read {key}", self.client.get_object, Bucket=self.bucket, Key=self._k(key))
        data = self._call(f"read {key}", resp["Body"].read)
        want = expect_sha256 or resp.get("Metadata", {}).get("sha256")
        if want is not None and sha256_bytes(data) != want:
            raise self._integrity(key, want)
        return data

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
            return True
        except KeyError:
            return False

    def list(self, prefix: str) -> list[str]:
        if prefix and (prefix.startswith("/") or ".." in prefix.split("/")):
            raise ValueError(f"invalid store prefix {prefix!r}")
        full = (f"{self.prefix}/" if self.prefix else "") + prefix
        paginator = self.client.get_paginator("list_objects_v2")
        out: list[str] = []
        strip = len(self.prefix) + 1 if self.prefix else 0

        def walk() -> None:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                out.extend(obj["Key"][strip:] for obj in page.get("Contents", []))

        self._call(f"list {prefix}", walk)
        return sorted(out)

    def sha256(self, key: str) -> str:
        recorded = self._head(key).get("Metadata", {}).get("sha256")
        if recorded:
            return recorded
        return sha256_bytes(self.get_bytes(key))

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", self.client.delete_object, Bucket=self.bucket, Key=self._k(key))

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (tests and first-time setup)."""
        from botocore.exceptions import ClientError

        try:
            self._call("check the bucket", self.client.head_bucket, Bucket=self.bucket)
        except (KeyError, BadInput, ClientError):
            self._call("create the bucket", self.client.create_bucket, Bucket=self.bucket)
