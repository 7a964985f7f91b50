"""s3:// sources, for real: the rendered downloader script, run with /bin/sh and curl (SigV4) against moto's S3
server on a free port, with the environment the model's sourceSecretRef Secret gives the init container.

moto checks SigV4 signatures, IAM policies and session tokens once its auth is on (reset-auth), so a wrong
secret key or a missing session token fails here as it fails against AWS. In CI a missing tool (curl without
--aws-sigv4, moto) fails the run instead of skipping it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmkube_components import workloads
from llmkube_components.workloads import Download
from tests.e2e.required import required
from tests.test_workloads import PAYLOAD, SHA, make_service, pod_of

required(all(shutil.which(t) for t in ("sh", "curl", "sha256sum", "flock")), "needs sh, curl, sha256sum and flock")
_CURL_HELP = subprocess.run(["curl", "--help", "all"], capture_output=True, text=True, check=False).stdout
required("--aws-sigv4" in _CURL_HELP, "needs a curl with --aws-sigv4 (7.75 or later)")
moto_server = pytest.importorskip("moto.server") if not os.environ.get("CI") else __import__("moto.server").server
boto3 = pytest.importorskip("boto3") if not os.environ.get("CI") else __import__("boto3")

BUCKET = "llm-weights"  # not "models": the tests point /models/ at a temporary directory
REGION = "eu-west-3"
PART_2 = PAYLOAD[::-1]
MMPROJ = b"GGUF-mmproj" + bytes(range(64))
READ_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}],
    }
)


@dataclass
class S3:
    endpoint: str
    client: Any
    key_id: str
    secret: str
    session: dict[str, str]  # temporary credentials: AccessKeyId, SecretAccessKey, SessionToken

    def put(self, key: str, body: bytes) -> None:
        _auth(self.endpoint, "inf")  # moto's admin calls below are unsigned ("test" keys): auth off meanwhile
        try:
            self.client.put_object(Bucket=BUCKET, Key=key, Body=body)
        finally:
            _auth(self.endpoint, "0")


def _moto(endpoint: str, path: str, body: bytes) -> None:
    request = urllib.request.Request(endpoint + path, data=body, method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _auth(endpoint: str, after: str) -> None:
    """Turn moto's IAM and signature checks on ("0": from the next request) or off ("inf")."""
    _moto(endpoint, "/moto-api/reset-auth", after.encode())


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "test"}
    options["aws_secret_access_key"] = "test"
    client, iam, sts = (boto3.client(name, **options) for name in ("s3", "iam", "sts"))
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    for key, body in (("qwen/m.gguf", PAYLOAD), ("qwen/part-2.gguf", PART_2), ("qwen/mmproj.gguf", MMPROJ)):
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    iam.create_user(UserName="downloader")
    iam.put_user_policy(UserName="downloader", PolicyName="read", PolicyDocument=READ_POLICY)
    key = iam.create_access_key(UserName="downloader")["AccessKey"]
    trust = {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
    role = iam.create_role(
        RoleName="reader", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [trust]})
    )
    iam.put_role_policy(RoleName="reader", PolicyName="read", PolicyDocument=READ_POLICY)
    session = sts.assume_role(RoleArn=role["Role"]["Arn"], RoleSessionName="llmkube-test")["Credentials"]
    _auth(endpoint, "0")
    try:
        yield S3(endpoint, client, key["AccessKeyId"], key["SecretAccessKey"], session)
    finally:
        _auth(endpoint, "inf")  # moto's settings are this process's: leave them as found
        _moto(endpoint, "/moto-api/reset", b"")
        server.stop()


def secret_env(s3: S3, **overrides: str | None) -> dict[str, str]:
    """What envFrom of the model's Secret gives the downloader, over a clean environment (no AWS_* of the host)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "HF_TOKEN"}
    given: dict[str, str | None] = {
        "AWS_ACCESS_KEY_ID": s3.key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": s3.endpoint,
        **overrides,
    }
    return {**env, "POD_NAME": "pod-a", **{k: v for k, v in given.items() if v is not None}}


def run(script: str, env: dict[str, str], cache: Path) -> subprocess.CompletedProcess[str]:
    """A rendered init container script, with /models pointed at ``cache``."""
    return subprocess.run(
        ["/bin/sh", "-c", script.replace("/models/", f"{cache}/")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def fill(service_model: dict[str, Any], env: dict[str, str], cache: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run every init container of the service's pod, in order, as the kubelet does; stop at the first failure."""
    results = []
    for container in pod_of(make_service(model=service_model))["initContainers"]:
        results.append(run(container["command"][2], env, cache))
        if results[-1].returncode != 0:
            break
    return results


