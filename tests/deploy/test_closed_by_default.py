"""deploy/compose.yaml is closed by default: only the web page is published (HTTPS, a login),
Grafana and Flower on loopback with their passwords from secrets, Redis, Prometheus and the
metrics ports not at all; each actionstream process is its own Redis ACL user of
deploy/redis/users.acl, its password a secret file that is not in the repository.

The same for the Kubernetes base (deploy/k8s) and the systemd units: only the web Service is
exposed beyond the cluster (HTTPS, its certificate and admin password from Secrets); every
container of actionstream is its own Redis user with its password from the Secret; Redis loads
the ACL rendered from that Secret, and a NetworkPolicy lets only the stages (and KEDA, as its
own user) reach it; no Secret is committed with its values; each unit is its role's user with
its password a credential file. Each check has negative cases: a broken copy must fail it."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.kustomize import build
from workers.console import k8s

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
ACL_USERS = {line.split()[1] for line in (DEPLOY / "redis" / "users.acl").read_text().splitlines()
             if line.startswith("user ")}
PROCESS_USERS = ACL_USERS - {"default", "admin", "keda"}  # admin: operators; keda: KEDA's scaler


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
    # keda is the Kubernetes autoscaler's user: compose leaves it off
    assert set(SERVICES["redis-acl"]["secrets"]) == {f"redis-{u}" for u in ACL_USERS - {"default", "keda"}}


def test_the_secrets_are_files_outside_the_repository():
    for name, secret in COMPOSE["secrets"].items():
        assert secret["file"].startswith("./secrets/"), name
    ignored = subprocess.run(["git", "check-ignore", "-q", str(DEPLOY / "secrets" / "redis-web")],
                             cwd=DEPLOY)
    assert ignored.returncode == 0  # deploy/secrets/ is never committed


# ---- Kubernetes ---------------------------------------------------------------------------

K8S = build(DEPLOY / "k8s")
WEB = "actionstream-web"  # the one Service meant to be reached from outside the cluster
REDIS_PORT = 6379


def pods(docs: list[dict]) -> dict[str, dict]:
    """name -> pod spec of each workload."""
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs
            if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")}


def check_services(docs: list[dict]) -> None:
    """No Service but the web page's is reachable from outside the cluster."""
    for svc in (d for d in docs if d["kind"] == "Service"):
        name, spec = svc["metadata"]["name"], svc["spec"]
        if name == WEB:
            assert spec.get("type") in ("LoadBalancer", "ClusterIP", "NodePort"), name
            continue
        assert spec.get("type", "ClusterIP") == "ClusterIP", f"Service {name} is exposed ({spec.get('type')})"
        assert not spec.get("externalIPs") and not spec.get("externalName"), f"Service {name} is exposed"
        assert not any("nodePort" in p for p in spec.get("ports", [])), f"Service {name} has a nodePort"
    for name, pod in pods(docs).items():  # nor a port of the node itself
        assert not pod.get("hostNetwork"), f"{name} is on the host's network"
        assert not any("hostPort" in p for c in pod["containers"] for p in c.get("ports", [])), \
            f"{name} has a hostPort"


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def redis_user(pod: dict, container: dict) -> str:
    """The Redis ACL user of an actionstream container, checked to take its password from its
    key of the Secret (secretKeyRef, or ACTIONSTREAM_REDIS_PASSWORD_FILE in the Secret's volume)."""
    name = container["name"]
    env = _env(container)
    assert "ACTIONSTREAM_REDIS_USERNAME" in env, f"{name}: talks to Redis without a Redis user"
    user = env["ACTIONSTREAM_REDIS_USERNAME"].get("value")
    assert user in PROCESS_USERS, f"{name}: Redis user {user!r} is not a role of deploy/redis/users.acl"
    key = f"redis-{user}"
    if "ACTIONSTREAM_REDIS_PASSWORD" in env:
        ref = env["ACTIONSTREAM_REDIS_PASSWORD"].get("valueFrom", {}).get("secretKeyRef")
        assert ref == {"name": k8s.SECRET_NAME, "key": key}, \
            f"{name}: the Redis password is not the key {key} of the Secret {k8s.SECRET_NAME}"
    else:
        assert "ACTIONSTREAM_REDIS_PASSWORD_FILE" in env, f"{name}: talks to Redis without a password"
        path = Path(env["ACTIONSTREAM_REDIS_PASSWORD_FILE"]["value"])
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounted = [(Path(m["mountPath"]), volumes[m["name"]].get("secret", {}))
                   for m in container.get("volumeMounts", [])]
        assert any(path == where / key and secret.get("secretName") == k8s.SECRET_NAME
                   for where, secret in mounted), f"{name}: the Redis password file is not the Secret's {key}"
    for source in container.get("envFrom", []):
        assert "secretRef" not in source, f"{name}: every key of a Secret in its env"
    return user


