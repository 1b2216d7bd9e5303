#!/usr/bin/env bash
# Makes the test-only CA and server certificate (see README.md). Needs openssl.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days "$days" \
  -subj "/CN=fedcomm test CA (test only)" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
  -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
  -days "$days" -extfile server.ext 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout other_ca.key -out other_ca.pem -days "$days" \
  -subj "/CN=fedcomm other test CA (test only)" 2>/dev/null
rm -f server.csr server.ext ca.srl other_ca.key
