#!/usr/bin/env bash
# Makes every Secret the Kubernetes deployment reads, with fresh random values, and creates the missing
# ones in the cluster. Nothing secret is in the manifests; this is where it comes from.
#
#   deploy/k8s/make-secrets.sh                 # write ./pai-secrets/*.yaml, create those not in the cluster
#   deploy/k8s/make-secrets.sh --out DIR --no-apply   # only write them (to seal or store them elsewhere)
#
# Environment: PAI_NAMESPACE (pai), PAI_CLUSTER_DOMAIN (cluster.local), PAI_ADMIN_PASSWORD (generated).
# Needs openssl, python3 (the standard library only) and kubectl (kubectl only renders the Secrets
# unless it applies them).
#
# A Secret that already exists in the cluster is left alone: its passwords are already in MongoDB's
# users and its certificates in the running servers. To replace one, delete it first and restart what
# reads it. The CA's private key stays in the output folder (ca.key), never in the cluster: keep it to
# issue new server certificates, or delete it.
set -euo pipefail

out=pai-secrets
apply=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --no-apply) apply=0; shift ;;
    *) echo "usage: $0 [--out DIR] [--no-apply]" >&2; exit 2 ;;
  esac
done

ns=${PAI_NAMESPACE:-pai}
domain=${PAI_CLUSTER_DOMAIN:-cluster.local}
# Every platform service on the bus: each has its own NATS user and MongoDB user (base/platform/*.yaml).
# The portal is not on the bus; it has a session key of its own (below).
services=(auth diagnosis gateway jobs marketplace monitoring orchestrator runtime scheduler storage)
# The static NATS users (base/nats/configmap.yaml): the services but the node agents, whose users the auth
# callout makes from their pods' tokens, and the callout itself.
nats_static=(auth auth-callout diagnosis gateway jobs marketplace monitoring orchestrator scheduler storage)

umask 077
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

password() { openssl rand -hex 24; }  # URL-safe: the services' URLs carry them

secret() {  # secret NAME --from-literal=... | --from-file=...
  local name=$1; shift
  kubectl create secret generic "$name" --namespace "$ns" --dry-run=client -o yaml \
    "$@" >"$out/$name.yaml"
}

# ---- a CA and the servers' certificates ---------------------------------------------------------------
if [ ! -f "$out/ca.key" ]; then
  openssl req -x509 -new -nodes -newkey rsa:3072 -sha256 -days 3650 -subj "/CN=openpai-py CA" \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
fi

server_cert() {  # server_cert NAME SAN...: a key and a certificate for TLS servers that are also clients
  local name=$1; shift
  local sans
  sans=$(printf 'DNS:%s,' "$@")
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' \
    "${sans%,}" >"$work/$name.ext"
  openssl req -new -nodes -newkey rsa:2048 -sha256 -subj "/CN=$name" \
    -keyout "$work/$name.key" -out "$work/$name.csr" 2>/dev/null
  openssl x509 -req -sha256 -days 825 -in "$work/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -extfile "$work/$name.ext" -out "$work/$name.crt" 2>/dev/null
}

nats_names=(nats "nats.$ns" "nats.$ns.svc" "nats.$ns.svc.$domain" localhost)
mongo_names=(localhost)
for i in 0 1 2; do
  nats_names+=("nats-$i.nats-headless" "nats-$i.nats-headless.$ns.svc" "nats-$i.nats-headless.$ns.svc.$domain")
  mongo_names+=("mongo-$i.mongo" "mongo-$i.mongo.$ns.svc" "mongo-$i.mongo.$ns.svc.$domain")
done
server_cert nats "${nats_names[@]}"
server_cert mongo "${mongo_names[@]}"
cat "$work/mongo.crt" "$work/mongo.key" >"$work/mongo.pem"

secret pai-tls --from-file=ca.crt="$out/ca.crt"
secret nats-tls --from-file=ca.crt="$out/ca.crt" --from-file=tls.crt="$work/nats.crt" \
  --from-file=tls.key="$work/nats.key"
secret mongo-tls --from-file=ca.crt="$out/ca.crt" --from-file=tls.pem="$work/mongo.pem"

# ---- credentials ---------------------------------------------------------------------------------------
nats_users=() mongo_users=()
for s in "${nats_static[@]}"; do
  nats_users+=("--from-literal=$s=$(password)")
done
for s in "${services[@]}"; do
  mongo_users+=("--from-literal=$s=$(password)")
done
secret pai-nats-users "${nats_users[@]}"
secret pai-mongo-users "${mongo_users[@]}"
# The auth callout's account nkey: its seed signs the node agents' user JWTs, its public key is nats.conf's
# auth_callout issuer. An nkey is an Ed25519 key in NATS's encoding (a prefix byte, the key, a CRC-16
# XMODEM, base32): openssl makes the key, the standard library encodes it.
openssl genpkey -algorithm ed25519 -outform DER -out "$work/callout.der" 2>/dev/null
openssl pkey -inform DER -in "$work/callout.der" -pubout -outform DER -out "$work/callout.pub.der" 2>/dev/null
python3 - "$work/callout.der" "$work/callout.pub.der" "$work/callout" <<'PY'
import base64, binascii, sys
seed = open(sys.argv[1], "rb").read()[-32:]  # PKCS#8: the private key's 32 bytes come last
public = open(sys.argv[2], "rb").read()[-32:]  # SubjectPublicKeyInfo: so do the public key's
def nkey(raw: bytes) -> str:
    return base64.b32encode(raw + binascii.crc_hqx(raw, 0).to_bytes(2, "little")).decode().rstrip("=")
ACCOUNT, SEED = 0, 18 << 3  # the prefix bytes of "A..." (an account) and "S..." (a seed)
open(sys.argv[3] + ".seed", "w").write(nkey(bytes([SEED | ACCOUNT >> 5, (ACCOUNT & 31) << 3]) + seed))
open(sys.argv[3] + ".issuer", "w").write(nkey(bytes([ACCOUNT]) + public))
PY
secret pai-nats-callout --from-file=seed="$work/callout.seed" --from-file=issuer="$work/callout.issuer"
openssl rand -base64 756 | tr -d '\n' >"$work/keyfile"
secret pai-mongo-admin --from-literal=username=root --from-literal=password="$(password)" \
  --from-file=keyfile="$work/keyfile"

secret pai-admin --from-literal=password="${PAI_ADMIN_PASSWORD:-$(openssl rand -base64 18 | tr -d '\n')}"
# The token signing keys, in pai_auth.keys' format: the newest key signs, every key verifies.
kid=$(openssl rand -hex 8)
signing=$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')
printf '{"keys": [{"kid": "%s", "secret": "%s"}]}' "$kid" "$signing" >"$work/jwt-keys.json"
secret pai-auth-keys --from-file=jwt-keys.json="$work/jwt-keys.json"
secret pai-job-ssh --from-literal=secret="$(openssl rand -hex 32)"
# The portal's session cookies, which every portal replica must decrypt: a Fernet key (32 random bytes,
# URL-safe base64).
secret pai-portal --from-literal=session-key="$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '\n')"

echo "Secrets written to $out/ (keep the folder private: it holds every password)." >&2
[ "$apply" = 1 ] || exit 0

kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
for file in "$out"/*.yaml; do
  name=$(basename "$file" .yaml)
  if kubectl --namespace "$ns" get secret "$name" >/dev/null 2>&1; then
    echo "kept      secret/$name (already in the cluster)" >&2
  else
    kubectl create -f "$file"
  fi
done