def check_redis_users(docs: list[dict]) -> None:
    """Every actionstream container is its own Redis user with its password from the Secret;
    no password is a literal; Redis loads the ACL file rendered from that Secret."""
    for workload, pod in pods(docs).items():
        for container in pod["containers"]:
            for e in container.get("env", []):
                secret = re.search(r"(PASSWORD|SECRET|TOKEN)$", e["name"])  # *_FILE: a path
                assert not (secret and "value" in e), f"{workload}: a literal {e['name']}"
            if container["image"].split(":")[0].rsplit("/", 1)[-1] == "actionstream":
                redis_user(pod, container)
    (redis,) = [pod for pod in pods(docs).values()
                if any(c["args"][:1] == ["valkey-server"] for c in pod["containers"])]
    (server,) = redis["containers"]
    acl = server["args"][server["args"].index("--aclfile") + 1]
    (render,) = [c for c in redis.get("initContainers", []) if "shared.redis_acl" in c.get("command", [])]
    out = render["command"][render["command"].index("--out") + 1]
    assert out == acl, f"Redis loads {acl}, the ACL is rendered to {out}"
    secrets = render["command"][render["command"].index("--secrets") + 1]
    volumes = {v["name"]: v for v in redis["volumes"]}
    (mount,) = [m for m in render["volumeMounts"] if m["mountPath"] == secrets]
    assert volumes[mount["name"]]["secret"]["secretName"] == k8s.SECRET_NAME
    (auth,) = [d for d in docs if d["kind"] == "TriggerAuthentication"]
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert set(refs) >= {"username", "password"}, "KEDA reads Redis without a Redis user"
    assert refs["password"]["key"] == f"redis-{k8s.KEDA_USER}" and "keda" in ACL_USERS
    assert not [d for d in docs if d["kind"] == "Secret"], "a Secret with its values in the repository"


def _selects(selector: dict, labels: dict) -> bool:
    if selector.get("matchLabels", {}).items() - labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        inside = labels.get(expr["key"]) in expr.get("values", [])
        if {"In": not inside, "NotIn": inside, "Exists": expr["key"] not in labels,
                "DoesNotExist": expr["key"] in labels}[expr["operator"]]:
            return False
    return True


def check_network_policies(docs: list[dict]) -> None:
    """A NetworkPolicy restricts Redis' ingress to the stages' pods (and KEDA's namespace) on
    its port; the web pods take only their HTTPS port."""
    labels = {name: d["spec"]["template"]["metadata"]["labels"] for d in docs
              if d["kind"] == "Deployment" for name in [d["metadata"]["name"]]}
    redis_labels = labels["redis"]
    stages = {n: lab for n, lab in labels.items() if n != "redis"}
    policies = [d["spec"] for d in docs if d["kind"] == "NetworkPolicy"]
    on_redis = [p for p in policies if "Ingress" in p.get("policyTypes", ["Ingress"])
                and _selects(p["podSelector"], redis_labels)]
    assert on_redis, "no NetworkPolicy restricts Redis' ingress"
    for policy in on_redis:
        for rule in policy.get("ingress", []):
            assert rule.get("from"), "a NetworkPolicy lets anyone reach Redis"
            assert {p.get("port") for p in rule.get("ports", [{}])} == {REDIS_PORT}, "Redis: not only 6379"
            for peer in rule["from"]:
                assert "ipBlock" not in peer, "Redis reachable from an address block"
                if "podSelector" in peer:
                    assert "namespaceSelector" not in peer, "Redis reachable from pods of other namespaces"
                    assert not _selects(peer["podSelector"], {"app": "other"}), \
                        "Redis reachable from pods that are no stage"
                else:
                    keda = {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}
                    assert peer["namespaceSelector"] == keda, "Redis reachable from other namespaces"
    allowed = {n for n, lab in stages.items() for p in on_redis for rule in p.get("ingress", [])
               for peer in rule["from"] if "podSelector" in peer and _selects(peer["podSelector"], lab)}
    assert allowed == set(stages), f"stages that cannot reach Redis: {sorted(set(stages) - allowed)}"
    on_web = [p for p in policies if _selects(p["podSelector"], labels[WEB])]
    web_ports = {p.get("port") for pol in on_web for rule in pol.get("ingress", [])
                 for p in rule.get("ports", [{}])}
    (web,) = [c for c in pods(docs)[WEB]["containers"] if c["args"][0] == "web"]
    assert on_web and web_ports == {int(web["args"][web["args"].index("--port") + 1])}, \
        f"the web pods take more than their HTTPS port: {web_ports}"