def in_cache(model: dict[str, Any], cache: Path, name: str) -> Path:
    spec = make_service(model=model).model.spec
    return Path(workloads.model_dir(spec).replace("/models", str(cache))) / name


SECRET_REF = {"name": "s3-credentials"}


def test_an_s3_model_is_downloaded_with_the_secrets_keys_and_checked(s3: S3, tmp_path: Path) -> None:
    model = {"source": f"s3://{BUCKET}/qwen/m.gguf", "sha256": SHA, "sourceSecretRef": SECRET_REF}
    results = fill(model, secret_env(s3), tmp_path)
    assert [r.returncode for r in results] == [0, 0], results[-1].stderr
    assert in_cache(model, tmp_path, "m.gguf").read_bytes() == PAYLOAD
    output = results[-1].stdout
    assert f"llmkube: downloading s3://{BUCKET}/qwen/m.gguf" in output
    assert "sha256 of" in output and "verified" in output
    assert s3.secret not in output + results[-1].stderr


def test_a_wrong_secret_key_fails_clearly_without_printing_it(s3: S3, tmp_path: Path) -> None:
    wrong = "wRoNg" + s3.secret[5:]
    model = {"source": f"s3://{BUCKET}/qwen/m.gguf", "sha256": SHA, "sourceSecretRef": SECRET_REF}
    (result,) = fill(model, secret_env(s3, AWS_SECRET_ACCESS_KEY=wrong), tmp_path)[1:]
    assert result.returncode == 1
    assert f"llmkube: ERROR: could not download s3://{BUCKET}/qwen/m.gguf (curl exit 22): HTTP 403" in result.stderr
    assert "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in result.stderr
    assert "sourceSecretRef" in result.stderr
    for secret in (wrong, s3.secret, s3.secret[5:]):
        assert secret not in result.stdout + result.stderr
    assert not in_cache(model, tmp_path, "m.gguf").exists()


def test_a_sha256_mismatch_from_s3_is_discarded(s3: S3, tmp_path: Path) -> None:
    model = {"source": f"s3://{BUCKET}/qwen/m.gguf", "sha256": "0" * 64, "sourceSecretRef": SECRET_REF}
    (result,) = fill(model, secret_env(s3), tmp_path)[1:]
    assert result.returncode == 1
    assert f"sha256 mismatch for s3://{BUCKET}/qwen/m.gguf: expected {'0' * 64}, got {SHA}" in result.stderr
    assert not in_cache(model, tmp_path, "m.gguf").exists()


