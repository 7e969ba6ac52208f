# Flower's configuration (deploy/compose.yaml mounts it): basic auth from a secret file
# holding USER:PASSWORD (deploy/make-secrets.sh makes it). No secret, no Flower.
with open("/run/secrets/flower-basic-auth") as f:
    basic_auth = [f.read().strip()]
