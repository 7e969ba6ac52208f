"""deploy/compose.yaml is closed by default: only the web page is published (HTTPS, a login),
Grafana and Flower on loopback with their passwords from secrets, Redis, Prometheus and the
metrics ports not at all; each actionstream process is its own Redis ACL user of
deploy/redis/users.acl, its password a secret file that is not in the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
ACL_USERS = {line.split()[1] for line in (DEPLOY / "redis" / "users.acl").read_text().splitlines()
             if line.startswith("user ")}


def test_only_the_web_page_is_published_beyond_loopback():
    published = {name: ports for name, s in SERVICES.items() for ports in s.get("ports", [])
                 if not str(ports).startswith("127.0.0.1:")}
    assert published == {"web": "8080:8080"}
    assert "--tls-cert" in SERVICES["web"]["command"] and "--no-auth" not in SERVICES["web"]["command"]
    assert "ACTIONSTREAM_WEB_ADMIN_PASSWORD_FILE" in SERVICES["web"]["environment"]


def test_grafana_and_flower_need_their_passwords():
    env = SERVICES["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert "--conf=/etc/flower/flowerconfig.py" in SERVICES["flower"]["command"]
    assert "basic_auth" in (DEPLOY / "flower" / "flowerconfig.py").read_text()


def test_each_process_is_its_own_redis_user_with_a_secret_password():
    for name, s in SERVICES.items():
        if "build" not in s or name == "redis-acl":
            continue
        user = s["environment"]["ACTIONSTREAM_REDIS_USERNAME"]
        assert user in ACL_USERS, name
        (secret,) = [x for x in s["secrets"] if isinstance(x, dict) and x["target"] == "redis-password"]
        assert secret["source"] == f"redis-{user}", name
    assert "--aclfile" in SERVICES["redis"]["command"] and "ports" not in SERVICES["redis"]
    assert set(SERVICES["redis-acl"]["secrets"]) == {f"redis-{u}" for u in ACL_USERS - {"default"}}


def test_the_secrets_are_files_outside_the_repository():
    for name, secret in COMPOSE["secrets"].items():
        assert secret["file"].startswith("./secrets/"), name
    ignored = subprocess.run(["git", "check-ignore", "-q", str(DEPLOY / "secrets" / "redis-web")],
                             cwd=DEPLOY)
    assert ignored.returncode == 0  # deploy/secrets/ is never committed
