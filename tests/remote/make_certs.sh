#!/usr/bin/env bash
# make_certs.sh DIR: a test CA, a server certificate for localhost/127.0.0.1,
# a client certificate (mutual TLS), and a second CA that signed nothing.
set -euo pipefail
d=$1
mkdir -p "$d"
cd "$d"
q() { "$@" >/dev/null 2>&1; }
q openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Moat Test CA" -keyout ca.key -out ca.pem
q openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Other CA" -keyout other-ca.key -out other-ca.pem
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
q openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
q openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem
q openssl req -newkey rsa:2048 -nodes -subj "/CN=moat-host" -keyout client.key -out client.csr
q openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem
