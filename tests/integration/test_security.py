"""ACL users, TLS and size limits with real servers; no secret in any log line."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import redis

from shared import codec, keys
from shared.redis_server import RedisServer, free_port
from shared.redisio import ensure_group, redact
from shared.schemas import Frame
from shared.settings import load_settings
from tests.conftest import ROOT, shared_path

pytestmark = pytest.mark.integration
SECRET = "s3cret-Pa55"


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("acl")
    (d / "users.acl").write_text(
        "user default off\n"
        f"user alice on >{SECRET} ~actionstream:* &actionstream:* +@all\n"
    )
    server = RedisServer(data_dir=d, extra_args=["--aclfile", str(d / "users.acl")])
    server._wait_ready = lambda timeout: _wait_auth(server, timeout)  # PING needs a user now
    with server:
        yield f"redis://alice:{SECRET}@127.0.0.1:{server.port}/0", server


def _wait_auth(server, timeout):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=server.port, username="alice", password=SECRET).ping()
            return
        except (redis.ConnectionError, redis.AuthenticationError, redis.ResponseError):
            time.sleep(0.1)
    raise RuntimeError("ACL server did not start")


def test_acl_user_runs_the_pipeline_and_the_password_stays_out_of_logs(acl_server):
    url, server = acl_server
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        redis.Redis(port=server.port).ping()  # the default user is off
    video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
    proc = subprocess.run([sys.executable, "-m", "workers", "produce", "--redis", url, "--source", video,
                           "--camera", "acl-cam", "--mode", "replay", "--max-frames", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stderr and "alice:***@" in proc.stderr
    r = redis.Redis.from_url(url)
    assert r.xlen(keys.frames_stream("acl-cam")) == 6  # 5 frames and the end of stream


def test_redact_hides_passwords():
    assert redact("rediss://bob:pw@host:6380/0") == "rediss://bob:***@host:6380/0"
    assert redact("redis://:pw@host/0") == "redis://:***@host/0"
    assert redact("redis://host/0") == "redis://host/0"


def _tls_server(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no system redis-server binary to run a TLS server")
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    args = [binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tmp_path / "cert.pem"),
            "--tls-key-file", str(tmp_path / "key.pem"), "--tls-ca-cert-file", str(tmp_path / "ca.pem"),
            "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
            "--dir", str(tmp_path)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    import time

    for _ in range(50):
        if proc.poll() is not None:
            pytest.skip(f"redis-server has no TLS support: {proc.stdout.read().decode()[-300:]}")
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    pytest.skip("TLS server did not answer")


def test_tls_end_to_end(tmp_path):
    """Producer and pose worker over rediss:// with a CA the test made."""
    from producer.producer import Producer
    from shared.modelpaths import resolve_pose_model
    from shared.settings import make_camera
    from workers.pose.adapters import load_pose_model
    from workers.pose.worker import PoseWorker

    proc, url = _tls_server(tmp_path)
    try:
        settings = load_settings(redis_url=url, mode="replay", shared_dir=shared_path())
        video = str(shared_path("data", "urfd", "fall-01-cam0.mp4"))
        Producer(settings, make_camera(id="tls-cam", source=video, crop=(320, 0, 320, 240))).run(max_frames=4)
        model = load_pose_model("movenet", resolve_pose_model("movenet", settings))
        worker = PoseWorker(settings, model, "movenet", cameras=["tls-cam"])
        worker.run(exit_on_eos=True)
        assert worker.metrics["frames"] == 4
        assert redis.Redis.from_url(url).xlen(keys.skeletons_stream("tls-cam")) == 5
    finally:
        proc.kill()
        proc.wait()


def test_a_50_mb_frame_is_rejected_not_decoded(r, redis_url):
    from shared.modelpaths import resolve_pose_model
    from workers.pose.adapters import load_pose_model
    from workers.pose.worker import PoseWorker

    stream = keys.frames_stream("big-cam")
    ensure_group(r, stream, keys.POSE_GROUP)
    r.hset(keys.CAMERAS_KEY, "big-cam", "{}")
    huge = codec.encode_frame(Frame("big-cam", 0, 1.0, 640, 480, b"\xff\xd8" + b"\0" * (50 * 1024 * 1024)))
    r.xadd(stream, huge)
    settings = load_settings(redis_url=redis_url, mode="replay", shared_dir=shared_path())
    model = load_pose_model("movenet", resolve_pose_model("movenet", settings))
    worker = PoseWorker(settings, model, "movenet", cameras=["big-cam"])
    worker.run(burst=True)
    (_, fields), = r.xrange(keys.DEADLETTER_STREAM)
    dl = codec.decode_dead_letter(fields)
    assert "exceeds the limit" in dl.reason and dl.fields["jpeg"] == f"<{50 * 1024 * 1024 + 2} bytes>"
    assert worker.metrics["model_calls"] == 0
