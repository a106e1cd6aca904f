#!/bin/sh
# Regenerates the fixed test key pairs (run once; the outputs are committed).
# DER because jsonwebtoken's pure-Rust backend signs from DER without the `use_pem` feature:
# RSA as PKCS#1, EC and Ed25519 as PKCS#8.
set -eu
cd "$(dirname "$0")"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem
openssl rsa -in rsa.pem -traditional -outform DER -out rsa_private_pkcs1.der
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2.pem
openssl rsa -in rsa2.pem -traditional -outform DER -out rsa2_private_pkcs1.der
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p256.pem
openssl pkcs8 -topk8 -nocrypt -in p256.pem -outform DER -out p256_private_pkcs8.der
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out p384.pem
openssl pkcs8 -topk8 -nocrypt -in p384.pem -outform DER -out p384_private_pkcs8.der
openssl genpkey -algorithm ED25519 -out ed25519.pem
openssl pkcs8 -topk8 -nocrypt -in ed25519.pem -outform DER -out ed25519_private_pkcs8.der
openssl pkey -in ed25519.pem -pubout -outform DER -out ed25519_public_spki.der
rm -f rsa.pem rsa2.pem p256.pem p384.pem ed25519.pem
