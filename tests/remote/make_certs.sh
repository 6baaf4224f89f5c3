#!/usr/bin/env bash
# make_certs.sh DIR [NAME...]: throwaway TLS material for the tests (test_remote) and
# moat-bench: a CA (ca.pem), a server certificate for localhost/127.0.0.1
# (server.pem/.key), a client certificate for mutual TLS (client.pem/.key),
# and a second CA that signed nothing (other-ca.pem). Each NAME also gets a
# server certificate from the CA that names NAME alone, no address
# (NAME.pem/.key: a fleet reached by name). P-256 keys: quick to
# make, and the handshake cost moat-bench's grpcs rows have always measured.
set -euo pipefail
d=$1
shift
mkdir -p "$d"
cd "$d"
q() { "$@" >/dev/null 2>&1; }
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
q openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=Moat Test CA" -keyout ca.key -out ca.pem
q openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=Other CA" -keyout other-ca.key -out other-ca.pem
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' >server.ext
printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n' >client.ext
q openssl req "${ec[@]}" -subj "/CN=localhost" -keyout server.key -out server.csr
q openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem
q openssl req "${ec[@]}" -subj "/CN=moat-host" -keyout client.key -out client.csr
q openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.pem
for name in "$@"; do
  printf 'subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\n' "$name" >"$name.ext"
  q openssl req "${ec[@]}" -subj "/CN=$name" -keyout "$name.key" -out "$name.csr"
  q openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile "$name.ext" \
    -out "$name.pem"
done