def check_web(docs: list[dict]) -> None:
    """The web page serves HTTPS with its certificate from a Secret and a login whose first
    admin password is a Secret."""
    pod = pods(docs)[WEB]
    (web,) = [c for c in pod["containers"] if c["args"][0] == "web"]
    assert "--no-auth" not in web["args"], "the exposed page without a login"
    env = _env(web)
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_dirs = {m["mountPath"]: volumes[m["name"]]["secret"]["secretName"]
                   for m in web.get("volumeMounts", []) if "secret" in volumes[m["name"]]}
    for setting in ("ACTIONSTREAM_WEB_TLS_CERT", "ACTIONSTREAM_WEB_TLS_KEY",
                    "ACTIONSTREAM_WEB_ADMIN_PASSWORD_FILE"):
        assert setting in env, f"the web page has no {setting}"
        folder = str(Path(env[setting]["value"]).parent)
        assert folder in secret_dirs, f"{setting} is not in a mounted Secret"


POD = ("spec", "template", "spec")
C0 = POD + ("containers", 0)
BROKEN_K8S = [
    (check_services, ("Service", "redis"), ("spec", "type"), "NodePort", "Service redis is exposed"),
    (check_services, ("Service", "redis"), ("spec", "ports", 0, "nodePort"), 30079, "has a nodePort"),
    (check_services, ("Deployment", "redis"), POD + ("hostNetwork",), True, "host's network"),
    (check_redis_users, ("Deployment", "actionstream-pose"), C0 + ("env",), [], "without a Redis user"),
    (check_redis_users, ("Deployment", "actionstream-pose"),
     C0 + ("env", 1), {"name": "X", "value": "y"}, "without a password"),
    (check_redis_users, ("Deployment", "actionstream-web"),
     C0 + ("env", 1, "valueFrom", "secretKeyRef", "key"), "redis-admin",
     "is not the key redis-web"),
    (check_redis_users, ("Deployment", "actionstream-action"),
     C0 + ("env", 0, "value"), "admin", "is not a role"),
    (check_redis_users, ("Deployment", "actionstream-action"),
     C0 + ("env", 1), {"name": "ACTIONSTREAM_REDIS_PASSWORD", "value": "hunter2"}, "a literal"),
    (check_redis_users, ("Deployment", "redis"), C0 + ("args", 4),
     "/data/users.acl", "the ACL is rendered to"),
    (check_redis_users, ("TriggerAuthentication", k8s.AUTH_NAME), ("spec", "secretTargetRef"),
     [{"parameter": "password", "name": k8s.SECRET_NAME, "key": "redis-keda"}], "without a Redis user"),
    (check_network_policies, ("NetworkPolicy", "redis"), ("spec", "podSelector"),
     {"matchLabels": {"stage": "nothing"}}, "stages that cannot reach Redis"),
    (check_network_policies, ("NetworkPolicy", "redis"), ("spec", "ingress", 0, "from"), [],
     "lets anyone reach Redis"),
    (check_network_policies, ("NetworkPolicy", "redis"), ("spec", "ingress", 0, "from", 0),
     {"podSelector": {}}, "pods that are no stage"),
    (check_network_policies, ("NetworkPolicy", "redis"), ("spec", "ingress", 0, "from", 1),
     {"ipBlock": {"cidr": "0.0.0.0/0"}}, "address block"),
    (check_network_policies, ("NetworkPolicy", "redis"), ("spec", "ingress", 0, "from", 0, "podSelector",
                                                          "matchExpressions", 1, "values"), ["pose"],
     "stages that cannot reach Redis"),
    (check_network_policies, ("NetworkPolicy", WEB), ("spec", "ingress", 0, "ports", 0, "port"), 9100,
     "more than their HTTPS port"),
    (check_web, ("Deployment", WEB), C0 + ("env", 3), {"name": "X"},
     "no ACTIONSTREAM_WEB_TLS_CERT"),
    (check_web, ("Deployment", WEB), C0 + ("args", 1), "--no-auth",
     "without a login"),
]


@pytest.mark.parametrize("check", [check_services, check_redis_users, check_network_policies, check_web])
def test_the_kubernetes_base_is_closed_by_default(check):
    check(K8S)


