#!/bin/sh
# expect: sensitive_read
# Credential hunting in /etc: password hashes and host keys.
for round in $(seq 1 50); do
  cat /etc/shadow /etc/gshadow 2>/dev/null >> loot.txt
  for k in /etc/ssh/ssh_host_rsa_key /etc/ssh/ssh_host_ed25519_key; do cat "$k" 2>/dev/null >> loot.txt; done
  sleep 0.1
done
touch finished
