#!/bin/sh
# Makes the secrets deploy/compose.yaml reads, in deploy/secrets/ (never committed): a random
# password per Redis ACL user (deploy/redis/users.acl), the web page's first admin password,
# Grafana's admin password, Flower's basic auth, and a self-signed certificate for the web
# page (replace web-tls-cert and web-tls-key with your own). redis-keda is KEDA's, on Kubernetes
# only (deploy/k8s/README.md makes the Secrets from these files); compose leaves that user off. Existing files are kept, so
# running it again only fills in what is missing; to rotate one, delete its file first.
set -eu
cd "$(dirname "$0")"
mkdir -p secrets
chmod 700 secrets
umask 077
random() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
for name in redis-admin redis-producer redis-pose redis-action redis-alerts redis-history redis-web \
            redis-archive redis-jobs redis-keda web-admin-password grafana-admin-password; do
  [ -s "secrets/$name" ] || random > "secrets/$name"
done
[ -s secrets/flower-basic-auth ] || printf 'flower:%s' "$(random)" > secrets/flower-basic-auth
if [ ! -s secrets/web-tls-cert ]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=${ACTIONSTREAM_HOSTNAME:-localhost}" \
    -keyout secrets/web-tls-key -out secrets/web-tls-cert 2>/dev/null
fi
chmod 644 secrets/*  # read by the containers' users; the folder itself is 0700
echo "secrets in $(pwd)/secrets: log in to the web page as admin with the password in secrets/web-admin-password"