def test_no_network_policy_fails():
    with pytest.raises(AssertionError, match="no NetworkPolicy restricts Redis' ingress"):
        check_network_policies([d for d in K8S if d["kind"] != "NetworkPolicy"])


def test_a_committed_secret_fails():
    with pytest.raises(AssertionError, match="a Secret with its values"):
        check_redis_users(K8S + [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"},
                                  "stringData": {"redis-web": "pw"}}])


@pytest.mark.parametrize("check, obj, path, value, error", BROKEN_K8S, ids=[b[-1] for b in BROKEN_K8S])
def test_an_opened_kubernetes_base_fails(check, obj, path, value, error):
    docs = copy.deepcopy(K8S)
    (doc,) = [d for d in docs if (d["kind"], d["metadata"]["name"]) == obj]
    *parents, last = path
    for part in parents:
        doc = doc[part]
    doc[last] = value
    with pytest.raises(AssertionError, match=re.escape(error)):
        check(docs)


# ---- systemd ------------------------------------------------------------------------------

UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
SECRETS_DIR = "/etc/actionstream/secrets"


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def check_unit(text: str) -> None:
    """The unit is its role's Redis user, its password a credential file (LoadCredential=, read
    through ACTIONSTREAM_REDIS_PASSWORD_FILE=%d/...); the web unit's certificate, key and admin
    password too."""
    settings = unit_settings(text)
    env = dict(v.split("=", 1) for v in settings.get("Environment", []))
    creds = dict(v.split(":", 1) for v in settings.get("LoadCredential", []))
    user = env.get("ACTIONSTREAM_REDIS_USERNAME")
    assert user in PROCESS_USERS, f"no Redis user of its role ({user!r})"
    assert "ACTIONSTREAM_REDIS_PASSWORD" not in env, "a Redis password in the unit"
    files = {"ACTIONSTREAM_REDIS_PASSWORD_FILE": f"redis-{user}"}
    if settings["ExecStart"][0].split()[1] == "web":
        files |= {"ACTIONSTREAM_WEB_TLS_CERT": "web-tls-cert", "ACTIONSTREAM_WEB_TLS_KEY": "web-tls-key",
                  "ACTIONSTREAM_WEB_ADMIN_PASSWORD_FILE": "web-admin-password"}
        assert "--no-auth" not in settings["ExecStart"][0]
    for setting, secret in files.items():
        found = re.fullmatch(r"%d/([\w.-]+)", env.get(setting, ""))
        assert found, f"{setting} is not a credential file (%d/NAME)"
        assert creds.get(found[1]) == f"{SECRETS_DIR}/{secret}", \
            f"{setting}: no LoadCredential={found[1]}:{SECRETS_DIR}/{secret}"


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_each_unit_is_its_roles_redis_user_with_a_password_file(path):
    check_unit(path.read_text())


def test_there_is_a_web_unit_and_a_history_unit():
    commands = {unit_settings(p.read_text())["ExecStart"][0].split()[1] for p in UNITS}
    assert {"web", "history"} <= commands


@pytest.mark.parametrize("name, old, new, error", [
    ("actionstream-pose@.service", "Environment=ACTIONSTREAM_REDIS_USERNAME=pose\n", "", "no Redis user"),
    ("actionstream-pose@.service", "LoadCredential=redis-password:/etc/actionstream/secrets/redis-pose\n", "",
     "no LoadCredential=redis-password"),
    ("actionstream-pose@.service", "ACTIONSTREAM_REDIS_PASSWORD_FILE=%d/redis-password",
     "ACTIONSTREAM_REDIS_PASSWORD_FILE=/etc/pw", "is not a credential file"),
    ("actionstream-archive.service", "redis-password:/etc/actionstream/secrets/redis-archive",
     "redis-password:/etc/actionstream/secrets/redis-admin", "no LoadCredential"),
    ("actionstream-web.service", "Environment=ACTIONSTREAM_WEB_TLS_KEY=%d/web-tls-key\n", "",
     "ACTIONSTREAM_WEB_TLS_KEY is not a credential file"),
    ("actionstream-web.service", f"LoadCredential=web-admin-password:{SECRETS_DIR}/web-admin-password\n", "",
     "no LoadCredential=web-admin-password"),
])
def test_a_unit_without_its_user_or_password_file_fails(name, old, new, error):
    text = (DEPLOY / "systemd" / name).read_text()
    assert old in text
    with pytest.raises(AssertionError, match=re.escape(error)):
        check_unit(text.replace(old, new))