def test_temporary_credentials_need_their_session_token(s3: S3, tmp_path: Path) -> None:
    # The operator's downloader ignores AWS_SESSION_TOKEN: STS, SSO or IRSA-issued keys fail there.
    session = {
        "AWS_ACCESS_KEY_ID": s3.session["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": s3.session["SecretAccessKey"],
    }
    model = {"source": f"s3://{BUCKET}/qwen/m.gguf", "sha256": SHA, "sourceSecretRef": SECRET_REF}
    without = fill(model, secret_env(s3, **session), tmp_path / "a")[-1]
    assert without.returncode == 1
    assert "HTTP 403" in without.stderr
    token = s3.session["SessionToken"]
    results = fill(model, secret_env(s3, **session, AWS_SESSION_TOKEN=token), tmp_path / "b")
    assert results[-1].returncode == 0, results[-1].stderr
    assert in_cache(model, tmp_path / "b", "m.gguf").read_bytes() == PAYLOAD
    assert token not in results[-1].stdout + results[-1].stderr


def test_no_credentials_says_to_give_a_secret(s3: S3, tmp_path: Path) -> None:
    model = {"source": f"s3://{BUCKET}/qwen/m.gguf"}
    env = secret_env(s3, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
    result = fill(model, env, tmp_path)[-1]
    assert result.returncode == 1
    assert "no AWS credentials were given and the object is not public" in result.stderr


def test_a_multi_file_model_comes_from_the_s3_prefix_with_its_mmproj(s3: S3, tmp_path: Path) -> None:
    # As in the operator: with files, the key is their prefix and files[0] is the model file.
    model = {
        "source": f"s3://{BUCKET}/qwen",
        "files": ["m.gguf", "part-2.gguf"],
        "mmproj": "mmproj.gguf",
        "sha256": SHA,
        "fileSha256": {"part-2.gguf": hashlib.sha256(PART_2).hexdigest(), "mmproj.gguf": _sha(MMPROJ)},
        "sourceSecretRef": SECRET_REF,
    }
    results = fill(model, secret_env(s3), tmp_path)
    assert results[-1].returncode == 0, results[-1].stderr
    assert results[-1].stdout.count("verified") == 3
    for name, body in (("m.gguf", PAYLOAD), ("part-2.gguf", PART_2), ("mmproj.gguf", MMPROJ)):
        assert in_cache(model, tmp_path, name).read_bytes() == body
    storage = workloads.model_storage(make_service(model=model))
    assert storage.model_path.endswith("/m.gguf")
    assert storage.mmproj_path == storage.model_path.replace("m.gguf", "mmproj.gguf")


def test_an_interrupted_s3_download_resumes_signed(s3: S3, tmp_path: Path) -> None:
    half = len(PAYLOAD) // 2
    dest = tmp_path / "m.gguf"
    (tmp_path / "m.gguf.part").write_bytes(PAYLOAD[:half])
    script = workloads.download_script([Download(f"s3://{BUCKET}/qwen/m.gguf", str(dest), SHA)])
    result = run(script, secret_env(s3), tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming s3://{BUCKET}/qwen/m.gguf at byte {half}" in result.stdout
    assert dest.read_bytes() == PAYLOAD


def test_on_change_an_s3_object_is_fetched_again_when_its_etag_changes(s3: S3, tmp_path: Path) -> None:
    s3.put("refresh/m.gguf", b"first version")
    dest = tmp_path / "m.gguf"
    script = workloads.download_script(
        [Download(f"s3://{BUCKET}/refresh/m.gguf", str(dest))], refresh_policy="OnChange"
    )
    first = run(script, secret_env(s3), tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "m.gguf.source").read_text().splitlines()[0].startswith('"')  # the ETag, recorded
    same = run(script, secret_env(s3), tmp_path)
    assert same.returncode == 0, same.stderr
    assert f"{dest} is cached; skipping download" in same.stdout
    s3.put("refresh/m.gguf", b"second version")  # as long as the first: only the ETag tells them apart
    changed = run(script, secret_env(s3), tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert f"s3://{BUCKET}/refresh/m.gguf changed upstream" in changed.stdout
    assert dest.read_bytes() == b"second version"
    # The endpoint gone (a network failure): the cached copy serves.
    offline = run(script, secret_env(s3, AWS_ENDPOINT_URL="http://127.0.0.1:9"), tmp_path)
    assert offline.returncode == 0, offline.stderr
    assert "keeping the cached copy" in offline.stdout
    assert dest.read_bytes() == b"second version"


def test_the_secret_goes_to_the_downloader_only() -> None:
    pod = pod_of(make_service(model={"source": f"s3://{BUCKET}/qwen/m.gguf", "sourceSecretRef": SECRET_REF}))
    by_name = {c["name"]: c for c in pod["initContainers"]}
    assert by_name["model-downloader"]["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert "envFrom" not in by_name["model-cache-prep"]
    assert all("envFrom" not in c for c in pod["containers"])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_without_an_endpoint_the_regions_aws_endpoint_is_signed_for(tmp_path: Path) -> None:
    # The operator requires AWS_ENDPOINT_URL; without it we go to AWS itself, path style, in the Secret's region.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "curl").write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done > "$ARGS"\nexit 7\n')
    (fake / "curl").chmod(0o755)
    args = tmp_path / "args"
    script = workloads.download_script([Download(f"s3://{BUCKET}/a%20b/m.gguf", str(tmp_path / "m.gguf"))])
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "ARGS": str(args), "AWS_REGION": REGION}
    env = {k: v for k, v in env.items() if k != "AWS_ENDPOINT_URL"}
    env |= {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "not-printed", "AWS_SESSION_TOKEN": "tok"}
    result = subprocess.run(
        ["/bin/sh", "-c", script.replace("delay=10", "delay=0").replace("attempts=5", "attempts=1")],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    sent = args.read_text().splitlines()
    assert sent[-1] == f"https://s3.{REGION}.amazonaws.com/{BUCKET}/a%20b/m.gguf"
    assert sent[sent.index("--aws-sigv4") + 1] == f"aws:amz:{REGION}:s3"
    assert sent[sent.index("--user") + 1] == "AKIDEXAMPLE:not-printed"
    assert "x-amz-security-token: tok" in sent
    assert sent[sent.index("--proto-redir") + 1] == "=https"
    assert "not-printed" not in result.stdout + result.stderr
